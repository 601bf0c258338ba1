#!/usr/bin/env node
// A host app that is not Python, calling Lightspeed through lightkeeper's API proxy: it walks the Item collection
// page after page by the answers' `Link: <…>; rel="next"` headers, then sets one item's stock in one shop and reads
// it back. It holds no Lightspeed token, only lightkeeper's API key. Node 18 or later (built-in fetch), no packages.
//
// The README's TypeScript example ("Calling Lightspeed from any language") is this script's `lk`, `nextPage`,
// `pages` and `setStock` with types; tests/proxy/test_node_client.py runs it in CI.
//
// Environment:
//   LK_URL         lightkeeper's base URL (http://127.0.0.1:8000)
//   LK_KEY         LIGHTKEEPER_API_KEY; never printed
//   LK_CONNECTION  the connection id
//   LK_QOH         the quantity on hand to set
//   LK_LIMIT       page size of the walk (default 100)
//   LK_ITEM        the item to update (default: the last one walked)
//   LK_SHOP        its shop (default 1)
//   LK_TIMEOUT_S   deadline of each request (default 120)
//
// stdout, on success only: one JSON line {"items": [itemID…], "pages": n, "updated": {…}, "statuses": […]}.
// Any answer that is not 2xx (or no answer) ends it with exit 1 and one line on stderr; a bad setting, exit 2.

import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";

const NAME = "walk_and_update";

class ProxyError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code; // the proxy's own `code` (connection_expired, rate_limited, …); undefined for Lightspeed's
  }
}

class UsageError extends Error {}

function setting(name, fallback) {
  const value = process.env[name];
  if (value !== undefined && value !== "") return value;
  if (fallback !== undefined) return fallback;
  throw new UsageError(`${name} is not set`);
}

function count(name, fallback, min) {
  const raw = setting(name, fallback);
  if (!/^[0-9]+$/.test(raw) || Number(raw) < min || !Number.isSafeInteger(Number(raw))) {
    throw new UsageError(`${name} must be an integer of at least ${min}`);
  }
  return Number(raw);
}

// RFC 8288: link-values separated by commas, each `<target>` and `; name=value` or `; name="quoted"` parameters.
// Commas inside the target or inside a quoted value do not separate links; only a link's first `rel` counts, and
// it may name several relation types separated by spaces. A relative target is resolved against `base`.
const LINK = /<([^>]*)>((?:\s*;\s*[^\s;,=]+(?:\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^\s;,]*))?)*)/g;
const PARAM = /;\s*([^\s;,=]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;,]*)))?/g;

export function nextPage(link, base) {
  for (const [, target, params] of (link ?? "").matchAll(LINK)) {
    const rel = [...params.matchAll(PARAM)].find(([, name]) => name.toLowerCase() === "rel");
    const value = rel ? (rel[2]?.replace(/\\(.)/g, "$1") ?? rel[3] ?? "") : "";
    if (value.toLowerCase().split(/\s+/).includes("next")) return new URL(target, base);
  }
  return null;
}

// One request through the proxy: `target` relative to the connection's account (`Item.json?limit=100`) or a page
// URL from a Link header. The key goes to lightkeeper's own origin only.
export async function lk(config, method, target, body, statuses = []) {
  const base = new URL(`api/connections/${encodeURIComponent(config.connection)}/lightspeed/`, config.url);
  const url = new URL(target, base);
  if (url.origin !== base.origin) throw new Error(`refusing to send the API key to ${url.origin}`);
  const headers = { Authorization: `Bearer ${config.key}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const where = `${method} ${url.pathname}${url.search}`;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(config.timeoutMs),
    });
  } catch (error) {
    const cause = error.cause?.code ?? error.cause?.message ?? error.name;
    throw new Error(`${where} got no answer: ${error.message} (${cause})`);
  }
  statuses.push(response.status);
  if (!response.ok) {
    const text = await response.text();
    let code;
    try {
      code = JSON.parse(text).code;
    } catch {
      code = undefined;
    }
    const retry = response.headers.get("Retry-After");
    const detail = `${text.slice(0, 300)}${retry ? ` (Retry-After: ${retry})` : ""}`;
    throw new ProxyError(response.status, code, `${where} answered ${response.status}: ${detail}`);
  }
  return response;
}

// Every page of a collection: the records of each (a page of one record is an object, not a list of one).
export async function* pages(config, path, statuses = []) {
  let page = path;
  while (page !== null) {
    const response = await lk(config, "GET", page, undefined, statuses);
    const body = await response.json();
    yield [body.Item ?? []].flat();
    page = nextPage(response.headers.get("Link"), config.url);
  }
}

// Set the quantity on hand of one item in one shop, then read it back with its ItemShops.
export async function setStock(config, { itemID, shopID, qoh }, statuses = []) {
  const path = `Item/${encodeURIComponent(itemID)}.json`;
  await lk(config, "PUT", path, { ItemShops: { ItemShop: { shopID, qoh } } }, statuses);
  const relations = encodeURIComponent(JSON.stringify(["ItemShops"]));
  const read = await (await lk(config, "GET", `${path}?load_relations=${relations}`, undefined, statuses)).json();
  const row = [read.Item?.ItemShops?.ItemShop ?? []].flat().find((shop) => Number(shop.shopID) === shopID);
  return row === undefined ? null : Number(row.qoh);
}

function configure() {
  const url = setting("LK_URL");
  let parsed;
  try {
    parsed = new URL(url.endsWith("/") ? url : `${url}/`);
  } catch {
    throw new UsageError("LK_URL is not a URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new UsageError("LK_URL must be http(s)");
  return {
    url: parsed.href,
    key: setting("LK_KEY"),
    connection: String(count("LK_CONNECTION", undefined, 1)),
    limit: count("LK_LIMIT", "100", 1),
    qoh: count("LK_QOH", undefined, 0),
    item: setting("LK_ITEM", ""),
    shop: count("LK_SHOP", "1", 1),
    timeoutMs: count("LK_TIMEOUT_S", "120", 1) * 1000,
  };
}

async function main() {
  const config = configure();
  const statuses = [];
  const items = [];
  let pageCount = 0;
  for await (const records of pages(config, `Item.json?limit=${config.limit}`, statuses)) {
    pageCount += 1;
    items.push(...records.map((record) => record.itemID));
  }
  const itemID = config.item || items.at(-1);
  if (itemID === undefined) throw new Error("the account has no items to update");
  const readBack = await setStock(config, { itemID, shopID: config.shop, qoh: config.qoh }, statuses);
  if (readBack !== config.qoh) {
    throw new Error(`item ${itemID} shop ${config.shop}: set qoh ${config.qoh}, read back ${readBack}`);
  }
  const updated = { itemID: String(itemID), shopID: config.shop, qoh: config.qoh, readBack };
  return { items, pages: pageCount, updated, statuses };
}

function redact(text) {
  const key = process.env.LK_KEY;
  return key ? String(text).split(key).join("<LK_KEY>") : String(text);
}

// Run as a script (not imported for its functions); the main module's URL is its real path, links resolved.
const invoked = process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
if (invoked) {
  main().then(
    (result) => {
      process.stdout.write(`${redact(JSON.stringify(result))}\n`);
    },
    (error) => {
      process.stderr.write(`${NAME}: ${redact(error instanceof Error ? error.message : error)}\n`);
      process.exitCode = error instanceof UsageError ? 2 : 1;
    },
  );
}
