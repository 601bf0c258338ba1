"""Security headers on every answer.

Pages cannot be framed (clickjacking), leak no ``Referer`` (connect links carry a secret in their URL),
run no script and load nothing from elsewhere; nothing is cached, since pages show a merchant's
connections and the token route answers with an access token.

``form-action`` names Lightspeed's OAuth origin besides our own: the confirm page's POST is answered with a
redirect to Lightspeed's consent page, and Chromium applies ``form-action`` to that redirect too.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings

BASE_TEMPLATE = Path(__file__).parent / "templates" / "base.html"
#: The operator dashboard's pages have a stylesheet of their own (wider pages, tables), allowed by its hash too.
DASHBOARD_TEMPLATE = BASE_TEMPLATE.with_name("dashboard_base.html")
# FastAPI's interactive docs load their script from a CDN: they keep every header but the script policy.
DOCS_PATHS = ("/docs", "/redoc")


def style_hash(template: Path = BASE_TEMPLATE) -> str:
    """The CSP source of the pages' one inline ``<style>`` (static text in ``base.html``)."""
    found = re.search(r"<style>(.*?)</style>", template.read_text(encoding="utf-8"), re.DOTALL)
    if found is None:
        raise RuntimeError(f"{template} has no <style> block: the pages' CSP needs one")
    digest = hashlib.sha256(found.group(1).encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def content_security_policy(settings: Settings, form_origins: Sequence[str] = ()) -> str:
    """The pages' policy; ``form_origins``: the consent pages' origins of the providers in use (default: the
    R-Series OAuth origin)."""
    parts = urlsplit(settings.lightspeed_oauth_url)
    lightspeed = " ".join(dict.fromkeys(form_origins)) or f"{parts.scheme}://{parts.netloc}"
    return "; ".join(
        [
            "default-src 'none'",
            f"style-src {style_hash()} {style_hash(DASHBOARD_TEMPLATE)}",
            f"form-action 'self' {lightspeed}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def security_headers(settings: Settings, form_origins: Sequence[str] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings, form_origins),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, form_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.headers = security_headers(settings, form_origins)
        self.docs_headers = {**self.headers, "Content-Security-Policy": "frame-ancestors 'none'"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = self.docs_headers if scope["path"].startswith(DOCS_PATHS) else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    headers[name] = value  # ours win: no route may weaken them
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["SecurityHeadersMiddleware", "content_security_policy", "security_headers", "style_hash"]
