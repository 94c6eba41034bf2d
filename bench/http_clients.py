"""The runner's HTTP client, chosen by measurement: aiohttp against pyreqwest.

Both clients make the same calls (2,000 items × 2 candidates, `-j` in flight
per candidate) against the fake server of `runner_throughput.py`, with nothing
of costroute around them. Prints, for each, the share of the ideal wall time
and the CPU per call of this process (pyreqwest's own I/O thread included).

    python bench/http_clients.py [--items 2000] [--latency-ms 50] [-j 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import aiohttp
from pyreqwest.client import Client, ClientBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner_throughput import post_all, start_server

from costroute.runner import run_sync

HEADERS = {"Content-Type": "application/json"}


class AiohttpClient:
    def __init__(self, concurrency: int) -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        self.session = aiohttp.ClientSession(headers=HEADERS, connector=connector)

    async def post(self, url: str, body: bytes) -> bytes:
        async with self.session.post(url, data=body) as response:
            return await response.read()

    async def close(self) -> None:
        await self.session.close()


class PyreqwestClient:
    def __init__(self, concurrency: int) -> None:
        builder = ClientBuilder().default_headers(HEADERS)
        self.client: Client = builder.max_connections(concurrency).build()

    async def post(self, url: str, body: bytes) -> bytes:
        response = await self.client.post(url).body_bytes(body).build().send()
        return bytes(await response.bytes())

    async def close(self) -> None:
        await self.client.close()


CLIENTS: dict[str, type[AiohttpClient] | type[PyreqwestClient]] = {
    "aiohttp": AiohttpClient,
    "pyreqwest": PyreqwestClient,
}


async def _run(name: str, url: str, items: int, concurrency: int) -> float:
    """Two clients (one per candidate), each with `concurrency` workers."""
    clients = [CLIENTS[name](concurrency) for _ in range(2)]
    posts = [partial(client.post, url) for client in clients]

    started_s = time.perf_counter()
    await post_all(posts, items, concurrency)
    wall_s = time.perf_counter() - started_s
    for client in clients:
        await client.close()
    return wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("-j", "--concurrency", type=int, default=64)
    args = parser.parse_args()

    server, base_url = start_server(args.latency_ms, "asyncio")
    url = f"{base_url}/chat/completions"
    ideal_s = args.items * args.latency_ms / 1000 / args.concurrency
    print(f"ideal wall time {ideal_s:.3f} s; {args.items * 2} calls per client")
    try:
        for name in CLIENTS:
            cpu_started_s = time.process_time()
            wall_s = run_sync(_run(name, url, args.items, args.concurrency))
            cpu_ms = (time.process_time() - cpu_started_s) * 1000 / (args.items * 2)
            print(
                f"{name:10} share of ideal {ideal_s / wall_s:.3f}   "
                f"CPU per call {cpu_ms:.3f} ms"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
