"""What the real CLI prints of text from outside: control characters escaped in every
human-readable output (a webhook's type and subject, a target's or a bridge's answer, a
polled item), and secrets in URLs masked (a user-info token, `code=`, a webhook URL's path).
"""

from __future__ import annotations

import asyncio
import json

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.events import attribute_text, now_ms
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli, serve_app, wait_until

# A window title (OSC 0), a hyperlink (OSC 8), clearing the screen, a carriage return and a
# right-to-left override: each would act on the terminal if printed raw.
# (Short: the tables must not cut it.)
EVIL = "\x1b]0;t\x07\x1b]8;;h\x07\x1b[2J\r\u202e[b]y"
SHOWN = "\\x1b]0;t\\x07\\x1b]8;;h\\x07\\x1b[2J\\r\\u202e[b]y"
# The same as an event's type or subject holds it: each control character is U+FFFD there
# (`attribute_text`); the right-to-left override, a format character, stays and is escaped.
STORED = "\ufffd]0;t\ufffd\ufffd]8;;h\ufffd\ufffd[2J\ufffd\\u202e[b]y"


def _assert_escaped(output: str, *shown: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\r" not in output
    assert "\u202e" not in output
    # Shown as written (or stored), escaped, and not read as rich markup (`[b]`).
    for text in shown or (SHOWN,):
        assert text in output, (text, output)


def _hostile_app() -> Starlette:
    async def hook(request: Request) -> Response:
        await request.body()
        return Response(f"refused {EVIL}", status_code=500)

    polls = []

    async def items(request: Request) -> Response:
        polls.append(1)  # a new item at every poll: a dry run after the daemon's finds one
        return JSONResponse({"items": [{"id": f"{EVIL}{len(polls)}"}]})

    async def answer(request: Request) -> Response:
        await request.body()
        return JSONResponse({"error": EVIL}, status_code=401)

    return Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/items", items),
            Route("/answer", answer, methods=["POST"]),
        ]
    )


def test_every_human_readable_output_escapes_control_characters(daemon) -> None:
    with serve_app(_hostile_app()) as peer:
        proc = daemon(f"""
            database: outside.db
            sources:
              orders:
                webhook: {{verify: none, allow_unsigned: true, id: body.id, type: body.type,
                           subject: body.subject}}
              items:
                poll: {{url: "{peer}/items", every: 1h, items: items, id: id}}
            targets:
              sink: {{url: "{peer}/hook", secrets: "{TEST_SECRET}", retry: [0.1s],
                     circuit: {{failures: 100}}}}
            """)
        body = {"id": "evt-1", "type": f"order.{EVIL}", "subject": EVIL}
        assert httpx.post(proc.url + "/hooks/orders", json=body).status_code == 202
        config = str(proc.config_path)

        def attempted() -> bool:
            done = run_cli("deliveries", "-c", config, "--json")
            return any(d["last_code"] == 500 for d in json.loads(done.stdout or "[]"))

        wait_until(attempted, timeout_s=20)
        (event_id,) = [e["id"] for e in json.loads(run_cli("events", "-c", config, "--json").stdout)
                       if e["source"] == "orders"]  # fmt: skip
        outputs = {
            "events": run_cli("events", "-c", config),
            "event show": run_cli("event", "show", event_id, "-c", config),
            "poll --dry-run": run_cli("poll", "items", "--dry-run", "-c", config),
            "send --url": run_cli("send", "orders", "--url", f"{peer}/answer", "-c", config),
        }
        # Events' types and subjects (a webhook's, a polled item's key) as stored; what a target
        # or a bridge answered as written.
        # (The attempt's answer is on one line there: its carriage return is a space.)
        answer = SHOWN.replace("\\r", " ")
        shown = {"events": [STORED], "event show": [STORED, f"refused {answer}"],
                 "poll --dry-run": [STORED], "send --url": [SHOWN]}  # fmt: skip
        for name, done in outputs.items():
            assert done.args and name, done.stderr
            _assert_escaped(done.stdout + done.stderr, *shown[name])
        # The JSON of the same is JSON: its escapes are JSON's.
        as_json = run_cli("event", "show", event_id, "-c", config, "--json").stdout
        assert json.loads(as_json)["event"]["subject"] == attribute_text(EVIL)


def test_status_and_targets_escape_what_the_database_holds(write_config, tmp_path) -> None:
    # Another replica on the database named itself, and a target was disabled with a reason.
    store = SQLiteStore(tmp_path / "shared.db", replica_id=f"r{EVIL}")
    store.open()
    try:
        asyncio.run(store.heartbeat(now_ms(), now_ms()))
        asyncio.run(store.disable_target("sink", f"by {EVIL}", now_ms()))
    finally:
        store.close()
    path = write_config(f"""
        database: shared.db
        sources:
          orders: {{webhook: {{verify: none, allow_unsigned: true, id: body.id}}}}
        targets:
          sink: {{url: "http://127.0.0.1:9/hook", secrets: "{TEST_SECRET}"}}
        """)
    for command in ("status", "targets"):
        done = run_cli(command, "-c", str(path))
        assert done.returncode == 0, done.stderr
        _assert_escaped(done.stdout)


SLACK = "https://hooks.slack.com/services/T0AAAA1BB/B0CCCC2DD/abcdefGHIJKLmnopQRSTuvwx"
RANDOM_KEY = "Zx81KqP0mB3nV7cR2tY9wL4s"
GITHUB_TOKEN = "ghp_abcdefghijklmnopqrstuvwx0123456789"


def test_check_and_targets_mask_tokens_as_user_codes_and_secret_paths(write_config) -> None:
    path = write_config(f"""
        database: masked.db
        sources:
          issues:
            poll: {{url: "https://{GITHUB_TOKEN}@api.example.com/items?code=oauth-code-1234&page=2",
                    every: 1m, items: items, id: id}}
        targets:
          slack: {{url: "{SLACK}", secrets: "{TEST_SECRET}"}}
          random: {{url: "https://hooks.example.com/in/{RANDOM_KEY}",
                   secrets: "{TEST_SECRET}"}}
        """)
    runs = [
        run_cli("check", "-c", str(path)),
        run_cli("check", "-c", str(path), "--json"),
        run_cli("targets", "-c", str(path)),
        run_cli("targets", "-c", str(path), "--json"),
    ]
    for done in runs:
        assert done.returncode == 0, done.stderr
        shown = done.stdout + done.stderr
        for secret in (GITHUB_TOKEN, "oauth-code-1234", "abcdefGHIJKLmnopQRSTuvwx",
                       RANDOM_KEY):  # fmt: skip
            assert secret not in shown, (done.args, secret)
        assert "https://hooks.slack.com/services/***" in shown
    check = runs[0].stdout
    assert "https://***@api.example.com/items?code=***&page=2" in check
