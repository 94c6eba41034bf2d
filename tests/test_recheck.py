"""`costroute recheck` on real runs, real routes files and a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from click.testing import CliRunner, Result
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from genai_prices.types import ModelPrice

from costroute.cli import cli
from costroute.recheck import RecheckOptions, recheck
from costroute.routes import line_of, load_routes
from costroute.store import LedgerEntry, Store, now_iso
from tests.conftest import invoke, run_json, spam_answers
from tests.conftest import write_task as write_fake_task
from tests.fakeserver import FakeServer
from tests.outcomes import Answer, answers, labelled, record_run, write_task

CHEAP, STRONG = "fake/cheap", "fake/strong"
MINI, MINI_41, NANO = "openai/gpt-4o-mini", "openai/gpt-4.1-mini", "openai/gpt-4.1-nano"


def _cheap_and_strong() -> dict[str, list[Answer]]:
    """The cheap model is right on 95 of 100 items at $0.001, the strong one on
    all at $0.01."""
    return {
        CHEAP: answers(labelled([i < 95 for i in range(100)]), "0.001"),
        STRONG: answers(labelled([True] * 100), "0.01"),
    }


def _recheck(*args: str) -> Result:
    return CliRunner().invoke(cli, ["recheck", *args], catch_exceptions=False)


def _recheck_json(*args: str) -> tuple[int, list[dict[str, Any]]]:
    result = _recheck(*args, "--format", "json")
    assert result.exit_code in (0, 3), result.output
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return result.exit_code, data


def _decided(tmp_path: Path) -> tuple[Path, str]:
    """A routes file decided from a stored run; returns it and the store's path."""
    store = Store(tmp_path / "db.sqlite")
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    run_id = record_run(store, task, _cheap_and_strong())
    store.close()
    routes = tmp_path / "routes.toml"
    db = str(tmp_path / "db.sqlite")
    result = invoke("decide", run_id, "--db", db, "-o", str(routes))
    assert result.exit_code == 0, result.output
    return routes, db


def _edit(routes: Path, task: str, key: str, value: Any) -> None:
    document = tomlkit.parse(routes.read_text(encoding="utf-8"))
    document["routes"][task][key] = value
    routes.write_text(tomlkit.dumps(document), encoding="utf-8")


@contextmanager
def _catalog_where(model_id: str, times: int) -> Iterator[None]:
    """The installed catalog with one OpenAI model's token prices multiplied."""
    snapshot = get_snapshot()
    openai = next(p for p in snapshot.providers if p.id == "openai")
    models = []
    for model in openai.models:
        if model.id == model_id:
            prices = model.prices
            assert isinstance(prices, ModelPrice)
            input_mtok, output_mtok = prices.input_mtok, prices.output_mtok
            assert isinstance(input_mtok, Decimal)
            assert isinstance(output_mtok, Decimal)
            dearer = ModelPrice(
                input_mtok=input_mtok * times, output_mtok=output_mtok * times
            )
            model = replace(model, prices=dearer)
        models.append(model)
    providers = [
        replace(p, models=models) if p is openai else p for p in snapshot.providers
    ]
    set_custom_snapshot(DataSnapshot(providers=providers, from_auto_update=False))
    try:
        yield
    finally:
        set_custom_snapshot(None)


@pytest.fixture
def catalog_run(tmp_path: Path) -> Iterator[tuple[Path, str, FakeServer]]:
    """Two catalog-priced OpenAI models, both always right, measured on the
    fake server and decided into a routes file: the cheaper one wins."""
    with FakeServer(models=("gpt-4o-mini", "gpt-4.1-mini")) as server:
        spam_answers(server)
        right = server.model_answers["strong"]
        server.model_answers = {"gpt-4o-mini": right, "gpt-4.1-mini": right}
        task = write_fake_task(
            tmp_path,
            server.base_url,
            extra=f'[providers.openai]\nbase_url = "{server.base_url}"',
            candidates=f'[[candidates]]\nmodel = "{MINI}"\n'
            f'[[candidates]]\nmodel = "{MINI_41}"\n',
        )
        db = str(tmp_path / "db.sqlite")
        run = run_json(str(task), "--db", db)
        routes = tmp_path / "routes.toml"
        decided = invoke("decide", run["run_id"], "--db", db, "-o", str(routes))
        assert decided.exit_code == 0, decided.output
        yield routes, db, server


