"""Section `routers` of `bench/scale.py` (part 2): router replicas on PostgreSQL.

The same load through one `costroute serve` on a SQLite store, one on
PostgreSQL, and two replicas sharing one PostgreSQL database, every request
with a key whose budget is held in the store (each request holds its most
possible cost before it goes upstream, and its ledger row settles the hold).
Figures: requests per second, p50 and p99 latency, and after the load the
ledger's row count (every request must be there) and the budget counters
(spend equal to the ledger's, nothing left held).

The upstream is `bench/proxy_overhead.py`'s asyncio server with a canned reply,
in a process of its own; the load generator is another process, spreading its
clients over the replicas. PostgreSQL is the server `--postgres` names (or
$COSTROUTE_TEST_POSTGRES), else a throwaway one started here on loopback with
`synchronous_commit=off`, about as durable as SQLite's WAL with
`synchronous=NORMAL`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROXY_BENCH = ROOT / "bench" / "proxy_overhead.py"
MESSAGES = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "Is this message spam or ham?\nlunch at noon?"},
]
MAX_TOKENS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("section routers")
    group.add_argument("--router-requests", type=int, default=20_000)
    group.add_argument("--router-clients", type=int, default=64)
    group.add_argument("--postgres", help="a PostgreSQL server's URL [throwaway]")


@dataclass(frozen=True)
class Setup:
    name: str
    store: str  # "sqlite" or "postgresql"
    replicas: int
    budget: bool = True


SETUPS = [
    # What holding budgets costs, on the store a single user has.
    Setup("1 router, SQLite, no budget", "sqlite", 1, budget=False),
    Setup("1 router, SQLite", "sqlite", 1),
    Setup("1 router, PostgreSQL", "postgresql", 1),
    Setup("2 routers, PostgreSQL", "postgresql", 2),
]


def routers(args: argparse.Namespace, scratch: Path) -> None:
    """Part 2: router replicas on one PostgreSQL against one router on SQLite."""
    upstream, port = _start([sys.executable, str(PROXY_BENCH), "_upstream"], "READY")
    try:
        with _postgres(args.postgres, scratch) as server:
            results = [
                _measure(setup, args, scratch / f"setup-{n}", server, int(port))
                for n, setup in enumerate(SETUPS)
            ]
    finally:
        upstream.terminate()
        upstream.wait()
    _report(results, args)


def _measure(
    setup: Setup, args: argparse.Namespace, directory: Path, server: str, port: int
) -> dict[str, Any]:
    directory.mkdir()
    routes = _write_routes(directory, port)
    with _database(setup, directory, server) as db:
        key_id, key = _make_key(db, setup.budget)
        replicas = [_start_router(routes, db) for _ in range(setup.replicas)]
        try:
            load = _run_load([url for _, url in replicas], key, args)
        finally:
            for process, _ in replicas:
                process.terminate()
            stopped = [process.wait(timeout=60) for process, _ in replicas]
        return {
            "setup": setup.name,
            **load,
            "stopped": stopped,
            **_ledger_figures(db, key_id),
        }


def _write_routes(directory: Path, port: int) -> Path:
    sys.path.insert(0, str(PROXY_BENCH.parent))
    from proxy_overhead import write_routes

    return write_routes(directory, port)


def _make_key(db: str, budget: bool) -> tuple[str, str]:
    from costroute.server.keys import new_key
    from costroute.store import Store

    # A budget far above the load's cost: every request holds and settles.
    made = new_key("bench", Decimal(1000) if budget else None)
    with Store(db) as store:
        store.create_api_key(made.record)
    return made.record.id, made.key


def _start_router(routes: Path, db: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "costroute", "serve", "--routes", str(routes)]
    return _start([*command, "--port", "0", "--db", db], "Serving on")


def _ledger_figures(db: str, key_id: str) -> dict[str, Any]:
    from costroute.server.keys import this_month
    from costroute.store import Store

    with Store(db) as store:
        rows = store.ledger()
        spend = store.key_spend(key_id, this_month())
    ledger_usd = sum((row.cost_usd or Decimal(0) for row in rows), Decimal(0))
    return {
        "ledger_rows": len(rows),
        "ledger_ok": sum(row.status == 200 for row in rows),
        "ledger_usd": ledger_usd,
        "budget_spent_usd": spend.spent_usd,
        "budget_held_usd": spend.held_usd,
    }


def _run_load(urls: list[str], key: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "_load", key, str(args.router_clients)]
    command += [str(args.router_requests), *urls]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(output.stdout.splitlines()[-1])
    return result


def _report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"{args.router_requests} requests (+ a warm-up of {_warmup(args)}) from "
        f"{args.router_clients} clients; with a budget, each holds its most "
        "possible cost of it"
    )
    print(
        f"{'setup':<30}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'non-200':>9}"
        f"{'sent':>8}{'ledger':>8}  budget spent = ledger, held"
    )
    for result in results:
        sent = result["sent"]
        complete = "==" if result["budget_spent_usd"] == result["ledger_usd"] else "!="
        print(
            f"{result['setup']:<30}{result['rps']:>8.0f}{result['p50_ms']:>9.2f}"
            f"{result['p99_ms']:>9.2f}{result['errors']:>9}{sent:>8}"
            f"{result['ledger_rows']:>8}  ${result['budget_spent_usd']:f} "
            f"{complete} ${result['ledger_usd']:f}, ${result['budget_held_usd']:f}"
        )
    lost = [r["setup"] for r in results if r["ledger_rows"] != r["sent"]]
    print("every request in the ledger: " + ("yes" if not lost else f"NO: {lost}"))


def _warmup(args: argparse.Namespace) -> int:
    return int(min(args.router_requests, max(500, args.router_clients * 5)))


# Processes


def _start(command: list[str], ready: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(ready):
            return process, line.split()[-1]
    raise SystemExit(f"Error: {' '.join(command[:5])} did not start")


@contextlib.contextmanager
def _database(setup: Setup, directory: Path, server: str) -> Iterator[str]:
    if setup.store == "sqlite":
        yield str(directory / "store.db")
        return
    import psycopg

    name = f"costroute_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


@contextlib.contextmanager
def _postgres(url: str | None, scratch: Path) -> Iterator[str]:
    """The server to use: the one named, or a throwaway one on loopback."""
    url = url or os.environ.get("COSTROUTE_TEST_POSTGRES")
    if url:
        yield url
        return
    initdb = shutil.which("initdb") or _newest("/usr/lib/postgresql/*/bin/initdb")
    if initdb is None:
        raise SystemExit("Error: no PostgreSQL; apt-get install postgresql")
    bindir = Path(initdb).parent
    data = Path(tempfile.mkdtemp(prefix="costroute-bench-pg-"))
    owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if owner:
        shutil.chown(data, "postgres")
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {data} -c synchronous_commit=off"
    quiet = {"stdout": subprocess.DEVNULL, "cwd": data, "check": True}
    subprocess.run([*owner, initdb, "-D", f"{data}/db", "-U", "postgres"], **quiet)
    pg_ctl = [*owner, str(bindir / "pg_ctl"), "-D", f"{data}/db", "-l", f"{data}/log"]
    subprocess.run([*pg_ctl, "-w", "-o", options, "start"], **quiet)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], **quiet)
        shutil.rmtree(data, ignore_errors=True)


def _newest(pattern: str) -> str | None:
    found = sorted(Path("/").glob(pattern.lstrip("/")))
    return str(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The load generator, run as its own process: clients spread over the URLs.


async def _load(
    key: str, clients: int, requests: int, urls: list[str]
) -> dict[str, Any]:
    import aiohttp

    body = json.dumps(
        {"model": "route/bench", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    latencies_s: list[float] = []
    errors = sent = total = 0

    async def client(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal sent, errors
        while sent < total:
            sent += 1
            started_s = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                errors += response.status != 200
            latencies_s.append(time.perf_counter() - started_s)

    async def run(session: aiohttp.ClientSession, count: int) -> float:
        nonlocal sent, total
        sent, total = 0, count
        started_s = time.perf_counter()
        targets = [f"{urls[n % len(urls)]}/v1/chat/completions" for n in range(clients)]
        await asyncio.gather(*(client(session, url) for url in targets))
        return time.perf_counter() - started_s

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        warmup = min(requests, max(500, clients * 5))
        await run(session, warmup)
        latencies_s.clear()
        errors = 0
        elapsed_s = await run(session, requests)
    latencies_s.sort()
    return {
        "rps": requests / elapsed_s,
        "p50_ms": latencies_s[len(latencies_s) // 2] * 1000,
        "p99_ms": latencies_s[min(len(latencies_s) - 1, len(latencies_s) * 99 // 100)]
        * 1000,
        "errors": errors,
        "sent": warmup + requests,
    }


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_load":
    key, clients, count, *urls = sys.argv[2:]
    print(json.dumps(asyncio.run(_load(key, int(clients), int(count), urls))))
