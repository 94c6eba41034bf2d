"""The runner against a real HTTP server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from costroute.pricing import Price, compute_cost_usd
from costroute.runner import share_busy_time
from costroute.store import CallRecord
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


def _by_model(data: dict[str, object]) -> dict[str, dict[str, object]]:
    candidates = data["candidates"]
    assert isinstance(candidates, list)
    return {c["model"]: c for c in candidates}


def test_run_reports_cost_per_correct_result(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    task = write_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"))

    cheap, strong = _by_model(data)["fake/cheap"], _by_model(data)["fake/strong"]
    assert cheap["results"] == 8 and strong["results"] == 12
    # 12 calls × (1000 × $0.10 + 10 × $0.40) per million tokens.
    assert Decimal(cheap["cost_usd"]) == Decimal("0.001248")
    # Cost per result divides by correct outputs, not by outputs.
    assert Decimal(cheap["cost_per_result_usd"]) == Decimal("0.001248") / 8
    assert Decimal(strong["cost_usd"]) == Decimal("0.0312")
    assert cheap["quality"] == pytest.approx(8 / 12)
    assert strong["clears_floor"] is True
    assert cheap["tokens_in"] == 12_000 and cheap["tokens_out"] == 120
    assert data["floor"] == {"metric": "accuracy", "min": 0.5}
    assert fake.calls == 24


def test_second_run_is_served_from_the_cache(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    task = write_task(tmp_path, fake.base_url)
    db = str(tmp_path / "db.sqlite")
    first = run_json(str(task), "--db", db)

    second = run_json(str(task), "--db", db)

    assert fake.calls == 24
    for model, candidate in _by_model(second).items():
        assert candidate["cached_calls"] == 12
        assert candidate["spent_usd"] == "0"
        assert candidate["cost_usd"] == _by_model(first)[model]["cost_usd"]
    assert second["run_id"] != first["run_id"]


def test_retries_rate_limits_server_errors_and_bad_bodies(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    fake.fail_next("429", count=2, retry_after=0.05, model="strong")
    fake.fail_next("500", count=1, model="cheap")
    fake.fail_next("malformed", count=1, model="cheap")
    fake.fail_next("drop", count=1, model="cheap")
    task = write_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"), "-j", "1")

    assert all(c["errors"] == 0 for c in data["candidates"])
    assert _by_model(data)["fake/strong"]["results"] == 12
    assert fake.calls == 24 + 5
    attempts = _attempts(tmp_path / "db.sqlite")
    assert sorted(attempts)[-2:] == [3, 4]


def _attempts(db: Path) -> list[int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT attempts FROM calls WHERE attempts > 1")
        return [row[0] for row in rows]


def test_failed_calls_count_as_wrong_and_stay_recorded(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    fake.fail_next("500", count=100, model="strong")
    task = write_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"), "--retries", "1")

    strong = _by_model(data)["fake/strong"]
    assert strong["errors"] == 12 and strong["calls"] == 12
    assert strong["results"] == 0
    assert strong["cost_per_result_usd"] is None
    assert strong["clears_floor"] is False


def test_an_unreachable_provider_is_stored_as_errors_that_say_why(
    tmp_path: Path,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    task = write_task(tmp_path, f"http://127.0.0.1:{port}/v1")

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"), "--retries", "1")

    assert all(c["errors"] == 12 and c["results"] == 0 for c in data["candidates"])
    with sqlite3.connect(tmp_path / "db.sqlite") as connection:
        errors = {row[0] for row in connection.execute("SELECT error FROM calls")}
    assert len(errors) == 1
    message = errors.pop()
    assert message.startswith("connection failed: ") and "refused" in message


def test_a_server_on_this_machine_is_not_reached_through_a_proxy(
    tmp_path: Path, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spam_answers(fake)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("http_proxy", dead_proxy)
    task = write_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"), "--retries", "1")

    assert all(c["errors"] == 0 for c in data["candidates"])
    assert fake.calls == 24


def test_timeouts_are_retried(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    fake.fail_next("timeout", count=1, model="cheap")
    task = write_task(tmp_path, fake.base_url, extra="timeout_s = 0.5")

    data = run_json(str(task), "--db", str(tmp_path / "db.sqlite"))

    assert _by_model(data)["fake/cheap"]["errors"] == 0
    assert fake.calls == 25


def test_budget_stops_new_calls(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    task = write_task(tmp_path, fake.base_url)

    # One strong call costs $0.0026; the cheap ones $0.000104.
    result = invoke(
        "run",
        str(task),
        "--db",
        str(tmp_path / "db.sqlite"),
        "--max-cost",
        "0.01",
        "-j",
        "1",
        "--quiet",
        "--format",
        "json",
    )

    assert_stopped_by_budget(result, fake, "0.01")


def test_unpriced_model_stops_before_any_call(tmp_path: Path, fake: FakeServer) -> None:
    candidates = '[[candidates]]\nmodel = "fake/cheap"\n'
    task = write_task(tmp_path, fake.base_url, candidates=candidates)

    result = invoke("run", str(task), "--db", str(tmp_path / "db.sqlite"))

    assert result.exit_code == 2
    assert "no price for fake/cheap" in result.stderr
    assert "--allow-unpriced" in result.stderr
    assert fake.calls == 0


def test_allow_unpriced_marks_cost_unknown(tmp_path: Path, fake: FakeServer) -> None:
    candidates = '[[candidates]]\nmodel = "fake/cheap"\n'
    task = write_task(tmp_path, fake.base_url, candidates=candidates)

    data = run_json(str(task), "--db", str(tmp_path / "db"), "--allow-unpriced")

    cheap = _by_model(data)["fake/cheap"]
    assert cheap["priced"] is False and cheap["cost_kind"] == "unpriced"
    assert cheap["cost_usd"] is None and cheap["cost_per_result_usd"] is None


def test_limit_and_repeat(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    task = write_task(tmp_path, fake.base_url)

    data = run_json(
        str(task), "--db", str(tmp_path / "db"), "--limit", "5", "--repeat", "2"
    )

    cheap = _by_model(data)["fake/cheap"]
    assert cheap["items"] == 5 and cheap["calls"] == 10
    assert fake.calls == 20


def test_model_flag_replaces_candidates(tmp_path: Path, fake: FakeServer) -> None:
    task = write_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db"), "--model", "fake/strong")

    assert [c["model"] for c in data["candidates"]] == ["fake/strong"]
    assert data["candidates"][0]["priced"] is True


def test_missing_api_key_is_a_usage_error(
    tmp_path: Path, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKE_KEY", raising=False)
    task = write_task(tmp_path, fake.base_url, extra='api_key_env = "FAKE_KEY"')

    result = invoke("run", str(task), "--db", str(tmp_path / "db"))

    assert result.exit_code == 2
    assert "set FAKE_KEY" in result.stderr
    assert fake.calls == 0


def test_resume_after_kill_pays_for_nothing_twice(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    fake.latency_ms = 150
    items = [{"id": f"i{n}", "text": f"note {n}", "label": "ham"} for n in range(30)]
    task = write_task(tmp_path, fake.base_url, items=items)
    db = tmp_path / "db.sqlite"
    process = _start_run(task, db)
    run_id = wait_for_stored_calls(db, minimum=10)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored_before = stored_keys(db)
    fake.latency_ms = 0

    data = run_json(str(task), "--db", str(db), "--resume", run_id)

    assert data["run_id"] == run_id
    assert all(c["calls"] == 30 for c in data["candidates"])
    assert_sent_once(fake, stored_before)


def _start_run(task: Path, db: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "costroute",
        "run",
        str(task),
        "--db",
        str(db),
        "-j",
        "2",
        "--quiet",
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_busy_time_is_shared_by_overlap() -> None:
    price = Price(
        model="local/x",
        source="compute",
        catalog_version="t",
        hourly_usd=Decimal("3.6"),
        gpus=2,
    )
    calls = [
        CallRecord(
            "r",
            "a",
            "local/x",
            0,
            "h",
            "ok",
            "compute",
            started_s=0.0,
            ended_s=2.0,
            id=1,
        ),
        CallRecord(
            "r",
            "b",
            "local/x",
            0,
            "h",
            "ok",
            "compute",
            started_s=1.0,
            ended_s=3.0,
            id=2,
        ),
        CallRecord(
            "r",
            "c",
            "local/x",
            0,
            "h",
            "ok",
            "compute",
            started_s=10.0,
            ended_s=11.0,
            id=3,
        ),
    ]

    costs = share_busy_time(calls, price)

    # Busy 4 s in all at $3.60 per hour per GPU × 2 GPUs: $0.008.
    assert sum(costs.values()) == compute_cost_usd(price, 4000.0) == Decimal("0.008")
    assert costs[1] == costs[2] == 2 * costs[3]


def test_cached_answers_are_priced_at_todays_price(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    task = write_task(tmp_path, fake.base_url)
    db = str(tmp_path / "db.sqlite")
    first = _by_model(run_json(str(task), "--db", db))["fake/cheap"]
    task.write_text(
        task.read_text().replace(
            "input_mtok = 0.1, output_mtok = 0.4", "input_mtok = 0.2, output_mtok = 0.8"
        )
    )

    second = _by_model(run_json(str(task), "--db", db))["fake/cheap"]

    assert second["cached_calls"] == 12 and second["spent_usd"] == "0"
    assert Decimal(second["cost_usd"]) == 2 * Decimal(first["cost_usd"])
    assert fake.calls == 24


def test_a_charge_the_provider_reports_is_kept_beside_the_price(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    fake.reported_cost = 0.0002
    task = write_task(tmp_path, fake.base_url)
    db = str(tmp_path / "db.sqlite")

    data = run_json(str(task), "--db", db)
    table = invoke("show", data["run_id"], "--db", db).stdout

    cheap = _by_model(data)["fake/cheap"]
    # 12 calls: $0.0024 reported against $0.001248 from the price list.
    assert Decimal(cheap["provider_cost_usd"]) == Decimal("0.0024")
    assert Decimal(cheap["cost_usd"]) == Decimal("0.001248")
    assert Decimal(cheap["provider_cost_gap_usd"]) == Decimal("0.001152")
    assert "fake/cheap: the provider reported $0.00240" in table
    assert "gap $0.00115 (+92.3%)" in table
