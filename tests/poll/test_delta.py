"""`mode: delta`: the presets microsoft-graph, google-calendar, google-drive and dropbox polling
their simulated providers (tests/poll/sync_providers.py) on 127.0.0.1 with a real store, and
a generic delta source: tokens kept with the commit, deletions in-band, a rejected token
resynced against the stored snapshot without a flood, a walk cut short losing nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.config.presets import expand
from bridge.errors import ConfigError
from bridge.poll.delta import DeltaMark
from bridge.poll.describe import describe
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store import Store
from tests.poll.sync_providers import (
    DROPBOX_TOKEN,
    GOOGLE_TOKEN,
    GRAPH_TOKEN,
    Calendar,
    DeltaSimulation,
    Drive,
    Dropbox,
    Graph,
    path_of,
)
from tests.scripted_server import Reply, Script, Seen, scripted_server

pytestmark = pytest.mark.anyio

TOKENS = {
    "microsoft-graph": GRAPH_TOKEN,
    "google-calendar": GOOGLE_TOKEN,
    "google-drive": GOOGLE_TOKEN,
    "dropbox": DROPBOX_TOKEN,
}


def config_of(poll: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump({"database": "bridge.db", "sources": {"s": {"poll": poll}}}))


class Env:
    """A poller of one delta source against one simulation; its events and requests."""

    def __init__(self, store: Store, script: Script, base: str) -> None:
        self.store, self.script, self.base = store, script, base
        self.sims: list[DeltaSimulation] = []
        self.pollers: list[Poller] = []
        self.mark = 0

    def install(self, sim: DeltaSimulation) -> Any:
        sim.install(self.script)  # type: ignore[attr-defined]
        self.sims.append(sim)
        return sim

    def make(self, poll: dict[str, Any]) -> Poller:
        poller = Poller(Runtime(config=config_of(poll), store=self.store))
        self.pollers.append(poller)
        return poller

    def preset(self, preset: str, resource: str, **keys: Any) -> Poller:
        # Graph's API URL names its version, as https://graph.microsoft.com/v1.0 does.
        api = f"{self.base}/v1.0" if preset == "microsoft-graph" else self.base
        poll = {"preset": preset, "resource": resource, "api_url": api,
                "token": TOKENS[preset], **keys}  # fmt: skip
        return self.make(poll)

    async def poll(self, ok: bool = True) -> None:
        self.mark = len(self.script.seen)
        await self.pollers[-1].poll_once("s")
        state = await self.store.load_poll_state("s")
        if ok:
            assert state.consecutive_failures == 0, state.last_error
        else:
            assert state.consecutive_failures > 0

    def requests(self) -> list[Seen]:
        with self.script.lock:
            return self.script.seen[self.mark :]

    async def changes(self) -> list[tuple[str | None, str | None]]:
        events = reversed(await self.store.list_events(source="s", limit=None))
        return [(e.change, e.subject) for e in events]

    async def mark_of(self) -> DeltaMark:
        return DeltaMark.load((await self.store.load_poll_state("s")).cursor)


@pytest.fixture
def served() -> Iterator[tuple[Script, str]]:
    with scripted_server() as pair:
        yield pair


@pytest.fixture
async def env(any_store: Store, served: tuple[Script, str]) -> AsyncIterator[Env]:
    """On SQLite and on PostgreSQL: the token is the poll state's opaque cursor in both."""
    e = Env(any_store, *served)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)
    assert [line for sim in e.sims for line in sim.refused] == [], "a request refused"


def query(seen: Seen) -> dict[str, str]:
    return dict(parse_qsl(seen.query))


# -- Microsoft Graph -------------------------------------------------------------------------


