"""The judge scorer: a model grades outputs; its cost is reported apart."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costroute.scorers.judge import parse_grade
from tests.conftest import invoke, run_json, spam_answers, write_task
from tests.fakeserver import FakeServer

JUDGE = """
[scorer]
kind = "judge"
model = "fake/judge"
rubric = "The label matches the reference."
price = { input_mtok = 1, output_mtok = 1 }
"""


def _grade(request: dict[str, Any]) -> str:
    text = request["messages"][-1]["content"]
    match = re.search(r"Reference answer:\n(.*)\n\nAnswer to grade:\n(.*)", text, re.S)
    assert match is not None
    same = match.group(1).strip().lower() == match.group(2).strip().lower()
    return "SCORE: 1" if same else "SCORE: 0"


def _judge_task(tmp_path: Path, base_url: str) -> Path:
    task = write_task(tmp_path, base_url)
    text = task.read_text()
    scorer = text[text.index("[scorer]") : text.index("[floor]")]
    task.write_text(text.replace(scorer, JUDGE.lstrip() + "\n"))
    return task


def test_judge_grades_and_is_priced_apart(tmp_path: Path, fake: FakeServer) -> None:
    spam_answers(fake)
    # The cheap model shouts, so no grading request repeats another's: each of
    # the 24 outputs is graded by a call of its own.
    fake.model_answers = {
        **fake.model_answers,
        "cheap": lambda request: "HAM",
        "judge": _grade,
    }
    fake.prompt_tokens, fake.completion_tokens = 100, 2
    task = _judge_task(tmp_path, fake.base_url)

    data = run_json(str(task), "--db", str(tmp_path / "db"))

    by_model = {c["model"]: c for c in data["candidates"]}
    assert by_model["fake/cheap"]["results"] == 8
    assert by_model["fake/strong"]["results"] == 12
    # Candidates pay only for their own calls: 12 × (100 × 0.1 + 2 × 0.4) / 1M.
    assert Decimal(by_model["fake/cheap"]["cost_usd"]) == Decimal("0.0001296")
    judge = data["judge"]
    assert judge["model"] == "fake/judge" and judge["calls"] == 24
    assert Decimal(judge["cost_usd"]) == 24 * Decimal(102) / 1_000_000
    assert fake.calls_by_model["judge"] == 24


def test_judge_needs_a_price(tmp_path: Path, fake: FakeServer) -> None:
    task = _judge_task(tmp_path, fake.base_url)
    task.write_text(
        task.read_text().replace("price = { input_mtok = 1, output_mtok = 1 }\n", "")
    )

    result = invoke("run", str(task), "--db", str(tmp_path / "db"))

    assert result.exit_code == 2 and "no price for fake/judge" in result.stderr
    assert fake.calls == 0


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("SCORE: 0.75", 0.75),
        ("score=1", 1.0),
        ("PASS", 1.0),
        ("Incorrect.", 0.0),
        ("no idea", None),
        ("SCORE: 7", None),
    ],
)
def test_parse_grade(reply: str, grade: float | None) -> None:
    assert parse_grade(reply) == grade
