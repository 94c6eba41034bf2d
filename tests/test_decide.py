"""The decision on runs with known outcomes, through the API and the CLI."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from costroute.cli import cli
from costroute.decide import Decision, decide_run, items_to_clear, unmeasured
from costroute.routes import load_routes
from costroute.store import Store
from costroute.task import DialsConfig, FloorConfig, Task
from tests.conftest import run_json, spam_answers
from tests.conftest import write_task as write_fake_task
from tests.fakeserver import FakeServer
from tests.outcomes import Answer, answers, labelled, record_run, write_task

CHEAP, STRONG = "fake/cheap", "fake/strong"


def _cheap_and_strong(
    cheap_right: int = 95, items: int = 100
) -> dict[str, list[Answer]]:
    """The cheap model is right on `cheap_right` items at $0.001; the strong one
    on every item at $0.01."""
    return {
        CHEAP: answers(labelled([i < cheap_right for i in range(items)]), "0.001"),
        STRONG: answers(labelled([True] * items), "0.01"),
    }


def _decide(
    store: Store,
    task: Task,
    run_id: str,
    *,
    dials: DialsConfig | None = None,
    floor: FloorConfig | None = None,
) -> Decision:
    run = store.run(run_id)
    decision, _ = decide_run(
        store, run, task, dials or task.dials, floor or task.floor, 0.95
    )
    return decision


def _cli(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(
        cli, ["decide", *args, "--format", "json"], catch_exceptions=False
    )
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


def test_the_cheap_model_wins_when_it_clears_the_floor(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong())

    decision = _decide(store, task, run_id)

    assert decision.status == "settled"
    assert decision.route is not None and decision.route.model == CHEAP
    assert decision.runner_up == STRONG
    assert decision.probability_best is not None and decision.probability_best > 0.99
    # 1,000 items a month: $0.001 against $0.01 an output.
    assert decision.monthly_savings_usd == Decimal("9")
    # Measuring cost $0.10 + $1.00; each output saves $0.009.
    assert decision.measurement_cost_usd == Decimal("1.1")
    assert decision.break_even_volume == 123
    assert decision.fallbacks == [STRONG]


def test_expected_cost_charges_wrong_outputs(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong())
    dials = DialsConfig(error_cost_usd=Decimal("0.02"), recoverable=False)

    decision = _decide(store, task, run_id, dials=dials)

    cheap = next(a for a in decision.candidates if a.name == CHEAP)
    # ($0.10 + 5 wrong × $0.02) ÷ 95 results.
    assert cheap.expected_cost_per_result_usd == Decimal("0.2") / 95
    assert cheap.monthly_cost_usd == Decimal("2")


def test_a_high_unrecoverable_error_cost_flips_to_the_frontier(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong())
    dials = DialsConfig(error_cost_usd=Decimal("1"), recoverable=False)

    decision = _decide(store, task, run_id, dials=dials)

    assert decision.route is not None and decision.route.model == STRONG
    assert decision.status == "settled"


def test_a_recoverable_error_costs_only_its_catch(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong())
    dials = DialsConfig(
        error_cost_usd=Decimal("1"), recoverable=True, catch_cost_usd=Decimal("0.001")
    )

    decision = _decide(store, task, run_id, dials=dials)

    assert decision.route is not None and decision.route.model == CHEAP


def test_on_prem_only_excludes_hosted_models(tmp_path: Path, store: Store) -> None:
    local = "vllm/llama"
    task = write_task(tmp_path, [local, CHEAP], floor=0.8)
    run_id = record_run(
        store,
        task,
        {
            local: answers(labelled([i < 97 for i in range(100)]), "0.005"),
            CHEAP: answers(labelled([True] * 100), "0.001"),
        },
    )

    anywhere = _decide(store, task, run_id)
    on_prem = _decide(store, task, run_id, dials=DialsConfig(on_prem_only=True))

    assert anywhere.route is not None and anywhere.route.model == CHEAP
    assert on_prem.route is not None and on_prem.route.model == local
    hosted = next(a for a in on_prem.candidates if a.name == CHEAP)
    assert not hosted.eligible
    assert hosted.why_not is not None and "own hardware" in hosted.why_not
    assert on_prem.fallbacks == []


def test_overlapping_intervals_are_unsettled(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, ["fake/a", "fake/b"], floor=0.7)
    run_id = record_run(
        store,
        task,
        {
            "fake/a": answers(labelled([i % 7 != 0 for i in range(100)]), "0.0100"),
            "fake/b": answers(labelled([i % 6 != 1 for i in range(100)]), "0.0101"),
        },
    )

    decision = _decide(store, task, run_id)

    assert decision.status == "unsettled"
    assert decision.probability_best is not None
    assert 0.5 <= decision.probability_best < 0.95
    assert decision.items_to_settle is None or decision.items_to_settle > 0
    assert "below 0.95" in decision.reason


def test_an_empty_run_has_no_candidate_and_exits_1(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    run_id = record_run(store, task, {CHEAP: [], STRONG: []})
    routes = tmp_path / "routes.toml"

    code, data, stderr = _cli(run_id, "--db", str(store.path), "-o", str(routes))

    assert code == 1
    assert data["status"] == "no_candidate"
    assert data["route"] is None
    assert all(c["why_not"] == "not measured in this run" for c in data["candidates"])
    assert stderr.startswith("Error: no candidate clears the accuracy floor 0.8")
    assert not routes.exists()


def test_no_candidate_names_the_closest_and_what_it_lacks(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.97)
    run_id = record_run(store, task, _cheap_and_strong())

    decision = _decide(store, task, run_id)

    assert decision.status == "no_candidate"
    assert decision.closest == STRONG
    assert "more items at this accuracy would clear it" in decision.reason


def test_items_to_clear_lifts_the_wilson_bound_to_the_floor() -> None:
    more = items_to_clear(1.0, 12, 0.9, 0.95)

    assert more == 23
    assert items_to_clear(0.85, 100, 0.9, 0.95) is None


def test_a_task_with_no_run_gets_the_starting_map(tmp_path: Path) -> None:
    task = write_task(tmp_path, [CHEAP])
    routes = tmp_path / "routes.toml"

    code, data, _ = _cli(
        str(task.path), "--db", str(tmp_path / "none.sqlite"), "-o", str(routes)
    )

    assert code == 0
    assert data["status"] == "unmeasured"
    assert data["route"] == {"kind": "single", "model": "local/smollm2"}
    assert data["reason"].startswith("Unmeasured:")
    assert data["candidates"][0]["why_not"] == "not measured yet"
    assert not (tmp_path / "none.sqlite").exists()
    saved = load_routes(routes).routes["spam-triage"]
    assert saved.status == "unmeasured"
    assert saved.evidence.quality is None


def test_the_starting_map_sends_unrecoverable_work_to_the_frontier(
    tmp_path: Path,
) -> None:
    task = write_task(tmp_path, [CHEAP], category="customer-facing")

    decision = unmeasured(task, task.dials, task.floor)
    on_prem = unmeasured(task, DialsConfig(on_prem_only=True), task.floor)

    assert decision.route is not None and decision.route.model == "openai/gpt-4.1"
    assert on_prem.route is not None and on_prem.route.model == "local/smollm2"


def test_a_task_path_uses_its_latest_run(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    record_run(store, task, _cheap_and_strong(cheap_right=50))
    latest = record_run(store, task, _cheap_and_strong())

    code, data, _ = _cli(str(task.path), "--db", str(store.path))

    assert code == 0
    assert data["run_id"] == latest
    assert data["route"]["model"] == CHEAP


def test_an_unknown_target_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    result = CliRunner().invoke(
        cli, ["decide", "nope", "--db", str(store.path)], catch_exceptions=False
    )

    assert result.exit_code == 2
    assert "neither a task file nor a run" in result.stderr


def test_flags_override_the_task_dials(tmp_path: Path, store: Store) -> None:
    task = write_task(
        tmp_path,
        [CHEAP, STRONG],
        dials="volume_per_month = 2000\nerror_cost_usd = 0\nrecoverable = true",
    )
    run_id = record_run(store, task, _cheap_and_strong())
    db = str(store.path)

    _, by_file, _ = _cli(run_id, "--db", db)
    _, by_flags, _ = _cli(
        run_id, "--db", db, "--error-cost", "1", "--unrecoverable", "--volume", "10"
    )
    _, floored, _ = _cli(run_id, "--db", db, "--floor", "accuracy=0.97")

    assert by_file["route"]["model"] == CHEAP
    assert by_file["dials"]["volume_per_month"] == 2000
    assert by_flags["route"]["model"] == STRONG
    assert by_flags["dials"] == {
        "volume_per_month": 10,
        "error_cost_usd": "1",
        "recoverable": False,
        "catch_cost_usd": "0",
        "on_prem_only": False,
        "effective_error_cost_usd": "1",
    }
    assert floored["floor"] == {"metric": "accuracy", "min": 0.97}
    assert floored["status"] == "no_candidate"


def test_a_bad_floor_flag_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    result = CliRunner().invoke(cli, ["decide", "x", "--floor", "speed=0.9"])

    assert result.exit_code == 2
    assert "unknown metric 'speed'" in result.stderr


def test_the_routes_file_keeps_other_tasks(tmp_path: Path, store: Store) -> None:
    spam = write_task(tmp_path / "a", [CHEAP, STRONG], name="spam-triage")
    tickets = write_task(tmp_path / "b", [CHEAP, STRONG], name="tickets")
    spam_run = record_run(store, spam, _cheap_and_strong())
    tickets_run = record_run(store, tickets, _cheap_and_strong())
    routes, db = str(tmp_path / "routes.toml"), str(store.path)

    _cli(spam_run, "--db", db, "-o", routes)
    _cli(tickets_run, "--db", db, "-o", routes)
    _cli(spam_run, "--db", db, "-o", routes, "--error-cost", "1", "--unrecoverable")

    saved = load_routes(Path(routes)).routes
    assert set(saved) == {"spam-triage", "tickets"}
    assert saved["spam-triage"].route is not None
    assert saved["spam-triage"].route.model == STRONG
    assert saved["tickets"].route is not None
    assert saved["tickets"].route.model == CHEAP


def test_the_routes_section_holds_what_a_router_needs(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(
        tmp_path,
        [CHEAP, STRONG],
        extra='[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[providers.unused]\nbase_url = "http://127.0.0.1:8/v1"',
    )
    run_id = record_run(store, task, _cheap_and_strong())
    routes = tmp_path / "routes.toml"

    _cli(run_id, "--db", str(store.path), "-o", str(routes), "--volume", "500")

    saved = load_routes(routes).routes["spam-triage"]
    assert saved.status == "settled"
    assert saved.fallbacks == [STRONG]
    assert saved.dials.volume_per_month == 500
    assert saved.evidence.run_id == run_id
    assert saved.evidence.quality == 0.95
    # Money in a routes file is rounded to the picodollar.
    per_result = (Decimal("0.1") / 95).quantize(Decimal("1e-12"))
    assert saved.evidence.cost_per_result_usd == per_result
    assert saved.evidence.monthly_cost_usd == Decimal("0.5")
    assert len(saved.evidence.quality_ci) == 2
    assert saved.prices is not None
    assert saved.prices.models[CHEAP].input_mtok == Decimal(1)
    assert saved.prices.catalog_version.startswith("genai-prices")
    assert set(saved.candidates) == {CHEAP, STRONG}
    assert saved.candidates[CHEAP].self_hosted is False
    assert set(saved.providers) == {"fake"}
    assert saved.decided_at.endswith("+00:00")


def test_table_and_markdown_are_readable(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    run_id = record_run(store, task, _cheap_and_strong())
    runner = CliRunner()

    table = runner.invoke(cli, ["decide", run_id, "--db", str(store.path)])
    markdown = runner.invoke(
        cli, ["decide", run_id, "--db", str(store.path), "--format", "markdown"]
    )

    assert table.exit_code == 0 and markdown.exit_code == 0
    assert "fake/cheap ◀ route" in table.stdout
    assert "status: settled" in table.stdout
    assert "| fake/cheap ◀ route | yes |" in markdown.stdout
    assert "- route: fake/cheap" in markdown.stdout


def test_decide_after_a_real_run_on_the_fake_server(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    task = write_fake_task(tmp_path, fake.base_url)
    db = str(tmp_path / "db.sqlite")
    run = run_json(str(task), "--db", db)

    code, data, _ = _cli(run["run_id"], "--db", db)

    # The cheap model calls everything ham: 8 of 12, whose lower bound is
    # below the 0.5 floor; the strong one is always right.
    assert code == 0
    assert data["route"] == {"kind": "single", "model": "fake/strong"}
    cheap = next(c for c in data["candidates"] if c["model"] == "fake/cheap")
    assert cheap["eligible"] is False
    assert "below the floor 0.5" in cheap["why_not"]


def test_a_lower_confidence_settles_a_close_call(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, ["fake/a", "fake/b"], floor=0.7)
    run_id = record_run(
        store,
        task,
        {
            "fake/a": answers(labelled([i % 7 != 0 for i in range(100)]), "0.0100"),
            "fake/b": answers(labelled([i % 6 != 1 for i in range(100)]), "0.0101"),
        },
    )
    run = store.run(run_id)

    strict, _ = decide_run(store, run, task, task.dials, task.floor, 0.95)
    loose, _ = decide_run(store, run, task, task.dials, task.floor, 0.6)

    assert strict.status == "unsettled" and loose.status == "settled"
    strict_ci, loose_ci = (
        strict.candidates[0].quality_ci,
        loose.candidates[0].quality_ci,
    )
    assert strict_ci is not None and loose_ci is not None
    assert strict_ci[0] < loose_ci[0]


def test_the_floor_metric_can_change(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong(cheap_right=90))

    decision = _decide(store, task, run_id, floor=FloorConfig(metric="f1", min=0.8))

    cheap = next(a for a in decision.candidates if a.name == CHEAP)
    # Each wrong answer is a false positive and a miss: F1 = 180 / 200.
    assert cheap.quality == pytest.approx(0.9)
    assert decision.floor.metric == "f1"


def test_the_on_prem_flag_reaches_the_decision(tmp_path: Path, store: Store) -> None:
    local = "vllm/llama"
    task = write_task(tmp_path, [local, CHEAP], floor=0.8)
    run_id = record_run(
        store,
        task,
        {
            local: answers(labelled([True] * 100), "0.005"),
            CHEAP: answers(labelled([True] * 100), "0.001"),
        },
    )

    _, data, _ = _cli(run_id, "--db", str(store.path), "--on-prem-only")

    assert data["route"]["model"] == local
    assert data["dials"]["on_prem_only"] is True
    assert data["fallbacks"] == []
