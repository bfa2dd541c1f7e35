"""Local simulations of the delta and sync-token APIs the `mode: delta` presets speak, on
tests/scripted_server.py, written from the providers' documentation:

- Microsoft Graph delta query: `GET /v1.0/users/delta` (and groups, a mail folder's messages,
  a calendar view, a drive's root): pages carry `@odata.nextLink` (`$skiptoken`), the last
  one `@odata.deltaLink` (`$deltatoken`); removed items come in-band as
  `{"id", "@removed": {"reason": "deleted"}}`; an expired token answers `410` with the code
  `resyncRequired`.
- Google Calendar `events.list`: `nextPageToken` pages (sent back as `pageToken`), the last
  page `nextSyncToken` (sent back as `syncToken`); a full sync leaves cancelled events out, an
  incremental one lists them with `status: "cancelled"`; an expired sync token answers `410`
  with the reason `fullSyncRequired`.
- Google Drive `changes`: `GET changes/startPageToken`, then `changes?pageToken=`, pages by
  `nextPageToken`, the last one `newStartPageToken`; removed files have `removed: true`.
- Dropbox `POST /2/files/list_folder` then `/2/files/list_folder/continue` with `{cursor}`,
  `has_more`; deleted entries tagged `.tag: "deleted"`; an expired cursor answers `409` with
  the error `reset`.

Each checks its bearer token (401 otherwise, kept in `refused`). Every simulation keeps one
change log: a token is the log's position, a walk lists what changed after it (each key's
latest state, in the order of its last change), a full walk lists every item there is.
Tokens older than `expired_below` are rejected as the provider rejects them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tests.scripted_server import Reply, Script, Seen

GRAPH_TOKEN = "eyJ0eXAiOiJKV1Qi.graph-simulated"
GOOGLE_TOKEN = "ya29.google-simulated"
DROPBOX_TOKEN = "sl.dropbox-simulated"


@dataclass
class ChangeLog:
    """Items by key, and the log of changes: a token is a position in it."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # the key of each change, in order
    fields: list[dict[str, Any]] = field(default_factory=list)  # the fields each change set
    expired_below: int = 0  # tokens before this position are rejected

    @property
    def seq(self) -> int:
        return len(self.log)

    def put(self, key: str, **fields: Any) -> None:
        self.items[key] = {**self.items.get(key, {}), **fields}
        self.log.append(key)
        self.fields.append(fields)

    def remove(self, key: str) -> None:
        self.items.pop(key, None)
        self.log.append(key)
        self.fields.append({})

    def changed(self, key: str, seq: int) -> dict[str, Any]:
        """The fields of `key` set after `seq`, as they are now; all of them when the key was
        created (or removed and created again) after `seq`."""
        after = [f for k, f in zip(self.log[seq:], self.fields[seq:], strict=True) if k == key]
        item = self.items.get(key, {})
        existed = key in self.log[:seq] and all(after)  # a removal sets no field
        names = {name for f in after for name in f}
        return {n: item[n] for n in names if n in item} if existed else dict(item)

    def since(self, seq: int) -> list[tuple[str, dict[str, Any] | None]]:
        """Each key changed after `seq`, in the order of its last change, as it is now."""
        last: dict[str, int] = {}
        for at, key in enumerate(self.log[seq:], start=seq):
            last[key] = at
        return [(k, self.items.get(k)) for k, _ in sorted(last.items(), key=lambda kv: kv[1])]

    def full(self) -> list[tuple[str, dict[str, Any] | None]]:
        return [(k, self.items[k]) for k in sorted(self.items)]

    def listing(self, kind: str, seq: int) -> list[tuple[str, dict[str, Any] | None]]:
        return self.full() if kind == "full" else self.since(seq)


def _query(seen: Seen) -> dict[str, str]:
    return dict(parse_qsl(seen.query, keep_blank_values=True))


def _origin(seen: Seen) -> str:
    return f"http://{seen.headers['host']}"


