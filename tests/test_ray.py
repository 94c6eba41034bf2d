"""The Ray executor on a local Ray instance, started once for this module."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costroute.pricing import DEFAULT_LOCAL_HOURLY_USD
from costroute.runner import Runner, RunOptions, retry_policy, run_sync
from costroute.store import Store
from costroute.task import load_task
from tests.conftest import (
    assert_sent_once,
    assert_stopped_by_budget,
    invoke,
    run_json,
    spam_answers,
    stored_keys,
    wait_for_stored_calls,
    write_task,
)
from tests.fakeserver import FakeServer

# CI installs the ray extra, so there a missing Ray fails rather than skips.
if os.environ.get("CI"):
    import ray

    from costroute import ray_executor
else:
    ray = pytest.importorskip("ray")
    ray_executor = pytest.importorskip("costroute.ray_executor")

KEY = "sk-test-forwarded-to-the-workers"


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[str]:
    """A small local Ray instance; one logical GPU lets a candidate ask for it."""
    ray.init(
        num_cpus=2,
        num_gpus=1,
        object_store_memory=128 * 1024 * 1024,
        include_dashboard=False,
        logging_level="WARNING",
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _calls(db: Path) -> list[tuple[Any, ...]]:
    """Each stored call and its score, less what differs from call to call."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT calls.model, item_id, status, output, input_tokens, "
            "output_tokens, cost_usd, spent_usd, cost_kind, request_hash, "
            "response_json, scores.correct FROM calls JOIN scores ON "
            "scores.call_id = calls.id ORDER BY calls.model, item_id"
        ).fetchall()
    return [(*row[:-2], _choices(row[-2]), row[-1]) for row in rows]


def _choices(response_json: str) -> Any:
    response = json.loads(response_json)
    return response["choices"], response["usage"]


def _without_latency(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in candidate.items() if not k.startswith("latency")}
        for candidate in data["candidates"]
    ]


def test_ray_run_matches_the_local_runner(
    tmp_path: Path, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spam_answers(fake)
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    fake.require_key = KEY
    monkeypatch.setenv("FAKE_KEY", KEY)
    task = write_task(tmp_path, fake.base_url, extra='api_key_env = "FAKE_KEY"')
    local_db, ray_db = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    local = run_json(str(task), "--db", str(local_db))
    fake.fail_next("429", count=2, retry_after=0.05, model="strong")
    fake.fail_next("500", count=1, model="cheap")

    on_ray = run_json(
        str(task), "--db", str(ray_db), "--executor", "ray", "--ray-workers", "2"
    )

    assert fake.calls == 24 + 24 + 3
    assert _without_latency(on_ray) == _without_latency(local)
    assert _calls(ray_db) == _calls(local_db)
    with sqlite3.connect(ray_db) as connection:
        attempts = connection.execute("SELECT sum(attempts) FROM calls").fetchone()
    assert attempts == (24 + 3,)
    # The key reached the workers through their runtime env, never the store.
    assert KEY.encode() not in ray_db.read_bytes()


def test_budget_holds_across_workers(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    task = write_task(tmp_path, fake.base_url)

    # One strong call costs $0.0026; the cheap ones $0.000104.
    result = invoke(
        "run",
        str(task),
        "--db",
        str(tmp_path / "db.sqlite"),
        "--executor",
        "ray",
        "--ray-workers",
        "3",
        "--max-cost",
        "0.01",
        "-j",
        "4",
        "--quiet",
        "--format",
        "json",
    )

    assert_stopped_by_budget(result, fake, "0.01")


def test_resume_after_an_interrupted_ray_run_pays_nothing_twice(
    tmp_path: Path, fake: FakeServer, cluster: str
) -> None:
    spam_answers(fake)
    fake.latency_ms = 150
    items = [{"id": f"i{n}", "text": f"note {n}", "label": "ham"} for n in range(30)]
    task = write_task(tmp_path, fake.base_url, items=items)
    db = tmp_path / "db.sqlite"
    command = [sys.executable, "-m", "costroute", "run", str(task), "--db", str(db)]
    command += ["--executor", "ray", "--ray-address", cluster, "-j", "2", "--quiet"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_id = wait_for_stored_calls(db, minimum=10)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored_before = stored_keys(db)
    fake.latency_ms = 0

    data = run_json(str(task), "--db", str(db), "--resume", run_id, "--executor", "ray")

    assert data["run_id"] == run_id
    assert all(c["calls"] == 30 for c in data["candidates"])
    assert_sent_once(fake, stored_before)


def test_local_model_runs_in_an_actor_on_a_gpu(tmp_path: Path) -> None:
    items = [
        {"id": "a", "text": "I love this, it is wonderful", "label": "positive"},
        {"id": "b", "text": "This is terrible and awful", "label": "negative"},
    ]
    candidates = '[[candidates]]\nmodel = "local/smollm2"\nmax_tokens = 4\ngpus = 1\n'
    path = write_task(
        tmp_path, "http://127.0.0.1:9/v1", items=items, candidates=candidates
    )
    task = load_task(path)
    options = RunOptions(concurrency=2)
    where = ray_executor.RayOptions()

    with (
        Store(tmp_path / "db.sqlite") as store,
        ray_executor.ray_executor(task, 2, retry_policy(options), where) as executor,
    ):
        runner = Runner(task, store, options, executor=executor)
        run_id = run_sync(runner.start())
        pools = dict(executor.pools)
        calls = store.calls(run_id)

    # One actor for the GGUF file, on the GPU; the driver never loaded it.
    [(name, pool)] = pools.items()
    assert name.startswith("local:") and name.endswith(".gguf")
    assert len(pool.actors) == 1
    _, options_used, _ = executor._placement(runner.candidates[0])
    assert options_used["num_gpus"] == 1
    assert runner.candidates[0].provider._server is None
    assert [c.status for c in calls] == ["ok", "ok"]
    assert all(0 < c.output_tokens <= 4 and c.input_tokens > 0 for c in calls)
    cost_usd = sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))
    assert Decimal(0) < cost_usd < DEFAULT_LOCAL_HOURLY_USD / 60


def test_a_gpu_the_cluster_lacks_is_a_usage_error(tmp_path: Path) -> None:
    candidates = '[[candidates]]\nmodel = "local/smollm2"\nmax_tokens = 4\ngpus = 2\n'
    task = write_task(tmp_path, "http://127.0.0.1:9/v1", candidates=candidates)

    result = invoke("run", str(task), "--db", str(tmp_path / "db"), "--executor", "ray")

    assert result.exit_code == 2
    assert "asks for gpus = 2 and the Ray cluster has 1" in result.stderr


def test_missing_ray_prints_the_install_command(tmp_path: Path) -> None:
    task = write_task(tmp_path, "http://127.0.0.1:9/v1")
    blocked = (
        "import sys; sys.modules['ray'] = None; "
        "from costroute.cli import main; sys.argv[0] = 'costroute'; main()"
    )
    command = [sys.executable, "-c", blocked, "run", str(task), "--executor", "ray"]
    command += ["--db", str(tmp_path / "db")]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: --executor ray needs Ray; install it: pip install 'costroute[ray]'"
    )
