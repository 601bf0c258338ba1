"""One-time links: a GET shows a confirm page and changes nothing; only its CSRF-protected POST uses the link.

Mail and chat scanners (Outlook Safe Links, Slack previews) fetch every link; a forwarded link must say
whose store it connects. A site must not be able to make a visitor's browser use a link (login CSRF).
"""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.conftest import FakeClock
from tests.security.conftest import Flow, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key

CONTINUE = "Continue to Lightspeed"


def set_cookies(answer: httpx2.Response) -> dict[str, str]:
    """Each Set-Cookie of ``answer``, by cookie name: the raw header value."""
    found: dict[str, str] = {}
    for header in answer.headers.get_list("set-cookie"):
        [name] = SimpleCookie(header).keys()
        found[name] = header
    return found


def test_a_scanners_gets_change_nothing_and_the_merchants_click_then_connects(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    link = app_server.link("merchant-1")
    with httpx2.Client(timeout=10) as scanner:
        for _ in range(3):
            preview = scanner.get(link)
            assert preview.status_code == 200 and CONTINUE in preview.text
        assert scanner.head(link).status_code == 200

    _, fields = flows["merchant"].confirm_page(link)  # the merchant's own click, after the scanner's
    answer = flows["merchant"].post_confirm(fields)
    assert answer.status_code == 303
    finished = flows["merchant"].browser.get(httpx2.get(answer.headers["location"], timeout=10).headers["location"])

    assert finished.status_code == 200 and "Connected" in finished.text
    [connection] = app_server.client.get("/api/connections").json()
    assert connection["user_id"] == "merchant-1" and connection["status"] == "connected"


@sqlite_only
def test_the_confirm_page_has_one_button_and_posts_the_link_back(app_server: AppServer, flows: dict[str, Flow]) -> None:
    page, fields = flows["merchant"].confirm_page(app_server.link("merchant-1"))
    assert page.text.count("<button") == 1 and page.text.count("<form") == 1
    assert 'method="post" action="/connect-lightspeed/start"' in page.text
    assert set(fields) == {"session", "csrf"}
    assert page.headers["cache-control"] == "no-store"


@sqlite_only
def test_a_used_link_says_so_on_get(app_server: AppServer, flows: dict[str, Flow]) -> None:
    link = app_server.link("merchant-1")
    _, fields = flows["merchant"].confirm_page(link)
    assert flows["merchant"].post_confirm(fields).status_code == 303

    again = httpx2.get(link, timeout=10)
    assert again.status_code == 400 and "already used" in again.text and CONTINUE not in again.text
    second = flows["merchant"].post_confirm(fields)  # a second POST cannot use it again
    assert second.status_code in (400, 403) and "location" not in second.headers


@sqlite_only
def test_an_expired_link_says_so_on_get(app_server: AppServer, clock: FakeClock) -> None:
    link = app_server.link("merchant-1")
    clock.advance(hours=1, seconds=1)
    answer = httpx2.get(link, timeout=10)
    assert answer.status_code == 400 and "expired" in answer.text and CONTINUE not in answer.text


@sqlite_only
def test_unknown_and_incomplete_links_are_refused(app_server: AppServer) -> None:
    for query in ("?session=forged", "", "?session="):
        answer = httpx2.get(f"{app_server.url}/connect-lightspeed/start{query}", timeout=10)
        assert answer.status_code == 400, query
        assert "not valid" in answer.text or "incomplete" in answer.text, query


@sqlite_only
def test_the_post_needs_the_csrf_token_of_its_own_page_and_cookie(
    app_server: AppServer, flows: dict[str, Flow]
) -> None:
    link = app_server.link("merchant-1")
    _, fields = flows["merchant"].confirm_page(link)
    _, other = flows["merchant"].confirm_page(app_server.link("merchant-2"))  # another link's page, same browser
    refused = [
        ("no token", flows["merchant"], {"session": fields["session"]}),
        ("made-up token", flows["merchant"], {"session": fields["session"], "csrf": "0" * 64}),
        ("another link's token", flows["merchant"], {"session": fields["session"], "csrf": other["csrf"]}),
        ("a cross-site form (no cookie)", flows["attacker-site"], fields),
    ]
    for case, flow, form in refused:
        answer = flow.post_confirm(form)
        assert answer.status_code == 403 and "This form has expired" in answer.text, case
        assert "location" not in answer.headers, case

    assert httpx2.get(link, timeout=10).status_code == 200  # none of them used the link
    assert flows["merchant"].post_confirm(fields).status_code == 303


@sqlite_only
def test_cookies_are_httponly_samesite_lax_and_the_confirm_cookie_stays_on_its_path(
    app_server: AppServer, flows: dict[str, Flow]
) -> None:
    page, fields = flows["merchant"].confirm_page(app_server.link("merchant-1"))
    confirm = set_cookies(page)["lightkeeper_confirm"]
    started = flows["merchant"].post_confirm(fields)
    session = set_cookies(started)["lightkeeper_session"]

    for header in (confirm, session):
        lowered = header.lower()
        assert "httponly" in lowered and "samesite=lax" in lowered, header
    assert "path=/connect-lightspeed/start" in confirm.lower()
    assert "path=/;" in session.lower() or session.lower().endswith("path=/")


@sqlite_only
def test_the_page_names_the_app_and_the_label_as_text(serve_app: ServeApp, flows: dict[str, Flow]) -> None:
    with serve_app(LIGHTKEEPER_API_KEY=new_api_key(), LIGHTKEEPER_APP_NAME="Acme <Inventory> & Co") as server:
        labelled = httpx2.get(server.link("u-1", label='<script>alert("x")</script> Store'), timeout=10).text
        plain = httpx2.get(server.link("merchant-42"), timeout=10).text

    assert "Acme &lt;Inventory&gt; &amp; Co" in labelled and "<Inventory>" not in labelled
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Store" in labelled and "<script>" not in labelled
    assert '<strong class="label">merchant-42</strong>' in plain  # no label: the user id


@sqlite_only
def test_labels_are_checked_like_user_ids(app_server: AppServer) -> None:
    for label in ["x" * 201, "a\x00b"]:
        answer = app_server.client.post("/api/connect-sessions", json={"user_id": "u", "label": label})
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", repr(label[:5])
    assert app_server.client.post("/api/connect-sessions", json={"user_id": "u", "label": "x" * 200}).status_code == 201


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_get_of_the_connect_page_and_callback_need_their_cookie(app_server: AppServer) -> None:
    """Without the session cookie, no page shows anyone's connections."""
    assert httpx2.get(f"{app_server.url}/connect-lightspeed", timeout=10).status_code == 401