class DeltaSimulation:
    """What each simulation shares: its log, its page size, its token, what it refused."""

    token = ""

    def __init__(self, page_size: int = 2) -> None:
        self.data = ChangeLog()
        self.page_size = page_size
        self.lock = threading.Lock()
        self.refused: list[str] = []
        self.walk_pages: int = 0  # pages answered
        self.fail_page: int | None = None  # answer this page (0-based over all) with a 500
        # Answer this page (0-based over all) as a rejected token (the token expired mid-walk).
        self.reject_page: int | None = None
        # Hold this page (0-based over all) until `release` is set (at most 20 s): a walk
        # caught between two pages. `holding` is set once it waits.
        self.hold_page: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def guarded(self, handler: Any) -> Any:
        def route(seen: Seen) -> Reply:
            with self.lock:
                hold = self.hold_page is not None and self.walk_pages == self.hold_page
            if hold:
                self.holding.set()
                self.release.wait(timeout=20)
            with self.lock:
                if seen.headers.get("authorization") != f"Bearer {self.token}":
                    self.refused.append(f"{seen.path}: no or wrong bearer token")
                    return Reply(401, {"error": "unauthorized"})
                if self.fail_page is not None and self.walk_pages == self.fail_page:
                    self.fail_page = None
                    return Reply(500, {"error": "internal"})
                if self.reject_page is not None and self.walk_pages == self.reject_page:
                    self.reject_page = None
                    return self.rejected()
                self.walk_pages += 1
                return handler(seen)

        return route

    def rejected(self) -> Reply:
        raise NotImplementedError

    def page(self, kind: str, seq: int, offset: int) -> tuple[list[Any], bool]:
        """One page of a walk and whether more follow."""
        listed = self.data.listing(kind, seq)
        return listed[offset : offset + self.page_size], offset + self.page_size < len(listed)


# -- Microsoft Graph -------------------------------------------------------------------------


class Graph(DeltaSimulation):
    """`/v1.0/users/delta` as graph.microsoft.com answers it."""

    token = GRAPH_TOKEN
    path = "/v1.0/users/delta"

    def install(self, script: Script) -> None:
        script.route(self.path, self.guarded(self.delta))

    def rejected(self) -> Reply:
        return Reply(410, {"error": {"code": "resyncRequired", "message": "Resync required."}})

    def delta(self, seen: Seen) -> Reply:
        q = _query(seen)
        if "$deltatoken" in q:
            kind, seq, offset = "since", int(q["$deltatoken"].removeprefix("dt")), 0
        elif "$skiptoken" in q:
            kind, at, off = q["$skiptoken"].split(".")
            seq, offset = int(at), int(off)
        else:
            kind, seq, offset = "full", self.data.seq, 0
        if kind == "since" and seq < self.data.expired_below:
            return self.rejected()
        rows, more = self.page(kind, seq, offset)
        # An updated user comes with only the properties that changed (Graph's documented
        # behaviour for users and groups); a new one with all of them.
        value = [
            {"id": key, **(item if kind == "full" else self.data.changed(key, seq))}
            if item is not None
            else {"id": key, "@removed": {"reason": "deleted"}}
            for key, item in rows
        ]
        base = f"{_origin(seen)}{self.path}"
        body: dict[str, Any] = {"@odata.context": f"{base}/$metadata#users", "value": value}
        if more:
            skip = f"{kind}.{seq}.{offset + self.page_size}"
            body["@odata.nextLink"] = f"{base}?$skiptoken={quote(skip)}"
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken=dt{self.data.seq}"
        return Reply(body=body)


# -- Google Calendar -------------------------------------------------------------------------


class Calendar(DeltaSimulation):
    """`/calendar/v3/calendars/primary/events` as Google Calendar answers it."""

    token = GOOGLE_TOKEN
    path = "/calendar/v3/calendars/primary/events"

    def install(self, script: Script) -> None:
        script.route(self.path, self.guarded(self.events))

    def events(self, seen: Seen) -> Reply:
        q = _query(seen)
        if "pageToken" in q:
            kind, at, off = q["pageToken"].split("~")
            seq, offset = int(at), int(off)
        elif "syncToken" in q:
            kind, seq, offset = "since", int(q["syncToken"].removeprefix("CPD")), 0
        else:
            kind, seq, offset = "full", self.data.seq, 0
        if kind == "since" and seq < self.data.expired_below:
            reason = {"domain": "calendar", "reason": "fullSyncRequired"}
            message = "Sync token is no longer valid, a full sync is required."
            return Reply(410, {"error": {"errors": [reason], "code": 410, "message": message}})
        rows, more = self.page(kind, seq, offset)
        items = [
            {"kind": "calendar#event", "id": key, **item}
            if item is not None
            else {"kind": "calendar#event", "id": key, "status": "cancelled"}
            for key, item in rows
        ]
        body: dict[str, Any] = {"kind": "calendar#events", "items": items}
        if more:
            body["nextPageToken"] = f"{kind}~{seq}~{offset + self.page_size}"
        else:
            body["nextSyncToken"] = f"CPD{self.data.seq}"
        return Reply(body=body)


