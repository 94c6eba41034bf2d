"""Runner throughput: 2,000 items × 2 candidates against a 50 ms fake server.

The ideal wall time is items × latency ÷ concurrency (both candidates run side by
side, each with `-j` calls in flight). Prints the achieved share of that ideal
and the runner's own CPU time per call. Goals: ≥ 0.85 of ideal, < 1 ms CPU/call.

As a baseline in the same run, the same calls are also made with costroute's
HTTP client alone (no runner: no store, cache, budget or scoring), which is as
close to the ideal as this machine and fake server allow.

The fake server runs in its own process. By default it is a small asyncio server
that answers every request after the latency, so that on a two-core machine the
figures measure the runner rather than the server; `--server tests` uses the test
suite's threaded fake server instead.

    python bench/runner_throughput.py [--items 2000] [--latency-ms 50] [-j 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from costroute.providers.http import HttpProvider  # noqa: E402
from costroute.runner import Runner, RunOptions, run_sync  # noqa: E402
from costroute.store import Store  # noqa: E402
from costroute.task import load_task  # noqa: E402

TASK = """
name = "throughput"
[dataset]
path = "items.jsonl"
target = "label"
[prompt]
user = "Classify: {{{{text}}}}"
[scorer]
kind = "label"
labels = ["spam", "ham"]
[providers.fake]
base_url = "{base_url}"
[[candidates]]
model = "fake/cheap"
price = {{ input_mtok = 0.1, output_mtok = 0.4 }}
[[candidates]]
model = "fake/strong"
price = {{ input_mtok = 2.5, output_mtok = 10 }}
"""

Post = Callable[[bytes], Awaitable[bytes]]

REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ham"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
RESPONSE += b"Content-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)


class _Upstream(asyncio.Protocol):
    """Answers each keep-alive request with a canned completion after a delay."""

    latency_s = 0.05

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = _content_length(self.buffer[:end])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            loop = asyncio.get_running_loop()
            loop.call_later(self.latency_s, self._reply)

    def _reply(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _serve(latency_ms: float) -> None:
    _Upstream.latency_s = latency_ms / 1000
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://127.0.0.1:{port}/v1", flush=True)
    await asyncio.Event().wait()


def start_server(latency_ms: float, kind: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, __file__, "_serve", str(latency_ms)]
    if kind == "tests":
        command = [
            sys.executable,
            "-m",
            "tests.fakeserver",
            "--port",
            "0",
            "--latency-ms",
            str(latency_ms),
            "--default-answer",
            "ham",
        ]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if not line or line[0] != "READY":
        raise SystemExit(f"fake server did not start: {line}")
    return server, line[1]


def write_task(
    directory: Path, base_url: str, items: int, template: str = TASK
) -> Path:
    rows = (
        json.dumps({"text": f"message number {n}", "label": "ham"})
        for n in range(items)
    )
    (directory / "items.jsonl").write_text("\n".join(rows) + "\n")
    path = directory / "task.toml"
    path.write_text(template.format(base_url=base_url))
    return path


def measure(task_path: Path, db: Path, concurrency: int) -> tuple[float, float]:
    task = load_task(task_path)
    with Store(db) as store:
        runner = Runner(task, store, RunOptions(concurrency=concurrency))
        started_s, cpu_started_s = time.perf_counter(), time.process_time()
        run_sync(runner.start())
        return time.perf_counter() - started_s, time.process_time() - cpu_started_s


async def post_all(posts: list[Post], items: int, concurrency: int) -> None:
    """`items` chat completions through each of `posts`, `concurrency` at once."""

    async def worker(post: Post, calls: range) -> None:
        for n in calls:
            message = {"role": "user", "content": f"Classify: message number {n}"}
            body = json.dumps({"model": "bench", "messages": [message]})
            json.loads(await post(body.encode()))

    await asyncio.gather(
        *(
            worker(post, range(k, items, concurrency))
            for post in posts
            for k in range(concurrency)
        )
    )


async def _client_alone(base_url: str, items: int, concurrency: int) -> None:
    """Both candidates' calls through the bare HTTP client, `concurrency` each."""
    clients = [HttpProvider(name, base_url, {}) for name in ("cheap", "strong")]
    await post_all([_completions(client) for client in clients], items, concurrency)
    for client in clients:
        await client.aclose()


def _completions(client: HttpProvider) -> Post:
    async def post(body: bytes) -> bytes:
        return (await client.post("/chat/completions", body)).body

    return post


def measure_client_alone(
    base_url: str, items: int, concurrency: int
) -> tuple[float, float]:
    started_s, cpu_started_s = time.perf_counter(), time.process_time()
    run_sync(_client_alone(base_url, items, concurrency))
    return time.perf_counter() - started_s, time.process_time() - cpu_started_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("-j", "--concurrency", type=int, default=64)
    parser.add_argument("--server", choices=["asyncio", "tests"], default="asyncio")
    args = parser.parse_args()

    server, base_url = start_server(args.latency_ms, args.server)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            task_path = write_task(Path(scratch), base_url, args.items)
            wall_s, cpu_s = measure(
                task_path, Path(scratch) / "db.sqlite", args.concurrency
            )
        alone_wall_s, alone_cpu_s = measure_client_alone(
            base_url, args.items, args.concurrency
        )
    finally:
        server.terminate()
        server.wait()

    calls = args.items * 2
    ideal_s = args.items * args.latency_ms / 1000 / args.concurrency
    print(f"calls               {calls}")
    print(f"ideal wall time     {ideal_s:.3f} s  (items × latency ÷ concurrency)")
    print(f"measured wall time  {wall_s:.3f} s")
    print(f"share of ideal      {ideal_s / wall_s:.3f}  (goal ≥ 0.85)")
    print(f"runner CPU per call {cpu_s / calls * 1000:.3f} ms  (goal < 1 ms)")
    print("baseline: the same calls through the HTTP client alone, no runner")
    print(f"  wall time         {alone_wall_s:.3f} s")
    print(f"  share of ideal    {ideal_s / alone_wall_s:.3f}")
    print(f"  CPU per call      {alone_cpu_s / calls * 1000:.3f} ms")
    print(f"runner ÷ baseline   {alone_wall_s / wall_s:.3f}  (of the client's speed)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_serve":
        run_sync(_serve(float(sys.argv[2])))
    else:
        main()
