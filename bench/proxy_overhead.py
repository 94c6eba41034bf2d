"""Router overhead: the same requests sent straight to a fast upstream, through
`costroute serve`, and through LiteLLM's proxy, at 1 and at 100 clients.

    python bench/proxy_overhead.py [--requests 10000] [--soak 100000]
                                   [--skip-litellm]

Every part is a process of its own: a minimal OpenAI-compatible upstream
(asyncio, a canned reply, ~20 µs a request), the router (one worker, with a key,
the ledger and metrics on), LiteLLM's proxy (one worker, no auth, installed by
this script into /tmp/costroute-bench-litellm/.venv), and an aiohttp load
generator. Added latency is the percentile through a proxy minus the same
percentile direct. The router's RSS is read before and after a soak of
`--soak` requests. Goals: added p50 <= 1 ms and p99 <= 5 ms, throughput
>= 3x LiteLLM's, RSS growth < 10%. On a small machine the load generator, the
upstream and the proxy share the cores, so at 100 clients the figures include
queueing for CPU, for every proxy alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path("/tmp/costroute-bench-litellm/.venv")
START_TIMEOUT_S = 120.0

REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ham"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
).encode()
MESSAGES = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "Is this message spam or ham?\nlunch at noon?"},
]


# The upstream: a canned chat completion over keep-alive HTTP/1.1.


class _Upstream(asyncio.Protocol):
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    response += b"Content-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _content_length(self.buffer[:end])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.response)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _serve_upstream() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


# The load generator: `concurrency` clients on one aiohttp session.


async def _load(
    url: str,
    concurrency: int,
    requests: int,
    key: str | None,
    model: str,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Send `requests` with `concurrency` clients; paced at `rate` req/s if > 0.

    Paced latency counts from when a request was due, not from when it went
    out, so a proxy that falls behind the offered rate shows it.
    """
    import aiohttp

    body = json.dumps({"model": model, "messages": MESSAGES}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    latencies_s: list[float] = []
    errors = 0
    sent = 0
    total = 0
    started_s = 0.0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent, errors
        while sent < total:
            # Claim the request's slot before sleeping, so clients keep time.
            index, sent = sent, sent + 1
            due_s = time.perf_counter()
            if rate > 0:
                due_s = started_s + index / rate
                await asyncio.sleep(max(0.0, due_s - time.perf_counter()))
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                errors += response.status != 200
            latencies_s.append(time.perf_counter() - due_s)

    async def run(session: aiohttp.ClientSession, count: int) -> float:
        nonlocal sent, total, started_s
        sent, total, started_s = 0, count, time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return time.perf_counter() - started_s

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await run(session, min(requests, max(500, concurrency * 5)))
        latencies_s.clear()
        errors = 0
        elapsed_s = await run(session, requests)
    latencies_s.sort()
    return {
        "rps": requests / elapsed_s,
        "p50_ms": _percentile(latencies_s, 0.50) * 1000,
        "p99_ms": _percentile(latencies_s, 0.99) * 1000,
        "errors": errors,
    }


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


# The driver.


@dataclass
class Proxy:
    name: str
    url: str
    model: str
    key: str | None = None
    pid: int | None = None


def measure(
    proxy: Proxy, concurrency: int, requests: int, rate: float = 0.0
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "_load",
        f"{proxy.url}/v1/chat/completions",
        str(concurrency),
        str(requests),
        proxy.key or "",
        proxy.model,
        str(rate),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(output.stdout.splitlines()[-1])
    return result


def start(
    command: list[str], ready: str, **kwargs: Any
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kwargs
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(ready):
            return process, line.split()[-1]
    raise SystemExit(f"Error: {' '.join(command[:4])} did not start")


def write_routes(directory: Path, upstream_port: int) -> Path:
    """A routes file with one route, `route/bench`, to the fake upstream."""
    sys.path.insert(0, str(ROOT / "src"))
    from costroute.routes import ModelPrice, PriceSnapshot, Route, TaskRoute, save_route
    from costroute.task import ProviderConfig

    price = ModelPrice(
        source="override", input_mtok=Decimal("0.1"), output_mtok=Decimal("0.4")
    )
    route = TaskRoute(
        status="settled",
        decided_at="bench",
        reason="bench",
        route=Route(kind="single", model="bench/fake-model"),
        prices=PriceSnapshot(
            catalog_version="bench",
            taken_at="bench",
            models={"bench/fake-model": price},
        ),
        providers={
            "bench": ProviderConfig(base_url=f"http://127.0.0.1:{upstream_port}/v1")
        },
    )
    routes = directory / "routes.toml"
    save_route(routes, "bench", route)
    return routes


def start_router(
    directory: Path, upstream_port: int
) -> tuple[subprocess.Popen[str], Proxy]:
    from costroute.server.keys import new_key
    from costroute.store import Store

    routes = write_routes(directory, upstream_port)
    db = directory / "ledger.db"
    made = new_key("bench", None)
    with Store(db) as store:
        store.create_api_key(made.record)
    command = [sys.executable, "-m", "costroute", "serve", "--routes", str(routes)]
    command += ["--port", "0", "--db", str(db)]
    process, url = start(command, "Serving on")
    return process, Proxy("costroute", url, "route/bench", made.key, process.pid)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def litellm_binary() -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"Installing LiteLLM's proxy into {LITELLM_VENV} …", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet"]
        subprocess.run(
            [*pip, "litellm[proxy]"], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
        print(f"LiteLLM install failed, skipping it: {reason[0]}")
        return None
    return binary if binary.exists() else None


def start_litellm(
    directory: Path, upstream_port: int
) -> tuple[subprocess.Popen[str], Proxy] | None:
    binary = litellm_binary()
    if binary is None:
        return None
    master_key = f"sk-{secrets.token_hex(32)}"
    config = directory / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n",
        encoding="utf-8",
    )
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1"]
    log = directory / "litellm.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1):
                return process, Proxy("litellm", url, "bench", master_key, process.pid)
        except OSError:
            time.sleep(0.5)
    process.kill()
    process.wait()
    last = log.read_text(errors="replace").strip().splitlines()[-3:]
    print("LiteLLM's proxy did not start; skipping it:", *last, sep="\n  ")
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Run:
    """One load: how many clients, how many requests, paced or flat out."""

    label: str
    clients: int
    requests: int
    rate: float = 0.0


def report(runs: list[Run], results: dict[str, dict[str, dict[str, Any]]]) -> None:
    direct = results["direct"]
    print(
        f"\n{'path':<11}{'load':<20}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'+p50 ms':>10}{'+p99 ms':>10}{'errors':>7}"
    )
    for name, by_run in results.items():
        for run in runs:
            figures, base = by_run.get(run.label), direct[run.label]
            if figures is None:
                print(
                    f"{name:<11}{run.label:<20}  skipped: slower than the offered rate"
                )
                continue
            added = " " * 20
            if name != "direct":
                added_p50 = figures["p50_ms"] - base["p50_ms"]
                added_p99 = figures["p99_ms"] - base["p99_ms"]
                added = f"{added_p50:>10.3f}{added_p99:>10.3f}"
            print(
                f"{name:<11}{run.label:<20}{figures['rps']:>8.0f}"
                f"{figures['p50_ms']:>10.3f}{figures['p99_ms']:>10.3f}"
                f"{added}{figures['errors']:>7}"
            )
    if "litellm" in results:
        flat_out = runs[1].label
        ratio = (
            results["costroute"][flat_out]["rps"] / results["litellm"][flat_out]["rps"]
        )
        print(
            f"\nthroughput, {flat_out}: costroute / litellm = {ratio:.1f}x (goal >= 3x)"
        )


def measure_all(proxy: Proxy, runs: list[Run]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for run in runs:
        flat_out = max((r["rps"] for r in results.values()), default=float("inf"))
        # A proxy slower than the offered rate only measures its own queue.
        if run.rate > flat_out:
            continue
        results[run.label] = measure(proxy, run.clients, run.requests, run.rate)
    print(f"{proxy.name}: {json.dumps(results)}", flush=True)
    return results


def soak(proxy: Proxy, requests: int) -> None:
    assert proxy.pid is not None
    before = rss_mib(proxy.pid)
    figures = measure(proxy, 100, requests)
    after = rss_mib(proxy.pid)
    growth = (after - before) / before * 100
    print(
        f"soak: {requests} requests at 100 clients, {figures['rps']:.0f} req/s, "
        f"{figures['errors']} errors; router RSS {before:.1f} MiB -> {after:.1f} MiB "
        f"({growth:+.1f}%, goal < 10%)",
        flush=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced req/s")
    parser.add_argument("--soak", type=int, default=100_000)
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args(argv)
    runs = [
        Run("1 client", 1, max(args.requests // 5, 500)),
        Run("100 clients", 100, args.requests),
        Run(f"100 clients {args.rate:.0f}/s", 100, args.requests, args.rate),
    ]
    directory = Path(tempfile.mkdtemp(prefix="costroute-bench-"))
    processes: list[subprocess.Popen[str]] = []
    try:
        upstream, port = start([sys.executable, __file__, "_upstream"], "READY")
        processes.append(upstream)
        router, proxy = start_router(directory, int(port))
        processes.append(router)
        results = {
            "direct": measure_all(
                Proxy("direct", f"http://127.0.0.1:{port}", "fake-model"), runs
            ),
            "costroute": measure_all(proxy, runs),
        }
        soak(proxy, args.soak)
        if not args.skip_litellm:
            started = start_litellm(directory, int(port))
            if started is not None:
                processes.append(started[0])
                results["litellm"] = measure_all(started[1], runs)
        report(runs, results)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        _run_loop(_serve_upstream())
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        url, clients, count, key, model, rate = sys.argv[2:8]
        load = _load(url, int(clients), int(count), key or None, model, float(rate))
        print(json.dumps(_run_loop(load)))
    else:
        sys.exit(main(sys.argv[1:]))
