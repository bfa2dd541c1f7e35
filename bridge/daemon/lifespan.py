"""The daemon: one asyncio process, one lifespan that owns every resource.

Start order: store -> engines (deliverer, receiver, poller) -> HTTP server. Stop order is the
reverse: stop accepting requests, let polls and deliveries in flight finish within a bounded
grace period, then close the store. SIGTERM and SIGINT stop; SIGHUP reloads the config file
(see bridge/daemon/reload.py). Under systemd the daemon reports each step through sd_notify
(bridge/daemon/notify.py) and pings the watchdog from its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from bridge import __version__
from bridge.config import Config
from bridge.daemon.app import SECURITY_HEADERS, build_app, direct_routes
from bridge.daemon.banner import banner_lines
from bridge.daemon.notify import Notifier
from bridge.daemon.reload import reload_config
from bridge.daemon.server import Limits, bind, fd_limit, listens_on_loopback, quiet_accept_errors
from bridge.errors import StartupError, StoreError
from bridge.runtime import Component, Runtime
from bridge.status.summary import WAITING, backlog_of
from bridge.store import open_store
from bridge.tracing import Tracer

log = logging.getLogger("bridge.daemon")

# SIGTERM must end the process well within systemd's default 90 s and our 10 s promise.
GRACE_S = 5.0
# How often the one-line status systemd shows is refreshed (backlog and dead change).
STATUS_EVERY_S = 30.0
# How often the store is asked whether its database is still there (a file deleted or
# replaced under the daemon), and how long the daemon then stays up, not ready and answering
# 503, before it exits with status 1 so that the service manager starts it afresh.
STORE_CHECK_EVERY_S = 1.0
LOST_EXIT_AFTER_S = 2.0
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# The store's writer thread gives the GIL back around each SQLite statement of a commit and
# must take it again to go on; under load the event loop never waits, so each statement of
# the commit waited up to the whole interval, and the requests its events belong to with it.
# At 0.2 ms the two threads' work overlaps: 10 to 35% more webhooks accepted a second at 64
# in flight, for the same CPU per webhook (delivery's rate unchanged; make bench).
SWITCH_INTERVAL_S = 0.0002


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_components(runtime: Runtime) -> list[Component]:
    """The engines for this config, in start order."""
    from bridge.api.app import Api
    from bridge.daemon.heartbeat import Heartbeat
    from bridge.daemon.janitor import Janitor
    from bridge.deliver.worker import Deliverer
    from bridge.poll.engine import Poller
    from bridge.receive.app import Receiver
    from bridge.web.admin import Admin
    from bridge.web.auth import Guard
    from bridge.web.poll_now import PollNow
    from bridge.web.status import Status

    # The status page and the admin pages share one guard, and so their sessions.
    guard = Guard(runtime)
    poller = Poller(runtime)
    components: list[Component] = []
    components.append(Heartbeat(runtime))
    components.append(Deliverer(runtime))
    components.append(Receiver(runtime))
    components.append(poller)
    components.append(Status(runtime, guard))
    components.append(Admin(runtime, guard, poller))
    components.append(PollNow(runtime, guard))
    components.append(Api(runtime, guard))
    components.append(Janitor(runtime))
    return components


class Daemon:
    """One running bridge."""

    def __init__(
        self,
        config: Config,
        *,
        sock: socket.socket | None = None,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        replica_id: str | None = None,
        allow_empty: bool = False,
    ) -> None:
        self.config = config
        # Whether a reload may apply a config with no source and no target.
        self.allow_empty = allow_empty
        # This process's name among the bridges sharing the database (default host-pid).
        self.replica_id = replica_id
        # The file SIGHUP re-reads: the one the config came from.
        self.config_path = config_path or config.path
        self.notifier = notifier or Notifier(None)
        self._sock = sock
        self._stop = asyncio.Event()
        self.runtime: Runtime | None = None
        self.server: uvicorn.Server | None = None
        self.components: list[Component] = []
        self.listening = ""
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_pending = False
        # Why the last reload was refused, shown in the status until one is applied.
        self.reload_error: str | None = None
        # Why the daemon stopped on its own (the store was lost): run() raises it at the end.
        self.failure: StoreError | None = None

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the config file soon (safe to call from a signal handler)."""
        if self.runtime is None or not self.listening:
            # Still starting: reload once the daemon is up.
            self._reload_pending = True
            return
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Re-read the config file and apply it; False when it was refused (the old stays)."""
        runtime = self.runtime
        if runtime is None or self.config_path is None:
            log.warning("reload ignored: the config was not read from a file")
            return False
        async with self._reload_lock:
            if self._stop.is_set():
                return False
            log.info("reloading %s", self.config_path)
            runtime.is_ready = False
            self.notifier.reloading()
            try:
                self.reload_error = await reload_config(
                    runtime,
                    self.components,
                    self.config_path,
                    self.listening,
                    allow_empty=self.allow_empty,
                )
                runtime.reload_error = self.reload_error
                self.config = runtime.config
                runtime.reloads += 1
            finally:
                if not self._stop.is_set() and self.failure is None:
                    self.notifier.ready(await self.status_line())
                    runtime.is_ready = True
            return self.reload_error is None

    async def status_line(self) -> str:
        """The one-line summary systemd shows: address, sources, targets, backlog, dead."""
        sources, targets = len(self.config.sources), len(self.config.targets)
        line = (
            f"listening on {self.listening}; {sources} source{'s' * (sources != 1)}, "
            f"{targets} target{'s' * (targets != 1)}"
        )
        if self.reload_error:
            line += f"; last reload refused: {self.reload_error}"
        if self.runtime is None or not targets:
            return line
        try:
            counts = await self.runtime.store.delivery_counts(WAITING)
        except StoreError:
            return line + "; the store cannot be read"
        wanted = [counts.get(name, {}) for name in self.config.targets]
        backlog = sum(backlog_of(c) for c in wanted)
        dead = sum(c.get("dead", 0) for c in wanted)
        return line + f"; backlog {backlog}, dead {dead}"

    async def _report_status(self) -> None:
        """Refresh the status systemd shows every STATUS_EVERY_S, until cancelled."""
        if not self.notifier.is_enabled:
            return
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            if self.runtime is not None and self.runtime.is_ready:
                self.notifier.status(await self.status_line())

    async def _watch_store(self) -> None:
        """Once a second, ask the store whether its database is still there; when it is not,
        turn not-ready, say so once, and stop after LOST_EXIT_AFTER_S with a failure."""
        while self.runtime is not None:
            reason = self.runtime.store.lost_reason()
            if reason is not None:
                break
            await asyncio.sleep(STORE_CHECK_EVERY_S)
        else:
            return
        self.runtime.is_ready = False
        self.failure = StoreError(f"{reason}: stopped so that a restart opens it afresh")
        log.error(
            "%s: not ready, answering 503, and exiting with status 1 in %.0f s so that the"
            " service manager restarts the bridge",
            reason,
            LOST_EXIT_AFTER_S,
        )
        self.notifier.status(f"{reason}; exiting")
        await asyncio.sleep(LOST_EXIT_AFTER_S)
        self.request_stop()

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        """Run until asked to stop; raise StartupError if the daemon cannot start."""
        store = open_store(self.config.database_path, self.replica_id)
        try:
            store.take_ownership()
            store.open()
        except StoreError as exc:
            store.close()
            raise StartupError(str(exc)) from exc
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(store.close)
            # Pinged from here on, through the engines' start and stop, whatever they take.
            for job in (self.notifier.keep_alive(), self._report_status()):
                task = asyncio.create_task(job)
                stack.callback(task.cancel)
            sock = self._sock or bind(self.config.server.host, self.config.server.port)
            stack.callback(sock.close)
            loop = asyncio.get_running_loop()
            stack.callback(loop.set_exception_handler, loop.get_exception_handler())
            loop.set_exception_handler(quiet_accept_errors(loop))
            # Stopped after the engines (the exit stack runs backwards): their last spans go out.
            tracer = Tracer.start(self.config.tracing)
            stack.callback(tracer.shutdown)
            runtime = self.runtime = Runtime(
                config=self.config,
                store=store,
                is_loopback=listens_on_loopback(sock),
                tracer=tracer,
            )
            # After the engines stop (the exit stack runs backwards), before the store closes:
            # the operational events they told last are recorded.
            stack.push_async_callback(runtime.operational.drain, GRACE_S)
            components = self.components = build_components(runtime)
            for component in components:
                await component.start()
                stack.push_async_callback(component.stop, GRACE_S)
            routes = [route for c in components for route in c.routes()]
            app = build_app(runtime, routes)
            server = self.server = _Server(
                uvicorn.Config(
                    app,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=int(GRACE_S),
                    server_header=False,
                    # The client address is the peer's; only `server.trusted_proxies` may
                    # name another (bridge/client_address.py), never uvicorn's default.
                    proxy_headers=False,
                    **Limits.of(self.config.server, fd_limit()).uvicorn_options(
                        direct_routes(runtime, routes), SECURITY_HEADERS
                    ),
                )
            )
            serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if serving.done():
                serving.result()
                raise StartupError("the HTTP server stopped while starting")
            runtime.is_ready = True
            host, port = sock.getsockname()[:2]
            self.listening = f"{host}:{port}"
            self.notifier.ready(await self.status_line())
            for line in banner_lines(
                self.config, __version__, host, port, store.location, store.replica_id
            ):
                log.info("%s", line)
            if on_ready:
                on_ready(self)
            if self._reload_pending:
                self.request_reload()
            watching = asyncio.create_task(self._watch_store(), name="store-watch")
            stack.callback(watching.cancel)
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            log.info("stopping")
            self._stop.set()
            runtime.is_ready = False
            self.notifier.stopping()
            if self._reloads:
                # A reload in flight finishes before the engines stop under it.
                await asyncio.wait(self._reloads, timeout=GRACE_S)
            server.should_exit = True
            await serving
            stopping.cancel()
        log.info("stopped")
        if self.failure is not None:
            raise self.failure


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a base dependency on Linux), else None for
    asyncio's own: about a fifth less CPU per accepted webhook (make bench)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def freeze_heap(daemon: Daemon) -> None:
    """Move what start-up built (modules, the config, the engines) out of the collector's
    scans: each full collection would walk it again for nothing, about a tenth of the event
    loop's time under load. Called once, when the daemon is ready."""
    gc.collect()
    gc.freeze()


def run(config: Config, replica_id: str | None = None, *, allow_empty: bool = False) -> None:
    """Run the daemon in this process until SIGTERM or SIGINT; raise StartupError on failure.

    `allow_empty` lets reloads apply a config with no source and no target."""
    # A watchdog abort (systemd sends SIGABRT) or a crash in C code leaves every thread's
    # stack on stderr, so the journal shows where the daemon was stuck.
    faulthandler.enable(sys.stderr, all_threads=True)
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    async def main() -> None:
        notifier = Notifier.from_env()
        daemon = Daemon(config, notifier=notifier, replica_id=replica_id, allow_empty=allow_empty)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        try:
            await daemon.run(on_ready=freeze_heap)
        finally:
            notifier.close()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())