def test_a_tenfold_dearer_cheap_model_flips_the_route(
    catalog_run: tuple[Path, str, FakeServer],
) -> None:
    routes, db, server = catalog_run
    server.reset_counts()

    with _catalog_where("gpt-4o-mini", 10), Store(Path(db)) as store:
        (check,) = recheck(store, routes, RecheckOptions())

    assert check.status == "flips"
    assert check.reasons == ["prices"]
    assert check.route is not None and check.route.model == MINI
    assert check.route_now is not None and check.route_now.model == MINI_41
    mini = next(c for c in check.candidates if c.model == MINI)
    assert mini.then_usd is not None and mini.now_usd == mini.then_usd * 10
    assert mini.price == "catalog"
    assert check.monthly_cost_now_usd is not None
    assert check.monthly_cost_then_usd is not None
    assert check.monthly_cost_now_usd > check.monthly_cost_then_usd
    # Repricing reads stored usage: no model is called.
    assert server.calls == 0


def test_saving_todays_numbers_lets_decide_write_the_new_route(
    catalog_run: tuple[Path, str, FakeServer],
) -> None:
    routes, db, server = catalog_run

    with _catalog_where("gpt-4o-mini", 10):
        code, (check,) = _recheck_json(str(routes), "--db", db, "--save")
        decided = invoke("decide", check["run_id_now"], "--db", db, "--format", "json")

    assert code == 3
    assert check["status"] == "flips" and check["run_id_now"] != check["run_id"]
    assert json.loads(decided.stdout)["route"] == {"kind": "single", "model": MINI_41}
    assert server.calls == 24  # the measuring run only


def test_unchanged_prices_leave_a_route_fresh(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)

    code, (check,) = _recheck_json(str(routes), "--db", db)

    assert code == 0
    assert check["status"] == "fresh" and check["reasons"] == []
    assert check["route"] == check["route_now"] == {"kind": "single", "model": CHEAP}
    assert check["cost_per_result_then_usd"] == check["cost_per_result_now_usd"]
    assert check["monthly_cost_then_usd"] == check["monthly_cost_now_usd"] == "1"
    assert set(check) >= {
        "task",
        "status",
        "reasons",
        "decided_at",
        "route",
        "route_now",
        "cost_per_result_then_usd",
        "cost_per_result_now_usd",
        "monthly_cost_then_usd",
        "monthly_cost_now_usd",
    }
    # Override prices are not in any catalog; they keep their price, and say so.
    assert {c["price"] for c in check["candidates"]} == {"price override, kept"}
    assert f"{CHEAP}: price override, kept" in check["notes"]


def test_an_old_decision_is_stale_and_exits_3(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)
    old = (datetime.now(UTC) - timedelta(days=45)).isoformat(timespec="seconds")
    _edit(routes, "spam-triage", "decided_at", old)

    code, (check,) = _recheck_json(str(routes), "--db", db)
    lenient, _ = _recheck_json(str(routes), "--db", db, "--max-age-days", "60")

    assert code == 3
    assert check["status"] == "stale" and check["reasons"] == ["age"]
    assert check["route_now"] == check["route"]
    assert "decided 45 days ago, more than --max-age-days 30" in check["notes"]
    assert lenient == 0


def test_live_feedback_outside_the_measured_interval_is_drift(
    tmp_path: Path,
) -> None:
    routes, db = _decided(tmp_path)
    with Store(Path(db)) as store:
        _live(store, "spam-triage", [1.0] * 20 + [0.0] * 20, Decimal("0.001"))

    code, (check,) = _recheck_json(str(routes), "--db", db)

    assert code == 3
    assert check["status"] == "stale" and check["reasons"] == ["drift"]
    drift = check["drift"]
    assert drift["feedback"] == 40 and drift["quality"] == 0.5
    # $0.040 over 20 results, against about $0.00105 measured.
    assert drift["cost_per_result_usd"] == "0.002"
    quality, cost = drift["findings"]
    assert quality.startswith("live accuracy 0.500 from 40 feedback is outside")
    assert cost.startswith("live cost per result $0.00200 from 40 feedback")


