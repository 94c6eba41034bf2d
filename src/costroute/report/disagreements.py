"""The items where candidates disagree, with each output, the target and the score.

Candidates disagree on an item when their verdicts differ (one right, another
wrong) or when the scorer read a different answer from each. Each candidate's
first sample of the item stands for it. Long texts are cut so that a run of
thousands of items still makes a small page; the cut is marked with "…".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from costroute.dataset import Item
from costroute.scorers import Score
from costroute.scorers.verdict import normalise
from costroute.store import ScoredCall
from costroute.task import Task

# The most rows a page lists, and the characters its cells may hold in all.
MAX_ROWS = 2000
TEXT_BUDGET_CHARS = 900_000
CELL_CHARS = 400
MIN_CELL_CHARS = 60

ByModel = dict[str, ScoredCall]


def disagreements(
    scored: Sequence[ScoredCall], items: list[Item], task: Task, models: list[str]
) -> dict[str, Any]:
    """The disagreement table's rows, in dataset order."""
    calls = first_calls(scored)
    known = {item.id: item for item in items}
    order = [item.id for item in items if item.id in calls]
    order += [item_id for item_id in calls if item_id not in known]
    found = [item_id for item_id in order if disagree(calls[item_id])]
    shown = found[:MAX_ROWS]
    cell_chars = _cell_chars(len(shown), len(models) + 2)
    rows = [
        _row(item_id, known.get(item_id), calls[item_id], models, task, cell_chars)
        for item_id in shown
    ]
    return {
        "models": models,
        "items": len(order),
        "found": len(found),
        "rows": rows,
        "cell_chars": cell_chars,
        "message": _message(len(models), len(order), len(found), len(shown)),
    }


def first_calls(scored: Sequence[ScoredCall]) -> dict[str, ByModel]:
    """Each item's calls by model, the lowest repeat standing for the model."""
    calls: dict[str, ByModel] = {}
    for entry in sorted(scored, key=lambda s: s.call.repeat, reverse=True):
        calls.setdefault(entry.call.item_id, {})[entry.call.model] = entry
    return calls


def disagree(by_model: ByModel) -> bool:
    if len(by_model) < 2:
        return False
    verdicts = {_correct(entry) for entry in by_model.values()}
    if len(verdicts) > 1:
        return True
    answers = [
        entry.score.answer if entry.score else None for entry in by_model.values()
    ]
    if any(answer is None for answer in answers) or len(set(answers)) == 1:
        return False
    return len({normalise(answer) for answer in answers}) > 1


def _row(
    item_id: str,
    item: Item | None,
    by_model: ByModel,
    models: list[str],
    task: Task,
    cell_chars: int,
) -> dict[str, Any]:
    findings = task.scorer.kind == "findings"
    cells = [_cell(by_model.get(model), cell_chars, findings) for model in models]
    return {
        "id": item_id,
        "input": _cut(_input_text(item, task), cell_chars),
        "target": _cut(_text(item.target) if item else "", cell_chars),
        "cells": cells,
    }


def _cell(entry: ScoredCall | None, cell_chars: int, findings: bool) -> dict[str, Any]:
    if entry is None:
        return {"output": "", "correct": None, "score": "not called"}
    call = entry.call
    output = call.output or ""
    if call.status != "ok":
        output = f"[{call.status}] {call.error or ''}".strip()
    score = entry.score
    return {
        "output": _cut(output, cell_chars),
        "correct": _correct(entry),
        "score": _score_text(score, findings) if score else "not scored",
    }


def _correct(entry: ScoredCall) -> bool:
    return entry.score is not None and entry.score.correct


def _score_text(score: Score, findings: bool) -> str:
    if findings:
        return f"{score.tp} found, {score.fp} false, {score.fn} missed"
    return f"{score.results:g}"


def _input_text(item: Item | None, task: Task) -> str:
    """The item's own fields: the one text field when there is one, else JSON."""
    if item is None:
        return ""
    hidden = {task.dataset.target, task.dataset.id}
    fields = {name: value for name, value in item.fields.items() if name not in hidden}
    texts = [value for value in fields.values() if isinstance(value, str)]
    if len(fields) == 1 and len(texts) == 1:
        return texts[0]
    return json.dumps(fields, ensure_ascii=False) if fields else ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell_chars(rows: int, cells_per_row: int) -> int:
    if rows == 0:
        return CELL_CHARS
    share = TEXT_BUDGET_CHARS // (rows * cells_per_row)
    return max(MIN_CELL_CHARS, min(CELL_CHARS, share))


def _message(models: int, items: int, found: int, shown: int) -> str | None:
    if models < 2:
        return "Only one candidate was measured, so there is nothing to disagree on."
    if items == 0:
        return "No item was answered in this run."
    if found == 0:
        return f"The candidates agree on all {items} items."
    if shown < found:
        return f"Showing the first {shown} of {found} items where candidates disagree."
    return None