async def test_graph_users_follow_next_links_keep_the_delta_link_and_take_removed_as_deleted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    graph: Graph = env.install(Graph())
    for key in ("u1", "u2", "u3"):
        graph.data.put(key, displayName=key.upper(), mail=f"{key}@contoso.com")
    env.preset("microsoft-graph", "users")
    await env.poll()
    assert await env.changes() == [], "the first poll is a silent baseline"
    assert [query(s) for s in env.requests()] == [{}, {"$skiptoken": "full.3.2"}]
    assert (await env.mark_of()).token == f"{env.base}/v1.0/users/delta?$deltatoken=dt3"

    graph.data.put("u1", displayName="Ada")
    graph.data.put("u4", displayName="U4")
    graph.data.remove("u2")
    await env.poll()
    assert await env.changes() == [("updated", "u1"), ("created", "u4"), ("deleted", "u2")]
    assert query(env.requests()[0]) == {"$deltatoken": "dt3"}
    # Graph sent only the changed property of u1: merged over the stored user.
    updated = (await env.store.list_events(source="s", limit=None))[-1]
    assert updated.data == {
        "object": {"id": "u1", "displayName": "Ada", "mail": "u1@contoso.com"},
        "previous_attributes": {"displayName": "U1"},
    }
    assert len(env.requests()) == 2  # three changes, two to a page

    await env.poll()  # nothing changed upstream: nothing new
    assert len(await env.changes()) == 3
    assert [query(s) for s in env.requests()] == [{"$deltatoken": "dt6"}]
    assert "dt6" not in caplog.text and "deltatoken" not in caplog.text


