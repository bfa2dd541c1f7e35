"""The demo's orchestrator: upstream, bridge and target on 127.0.0.1, then the latency report.

Order: bind three sockets on free ports; write the generated config (a polled and a pushed
source for the same upstream, a compare pair, a polled source that never changes, one
target) and load it like any config; start
the upstream and the target; run the bridge's `Daemon` in this process; once the bridge has
polled the upstream once (its baseline), let the upstream change items for the duration;
then wait one more poll interval and for the deliveries to drain, stop everything, and read
the report from the database, which stays in the demo folder with the config.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from bridge import logs
from bridge.compare.report import LatencyReport, load_report
from bridge.config import Config, load_config
from bridge.daemon import Daemon
from bridge.daemon.server import bind
from bridge.demo.target import Received, Target
from bridge.demo.upstream import Counts, Upstream
from bridge.errors import StartupError
from bridge.store import open_store

log = logging.getLogger("bridge.demo")

POLL_SOURCE = "items-poll"
QUIET_SOURCE = "quiet-poll"  # polled like the other, but its list never changes
PUSH_SOURCE = "items-push"
MERGE = "items"
TARGET = "local-target"
HOOK_PATH = "/hooks/items"
# The first line of every config the demo writes: its folder may be cleared for a new run.
_MARK = "# Written by `bridge demo`."

_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*\Z")
_RATE_UNITS_S = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0,
                 "minute": 60.0, "h": 3600.0, "hour": 3600.0}  # fmt: skip
# How long to wait, after the changes stop, for the deliveries to reach the target.
DRAIN_S = 10.0

Progress = Callable[[float, float, str], None]


def parse_rate(text: str) -> float:
    """Changes per second from `2/s`, `30/m`, `600/h` or a bare number (per second)."""
    match = _RATE_RE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate (use 2/s, 30/m or 600/h)")
    return float(match.group(1)) / _RATE_UNITS_S[match.group(2)]


def new_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(slots=True, frozen=True)
class DemoOptions:
    """What the user asked for."""

    duration_s: float = 30.0
    every_s: float = 5.0
    rate_per_s: float = 2.0
    folder: Path = Path("demo-run")
    # The share of pushes the upstream drops (then a few more come late, and the two paths
    # are merged into one source, MERGE): polling catches what push missed.
    drop: float = 0.0


@dataclass(slots=True, frozen=True)
class DemoResult:
    """What the demo measured and where it left its files."""

    report: LatencyReport
    config_path: Path
    database_path: Path
    log_path: Path
    received_path: Path
    upstream: Counts
    target: Received
    events: int
    ran_s: float = 0.0  # how long the bridge ran, polling


def write_config(
    path: Path,
    *,
    bridge_port: int,
    upstream_port: int,
    target_port: int,
    every_s: float,
    merged: bool = False,
) -> tuple[str, str]:
    """Write the demo's config to `path`; returns (push secret, target secret).

    `merged`: the two sources are one merge, whose events alone go to the target.
    """
    push_secret, target_secret = new_secret(), new_secret()
    if merged:
        tail = f"""merge:
  # One event per change, from whichever path saw it first.
  - {{name: {MERGE}, sources: [{PUSH_SOURCE}, {POLL_SOURCE}], match: version}}
"""
        poll_extra = '      type: "item.{change}"\n'
        push_extra = "      version: body.data.updated_at\n"
        target_extra = f"    sources: [{MERGE}]\n"
    else:
        tail = f"""compare:
  - poll: {POLL_SOURCE}
    push: {PUSH_SOURCE}
"""
        poll_extra = push_extra = target_extra = ""
    path.write_text(
        f"""\
{_MARK} Run `bridge latency -c {path.name}` or `bridge events -c {path.name}`
# to look at what the demo stored; the upstream and target are gone once the demo ends.
database: bridge.db
server:
  listen: 127.0.0.1:{bridge_port}
sources:
  # The upstream's list, polled: changes are found by diffing answers.
  {POLL_SOURCE}:
    poll:
      url: http://127.0.0.1:{upstream_port}/items
      every: {every_s:g}s
      items: items
      id: id
      version: updated_at
      time: updated_at
{poll_extra}  # A list that never changes, polled as often: every request finds nothing.
  {QUIET_SOURCE}:
    poll:
      url: http://127.0.0.1:{upstream_port}/quiet
      every: {every_s:g}s
      items: items
      id: id
      version: updated_at
  # The same upstream's changes, pushed to the bridge as they happen.
  {PUSH_SOURCE}:
    webhook:
      path: {HOOK_PATH}
      verify: standard-webhooks
      secrets: ["{push_secret}"]
      # Where the change's item and time are in each request (the type is body.type).
      subject: body.data.id
      time: body.data.updated_at
{push_extra}targets:
  {TARGET}:
    url: http://127.0.0.1:{target_port}/hook
    secrets: "{target_secret}"
{target_extra}{tail}""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return push_secret, target_secret


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """Serve `app` on `sock` in this event loop for the duration of the block."""
    # A keep-alive longer than any poll interval: otherwise the server may close an idle
    # connection just as the next poll reuses it (uvicorn's default is 5 s, the default
    # interval of the demo).
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=300
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
            raise StartupError("a demo server stopped while starting")
        yield
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=5.0)
        sock.close()


