"""Runs with known outcomes, written straight into a real SQLite store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from costroute import pricing
from costroute.dataset import Item
from costroute.pricing import Price
from costroute.scorers import Score
from costroute.store import CallRecord, Store
from costroute.task import Task, load_task

LABELS = ("spam", "ham")


@dataclass(frozen=True)
class Answer:
    """One stored call: what the model said, whether it was right, its cost."""

    item_id: str
    correct: bool
    cost_usd: Decimal
    output: str
    repeat: int = 0
    logprob: float | None = None
    status: str = "ok"


def write_task(
    directory: Path,
    candidates: list[str],
    *,
    name: str = "spam-triage",
    category: str = "classification",
    floor: float = 0.8,
    dials: str = "",
    scorer: str = 'kind = "label"\nlabels = ["spam", "ham"]',
    extra: str = "",
) -> Task:
    """A task file whose candidates are `candidates`, each priced by override."""
    entries = "".join(
        f'[[candidates]]\nmodel = "{model}"\n'
        + ("" if model.startswith(("vllm/", "local/")) else _price_line())
        for model in candidates
    )
    text = f"""
name = "{name}"
category = "{category}"
[dataset]
path = "items.jsonl"
target = "label"
id = "id"
[prompt]
user = "{{{{text}}}}"
[scorer]
{scorer}
[floor]
metric = "accuracy"
min = {floor}
[dials]
{dials}
{extra}
{entries}
"""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "items.jsonl").write_text("", encoding="utf-8")
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return load_task(path)


def _price_line() -> str:
    return "price = { input_mtok = 1, output_mtok = 1 }\n"


def answers(
    model_answers: list[tuple[bool, str]],
    cost_usd: str,
    *,
    repeat: int = 0,
    logprobs: list[float] | None = None,
) -> list[Answer]:
    """Answers for items i0, i1, … from (correct, output) pairs, at one cost each."""
    return [
        Answer(
            item_id=f"i{index}",
            correct=correct,
            cost_usd=Decimal(cost_usd),
            output=output,
            repeat=repeat,
            logprob=None if logprobs is None else logprobs[index],
        )
        for index, (correct, output) in enumerate(model_answers)
    ]


def labelled(correct: list[bool]) -> list[tuple[bool, str]]:
    """A label answer per item: the target ("spam") when right, "ham" when wrong."""
    return [(ok, "spam" if ok else "ham") for ok in correct]


def record_run(
    store: Store,
    task: Task,
    calls: dict[str, list[Answer]],
    prices: dict[str, Price] | None = None,
) -> str:
    """Store a finished run of `task` with exactly these calls and scores."""
    run_id = store.create_run(
        task.name, str(task.path), task.model_dump_json(), {"repeat": 1}
    )
    item_ids = sorted({a.item_id for answers in calls.values() for a in answers})
    store.save_items(
        run_id,
        [
            Item(id=i, line=n + 1, fields={}, target="spam")
            for n, i in enumerate(item_ids)
        ],
    )
    for model in calls:
        price = (prices or {}).get(model) or _price(model)
        store.save_price(run_id, price)
    for model, model_calls in calls.items():
        _record(store, run_id, model, model_calls)
    store.finish_run(run_id, "done")
    return run_id


def _price(model: str) -> Price:
    if model.startswith(("vllm/", "local/")):
        return pricing.compute_price(model, Decimal("1"), 1)
    return pricing.override_price(model, Decimal(1), Decimal(1))


def _record(store: Store, run_id: str, model: str, model_calls: list[Answer]) -> None:
    scores = []
    for answer in model_calls:
        call = CallRecord(
            run_id=run_id,
            item_id=answer.item_id,
            model=model,
            repeat=answer.repeat,
            request_hash=f"{run_id}-{model}-{answer.item_id}-{answer.repeat}",
            status=answer.status,
            cost_kind="compute" if model.startswith(("vllm/", "local/")) else "metered",
            output=answer.output,
            response_json=_response_json(answer),
            cost_usd=answer.cost_usd,
            spent_usd=answer.cost_usd,
        )
        call_id = store.record_call(call)
        scores.append((call_id, _score(answer)))
    store.record_scores(scores)


def _score(answer: Answer) -> Score:
    ok = answer.correct
    return Score(
        results=1.0 if ok else 0.0,
        correct=ok,
        tp=int(ok),
        fp=int(not ok),
        fn=int(not ok),
        answer=answer.output,
    )


def _response_json(answer: Answer) -> str:
    choice: dict[str, object] = {"message": {"content": answer.output}}
    if answer.logprob is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": answer.logprob}]}
    return json.dumps({"choices": [choice]})