# -- Google Drive ----------------------------------------------------------------------------


class Drive(DeltaSimulation):
    """`/drive/v3/changes` and `/drive/v3/changes/startPageToken` as Google Drive answers."""

    token = GOOGLE_TOKEN

    def install(self, script: Script) -> None:
        script.route("/drive/v3/changes/startPageToken", self.guarded(self.start))
        script.route("/drive/v3/changes", self.guarded(self.changes))

    def start(self, seen: Seen) -> Reply:
        return Reply(body={"kind": "drive#startPageToken", "startPageToken": str(self.data.seq)})

    def changes(self, seen: Seen) -> Reply:
        q = _query(seen)
        if "pageToken" not in q:
            return Reply(400, {"error": {"code": 400, "message": "Required parameter: pageToken"}})
        seq_text, _, off = q["pageToken"].partition("~")
        seq, offset = int(seq_text), int(off or 0)
        if seq < self.data.expired_below:
            return Reply(410, {"error": {"code": 410, "message": "The page token is too old."}})
        rows, more = self.page("since", seq, offset)
        changes = [
            {"kind": "drive#change", "changeType": "file", "fileId": key, "time": "t",
             "removed": item is None, **({"file": item} if item is not None else {})}
            for key, item in rows
        ]  # fmt: skip
        body: dict[str, Any] = {"kind": "drive#changeList", "changes": changes}
        if more:
            body["nextPageToken"] = f"{seq}~{offset + self.page_size}"
        else:
            body["newStartPageToken"] = str(self.data.seq)
        return Reply(body=body)


# -- Dropbox ---------------------------------------------------------------------------------


class Dropbox(DeltaSimulation):
    """`/2/files/list_folder` and `/2/files/list_folder/continue` as Dropbox answers them."""

    token = DROPBOX_TOKEN

    def install(self, script: Script) -> None:
        script.route("/2/files/list_folder", self.guarded(self.list_folder))
        script.route("/2/files/list_folder/continue", self.guarded(self.next_page))

    def _args(self, seen: Seen) -> dict[str, Any] | Reply:
        if seen.method != "POST" or seen.headers.get("content-type") != "application/json":
            return Reply(400, b"Error in call: expected a POST with a JSON body",
                         content_type="text/plain")  # fmt: skip
        args = json.loads(seen.body)
        return args if isinstance(args, dict) else Reply(400, b"bad body")

    def list_folder(self, seen: Seen) -> Reply:
        args = self._args(seen)
        if isinstance(args, Reply):
            return args
        if args.get("path") != "" or args.get("recursive") is not True:
            return Reply(400, {"error_summary": "path/not_found/"})
        return self._answer("full", self.data.seq, 0)

    def next_page(self, seen: Seen) -> Reply:
        args = self._args(seen)
        if isinstance(args, Reply):
            return args
        kind, at, off = str(args.get("cursor")).split(":")
        seq, offset = int(at), int(off)
        if seq < self.data.expired_below:
            return Reply(409, {"error_summary": "reset/..", "error": {".tag": "reset"}})
        return self._answer(kind, seq, offset)

    def _answer(self, kind: str, seq: int, offset: int) -> Reply:
        rows, more = self.page(kind, seq, offset)
        entries = [
            {".tag": "file", "path_lower": key, "path_display": key, **item}
            if item is not None
            else {".tag": "deleted", "name": key.rsplit("/", 1)[-1], "path_lower": key,
                  "path_display": key}
            for key, item in rows
        ]  # fmt: skip
        cursor = f"{kind}:{seq}:{offset + self.page_size}" if more else f"since:{self.data.seq}:0"
        return Reply(body={"entries": entries, "cursor": cursor, "has_more": more})


def refused(*sims: DeltaSimulation) -> list[str]:
    return [line for sim in sims for line in sim.refused]


def path_of(seen: Seen) -> str:
    return urlsplit(seen.path).path
