"""`costroute import outcomes`: a JSONL file of recorded calls, one per item and model.

Each line holds `item_id`, `model`, `output` and `cost_usd`, and may hold
`input_tokens`, `output_tokens`, `latency_ms`, `score` and `error`. Without a
`score` the task's scorer judges `output` against the item's target.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from costroute import pricing
from costroute.dataset import Item, load_items
from costroute.errors import UsageError
from costroute.imports import ImportBatch, Outcome, import_hash
from costroute.pricing import Price
from costroute.scorers import Score, Scorer, make_scorer
from costroute.store import CallRecord
from costroute.task import Task

FIELDS = (
    "item_id",
    "model",
    "output",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "score",
    "error",
)


@dataclass(frozen=True)
class OutcomeLine:
    """One line of the file, checked and converted."""

    line: int
    text: str
    item_id: str
    model: str
    output: str | None
    cost_usd: Decimal | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    score: float | None
    error: str | None


class _LineError(Exception):
    """A problem with one field; the reader adds the file and line."""


def prepare_outcomes(path: Path, task: Task) -> ImportBatch:
    """Read, check and score every line; raises `UsageError` on the first bad one."""
    lines = read_outcomes(path)
    items = load_items(task)
    by_id = {item.id: item for item in items}
    _check_items(path, lines, by_id, task)

    models = list(dict.fromkeys(line.model for line in lines))
    prices = {model: _price(model, lines) for model in models}
    scorer = _scorer(path, task, lines)
    outcomes = [
        _outcome(line, prices[line.model], scorer, by_id[line.item_id])
        for line in lines
    ]
    return ImportBatch(
        task=task.with_models(models),
        items=items,
        prices=list(prices.values()),
        outcomes=outcomes,
        params={"imported_from": str(path)},
    )


def read_outcomes(path: Path) -> list[OutcomeLine]:
    """Every line of the file, with duplicates of an item and model refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None

    lines: list[OutcomeLine] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue

        line = _parse(path, number, raw)
        key = (line.item_id, line.model)
        if key in seen:
            raise UsageError(
                f"{path.name} line {number}: item {line.item_id!r} and model "
                f"{line.model!r} are already on line {seen[key]}; give each item "
                "and model one line"
            )
        seen[key] = number
        lines.append(line)
    if not lines:
        raise UsageError(f"{path}: no outcomes; write one JSON object per line")
    return lines


def _parse(path: Path, number: int, raw: str) -> OutcomeLine:
    try:
        row = json.loads(raw, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path.name} line {number}: not valid JSON ({exc.msg}); "
            "each line must hold one JSON object"
        ) from None
    if not isinstance(row, dict):
        raise UsageError(
            f"{path.name} line {number}: expected a JSON object, "
            f"got {type(row).__name__}"
        )

    try:
        return _outcome_line(number, raw, row)
    except _LineError as exc:
        raise UsageError(f"{path.name} line {number}: {exc}") from None


def _outcome_line(number: int, raw: str, row: dict[str, Any]) -> OutcomeLine:
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise _LineError(
            f"unknown field {unknown[0]!r}; check the spelling (fields: "
            f"{', '.join(FIELDS)})"
        )

    error = _optional_text(row, "error")
    return OutcomeLine(
        line=number,
        text=raw,
        item_id=_item_id(row),
        model=_model(row),
        output=_output(row, failed=error is not None),
        cost_usd=_cost_usd(row.get("cost_usd")),
        input_tokens=_tokens(row, "input_tokens"),
        output_tokens=_tokens(row, "output_tokens"),
        latency_ms=_number(row, "latency_ms", 0.0),
        score=_score_value(row),
        error=error,
    )


