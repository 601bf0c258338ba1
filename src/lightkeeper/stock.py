"""update-inventory-stock: validate stock updates (single, CSV, JSON), then send them one by one.

The whole input is checked before anything is sent, so bad input changes nothing at Lightspeed. While
sending, a failed row says why and the others go on, except a persistent 401, which ends the batch:
every further row would fail the same way. Each row waits for room in the account's shared bucket up to
``api.STOCK_MAX_WAIT_S`` (a minute, never less than ``PROXY_MAX_WAIT_S``), longer than a request path may: a batch
sends one row at a time, so waiting piles nothing up, and a row refused is a row to send again by hand. A row
that would wait longer, or meets a second 429, fails as ``RateLimited`` and the batch goes on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import AccessDenied, ConnectionExpired, InputError, LightkeeperError

if TYPE_CHECKING:  # checking input needs no HTTP or database code: bad input is refused fast
    from .client import Lightspeed

CSV_COLUMNS = ("item_id", "shop_id", "qoh")


@dataclass(frozen=True)
class StockUpdate:
    line: int
    item_id: int
    qoh: int
    shop_id: int | None = None
    item_shop_id: int | None = None


@dataclass
class RowResult:
    line: int
    item_id: int
    status: str  # "done" | "failed" | "not_sent"
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {"line": self.line, "item_id": self.item_id, "status": self.status, "error": self.error}


@dataclass
class BatchResult:
    rows: list[RowResult] = field(default_factory=list)
    stopped: str | None = None  # why the batch ended early

    @property
    def done(self) -> int:
        return sum(row.status == "done" for row in self.rows)

    @property
    def failed(self) -> int:
        return sum(row.status != "done" for row in self.rows)

    def public(self) -> dict[str, Any]:
        """The ``--json`` document: ``{"total", "done", "failed", "rows"}`` (a row not sent says why)."""
        document = {"total": len(self.rows), "done": self.done, "failed": self.failed}
        return document | {"rows": [row.public() for row in self.rows]}


def parse_csv(text: str) -> list[StockUpdate]:
    """Rows of ``item_id,shop_id,qoh``; every problem is reported with its line number, all at once."""
    reader = csv.DictReader(io.StringIO(text))
    try:
        updates, problems = _rows(reader)
    except csv.Error as exc:  # e.g. a NUL byte, or a quote left open at the end of the file
        raise InputError(f"line {reader.line_num}: not a readable CSV line ({exc})") from None
    if problems:
        raise InputError("; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))
    if not updates:
        raise InputError("the file has no rows to send")
    return updates


def _rows(reader: csv.DictReader[str]) -> tuple[list[StockUpdate], list[str]]:
    missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise InputError(
            f"line 1: the header must have the columns {', '.join(CSV_COLUMNS)} (missing {', '.join(missing)})"
        )
    updates, problems = [], []
    for row in reader:
        line = reader.line_num
        if row.get(None):  # DictReader puts the fields beyond the header's under None
            problems.append(f"line {line}: more fields than the header has columns")
            continue
        try:
            updates.append(_update(line, row.get("item_id"), row.get("qoh"), shop_id=row.get("shop_id")))
        except InputError as exc:
            problems.append(str(exc))
    return updates, problems


def single(item_id: int, qoh: int, *, shop_id: int | None, item_shop_id: int | None) -> StockUpdate:
    if (shop_id is None) == (item_shop_id is None):
        raise InputError("give exactly one of --shop and --item-shop")
    return _update(1, str(item_id), str(qoh), shop_id=_opt(shop_id), item_shop_id=_opt(item_shop_id))


def from_json(rows: Iterable[dict[str, Any]]) -> list[StockUpdate]:
    """The API's ``updates`` list; problems are reported per row index, all at once."""
    updates, problems = [], []
    for index, row in enumerate(rows):
        try:
            updates.append(_from_mapping(index, row))
        except InputError as exc:
            problems.append(str(exc).replace("line", "row", 1))
    if problems:
        raise InputError("; ".join(problems))
    return updates


def _from_mapping(index: int, row: dict[str, Any]) -> StockUpdate:
    fields = {name: _text(row.get(name)) for name in ("item_id", "qoh", "shop_id", "item_shop_id")}
    return _update(
        index, fields["item_id"], fields["qoh"], shop_id=fields["shop_id"], item_shop_id=fields["item_shop_id"]
    )


def send(
    client: Lightspeed, updates: list[StockUpdate], *, progress: Callable[[RowResult], None] | None = None
) -> BatchResult:
    """Send each update in order; the result has a line per input row."""
    result = BatchResult()
    for update in updates:
        if result.stopped is None:
            row, result.stopped = _send_one(client, update)
        else:
            row = _not_sent(update, result.stopped)
        result.rows.append(row)
        if progress is not None:
            progress(row)
    return result


def _send_one(client: Lightspeed, update: StockUpdate) -> tuple[RowResult, str | None]:
    """The row's result, and why the batch must stop if every further row would fail the same way."""
    try:
        client.set_stock(
            item_id=update.item_id, qoh=update.qoh, shop_id=update.shop_id, item_shop_id=update.item_shop_id
        )
    except AccessDenied as exc:
        return _failed(update, f"401: {exc}"), "stopped after a persistent 401 from Lightspeed"
    except ConnectionExpired as exc:
        return _failed(update, str(exc)), "stopped: the connection needs the merchant to reconnect"
    except LightkeeperError as exc:
        return _failed(update, str(exc)), None
    return RowResult(update.line, update.item_id, "done"), None


def _failed(update: StockUpdate, error: str) -> RowResult:
    return RowResult(update.line, update.item_id, "failed", error)


def _not_sent(update: StockUpdate, why: str) -> RowResult:
    return RowResult(update.line, update.item_id, "not_sent", why)


def _update(
    line: int, item_id: str | None, qoh: str | None, *, shop_id: str | None = None, item_shop_id: str | None = None
) -> StockUpdate:
    item = _positive(line, "item_id", item_id)
    quantity = _integer(line, "qoh", qoh)
    if quantity < 0:
        raise InputError(f"line {line}: qoh must not be negative (got {quantity})")
    shop = _positive(line, "shop_id", shop_id, allow_zero=False) if shop_id not in (None, "") else None
    item_shop = _positive(line, "item_shop_id", item_shop_id) if item_shop_id not in (None, "") else None
    if (shop is None) == (item_shop is None):
        raise InputError(f"line {line}: give exactly one of shop_id and item_shop_id")
    return StockUpdate(line, item, quantity, shop, item_shop)


def _integer(line: int, name: str, value: str | None) -> int:
    text = (value or "").strip()
    try:
        return int(text)
    except ValueError:
        raise InputError(f"line {line}: {name} must be a whole number (got {text[:20]!r})") from None


def _positive(line: int, name: str, value: str | None, *, allow_zero: bool = False) -> int:
    number = _integer(line, name, value)
    if number < 0 or (number == 0 and not allow_zero):
        raise InputError(f"line {line}: {name} must be a positive number (got {number})")
    return number


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None if value is None else "not-a-number"
    return str(value)


__all__ = [
    "CSV_COLUMNS",
    "BatchResult",
    "InputError",
    "RowResult",
    "StockUpdate",
    "from_json",
    "parse_csv",
    "send",
    "single",
]