async def test_graph_rejected_token_resyncs_against_the_snapshot_without_a_flood(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    graph: Graph = env.install(Graph())
    for n in range(1, 6):
        graph.data.put(f"u{n}", displayName=f"U{n}")
    env.preset("microsoft-graph", "users")
    await env.poll()
    graph.data.put("u2", displayName="changed")
    graph.data.remove("u4")
    graph.data.put("u6", displayName="new")
    graph.data.expired_below = graph.data.seq  # the kept token is too old now
    caplog.set_level(logging.WARNING, "bridge.poll")
    await env.poll()
    # A full walk, diffed against the stored snapshot: only what really changed.
    assert sorted(await env.changes()) == [("created", "u6"), ("deleted", "u4"),
                                           ("updated", "u2")]  # fmt: skip
    assert query(env.requests()[0]) == {"$deltatoken": "dt5"}
    assert query(env.requests()[1]) == {}, "the resync starts without a token"
    assert "rejected the delta token (HTTP 410)" in caplog.text
    assert "dt5" not in caplog.text
    mark = await env.mark_of()
    assert mark.resyncs == 1 and mark.token is not None and mark.token.endswith("dt8")
    await env.poll()
    assert [query(s) for s in env.requests()] == [{"$deltatoken": "dt8"}]


async def test_a_failed_page_commits_nothing_and_the_next_walk_loses_nothing(env: Env) -> None:
    graph: Graph = env.install(Graph())
    for n in range(1, 4):
        graph.data.put(f"u{n}", displayName=f"U{n}")
    env.preset("microsoft-graph", "users")
    await env.poll()
    for n in range(4, 9):
        graph.data.put(f"u{n}", displayName=f"U{n}")
    graph.fail_page = graph.walk_pages + 1  # the walk's second page answers a 500
    await env.poll(ok=False)
    assert await env.changes() == [], "a walk cut short commits nothing"
    assert (await env.mark_of()).token == f"{env.base}/v1.0/users/delta?$deltatoken=dt3"
    await env.poll()
    assert await env.changes() == [("created", f"u{n}") for n in range(4, 9)]
    await env.poll()
    assert len(await env.changes()) == 5, "nothing invented by walking again"


async def test_a_token_rejected_mid_walk_resyncs_from_scratch(env: Env) -> None:
    graph: Graph = env.install(Graph())
    for n in range(1, 4):
        graph.data.put(f"u{n}", displayName=f"U{n}")
    env.preset("microsoft-graph", "users")
    await env.poll()
    graph.data.remove("u1")
    for n in range(4, 8):
        graph.data.put(f"u{n}", displayName=f"U{n}")
    graph.reject_page = graph.walk_pages + 1  # the second page's link is rejected
    await env.poll()
    assert sorted(await env.changes()) == [("created", f"u{n}") for n in range(4, 8)] + [
        ("deleted", "u1")
    ]
    assert query(env.requests()[2]) == {}, "the resync starts again without a token"
    assert (await env.mark_of()).resyncs == 1


async def test_a_rejected_full_walk_is_a_clear_fault_and_stores_nothing(env: Env) -> None:
    graph: Graph = env.install(Graph())
    graph.data.put("u1", displayName="U1")
    env.preset("microsoft-graph", "users")
    graph.reject_page = 0
    await env.poll(ok=False)
    state = await env.store.load_poll_state("s")
    assert state.last_error == (
        "s: the upstream rejected a full walk, which sends no token (HTTP 410)"
    )
    assert state.cursor is None and not state.baselined
    await env.poll()
    assert (await env.mark_of()).token is not None


# -- Google Calendar -------------------------------------------------------------------------


async def test_google_calendar_sends_sync_and_page_tokens_and_cancelled_is_deleted(
    env: Env,
) -> None:
    cal: Calendar = env.install(Calendar())
    for key in ("e1", "e2", "e3"):
        cal.data.put(key, summary=key, etag=f'"{key}-1"', status="confirmed")
    env.preset("google-calendar", "events")
    await env.poll()
    assert [query(s) for s in env.requests()] == [
        {"maxResults": "250"},
        {"maxResults": "250", "pageToken": "full~3~2"},
    ]
    cal.data.put("e1", summary="moved", etag='"e1-2"')
    cal.data.remove("e3")
    await env.poll()
    assert await env.changes() == [("updated", "e1"), ("deleted", "e3")]
    assert query(env.requests()[0]) == {"maxResults": "250", "syncToken": "CPD3"}

    cal.data.put("e4", summary="new", etag='"e4-1"', status="confirmed")
    cal.data.remove("e2")
    cal.data.expired_below = cal.data.seq
    await env.poll()  # 410 fullSyncRequired: a full sync, diffed
    assert (await env.changes())[2:] == [("created", "e4"), ("deleted", "e2")]
    assert [s for s in env.requests() if "syncToken" not in query(s)], "a full sync was made"
    assert (await env.mark_of()).resyncs == 1


async def test_a_configured_error_code_starts_the_resync(env: Env) -> None:
    cal: Calendar = env.install(Calendar())
    cal.data.put("e1", summary="one", etag='"1"', status="confirmed")
    env.preset("google-calendar", "events", delta={"resync_on": ["fullSyncRequired"]})
    await env.poll()
    cal.data.put("e2", summary="two", etag='"2"', status="confirmed")
    cal.data.expired_below = cal.data.seq
    await env.poll()
    assert await env.changes() == [("created", "e2")]
    assert (await env.mark_of()).resyncs == 1


# -- Google Drive ----------------------------------------------------------------------------


async def test_google_drive_starts_from_the_start_page_token_and_removed_is_deleted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    drive: Drive = env.install(Drive())
    drive.data.put("f1", name="a.txt")
    env.preset("google-drive", "changes")
    await env.poll()
    assert [path_of(s) for s in env.requests()] == ["/drive/v3/changes/startPageToken"]
    assert (await env.mark_of()).token == "1"
    drive.data.put("f2", name="b.txt")
    drive.data.put("f1", name="renamed.txt")
    drive.data.remove("f2")
    drive.data.put("f3", name="c.txt")
    await env.poll()
    # f2 was created and removed between two polls: never seen, so no event at all.
    assert await env.changes() == [("created", "f1"), ("created", "f3")]
    assert query(env.requests()[0])["pageToken"] == "1"
    drive.data.remove("f3")
    await env.poll()
    assert (await env.changes())[-1] == ("deleted", "f3")

    drive.data.put("f4", name="d.txt")
    drive.data.expired_below = drive.data.seq
    caplog.set_level(logging.WARNING)
    await env.poll()  # a start token lists nothing: a gap, said so, no invented deletes
    assert len(await env.changes()) == 3
    assert "gap: the delta token was rejected" in caplog.text
    assert (await env.store.load_poll_state("s")).gaps == 1


# -- Dropbox ---------------------------------------------------------------------------------


async def test_dropbox_posts_the_cursor_while_has_more_and_resyncs_on_reset(env: Env) -> None:
    box: Dropbox = env.install(Dropbox())
    for name in ("/a.txt", "/b.txt", "/c.txt"):
        box.data.put(name, name=name[1:], rev="1")
    env.preset("dropbox", "files")
    await env.poll()
    assert [path_of(s) for s in env.requests()] == [
        "/2/files/list_folder",
        "/2/files/list_folder/continue",
    ]
    assert json.loads(env.requests()[0].body) == {"path": "", "recursive": True}
    box.data.put("/a.txt", rev="2")
    box.data.remove("/b.txt")
    await env.poll()
    assert await env.changes() == [("updated", "/a.txt"), ("deleted", "/b.txt")]
    assert json.loads(env.requests()[0].body) == {"cursor": "since:3:0"}
    assert all(s.method == "POST" for s in env.requests())

    box.data.put("/d.txt", name="d.txt", rev="1")
    box.data.expired_below = box.data.seq
    await env.poll()  # 409 reset: list_folder again, diffed against the snapshot
    assert (await env.changes())[2:] == [("created", "/d.txt")]
    assert (await env.mark_of()).resyncs == 1


# -- the expansion and the config ------------------------------------------------------------


def test_microsoft_graph_expands_into_client_credentials_against_the_tenant() -> None:
    poll = expand({"preset": "microsoft-graph", "resource": "messages", "tenant": "contoso",
                   "client_id": "app", "client_secret": "s3",
                   "user": "ada@contoso.com"})  # fmt: skip
    assert poll["url"] == (
        "https://graph.microsoft.com/v1.0/users/ada@contoso.com/mailFolders/inbox/messages/delta"
    )
    assert poll["auth"] == {"oauth2": {
        "grant": "client_credentials",
        "token_url": "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
        "client_id": "app", "client_secret": "s3", "client_auth": "client_secret_post",
        "scope": ["https://graph.microsoft.com/.default"],
    }}  # fmt: skip
    assert poll["delta"]["token"] == {"url": True} and poll["delta"]["deleted"] == '"@removed"'
    events = expand({"preset": "microsoft-graph", "resource": "events", "token": "t",
                     "user": "u", "start": "2026-01-01T00:00:00Z",
                     "end": "2027-01-01T00:00:00Z"})  # fmt: skip
    assert events["url"].endswith("/users/u/calendarView/delta")
    assert events["params"] == {"startDateTime": "2026-01-01T00:00:00Z",
                                "endDateTime": "2027-01-01T00:00:00Z"}  # fmt: skip
    drive = expand({"preset": "microsoft-graph", "resource": "drive-items", "token": "t",
                    "drive": "b!xyz"})  # fmt: skip
    assert drive["url"] == "https://graph.microsoft.com/v1.0/drives/b%21xyz/root/delta"


def test_google_and_dropbox_expand_into_their_oauth2_grants(tmp_path: Path) -> None:
    # A service account's key file, as Google writes it (the config check reads it).
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({
        "client_email": "svc@project.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    }))  # fmt: skip
    cal = expand({"preset": "google-calendar", "resource": "events", "key_file": str(key_file),
                  "subject": "ada@example.com"})  # fmt: skip
    assert cal["auth"] == {"oauth2": {
        "grant": "jwt_bearer", "token_url": "https://oauth2.googleapis.com/token",
        "scope": ["https://www.googleapis.com/auth/calendar.readonly"],
        "key_file": str(key_file), "subject": "ada@example.com",
    }}  # fmt: skip
    drive = expand({"preset": "google-drive", "resource": "changes", "refresh_token": "r",
                    "client_id": "c", "client_secret": "s"})  # fmt: skip
    assert drive["auth"]["oauth2"]["grant"] == "refresh_token"
    assert drive["delta"]["start"]["token"] == "startPageToken"
    box = expand({"preset": "dropbox", "resource": "files", "refresh_token": "r",
                  "app_key": "k", "app_secret": "s"})  # fmt: skip
    assert box["auth"] == {"oauth2": {
        "grant": "refresh_token", "token_url": "https://api.dropbox.com/oauth2/token",
        "client_id": "k", "client_secret": "s", "refresh_token": "r",
    }}  # fmt: skip
    assert box["method"] == "POST" and box["delta"]["token"] == {"body": "cursor"}
    for poll in (cal, drive, box):
        mechanics = {k: v for k, v in poll.items() if k not in ("preset", "resource")}
        parsed = config_of(mechanics).sources["s"].poll
        assert parsed is not None and parsed.auth is not None and parsed.auth.oauth2 is not None


@pytest.mark.parametrize(
    ("poll", "message"),
    [
        ({"preset": "microsoft-graph", "resource": "users"}, "token: is required"),
        ({"preset": "microsoft-graph", "resource": "users", "tenant": "t"},
         "client_id: is required by microsoft-graph's client credentials"),
        ({"preset": "microsoft-graph", "resource": "messages", "token": "t"},
         "user: is required by resource messages"),
        ({"preset": "dropbox", "resource": "files", "refresh_token": "r"},
         "app_key: is required by a Dropbox refresh token"),
        ({"url": "https://x.example/d", "every": "1m", "id": "id", "mode": "delta"},
         "mode: delta needs delta"),
        ({"url": "https://x.example/d", "every": "1m", "id": "id", "mode": "delta",
          "pages": "link", "delta": {"token": {"param": "t"}, "next": "n", "final": "f"}},
         "pages is not used"),
        ({"url": "https://x.example/d", "every": "1m", "id": "id", "mode": "delta",
          "delta": {"token": {"param": "t"}, "next": "n", "final": "f["}},
         "delta.final"),
        ({"url": "https://x.example/d", "every": "1m", "id": "id", "mode": "delta",
          "delta": {"token": {"parm": "t"}, "next": "n", "final": "f"}},
         'sources.s.poll.delta.token.parm: is not a known key; did you mean "param"?'),
    ],
)  # fmt: skip
def test_delta_config_mistakes_are_one_line_naming_the_key(
    poll: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(poll)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_check_describes_the_delta_source_and_never_a_token() -> None:
    poll = (
        config_of({"preset": "dropbox", "resource": "files", "token": DROPBOX_TOKEN})
        .sources["s"]
        .poll
    )
    assert poll is not None
    lines = dict(describe(poll))
    assert lines["mode"].startswith("delta: token kept (masked), sent in a JSON body as cursor")
    assert "a full resync on reset" in lines["mode"]
    assert lines["request"].endswith("with {cursor: <delta token kept>}")
    assert DROPBOX_TOKEN not in repr(lines)
    assert "***" not in repr(DeltaMark(None)) and "***" in repr(DeltaMark("tok"))
    assert "tok'" not in repr(DeltaMark("tok"))


# -- bad answers -----------------------------------------------------------------------------


def generic(base: str, **delta: Any) -> dict[str, Any]:
    return {
        "url": f"{base}/sync",
        "every": "1m",
        "mode": "delta",
        "items": "items",
        "id": "id",
        "delta": {"token": {"url": True}, "next": "next", "final": "delta", **delta},
    }


@pytest.mark.parametrize(
    ("pages", "error"),
    [
        ({"/sync": {"items": [{"id": "a"}]}}, "the answer has no token at 'delta'"),
        ({"/sync": {"items": [{"id": "a"}], "next": {"not": "text"}}},
         "the answer has no token at 'next'"),
        ({"/sync": {"items": [{"id": "a"}], "next": "/sync"}}, "loops back to a seen page"),
        ({"/sync": {"items": [], "next": "http://other.example/page?token=s3cr3t"}},
         "the next page is on another origin (http://other.example/page), never requested"),
        ({"/sync": {"items": "not a list", "delta": "x"}},
         "items expression 'items' is not a list"),
    ],
)  # fmt: skip
async def test_an_unusable_delta_answer_is_a_clear_fault_and_stores_nothing(
    env: Env, pages: dict[str, Any], error: str
) -> None:
    for path, body in pages.items():
        env.script.route(path, Reply(body=body))
    env.make(generic(env.base))
    await env.poll(ok=False)
    state = await env.store.load_poll_state("s")
    assert state.last_error is not None and error in state.last_error, state.last_error
    assert "s3cr3t" not in state.last_error
    assert state.cursor is None and not state.baselined
    assert await env.changes() == []
