"""Recorded outcomes imported as runs: a JSONL file of outcomes, and RealVuln."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costroute.runner import task_from_run
from costroute.store import Store
from costroute.summary import CandidateSummary, summarize
from tests.conftest import ITEMS, invoke, run_json, spam_answers, write_task
from tests.fakeserver import FakeServer

# The shared data sits beside the repository, as on developer machines and in CI.
REALVULN = Path(__file__).resolve().parents[2] / "shared" / "data" / "realvuln"
needs_realvuln = pytest.mark.skipif(
    not (REALVULN / "ground-truth").is_dir(), reason="RealVuln data not present"
)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _import_json(*args: str) -> dict[str, Any]:
    result = invoke("import", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _by_model(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["model"]: c for c in data["candidates"]}


def _usd(amount: Decimal) -> Decimal:
    """An amount as the JSON summary writes it, to the trillionth of a dollar."""
    return amount.quantize(Decimal("1e-12"))


def _runs(db: Path) -> list[str]:
    if not db.exists():
        return []
    with Store(db) as store:
        return [run.id for run in store.runs()]


# Outcomes


@pytest.fixture
def task(tmp_path: Path) -> Path:
    # The provider is never called: an import only reads the task's dataset.
    return write_task(tmp_path, "http://127.0.0.1:9/v1", candidates="")


def _answers(model: str, right: int, cost_usd: str = "0.001") -> list[dict[str, Any]]:
    """The first `right` items answered correctly, the rest with the wrong label."""
    rows = []
    for n, item in enumerate(ITEMS):
        wrong = "ham" if item["label"] == "spam" else "spam"
        rows.append(
            {
                "item_id": item["id"],
                "model": model,
                "output": item["label"] if n < right else wrong,
                "cost_usd": cost_usd,
                "input_tokens": 100,
                "output_tokens": 2,
                "latency_ms": 250 + n,
            }
        )
    return rows


def test_outcomes_scored_by_the_task_scorer(tmp_path: Path, task: Path) -> None:
    rows = _answers("openai/cheap", right=9) + _answers("openai/strong", 12, "0.01")
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", rows)
    db = tmp_path / "db.sqlite"

    data = _import_json("outcomes", str(outcomes), "--task", str(task), "--db", str(db))

    cheap, strong = _by_model(data)["openai/cheap"], _by_model(data)["openai/strong"]
    assert data["run_id"] in _runs(db)
    assert cheap["results"] == 9 and strong["results"] == 12
    assert Decimal(cheap["cost_usd"]) == Decimal("0.012")
    assert Decimal(cheap["cost_per_result_usd"]) == _usd(Decimal("0.012") / 9)
    assert Decimal(strong["cost_per_result_usd"]) == Decimal("0.01")
    assert cheap["cost_kind"] == "provider" and cheap["priced"] is True
    assert Decimal(cheap["spent_usd"]) == 0
    assert cheap["tokens_in"] == 1200 and cheap["latency_p50_ms"] == 255.5
    with Store(db) as store:
        run = store.run(data["run_id"])
        prices = store.prices(run.id)
        calls = store.calls(run.id)
        items = store.items(run.id)
    assert run.source == "import" and run.status == "done"
    assert {p.source for p in prices.values()} == {"reported"}
    assert len(items) == len(ITEMS) and len(calls) == 24
    assert all(call.request_hash.startswith("import:") for call in calls)


def test_outcomes_with_recorded_scores(tmp_path: Path, task: Path) -> None:
    rows = [
        {
            "item_id": "m0",
            "model": "a/x",
            "output": "spam",
            "cost_usd": "0.5",
            "score": 1,
        },
        {
            "item_id": "m1",
            "model": "a/x",
            "output": "so-so",
            "cost_usd": "0.5",
            "score": 0.5,
        },
        {"item_id": "m2", "model": "a/x", "output": "", "cost_usd": "0.5", "score": 0},
        {
            "item_id": "m3",
            "model": "a/x",
            "output": "",
            "cost_usd": "0.5",
            "error": "boom",
        },
    ]
    rows[3]["score"] = 0
    outcomes = _write_lines(tmp_path / "scored.jsonl", rows)
    db = tmp_path / "db.sqlite"

    data = _import_json("outcomes", str(outcomes), "--task", str(task), "--db", str(db))

    x = _by_model(data)["a/x"]
    # Results add up the scores; only full credit is correct.
    assert x["results"] == 1.5 and x["errors"] == 1
    assert Decimal(x["cost_per_result_usd"]) == _usd(Decimal("2.0") / Decimal("1.5"))
    assert x["quality"] == pytest.approx(1 / 4)
    with Store(db) as store:
        scored = {s.call.item_id: s.score for s in store.scored_calls(data["run_id"])}
    assert {k: (s.tp, s.fp, s.fn) for k, s in scored.items() if s} == {
        "m0": (1, 0, 0),
        "m1": (0, 1, 1),
        "m2": (0, 0, 1),
        "m3": (0, 0, 1),
    }


def test_json_number_costs_are_read_exactly(tmp_path: Path, task: Path) -> None:
    text = "".join(
        f'{{"item_id": "m{n}", "model": "a/x", "output": "ham", "cost_usd": 0.1}}\n'
        for n in range(3)
    )
    outcomes = tmp_path / "numbers.jsonl"
    outcomes.write_text(text, encoding="utf-8")

    data = _import_json(
        "outcomes", str(outcomes), "--task", str(task), "--db", str(tmp_path / "db")
    )

    # Three float 0.1s would sum to 0.30000000000000004.
    assert _by_model(data)["a/x"]["cost_usd"] == "0.3"


def test_a_line_without_cost_leaves_its_model_unpriced(
    tmp_path: Path, task: Path
) -> None:
    rows = _answers("a/unknown", right=12) + _answers("a/known", right=12)
    rows[3]["cost_usd"] = None
    del rows[4]["cost_usd"]
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", rows)
    db = tmp_path / "db.sqlite"

    data = _import_json("outcomes", str(outcomes), "--task", str(task), "--db", str(db))

    unknown, known = _by_model(data)["a/unknown"], _by_model(data)["a/known"]
    assert unknown["priced"] is False and unknown["cost_kind"] == "unpriced"
    assert unknown["cost_usd"] is None and unknown["cost_per_result_usd"] is None
    assert unknown["results"] == 12
    assert known["priced"] is True and Decimal(known["cost_usd"]) == Decimal("0.012")
    with Store(db) as store:
        assert store.prices(data["run_id"])["a/unknown"].source == "none"


GOOD = {"item_id": "m0", "model": "a/x", "output": "ham", "cost_usd": "0.001"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"item_id": "m1", "output": "ham", "cost_usd": "1"},
            "line 2: no field 'model'",
        ),
        ({**GOOD, "item_id": "m1", "cost_usd": "lots"}, "line 2: cost_usd 'lots'"),
        ({**GOOD, "item_id": "m1", "cost_usd": "-1"}, "line 2: cost_usd '-1' must be"),
        (
            {**GOOD, "item_id": "m1", "cost_usd": "NaN"},
            "line 2: cost_usd 'NaN' must be",
        ),
        ({**GOOD, "item_id": "m1", "cost_usd": True}, "line 2: cost_usd must be"),
        (GOOD, "line 2: item 'm0' and model 'a/x' are already on line 1"),
        ({**GOOD, "item_id": "m99"}, "line 2: item_id 'm99' is not in the task's"),
        ({**GOOD, "item_id": "m1", "model": "gpt-4o"}, "needs a provider prefix"),
        ({**GOOD, "item_id": "m1", "scroe": 1}, "line 2: unknown field 'scroe'"),
        ({**GOOD, "item_id": "m1", "score": 2}, "line 2: score must lie between"),
        ({**GOOD, "item_id": "m1", "input_tokens": -3}, "line 2: input_tokens must"),
        (
            {"item_id": "m1", "model": "a/x", "cost_usd": "1"},
            "line 2: no field 'output'",
        ),
        ([1, 2], "line 2: expected a JSON object"),
    ],
)
def test_a_bad_line_writes_nothing(
    tmp_path: Path, task: Path, bad: Any, message: str
) -> None:
    db = tmp_path / "db.sqlite"
    first = _write_lines(tmp_path / "first.jsonl", [GOOD])
    _import_json("outcomes", str(first), "--task", str(task), "--db", str(db))
    before = _runs(db)
    # The bad line comes after a good one, so a half-written run would show.
    outcomes = _write_lines(tmp_path / "bad.jsonl", [GOOD, bad])

    result = invoke(
        "import", "outcomes", str(outcomes), "--task", str(task), "--db", str(db)
    )

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: bad.jsonl ")
    assert message in result.stderr
    assert _runs(db) == before


def test_not_json_and_empty_files_are_refused(tmp_path: Path, task: Path) -> None:
    db = tmp_path / "db.sqlite"
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD) + "\n{oops\n", encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")

    not_json = invoke(
        "import", "outcomes", str(broken), "--task", str(task), "--db", str(db)
    )
    nothing = invoke(
        "import", "outcomes", str(empty), "--task", str(task), "--db", str(db)
    )
    missing = invoke(
        "import", "outcomes", str(tmp_path / "no.jsonl"), "--task", str(task)
    )

    assert (
        not_json.exit_code == 2
        and "broken.jsonl line 2: not valid JSON" in not_json.stderr
    )
    assert nothing.exit_code == 2 and "no outcomes" in nothing.stderr
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert _runs(db) == []


def test_a_judge_task_needs_recorded_scores(tmp_path: Path, task: Path) -> None:
    text = task.read_text().replace(
        'kind = "label"\nlabels = ["spam", "ham"]',
        'kind = "judge"\nmodel = "fake/strong"\nrubric = "Is it right?"',
    )
    task.write_text(text, encoding="utf-8")
    scored = _write_lines(tmp_path / "scored.jsonl", [{**GOOD, "score": 1}])
    unscored = _write_lines(tmp_path / "unscored.jsonl", [GOOD])
    db = str(tmp_path / "db.sqlite")

    ok = invoke("import", "outcomes", str(scored), "--task", str(task), "--db", db)
    refused = invoke("import", "outcomes", str(unscored), "--task", str(task))

    assert ok.exit_code == 0, ok.output
    assert (
        refused.exit_code == 2 and "unscored.jsonl line 1: no score" in refused.stderr
    )


def test_a_failed_write_leaves_no_half_run(
    tmp_path: Path, task: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", _answers("a/x", right=5))
    db = tmp_path / "db.sqlite"

    def broken(self: Store, scores: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Store, "record_scores", broken)
    with pytest.raises(sqlite3.OperationalError):
        invoke(
            "import", "outcomes", str(outcomes), "--task", str(task), "--db", str(db)
        )

    monkeypatch.undo()
    with Store(db) as store:
        assert store.runs() == []
        assert store.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0


def test_show_prints_an_imported_run(tmp_path: Path, task: Path) -> None:
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", _answers("a/x", right=6))
    db = str(tmp_path / "db.sqlite")
    imported = _import_json("outcomes", str(outcomes), "--task", str(task), "--db", db)

    shown = invoke("show", imported["run_id"], "--db", db, "--format", "json")
    table = invoke("show", imported["run_id"], "--db", db)
    listed = invoke("runs", "--db", db)

    assert shown.exit_code == 0 and json.loads(shown.stdout) == imported
    assert "a/x" in table.stdout and "provider-reported" in table.stdout
    assert "import" in listed.stdout


def test_summary_can_go_to_a_file(tmp_path: Path, task: Path) -> None:
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", _answers("a/x", right=6))
    report = tmp_path / "report.csv"

    result = invoke(
        "import",
        "outcomes",
        str(outcomes),
        "--task",
        str(task),
        "--db",
        str(tmp_path / "db"),
        "--format",
        "csv",
        "-o",
        str(report),
    )

    assert result.exit_code == 0 and result.stdout == ""
    assert report.read_text().startswith("model,items,calls")
    assert "a/x,12,12,0,6," in report.read_text()


def test_imported_calls_are_never_served_to_a_live_run(
    tmp_path: Path, fake: FakeServer
) -> None:
    spam_answers(fake)
    task = write_task(tmp_path, fake.base_url)
    db = str(tmp_path / "db.sqlite")
    rows = _answers("fake/cheap", right=12) + _answers("fake/strong", right=12)
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", rows)
    _import_json("outcomes", str(outcomes), "--task", str(task), "--db", db)

    data = run_json(str(task), "--db", db)

    assert fake.calls == 24
    assert all(c["cached_calls"] == 0 for c in data["candidates"])


def test_resume_refuses_an_imported_run(tmp_path: Path, task: Path) -> None:
    outcomes = _write_lines(tmp_path / "outcomes.jsonl", [GOOD])
    db = str(tmp_path / "db.sqlite")
    run_id = _import_json("outcomes", str(outcomes), "--task", str(task), "--db", db)[
        "run_id"
    ]

    result = invoke("run", str(task), "--resume", run_id, "--db", db)

    assert result.exit_code == 2 and "imported" in result.stderr


# RealVuln: an independent reading of the benchmark's rule


def _benchmark_path(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


def _benchmark_findings(run_file: Path) -> list[tuple[str, str, int]]:
    """(file, CWE, line) for every CWE of every result, as the benchmark reads them."""
    found = []
    for result in json.loads(run_file.read_text())["results"]:
        cwes = result["extra"]["metadata"].get("cwe") or []
        for cwe in [cwes] if isinstance(cwes, str) else cwes:
            match = re.match(r"(CWE-\d+)", cwe)
            if match and result.get("path"):
                line = result["start"]["line"]
                found.append((_benchmark_path(result["path"]), match[1], line))
    return found


def _benchmark_counts(run_file: Path | None, truth: list[dict[str, Any]]) -> list[int]:
    """tp, fp, fn: each report in turn takes the first known entry it matches."""
    findings = _benchmark_findings(run_file) if run_file else []
    taken: set[str] = set()
    tp = fp = 0
    for file, cwe, line in findings:
        matches = []
        for known in truth:
            start = known["location"]["start_line"]
            end = known["location"]["end_line"] or start
            if (
                known["id"] not in taken
                and cwe in known["acceptable_cwes"]
                and file == _benchmark_path(known["file"])
                and start - 10 <= line <= end + 10
            ):
                matches.append(known)
        if not matches:
            fp += 1
            continue
        best = sorted(matches, key=lambda known: not known["is_vulnerable"])[0]
        taken.add(best["id"])
        tp += best["is_vulnerable"]
        fp += not best["is_vulnerable"]
    fn = sum(
        1 for known in truth if known["is_vulnerable"] and known["id"] not in taken
    )
    return [tp, fp, fn]


def _benchmark_scanner(root: Path, scanner: str) -> tuple[list[int], Decimal]:
    """The scanner's tp, fp, fn over every app of run 1, and what run 1 cost."""
    totals, cost_usd = [0, 0, 0], Decimal(0)
    for app in sorted((root / "scan-results").iterdir()):
        folder = app / scanner
        metrics = folder / "run-1.metrics.json"
        findings = folder / "run-1.json"
        if not metrics.exists() and not findings.exists():
            continue
        status = "success"
        if metrics.exists():
            data = json.loads(metrics.read_text(), parse_float=Decimal)
            cost_usd += Decimal(data["cost_usd"])
            status = data["exit_status"]
        truth = json.loads(
            (root / "ground-truth" / app.name / "ground-truth.json").read_text()
        )
        used = findings if findings.exists() and status == "success" else None
        counts = _benchmark_counts(used, truth["findings"])
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return totals, cost_usd