def test_live_feedback_inside_the_interval_or_too_little_is_no_drift(
    tmp_path: Path,
) -> None:
    routes, db = _decided(tmp_path)
    with Store(Path(db)) as store:
        _live(store, "spam-triage", [1.0] * 5 + [0.0] * 5, Decimal("0.001"))
        _live(store, "other-task", [0.0] * 40, Decimal("0.001"))

    code, (check,) = _recheck_json(str(routes), "--db", db)

    assert code == 0
    assert check["drift"]["findings"] == []
    assert check["drift"]["note"] == "10 feedback so far; drift is judged from 30"


def _live(store: Store, task: str, scores: list[float], cost_usd: Decimal) -> None:
    """Routed requests with feedback, as the router records them."""
    entries = [
        LedgerEntry(
            request_id=f"{task}-{n}",
            created_at=now_iso(),
            key_id=None,
            task=task,
            model=CHEAP,
            status=200,
            latency_ms=10.0,
            cost_usd=cost_usd,
            calls=1,
        )
        for n in range(len(scores))
    ]
    store.record_ledger(entries)
    for entry, score in zip(entries, scores, strict=True):
        store.record_feedback(entry.request_id, score)


def test_a_new_candidate_pays_only_for_its_own_calls(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    strong = fake.model_answers["strong"]
    fake.model_answers = {**fake.model_answers, "gpt-4.1-nano": strong}
    task = write_fake_task(
        tmp_path,
        fake.base_url,
        extra=f'[providers.openai]\nbase_url = "{fake.base_url}"',
    )
    db = str(tmp_path / "db.sqlite")
    run = run_json(str(task), "--db", db)
    routes = tmp_path / "routes.toml"
    invoke("decide", run["run_id"], "--db", db, "-o", str(routes))
    fake.reset_counts()

    result = _recheck(str(routes), "--db", db, "--candidate", NANO)

    assert result.exit_code == 3, result.output
    assert fake.calls_by_model == {"gpt-4.1-nano": 12}
    assert "today's numbers in run" in result.stderr
    code, (check,) = _recheck_json(str(routes), "--db", db, "--candidate", NANO)
    # A second recheck serves the new model from the store's cache.
    assert fake.calls_by_model == {"gpt-4.1-nano": 12}
    assert code == 3
    assert check["status"] == "flips" and check["reasons"] == ["candidate"]
    assert check["route"] == {"kind": "single", "model": STRONG}
    assert check["route_now"] == {"kind": "single", "model": NANO}
    new = {c["model"]: c["new"] for c in check["candidates"]}
    assert new == {CHEAP: False, STRONG: False, NANO: True}
    with Store(Path(db)) as store:
        calls = store.calls(check["run_id_now"])
    paid = [c for c in calls if c.spent_usd]
    assert {c.model for c in calls} == {CHEAP, STRONG, NANO}
    assert len(calls) == 36 and paid == []  # the nano calls came from the cache


def test_the_table_shows_old_and_new_route_side_by_side(
    catalog_run: tuple[Path, str, FakeServer],
) -> None:
    routes, db, _ = catalog_run

    with _catalog_where("gpt-4o-mini", 10):
        result = _recheck(str(routes), "--db", db)

    assert result.exit_code == 3
    row = next(line for line in result.stdout.splitlines() if "spam-triage" in line)
    assert "flips" in row and MINI in row and MINI_41 in row
    assert "1 of 1 routes need a look: spam-triage (flips)" in result.stderr


def test_markdown_is_the_text_of_a_ticket(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)
    old = (datetime.now(UTC) - timedelta(days=90)).isoformat(timespec="seconds")
    _edit(routes, "spam-triage", "decided_at", old)

    result = _recheck(str(routes), "--db", db, "--format", "markdown")

    assert result.exit_code == 3
    text = result.stdout
    assert text.startswith("## costroute recheck: 1 of 1 routes need a look\n")
    assert "| spam-triage | stale | age | fake/cheap | same |" in text
    assert "### spam-triage: stale" in text
    assert "(90 days ago) from run" in text
    assert f"`costroute run {tmp_path / 'spam-triage.toml'}`" in text
    assert "| fake/cheap | $0.00105 | $0.00105 | price override, kept |" in text


def test_a_nonsense_routes_file_names_the_line(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)
    text = routes.read_text(encoding="utf-8")
    routes.write_text(
        text.replace("volume_per_month = 1000", 'volume_per_month = "lots"'),
        encoding="utf-8",
    )
    line = (
        routes.read_text(encoding="utf-8")
        .splitlines()
        .index('volume_per_month = "lots"')
    )

    result = _recheck(str(routes), "--db", db)

    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: {routes}: line {line + 1}: "
        "routes.spam-triage.dials.volume_per_month: Input should be a valid integer"
    )
    assert "costroute decide RUN -o" in result.stderr


