"""Who may reach the admin pages and the API, against the real daemon: no way in by DNS
rebinding (the `Host` rule and `server.allowed_hosts`) or through a reverse proxy without a
token, a logout that outlasts a restart, wrong tokens throttled per client and overall, and a
cursor out of range answered 400."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bridge.web.session import COOKIE
from bridge.web.throttle import OVERALL, PER_CLIENT
from tests.helpers import free_port, run_cli, serve_app
from tests.web.admin_parts import TOKEN, Receiver, config_text, csrf_of, log_in

READ_ROUTES = ("/", "/api/status", "/admin/events", "/admin/targets", "/admin/sources")
REBOUND = "rebind.attacker.example"


def _with_server_keys(text: str, keys: str) -> str:
    """`config_text` with more keys under `server:`."""
    return text.replace("server:\n", f"server:\n{keys}", 1)


def test_without_a_token_only_loopback_host_names_are_served(daemon) -> None:
    with serve_app(Receiver().app()) as peer:
        text = _with_server_keys(config_text(peer, token=None), "  allowed_hosts: [bridge.lan]\n")
        proc = daemon(text)
        port = proc.port
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for path in READ_ROUTES:
                answer = client.get(path, headers={"Host": f"{REBOUND}:{port}"})
                assert answer.status_code == 421, path
                assert COOKIE not in answer.headers.get("set-cookie", ""), path
                assert 'name="csrf"' not in answer.text and REBOUND not in answer.text
            # A page of the rebound name cannot act either, whatever it sends.
            page = client.get("/admin/targets")
            disable = client.post(
                "/admin/target/disable",
                data={"name": "sink", "csrf": csrf_of(page.text)},
                headers={"Host": f"{REBOUND}:{port}", "Origin": f"http://{REBOUND}:{port}"},
            )
            assert disable.status_code == 421
            assert client.get("/api/status").json()["targets"][0]["health"] != "disabled"
            poll = client.post("/api/poll/items", headers={"Host": REBOUND})
            assert poll.status_code == 421
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}",
                         "bridge.lan", f"bridge.lan:{port}"):  # fmt: skip
                assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
            # Webhooks and health keep answering whatever the Host says.
            assert client.get("/healthz", headers={"Host": REBOUND}).status_code == 200
            hook = client.post("/hooks/orders", json={"id": "o1", "type": "order.created"},
                               headers={"Host": REBOUND})  # fmt: skip
            assert hook.status_code == 202


def test_with_a_token_allowed_hosts_is_checked_only_when_given(daemon) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with serve_app(Receiver().app()) as peer:
        open_proc = daemon(config_text(peer))
        text = config_text(peer).replace("admin.db", "listed.db")
        listed = daemon(_with_server_keys(text, "  allowed_hosts: bridge.example\n"))
        elsewhere = {**bearer, "Host": "bridge.example"}
        assert httpx.get(open_proc.url + "/api/status", headers=elsewhere).status_code == 200
        for host, status in (("bridge.example", 200), ("other.example", 421), ("127.0.0.1", 200)):
            answer = httpx.get(listed.url + "/api/status", headers={**bearer, "Host": host})
            assert answer.status_code == status, host


def test_a_bad_allowed_hosts_entry_is_one_line(write_config) -> None:
    path = write_config("server:\n  allowed_hosts: ['https://bridge.lan/']\n")
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "server.allowed_hosts" in done.stderr
    assert "is not a host name or address" in done.stderr
    assert f"{path.name}:2" in done.stderr


def test_behind_a_trusted_proxy_without_a_token_only_loopback_clients_are_served(
    daemon, write_config
) -> None:
    with serve_app(Receiver().app()) as peer:
        text = _with_server_keys(
            config_text(peer, token=None), "  trusted_proxies: [127.0.0.1/32]\n"
        )
        proc = daemon(text)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for path in ("/admin/events", "/api/status"):
                for forwarded in ({"X-Forwarded-For": "203.0.113.7"},
                                  {"Forwarded": "for=203.0.113.7"},
                                  {"X-Forwarded-For": "unknown"}):  # fmt: skip
                    answer = client.get(path, headers=forwarded)
                    assert answer.status_code == 403, (path, forwarded)
                    assert "admin_token" in answer.text
                # The proxy names a client on this machine: served.
                assert client.get(path, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
            refused = client.post("/admin/target/disable", data={"name": "sink"},
                                  headers={"X-Forwarded-For": "203.0.113.7"})  # fmt: skip
            assert refused.status_code == 403
        done = run_cli("check", "-c", str(proc.config_path))
        assert done.returncode == 0
        assert "server.trusted_proxies is set and server.admin_token is not" in done.stderr


def test_without_a_token_a_proxy_not_listed_forwards_nobody_in(daemon) -> None:
    with serve_app(Receiver().app()) as peer:
        proc = daemon(config_text(peer, token=None))
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        assert httpx.get(proc.url + "/api/status", headers=forwarded).status_code == 403
        assert httpx.get(proc.url + "/api/status").status_code == 200


def test_a_logged_out_cookie_stays_refused_after_a_restart(daemon, tmp_path: Path) -> None:
    with serve_app(Receiver().app()) as peer:
        text = config_text(peer)
        port = free_port()
        proc = daemon(text, port=port)
        with log_in(proc.url) as client:
            cookie = client.cookies[COOKIE]
            csrf = csrf_of(client.get("/admin/events").text)
            assert client.post("/admin/logout", data={"csrf": csrf}).status_code == 303
        with log_in(proc.url) as other:
            kept = other.cookies[COOKIE]  # a session that did not log out
        assert proc.terminate() == 0
        again = daemon(text, port=port)
        with httpx.Client(base_url=again.url, cookies={COOKIE: cookie}, timeout=10) as client:
            assert client.get("/admin/events").status_code == 401
        with httpx.Client(base_url=again.url, cookies={COOKIE: kept}, timeout=10) as client:
            assert client.get("/admin/events").status_code == 200


async def _post_logins(url: str, tokens: list[str], clients: list[str | None]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(token: str, forwarded_for: str | None) -> int:
            headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
            answer = await client.post("/admin/login", data={"token": token}, headers=headers)
            return answer.status_code

        return list(
            await asyncio.gather(*(one(t, c) for t, c in zip(tokens, clients, strict=True)))
        )


def test_parallel_wrong_tokens_from_one_client_are_checked_only_up_to_the_limit(daemon) -> None:
    with serve_app(Receiver().app()) as peer:
        proc = daemon(config_text(peer))
        statuses = asyncio.run(_post_logins(proc.url, ["guess"] * 40, [None] * 40))
        # Only PER_CLIENT guesses were checked (401); the rest were not (429).
        assert Counter(statuses) == {401: PER_CLIENT, 429: 40 - PER_CLIENT}
        # The right token is not checked either while the window holds the guesses.
        right = httpx.post(proc.url + "/admin/login", data={"token": TOKEN})
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        bearer = httpx.get(proc.url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 429
        assert TOKEN not in proc.log()


def test_wrong_tokens_from_many_clients_are_checked_only_up_to_the_overall_limit(daemon) -> None:
    with serve_app(Receiver().app()) as peer:
        text = _with_server_keys(config_text(peer), "  trusted_proxies: [127.0.0.1/32]\n")
        proc = daemon(text)
        clients = [f"203.0.113.{i}" for i in range(1, 41)]
        statuses = asyncio.run(_post_logins(proc.url, ["guess"] * 40, clients))
        assert Counter(statuses) == {401: OVERALL, 429: 40 - OVERALL}
        # A wrong bearer token counts as a guess too: the next client's is not checked.
        bearer = httpx.get(proc.url + "/api/status", headers={
            "Authorization": "Bearer guess", "X-Forwarded-For": "198.51.100.1"})  # fmt: skip
        assert bearer.status_code == 429


def _cursor(recorded_ms: int, event_id: str) -> str:
    raw = json.dumps([recorded_ms, event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("recorded_ms", [2**63, -(2**63) - 1, 10**30])
def test_a_cursor_out_of_range_is_a_400(daemon, recorded_ms: int) -> None:
    with serve_app(Receiver().app()) as peer:
        proc = daemon(config_text(peer, token=None))
        answer = httpx.get(proc.url + "/admin/events", params={"after": _cursor(recorded_ms, "x")})
        assert answer.status_code == 400
        assert "cursor" in answer.text
        assert "Traceback" not in proc.log()