@pytest.fixture(scope="module")
def realvuln_db(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    if not (REALVULN / "ground-truth").is_dir():
        pytest.skip("RealVuln data not present")
    db = tmp_path_factory.mktemp("realvuln") / "db.sqlite"
    data = _import_json("realvuln", str(REALVULN), "--db", str(db))
    yield db, data


def _summary(db: Path, run_id: str) -> dict[str, CandidateSummary]:
    with Store(db) as store:
        run = store.run(run_id)
        summary = summarize(store, run, task_from_run(run.task_json, run.task_path))
    return {c.model: c for c in summary.candidates}


@needs_realvuln
@pytest.mark.parametrize(
    "scanner",
    [
        "deepseek-v4-flash-agentic-v1",
        "gpt-5.5-agentic-v1",
        "claude-opus-4-6-agentic-v1",
    ],
)
def test_realvuln_agrees_with_the_benchmark_rule(
    realvuln_db: tuple[Path, dict[str, Any]], scanner: str
) -> None:
    db, data = realvuln_db
    (tp, fp, fn), cost_usd = _benchmark_scanner(REALVULN, scanner)

    summary = _summary(db, data["run_id"])[f"realvuln/{scanner}"]
    shown = _by_model(data)[f"realvuln/{scanner}"]

    assert [summary.outcomes.tp.sum(), summary.outcomes.fp.sum()] == [tp, fp]
    assert summary.outcomes.fn.sum() == fn
    assert summary.quality == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert shown["results"] == tp and shown["metric"] == "f1"
    # Cost per vulnerability found: the runs' recorded costs over true positives.
    assert summary.cost_usd == cost_usd
    assert summary.cost_per_result_usd == cost_usd / Decimal(tp)
    assert Decimal(shown["cost_usd"]) == _usd(cost_usd)
    assert Decimal(shown["cost_per_result_usd"]) == _usd(cost_usd / tp)


@needs_realvuln
def test_realvuln_pairs_as_many_findings_as_possible(
    realvuln_db: tuple[Path, dict[str, Any]],
) -> None:
    db, data = realvuln_db
    (tp, fp, fn), _ = _benchmark_scanner(REALVULN, "claude-sonnet-4-6-agentic-v1")

    summary = _summary(db, data["run_id"])["realvuln/claude-sonnet-4-6-agentic-v1"]

    # The benchmark pairs reports greedily in file order; on dsvpwa that leaves
    # one vulnerability unpaired that a maximum pairing finds. Nothing else moves.
    assert summary.outcomes.tp.sum() == tp + 1
    assert summary.outcomes.fn.sum() == fn - 1
    assert summary.outcomes.fp.sum() == fp - 1


@needs_realvuln
def test_realvuln_run_lists_every_scanner(
    realvuln_db: tuple[Path, dict[str, Any]],
) -> None:
    db, data = realvuln_db

    models = _by_model(data)
    shown = invoke("show", data["run_id"], "--db", str(db), "--format", "json")

    assert data["task"] == "realvuln" and data["floor"] == {"metric": "f1", "min": 0.5}
    assert len(models) == 21
    # The classic tools ran once, left results.json and no cost.
    assert models["realvuln/semgrep"]["cost_usd"] is None
    assert models["realvuln/semgrep"]["items"] == 25
    # Timed-out runs are errors that cost what they cost and found nothing.
    opus = models["realvuln/claude-opus-4-6-agentic-v1"]
    assert opus["errors"] == 10 and opus["items"] == 24
    assert shown.exit_code == 0 and json.loads(shown.stdout) == data


def _subset(tmp_path: Path) -> Path:
    """Two apps and three scanners of the real data, copied."""
    root = tmp_path / "realvuln"
    for app in ("realvuln-dsvw", "realvuln-flask-xss"):
        shutil.copytree(REALVULN / "ground-truth" / app, root / "ground-truth" / app)
        for scanner in ("gpt-5.5-agentic-v1", "kimi-k2.6-agentic-v1", "semgrep"):
            shutil.copytree(
                REALVULN / "scan-results" / app / scanner,
                root / "scan-results" / app / scanner,
            )
    return root


@needs_realvuln
def test_realvuln_subset_and_other_runs(tmp_path: Path) -> None:
    root = _subset(tmp_path)
    db = str(tmp_path / "db.sqlite")

    first = _import_json("realvuln", str(root), "--db", db)
    second = _import_json("realvuln", str(root), "--run", "2", "--db", db)
    none = invoke("import", "realvuln", str(root), "--run", "9", "--db", db)

    assert sorted(_by_model(first)) == [
        "realvuln/gpt-5.5-agentic-v1",
        "realvuln/kimi-k2.6-agentic-v1",
        "realvuln/semgrep",
    ]
    assert sorted(_by_model(second)) == [
        "realvuln/gpt-5.5-agentic-v1",
        "realvuln/kimi-k2.6-agentic-v1",
    ]
    for model, shown in _by_model(second).items():
        scanner = model.removeprefix("realvuln/")
        costs = [
            json.loads(path.read_text(), parse_float=Decimal)["cost_usd"]
            for path in root.glob(f"scan-results/*/{scanner}/run-2.metrics.json")
        ]
        assert Decimal(shown["cost_usd"]) == _usd(sum(costs, Decimal(0)))
    assert none.exit_code == 2 and "no scanner has run-9.json" in none.stderr


@needs_realvuln
@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("realvuln-dsvw/gpt-5.5-agentic-v1/run-1.json", "{not json", "not valid JSON"),
        (
            "realvuln-dsvw/gpt-5.5-agentic-v1/run-1.json",
            '{"results": 3}',
            "no 'results'",
        ),
        (
            "realvuln-flask-xss/kimi-k2.6-agentic-v1/run-1.metrics.json",
            '{"cost_usd": "a lot", "exit_status": "success"}',
            "cost_usd 'a lot' is not an amount",
        ),
        (
            "realvuln-flask-xss/semgrep/results.json",
            '{"results": [{"path": "a.py", "start": {"line": "x"}}]}',
            "results[0]: start.line 'x'",
        ),
    ],
)
def test_a_malformed_realvuln_file_writes_nothing(
    tmp_path: Path, file: str, text: str, message: str
) -> None:
    root = _subset(tmp_path)
    db = tmp_path / "db.sqlite"
    _import_json("realvuln", str(root), "--db", str(db))
    before = _runs(db)
    broken = root / "scan-results" / file
    broken.write_text(text, encoding="utf-8")

    result = invoke("import", "realvuln", str(root), "--db", str(db))

    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {broken.resolve()}")
    assert message in result.stderr
    assert _runs(db) == before


def test_realvuln_refuses_a_folder_of_another_shape(tmp_path: Path) -> None:
    (tmp_path / "scan-results").mkdir()

    result = invoke("import", "realvuln", str(tmp_path), "--db", str(tmp_path / "db"))

    assert result.exit_code == 2
    assert "no ground-truth/ folder" in result.stderr
