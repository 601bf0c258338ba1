"""The merchant's clicks, scripted: open a connect link and press the confirm page's one button.

For the demo and for tests that drive the connect flow over HTTP without a real browser. The client keeps
its cookies, as a browser does: the confirm form's CSRF token only passes with the cookie its page set.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from ..connect import START_PATH

if TYPE_CHECKING:
    import httpx2

_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def confirm_fields(page: str) -> dict[str, str]:
    """The hidden fields of a confirm page's form (``session`` and ``csrf``)."""
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


def continue_to_lightspeed(browser: httpx2.Client, link: str) -> httpx2.Response:
    """GET ``link`` (the confirm page) and POST its form. With ``follow_redirects`` the answer is the page
    the flow ends on; without, the 303 to Lightspeed. A link that is refused answers its GET's page."""
    page = browser.get(link)
    if page.status_code != 200:
        return page
    return browser.post(page.url.join(START_PATH), data=confirm_fields(page.text))


__all__ = ["confirm_fields", "continue_to_lightspeed"]
