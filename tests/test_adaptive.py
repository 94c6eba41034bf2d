"""`costroute run --adaptive` against a real HTTP server on loopback."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from costroute.adaptive import AdaptivePlan, item_order
from tests.conftest import invoke, run_json, write_task
from tests.fakeserver import FakeServer, Json

CHEAP_PRICE = "price = { input_mtok = 0.1, output_mtok = 0.4 }"
STRONG_PRICE = "price = { input_mtok = 2.5, output_mtok = 10 }"


def _number(request: Json) -> int:
    match = re.search(r"note (\d+)", request["messages"][-1]["content"])
    assert match is not None
    return int(match.group(1))


def _label(number: int) -> str:
    return "spam" if number % 2 == 0 else "ham"


def _right(request: Json) -> str:
    return _label(_number(request))


def _right_nine_in_ten(request: Json) -> str:
    number = _number(request)
    wrong = "ham" if _label(number) == "spam" else "spam"
    return wrong if number % 10 == 3 else _label(number)


def _wrong(request: Json) -> str:
    return "ham" if _right(request) == "spam" else "spam"


def _items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"i{n}", "text": f"note {n}", "label": _label(n)} for n in range(count)
    ]


def _task(
    directory: Path,
    fake: FakeServer,
    items: int,
    floor: float = 0.5,
    candidates: dict[str, str] | None = None,
) -> Path:
    prices = candidates or {"fake/cheap": CHEAP_PRICE, "fake/strong": STRONG_PRICE}
    entries = "".join(
        f'[[candidates]]\nmodel = "{model}"\n{price}\n'
        for model, price in prices.items()
    )
    directory.mkdir(exist_ok=True)
    path = write_task(directory, fake.base_url, items=_items(items), candidates=entries)
    path.write_text(path.read_text().replace("min = 0.5", f"min = {floor}"))
    return path


def _adaptive(task: Path, db: Path, *extra: str) -> dict[str, Any]:
    return run_json(str(task), "--db", str(db), "--adaptive", *extra)


def _decision(run_id: str, db: Path) -> dict[str, Any]:
    result = invoke("decide", run_id, "--db", str(db), "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_clearly_different_candidates_stop_early_with_the_full_route(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.model_answers = {"cheap": _right_nine_in_ten, "strong": _right}
    task = _task(tmp_path, fake, items=120)

    data = _adaptive(task, tmp_path / "adaptive.db")
    adaptive_calls = fake.calls
    full = run_json(str(task), "--db", str(tmp_path / "full.db"))

    block = data["adaptive"]
    assert block["stopped_because"] == "settled"
    assert block["rounds"] == 1 and block["items"] == 20
    assert block["calls"] == adaptive_calls < 240 == fake.calls - adaptive_calls
    assert block["calls_saved"] == 240 - adaptive_calls
    assert "adaptive" not in full
    ours = _decision(data["run_id"], tmp_path / "adaptive.db")
    theirs = _decision(full["run_id"], tmp_path / "full.db")
    assert ours["status"] == theirs["status"] == "settled"
    assert ours["route"] == theirs["route"] == {"kind": "single", "model": "fake/cheap"}


def test_savings_are_reported_on_stderr_and_kept_with_the_run(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.model_answers = {"cheap": _right_nine_in_ten, "strong": _right}
    task = _task(tmp_path, fake, items=60)
    db = str(tmp_path / "db.sqlite")

    result = invoke("run", str(task), "--db", db, "--adaptive", "--format", "json")
    run_id = json.loads(result.stdout)["run_id"]
    shown = invoke("show", run_id, "--db", db, "--format", "json")

    assert result.exit_code == 0, result.output
    calls = fake.calls
    assert f"{calls} calls made, {120 - calls} saved" in result.stderr
    assert json.loads(shown.stdout)["adaptive"] == {
        "rounds": 1,
        "items": 20,
        "calls": calls,
        "calls_saved": 120 - calls,
        "stopped_because": "settled",
    }
    params = _params(tmp_path / "db.sqlite", run_id)
    assert params["adaptive"] is True and params["rounds_of"] == 20


def _params(db: Path, run_id: str) -> dict[str, Any]:
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT params_json FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    params: dict[str, Any] = json.loads(row[0])
    return params


def test_near_identical_candidates_run_to_the_end_unsettled(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.model_answers = {"cheap": _right_nine_in_ten, "strong": _right_nine_in_ten}
    candidates = {"fake/cheap": CHEAP_PRICE, "fake/strong": CHEAP_PRICE}
    task = _task(tmp_path, fake, items=60, candidates=candidates)

    data = _adaptive(task, tmp_path / "db.sqlite")

    assert data["adaptive"] == {
        "rounds": 3,
        "items": 60,
        "calls": 120,
        "calls_saved": 0,
        "stopped_because": "all_items",
    }
    assert fake.calls == 120
    assert _decision(data["run_id"], tmp_path / "db.sqlite")["status"] == "unsettled"


def test_a_candidate_below_the_floor_answers_only_the_first_round(
    tmp_path: Path,
) -> None:
    with FakeServer(models=("bad", "cheap", "strong")) as fake:
        fake.model_answers = {
            "bad": _wrong,
            "cheap": _right_nine_in_ten,
            "strong": _right,
        }
        candidates = {
            "fake/bad": CHEAP_PRICE,
            "fake/cheap": CHEAP_PRICE,
            "fake/strong": STRONG_PRICE,
        }
        task = _task(tmp_path, fake, items=200, floor=0.8, candidates=candidates)

        data = _adaptive(task, tmp_path / "db.sqlite")

        by_model = fake.calls_by_model
    assert by_model["bad"] == 20
    assert by_model["strong"] < by_model["cheap"] == data["adaptive"]["items"]
    assert data["adaptive"]["stopped_because"] == "settled"
    assert data["adaptive"]["calls_saved"] == 600 - sum(by_model.values())


def test_no_candidate_that_can_clear_the_floor_stops_after_one_round(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.model_answers = {"cheap": _wrong, "strong": _wrong}
    task = _task(tmp_path, fake, items=100, floor=0.8)

    data = _adaptive(task, tmp_path / "db.sqlite", "--rounds-of", "10")

    assert data["adaptive"]["stopped_because"] == "no_candidate"
    assert data["adaptive"]["calls"] == fake.calls == 20
    assert data["status"] == "done"


def test_resume_continues_an_adaptive_run_with_the_same_rounds(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.model_answers = {"cheap": _right_nine_in_ten, "strong": _right}
    fake.prompt_tokens, fake.completion_tokens = 1000, 10
    task = _task(tmp_path, fake, items=200, floor=0.8)
    db = str(tmp_path / "db.sqlite")

    # Round one costs $0.054; the budget runs out in round two.
    stopped = invoke(
        "run", str(task), "--db", db, "--adaptive", "--max-cost", "0.08",
        "--quiet", "--format", "json",
    )  # fmt: skip
    run_id = json.loads(stopped.stdout)["run_id"]
    resumed = run_json(str(task), "--db", db, "--resume", run_id)
    sent = Counter(
        (request.model, request.messages[-1]["content"]) for request in fake.requests
    )
    fake.reset_counts()
    whole = _adaptive(task, tmp_path / "whole.db")

    assert stopped.exit_code == 1 and "--resume" in stopped.stderr
    assert json.loads(stopped.stdout)["adaptive"]["stopped_because"] == "budget"
    assert json.loads(stopped.stdout)["adaptive"]["rounds"] == 2
    assert resumed["run_id"] == run_id
    assert max(sent.values()) == 1
    assert resumed["adaptive"] == whole["adaptive"]
    assert resumed["adaptive"]["stopped_because"] == "settled"
    assert resumed["adaptive"]["rounds"] > 2
    assert resumed["adaptive"]["calls"] == sum(sent.values()) == fake.calls


def test_rounds_options_need_adaptive(tmp_path: Path, fake: FakeServer) -> None:
    task = _task(tmp_path, fake, items=10)
    db = str(tmp_path / "db.sqlite")

    alone = invoke("run", str(task), "--db", db, "--rounds-of", "5")
    plain = run_json(str(task), "--db", db)
    resumed = invoke(
        "run", str(task), "--db", db, "--resume", plain["run_id"], "--adaptive"
    )

    assert alone.exit_code == 2 and "--adaptive" in alone.stderr
    assert resumed.exit_code == 2 and "not started with --adaptive" in resumed.stderr


def test_item_order_is_a_seeded_shuffle() -> None:
    items = [f"i{n}" for n in range(50)]

    first, again, other = (
        item_order(items, 0),
        item_order(items, 0),
        item_order(items, 1),
    )

    assert first == again != other
    assert sorted(first) == sorted(items) and first != items


def test_plan_round_trips_through_run_params() -> None:
    plan = AdaptivePlan(confidence=0.9, rounds_of=30, seed=4)

    assert AdaptivePlan.from_params({"repeat": 1, **plan.params()}) == plan
    assert AdaptivePlan.from_params({"repeat": 1}) is None
