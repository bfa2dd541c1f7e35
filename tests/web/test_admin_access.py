"""Who may use the admin pages, against the real daemon: the login, the session cookie,
CSRF and Origin checks, the bearer token for scripts, and the headers of every page."""

from __future__ import annotations

import re

import httpx
import pytest

from bridge.events import now_ms
from bridge.web.session import COOKIE, Session, Sessions
from tests.helpers import serve_app, wait_until
from tests.web.admin_parts import TOKEN, Receiver, config_text, csrf_of, log_in

PAGES = ("/admin/events", "/admin/targets", "/admin/sources", "/admin/login", "/")


@pytest.fixture
def bridge_url(daemon) -> str:
    with serve_app(Receiver().app()) as peer:
        yield daemon(config_text(peer)).url


def test_every_page_sends_the_security_headers(bridge_url: str) -> None:
    with log_in(bridge_url) as client:
        for path in PAGES:
            page = client.get(path)
            assert page.status_code == 200, path
            policy = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy, path
            assert "script-src 'sha256-" in policy, path
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "no-referrer"


def test_a_wrong_token_is_refused_and_the_right_one_sets_a_strict_cookie(bridge_url: str) -> None:
    with httpx.Client(base_url=bridge_url, timeout=10) as client:
        wrong = client.post("/admin/login", data={"token": "guess"})
        assert wrong.status_code == 401 and "not the admin token" in wrong.text
        assert COOKIE not in wrong.cookies
        assert client.get("/admin/events").status_code == 401
        # A browser is sent to the login form, and back afterwards.
        asked = client.get("/admin/targets", headers={"accept": "text/html"})
        assert asked.status_code == 303
        assert asked.headers["location"] == "/admin/login?next=%2Fadmin%2Ftargets"
        right = client.post("/admin/login", data={"token": TOKEN, "next": "/admin/targets"})
        assert right.status_code == 303 and right.headers["location"] == "/admin/targets"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        assert client.get("/admin/events").status_code == 200
        # Behind a TLS-terminating proxy the cookie is Secure.
        proxied = client.post(
            "/admin/login", data={"token": TOKEN}, headers={"x-forwarded-proto": "https"}
        )
        assert "Secure" in proxied.headers["set-cookie"]
        # Only a path of this server is a place to go after the login.
        away = client.post("/admin/login", data={"token": TOKEN, "next": "//evil.example/x"})
        assert away.headers["location"] == "/admin/events"


def test_an_expired_or_forged_cookie_is_refused(bridge_url: str) -> None:
    sessions = Sessions.for_token(TOKEN)
    expired = sessions.cookie_value(Session("old-session", now_ms() - 1_000))
    forged = Sessions.for_token("another token").cookie_value(Session("x", now_ms() + 60_000))
    valid = sessions.cookie_value(Session("fresh", now_ms() + 60_000))
    for value, status in ((expired, 401), (forged, 401), (valid + "x", 401), (valid, 200)):
        with httpx.Client(base_url=bridge_url, cookies={COOKIE: value}, timeout=10) as client:
            assert client.get("/admin/events").status_code == status, value
            assert client.get("/api/status").status_code == status, value


def test_a_cross_origin_post_is_refused_and_origin_null_needs_the_csrf_token(
    bridge_url: str,
) -> None:
    with log_in(bridge_url) as client:
        csrf = csrf_of(client.get("/admin/targets").text)
        form = {"csrf": csrf, "name": "sink"}
        evil = client.post("/admin/target/disable", data=form,
                           headers={"origin": "http://evil.example"})  # fmt: skip
        assert evil.status_code == 403 and "another origin" in evil.text
        site = client.post("/admin/target/disable", data=form,
                           headers={"sec-fetch-site": "cross-site"})  # fmt: skip
        assert site.status_code == 403
        no_token = client.post("/admin/target/disable", data={"name": "sink"},
                               headers={"origin": "null"})  # fmt: skip
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        bad_token = client.post("/admin/target/disable", data={"csrf": "x" * 43, "name": "sink"})
        assert bad_token.status_code == 403
        targets = client.get("/admin/targets").text
        assert "Disable</button>" in targets  # nothing was changed so far
        # The page's own form under no-referrer: Origin null, with the token: it passes.
        own = client.post("/admin/target/disable", data=form, headers={"origin": "null"})
        assert own.status_code == 303
        assert "Enable</button>" in client.get("/admin/targets").text
        own_site = {"origin": bridge_url, "sec-fetch-site": "same-origin"}
        same = client.post("/admin/target/enable", data=form, headers=own_site)
        assert same.status_code == 303
        # A GET changes nothing: the buttons' routes take only POST.
        assert client.get("/admin/target/enable").status_code == 405


def test_the_bearer_token_keeps_working_for_scripts(bridge_url: str) -> None:
    bearer = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}
    assert httpx.get(bridge_url + "/api/status", headers=bearer).status_code == 200
    assert httpx.get(bridge_url + "/admin/events", headers=bearer).status_code == 200
    # No CSRF token needed: a browser cannot send this header across origins.
    done = httpx.post(bridge_url + "/admin/target/redeliver-dead", data={"name": "sink"},
                      headers=bearer)  # fmt: skip
    assert done.status_code == 200 and done.json() == {"queued": 0, "circuit": []}
    polled = httpx.post(bridge_url + "/admin/source/poll", data={"name": "items"}, headers=bearer)
    assert polled.json() == {"queued": 1}
    unknown = httpx.post(bridge_url + "/admin/source/poll", data={"name": "nope"}, headers=bearer)
    assert unknown.status_code == 400
    wrong = {"authorization": "Bearer wrong"}
    assert httpx.post(bridge_url + "/admin/target/disable", data={"name": "sink"},
                      headers=wrong).status_code == 401  # fmt: skip


def test_logout_ends_the_session(bridge_url: str) -> None:
    with log_in(bridge_url) as client:
        cookie = client.cookies[COOKIE]
        csrf = csrf_of(client.get("/admin/events").text)
        out = client.post("/admin/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert "Max-Age=0" in out.headers["set-cookie"] or "expires=" in out.headers["set-cookie"]
    # The old cookie, kept by someone, no longer works.
    with httpx.Client(base_url=bridge_url, cookies={COOKIE: cookie}, timeout=10) as again:
        assert again.get("/admin/events").status_code == 401


def test_without_a_token_a_loopback_browser_gets_a_session_and_still_needs_csrf(daemon) -> None:
    receiver = Receiver()
    with serve_app(receiver.app()) as peer:
        proc = daemon(config_text(peer, token=None))
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            page = client.get("/admin/targets")
            assert page.status_code == 200 and COOKIE in client.cookies
            assert "Log out" not in page.text  # nothing to log out of
            refused = client.post("/admin/target/disable", data={"name": "sink"})
            assert refused.status_code == 403
            done = client.post("/admin/target/disable",
                               data={"name": "sink", "csrf": csrf_of(page.text)})  # fmt: skip
            assert done.status_code == 303
            assert client.get("/admin/login").headers["location"] == "/admin/events"
        wait_until(lambda: re.search(r"admin: session \S+ disabled target sink", proc.log()), 5)
        assert TOKEN not in proc.log()