def _clear(folder: Path) -> None:
    """Remove the last run's database and records, so each run measures itself only; refuse
    a folder whose files the demo did not write."""
    config = folder / "config.yaml"
    is_ours = config.exists() and config.read_text(errors="replace").startswith(_MARK)
    names = ("bridge.db", "bridge.db-wal", "bridge.db-shm", "received.jsonl", "bridge.log")
    if not is_ours and any((folder / name).exists() for name in (*names, "config.yaml")):
        raise StartupError(
            f"{folder} holds a bridge config or database that the demo did not write;"
            " choose another --dir"
        )
    for name in names:
        (folder / name).unlink(missing_ok=True)


def _log_to(path: Path) -> None:
    """The daemon's log lines, as `bridge run` writes them (uvicorn's under bridge.http)."""
    logs.configure("info", "text", handler=logging.FileHandler(path, encoding="utf-8"))


async def run_demo(
    options: DemoOptions,
    progress: Progress | None = None,
    announce: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the whole demo; `progress(done, total, line)` is called a few times a second, and
    `announce(line)` once the bridge is up, with the address of its status page."""
    folder = options.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _clear(folder)
    log_path = folder / "bridge.log"
    _log_to(log_path)
    config_path, received_path = folder / "config.yaml", folder / "received.jsonl"
    socks = [bind("127.0.0.1", 0) for _ in range(3)]
    bridge_port, upstream_port, target_port = (s.getsockname()[1] for s in socks)
    push_secret, target_secret = write_config(
        config_path,
        bridge_port=bridge_port,
        upstream_port=upstream_port,
        target_port=target_port,
        every_s=options.every_s,
        merged=options.drop > 0,
    )
    config = load_config(config_path)
    upstream = Upstream(
        rate_per_s=options.rate_per_s,
        push_url=f"http://127.0.0.1:{bridge_port}{HOOK_PATH}",
        push_secret=push_secret,
        drop=options.drop,
        delay_s=options.every_s * 1.5,
    )
    target = Target(target_secret, received_path)
    interrupts = _Interrupts()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupts)
    started = time.monotonic()
    try:
        async with serving(upstream.app(), socks[1]), serving(target.app(), socks[2]):
            events = await _run_bridge(
                config, socks[0], upstream, target, options, interrupts, progress, announce
            )
        ran_s = time.monotonic() - started
    finally:
        target.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    report = await _read_report(config)
    return DemoResult(
        report=report,
        config_path=config_path,
        database_path=Path(config.database_path),
        log_path=log_path,
        received_path=received_path,
        upstream=upstream.counts,
        target=target.received,
        events=events,
        ran_s=ran_s,
    )


class _Interrupts:
    """Ctrl-C once: stop changing items and finish early; twice: skip the waits too."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.abort = False

    def __call__(self) -> None:
        self.abort = self.stop.is_set()
        self.stop.set()


async def _run_bridge(
    config: Config,
    sock: socket.socket,
    upstream: Upstream,
    target: Target,
    options: DemoOptions,
    interrupts: _Interrupts,
    progress: Progress | None,
    announce: Callable[[str], None] | None,
) -> int:
    daemon = Daemon(config, sock=sock)
    ready = asyncio.Event()
    running = asyncio.create_task(daemon.run(on_ready=lambda _d: ready.set()))
    try:
        await _until(lambda: ready.is_set() or running.done(), 30.0)
        if running.done():
            running.result()
            raise StartupError("the bridge stopped while starting")
        assert daemon.runtime is not None
        store = daemon.runtime.store
        if announce is not None:
            announce(f"status page: http://{config.server.listen}/ (while the demo runs)")
        # Changes before the first poll would vanish into its silent baseline.
        stop = interrupts.stop
        await _until(lambda: upstream.counts.polls > 0 or stop.is_set(), options.every_s + 10)
        started = time.monotonic()
        total_s = options.duration_s + options.every_s

        def report_progress(phase: str) -> None:
            if progress is not None:
                c, r = upstream.counts, target.received
                line = f"{phase}: {c.changes} changes, {c.polls} polls, {r.valid} delivered"
                progress(min(total_s, time.monotonic() - started), total_s, line)

        changing = asyncio.create_task(upstream.run(stop))
        while not stop.is_set() and time.monotonic() - started < options.duration_s:
            report_progress("changing items")
            await asyncio.sleep(0.2)
        stop.set()
        await changing
        # One more poll interval (and a moment to commit) lets polling see the last changes.
        total_s = time.monotonic() - started + options.every_s + 0.3
        while time.monotonic() - started < total_s and not interrupts.abort:
            report_progress("last poll")
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + DRAIN_S
        events = await store.count_events()
        while target.received.valid < events and time.monotonic() < deadline:
            if interrupts.abort:
                break
            report_progress("delivering")
            await asyncio.sleep(0.2)
            events = await store.count_events()
        report_progress("done")
        return events
    finally:
        daemon.request_stop()
        await running


async def _until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _read_report(config: Config) -> LatencyReport:
    store = open_store(config.database_path)
    store.open()
    try:
        return await load_report(store, config)
    finally:
        store.close()