def _item_id(row: dict[str, Any]) -> str:
    value = _required(row, "item_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _LineError(f"item_id must be a string, got {value!r}")
    return str(value)


def _model(row: dict[str, Any]) -> str:
    value = _required(row, "model")
    if not isinstance(value, str) or not value.strip():
        raise _LineError(
            f"model must be a model ref like 'openai/gpt-4o', got {value!r}"
        )
    if "/" not in value:
        raise _LineError(
            f"model {value!r} needs a provider prefix, e.g. 'openai/{value}'"
        )
    return value


def _output(row: dict[str, Any], failed: bool) -> str | None:
    if failed and row.get("output") is None:
        return None

    value = _required(row, "output")
    if not isinstance(value, str):
        raise _LineError(f"output must be a string, got {type(value).__name__}")
    return value


def _cost_usd(value: Any) -> Decimal | None:
    """USD as written: a decimal string, or a JSON number read without floats."""
    if value is None:
        return None

    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _LineError(
            f'cost_usd must be a decimal string like "0.0012", got {value!r}'
        )
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise _LineError(
            f"cost_usd {value!r} is not an amount in USD; write a decimal "
            'string like "0.0012"'
        ) from None
    if not amount.is_finite() or amount < 0:
        raise _LineError(f"cost_usd {value!r} must be a finite amount of 0 or more")
    return amount


def _tokens(row: dict[str, Any], name: str) -> int:
    value = row.get(name)
    if value is None:
        return 0

    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _LineError(f"{name} must be a whole number of 0 or more, got {value!r}")
    return value


def _number(row: dict[str, Any], name: str, default: float) -> float:
    value = row.get(name)
    if value is None:
        return default

    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _LineError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise _LineError(f"{name} must be a number of 0 or more, got {value!r}")
    return number


def _score_value(row: dict[str, Any]) -> float | None:
    if row.get("score") is None:
        return None

    score = _number(row, "score", 0.0)
    if score > 1:
        raise _LineError(
            f"score must lie between 0 (wrong) and 1 (correct), got {row['score']!r}"
        )
    return score


def _optional_text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None

    if not isinstance(value, str) or not value.strip():
        raise _LineError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _required(row: dict[str, Any], name: str) -> Any:
    if row.get(name) is None:
        raise _LineError(f"no field {name!r}")
    return row[name]


def _check_items(
    path: Path, lines: list[OutcomeLine], by_id: dict[str, Item], task: Task
) -> None:
    id_field = task.dataset.id
    where = f"its {id_field!r} field" if id_field else "its line numbers"
    for line in lines:
        if line.item_id not in by_id:
            raise UsageError(
                f"{path.name} line {line.line}: item_id {line.item_id!r} is not in "
                f"the task's dataset ({task.dataset_path}); match the ids to {where}"
            )


def _price(model: str, lines: list[OutcomeLine]) -> Price:
    """Reported costs; one line without a cost leaves the whole model unpriced."""
    costs = [line.cost_usd for line in lines if line.model == model]
    if any(cost is None for cost in costs):
        return pricing.unpriced(model)
    return pricing.reported_price(model)


def _scorer(path: Path, task: Task, lines: list[OutcomeLine]) -> Scorer | None:
    unscored = [line for line in lines if line.score is None]
    if not unscored:
        return None

    # A judge grades by calling a model, and an import pays for nothing.
    if task.scorer.kind == "judge":
        raise UsageError(
            f"{path.name} line {unscored[0].line}: no score, and the task's scorer "
            "is a judge model, which an import does not call; add a score "
            "(1 correct, 0 wrong) to every line"
        )
    return make_scorer(task.scorer, task.base_dir)


def _outcome(
    line: OutcomeLine, price: Price, scorer: Scorer | None, item: Item
) -> Outcome:
    call = CallRecord(
        run_id="",
        item_id=line.item_id,
        model=line.model,
        repeat=0,
        request_hash=import_hash(line.text),
        status="ok" if line.error is None else "error",
        cost_kind=price.cost_kind,
        output=line.output,
        error=line.error,
        input_tokens=line.input_tokens,
        output_tokens=line.output_tokens,
        cost_usd=line.cost_usd,
        spent_usd=Decimal(0) if price.priced else None,
        provider_cost_usd=line.cost_usd,
        latency_ms=line.latency_ms,
    )
    return Outcome(call=call, score=_score(line, scorer, item))


def _score(line: OutcomeLine, scorer: Scorer | None, item: Item) -> Score:
    if line.score is not None:
        return given_score(line.score, answered=bool((line.output or "").strip()))

    assert scorer is not None
    output = line.output if line.error is None else ""
    score = scorer.score(output or "", item)
    if line.error is not None:
        score = Score(**{**score.__dict__, "detail": f"call failed: {line.error}"})
    return score


def given_score(score: float, answered: bool) -> Score:
    """A score recorded with the outcome, counted the way the scorers count.

    Full credit is correct; anything less is a miss, and a false positive too
    when something was answered.
    """
    correct = score >= 1
    return Score(
        results=score,
        correct=correct,
        tp=int(correct),
        fp=int(answered and not correct),
        fn=int(not correct),
        detail="score recorded with the outcome",
    )
