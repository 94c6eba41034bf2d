"""Scale-out benchmark, one section per way of growing a deployment.

Section `runners` (part 1): 20,000 items on one candidate against a fake
upstream that answers every request after 200 ms, run by the local runner and
by the Ray executor with 4 actors on a local Ray instance, next to the ideal
wall time (items × latency ÷ concurrency, the `-j` calls in flight). Goal: the
Ray executor within 1.2× of the ideal.

The upstream is `bench/runner_throughput.py`'s asyncio server, in a process of
its own. Each run has its own store, so neither is served from the other's
cache. Ray's start and its actors' start are timed apart from the run.

    python bench/scale.py [--items 20000] [--latency-ms 200] [-j 256]
                          [--ray-workers 4] [--section runners]

Section `routers` (part 2, in `bench/scale_router.py`): two router replicas
sharing one PostgreSQL database against one router on SQLite, with budgets
held in the store; requests per second and the ledger's rows after the load.

    python bench/scale.py --section routers [--router-requests 20000]
                          [--router-clients 64] [--postgres URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from runner_throughput import start_server, write_task  # noqa: E402
from scale_router import add_arguments as router_arguments  # noqa: E402
from scale_router import routers  # noqa: E402

from costroute.executors import Executor  # noqa: E402
from costroute.runner import Runner, RunOptions, retry_policy, run_sync  # noqa: E402
from costroute.store import Store  # noqa: E402
from costroute.task import Task, load_task  # noqa: E402

TASK = """
name = "scale"
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
"""


@dataclass(frozen=True)
class Timing:
    wall_s: float
    driver_cpu_s: float
    calls: int
    correct: int


def run_once(
    task: Task, db: Path, options: RunOptions, executor: Executor | None
) -> Timing:
    with Store(db) as store:
        runner = Runner(task, store, options, executor=executor)
        started_s, cpu_started_s = time.perf_counter(), time.process_time()
        run_id = run_sync(runner.start())
        wall_s = time.perf_counter() - started_s
        cpu_s = time.process_time() - cpu_started_s
        scored = store.scored_calls(run_id)
    correct = sum(1 for s in scored if s.score is not None and s.score.correct)
    return Timing(wall_s, cpu_s, len(scored), correct)


def runners(args: argparse.Namespace, scratch: Path) -> None:
    """Part 1: the local runner and the Ray executor against the ideal."""
    server, base_url = start_server(args.latency_ms, "asyncio")
    try:
        task = load_task(write_task(scratch, base_url, args.items, TASK))
        options = RunOptions(concurrency=args.concurrency)
        local = run_once(task, scratch / "local.db", options, None)
        ray_start_s, actors_s, on_ray = _on_ray(task, scratch, options, args)
    finally:
        server.terminate()
        server.wait()

    ideal_s = args.items * args.latency_ms / 1000 / args.concurrency
    print(f"items × latency     {args.items} × {args.latency_ms:g} ms")
    print(f"concurrency         {args.concurrency} calls in flight")
    print(f"ideal wall time     {ideal_s:.2f} s  (items × latency ÷ concurrency)")
    for name, timing in (("local runner", local), ("ray executor", on_ray)):
        ratio = timing.wall_s / ideal_s
        print(
            f"{name:<19} {timing.wall_s:.2f} s  {ratio:.3f}× ideal  "
            f"{timing.calls / timing.wall_s:,.0f} calls/s  "
            f"driver CPU {timing.driver_cpu_s / timing.calls * 1000:.3f} ms/call  "
            f"{timing.calls} calls, {timing.correct} correct"
        )
    print(f"ray start           {ray_start_s:.2f} s  (not in the run's time)")
    print(
        f"ray actors start    {actors_s:.2f} s  ({args.ray_workers} actors, "
        "a one-item run before the timed one)"
    )
    verdict = "holds" if on_ray.wall_s / ideal_s <= 1.2 else "MISSED"
    print(f"goal ≤ 1.2× ideal   {verdict}")


def _on_ray(
    task: Task, scratch: Path, options: RunOptions, args: argparse.Namespace
) -> tuple[float, float, Timing]:
    import ray

    from costroute.ray_executor import RayOptions, ray_executor

    started_s = time.perf_counter()
    ray.init(num_cpus=args.ray_workers, include_dashboard=False)
    ray_start_s = time.perf_counter() - started_s
    try:
        where = RayOptions(workers=args.ray_workers)
        policy = retry_policy(options)
        with ray_executor(task, options.concurrency, policy, where) as executor:
            warm = RunOptions(concurrency=options.concurrency, limit=1)
            actors = run_once(task, scratch / "warm.db", warm, executor)
            timing = run_once(task, scratch / "ray.db", options, executor)
    finally:
        ray.shutdown()
    return ray_start_s, actors.wall_s, timing


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "runners": runners,
    "routers": routers,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("-j", "--concurrency", type=int, default=256)
    parser.add_argument("--ray-workers", type=int, default=4)
    router_arguments(parser)
    parser.add_argument(
        "--section",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable) [all]",
    )
    args = parser.parse_args()
    for name in args.section or list(SECTIONS):
        print(f"## {name}")
        with tempfile.TemporaryDirectory() as scratch:
            SECTIONS[name](args, Path(scratch))


if __name__ == "__main__":
    main()