def test_a_bad_date_or_unknown_run_names_the_line(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)
    _edit(routes, "spam-triage", "decided_at", "last tuesday")
    bad_date = _recheck(str(routes), "--db", db)
    _edit(routes, "spam-triage", "decided_at", now_iso())
    text = routes.read_text(encoding="utf-8")
    run_id = str(load_routes(routes).routes["spam-triage"].evidence.run_id)
    routes.write_text(text.replace(run_id, "20990101-000000-dead"), encoding="utf-8")

    no_run = _recheck(str(routes), "--db", db)

    assert bad_date.exit_code == 2
    assert "routes.spam-triage.decided_at: 'last tuesday' is not a date" in (
        bad_date.stderr
    )
    assert no_run.exit_code == 2
    line = line_of(routes.read_text(encoding="utf-8"), _run_id_loc())
    assert f"line {line}: routes.spam-triage.evidence.run_id: no run" in no_run.stderr


def _run_id_loc() -> tuple[str, ...]:
    return ("routes", "spam-triage", "evidence", "run_id")


def test_line_of_finds_keys_tables_and_inline_tables() -> None:
    text = (
        "# routes\n"
        "[routes.spam-triage]\n"
        'status = "settled"\n'
        'route = { kind = "teleport" }\n'
        "[routes.spam-triage.dials]\n"
        'volume_per_month = "lots"\n'
        '[routes."a.b".dials]\n'
        "volume_per_month = 3\n"
    )

    assert line_of(text, ("routes", "spam-triage", "dials", "volume_per_month")) == 6
    assert line_of(text, ("routes", "spam-triage", "route", "kind")) == 4
    assert line_of(text, ("routes", "spam-triage", "decided_at")) == 2
    assert line_of(text, ("routes", "a.b", "dials", "volume_per_month")) == 8
    assert line_of(text, ("routes", "nope")) is None


def test_a_failed_price_update_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes, db = _decided(tmp_path)
    monkeypatch.setenv("COSTROUTE_PRICES_URL", "http://127.0.0.1:9/prices.json")

    result = _recheck(str(routes), "--db", db, "--update-prices")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: could not fetch today's prices from http://127.0.0.1:9/prices.json"
    )
    assert "drop --update-prices" in result.stderr


def test_an_unknown_task_or_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)

    unknown = _recheck(str(routes), "--db", db, "--task", "nope")
    no_store = _recheck(str(routes), "--db", str(tmp_path / "none.sqlite"))

    assert unknown.exit_code == 2
    assert "has no route for nope; its tasks: spam-triage" in unknown.stderr
    assert no_store.exit_code == 2 and "no store at" in no_store.stderr


def test_a_dearer_route_that_still_wins_is_stale_on_prices(
    catalog_run: tuple[Path, str, FakeServer],
) -> None:
    routes, db, _ = catalog_run

    with _catalog_where("gpt-4o-mini", 2):
        code, (check,) = _recheck_json(str(routes), "--db", db)

    assert code == 3
    assert check["status"] == "stale" and check["reasons"] == ["prices"]
    assert check["route_now"] == check["route"]
    assert "the route's monthly cost moved +100%" in check["notes"][0]


def test_a_candidate_already_measured_is_not_measured_again(tmp_path: Path) -> None:
    routes, db = _decided(tmp_path)

    code, (check,) = _recheck_json(str(routes), "--db", db, "--candidate", STRONG)

    assert code == 0
    assert check["run_id_now"] == check["run_id"]
    assert (
        f"{STRONG} is already a candidate of run {check['run_id']}" in (check["notes"])
    )
