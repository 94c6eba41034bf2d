"""Running the router: one process, or N workers sharing a port.

The server is uvicorn (httptools parser, uvloop when installed) around a bare
ASGI app; `bench/proxy_overhead.py` shows why. With `--workers N` each worker is
a process of its own that binds the port with SO_REUSEPORT, so the kernel
spreads connections over them; they share the store (SQLite in WAL mode, or
PostgreSQL). Each worker keeps its own metrics; budgets are held in the store,
so they are exact across workers and across routers on other machines.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from types import FrameType

import click
import uvicorn

from costroute.errors import UsageError
from costroute.routes import load_routes
from costroute.server.app import App, AppOptions
from costroute.server.routing import RouteTable
from costroute.store import DbLocation

logger = logging.getLogger(__name__)

BACKLOG = 2048
GRACEFUL_S = 30


@dataclass(frozen=True)
class ServeOptions:
    routes_path: Path
    host: str
    port: int
    db_path: DbLocation
    workers: int = 1
    auth: bool = True
    retries: int = 2
    poll_s: float = 1.0
    log_level: int = logging.WARNING
    reserve_usd: Decimal = Decimal(0)


def serve(options: ServeOptions) -> int:
    """Serve until SIGTERM or Ctrl-C; the exit code."""
    table = _load(options)
    if options.workers == 1:
        sock = bind(options.host, options.port)
        address = _address(options.host, sock.getsockname()[1])
        return run_worker(options, table, sock, lambda: _announce(address))
    return _run_workers(options)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from None
    return sock


def run_worker(
    options: ServeOptions,
    table: RouteTable,
    sock: socket.socket,
    on_ready: Callable[[], None] | None = None,
) -> int:
    app_options = AppOptions(
        routes_path=options.routes_path,
        db_path=options.db_path,
        auth=options.auth,
        retries=options.retries,
        poll_s=options.poll_s,
        reserve_usd=options.reserve_usd,
    )
    app = App(table, app_options, on_ready)
    config = uvicorn.Config(
        app,
        lifespan="on",
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        log_config=None,
        access_log=False,
        server_header=False,
        # Nothing reads the client address, so skip X-Forwarded-For parsing.
        proxy_headers=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = _Server(config)
    sock.listen(BACKLOG)
    server.run(sockets=[sock])
    if not server.started:
        return 1
    return 130 if server.stop_signal == signal.SIGINT else 0


class _Server(uvicorn.Server):
    """uvicorn, without re-raising the stop signal after a graceful shutdown."""

    stop_signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_signal = sig
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _run_workers(options: ServeOptions) -> int:
    # The parent holds the port (bound, never listening, so it takes no
    # connections) until the workers have bound it too.
    holder = bind(options.host, options.port, reuse_port=True)
    options = replace(options, port=holder.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.queues.Queue[int] = context.Queue()
    workers = [
        context.Process(target=_worker_main, args=(options, ready), name=f"worker-{n}")
        for n in range(options.workers)
    ]
    for worker in workers:
        worker.start()
    stopping = _forward_signals(workers)
    if _wait_ready(workers, ready):
        _announce(_address(options.host, options.port), len(workers))
    for worker in workers:
        worker.join()
    holder.close()
    # A worker stopped before it installed its handlers dies of the signal.
    fine = {0, 130, -signal.SIGTERM} if stopping else {0, 130}
    failed = [worker.name for worker in workers if worker.exitcode not in fine]
    if failed:
        logger.error("workers %s stopped with an error", ", ".join(failed))
    return 1 if failed else 0


def _wait_ready(
    workers: Sequence[multiprocessing.process.BaseProcess],
    ready: multiprocessing.queues.Queue[int],
) -> bool:
    """Wait until every worker serves; False when one of them died first."""
    waiting = len(workers)
    while waiting:
        try:
            ready.get(timeout=0.1)
            waiting -= 1
        except queue.Empty:
            if any(worker.exitcode is not None for worker in workers):
                for worker in workers:
                    worker.terminate()
                return False
    return True


def _forward_signals(
    workers: Sequence[multiprocessing.process.BaseProcess],
) -> list[int]:
    """Pass stop and reload signals on; the list fills once asked to stop."""
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        # Ctrl-C reaches the workers from the terminal already; a second SIGINT
        # would make them skip the graceful shutdown, so send SIGTERM instead.
        sent = signal.SIGTERM if sig == signal.SIGINT else sig
        if sent == signal.SIGTERM:
            stopping.append(sig)
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, sent)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    return stopping


def _worker_main(
    options: ServeOptions, ready: multiprocessing.queues.Queue[int]
) -> None:
    logging.basicConfig(
        level=options.log_level,
        format=f"%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    try:
        table = _load(options)
        sock = bind(options.host, options.port, reuse_port=True)
    except UsageError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(run_worker(options, table, sock, lambda: ready.put(os.getpid())))


def _load(options: ServeOptions) -> RouteTable:
    return RouteTable(load_routes(options.routes_path), str(options.routes_path))


def _announce(address: str, workers: int = 1) -> None:
    suffix = f" with {workers} workers" if workers > 1 else ""
    click.echo(f"Serving on {address}{suffix}", err=False)
    sys.stdout.flush()


def _address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
