"""The numbers per candidate: quality with its interval, cost per result, latency."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np

from costroute import stats
from costroute.pricing import Price
from costroute.store import RunInfo, ScoredCall, Store
from costroute.task import Task


@dataclass(frozen=True)
class CandidateSummary:
    model: str
    items: int
    calls: int
    errors: int
    results: float
    metric: str
    quality: float
    quality_ci: tuple[float, float]
    cost_usd: Decimal | None
    spent_usd: Decimal | None
    cost_per_result_usd: Decimal | None
    cost_per_result_ci: tuple[float, float] | None
    clears_floor: bool
    tokens_in: int
    tokens_out: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cached_calls: int
    priced: bool
    cost_kind: str
    provider_cost_usd: Decimal | None
    outcomes: stats.ItemOutcomes
    item_ids: list[str]


@dataclass(frozen=True)
class JudgeSummary:
    """What grading cost: reported apart, never added to a candidate's cost."""

    model: str
    calls: int
    errors: int
    cost_usd: Decimal | None


@dataclass(frozen=True)
class RunSummary:
    run: RunInfo
    task: Task
    candidates: list[CandidateSummary]
    judge: JudgeSummary | None = None

    @property
    def floor_metric(self) -> str:
        return self.task.floor.metric

    @property
    def floor_min(self) -> float:
        return self.task.floor.min


def summarize(
    store: Store, run: RunInfo, task: Task, items: Collection[str] | None = None
) -> RunSummary:
    """Every candidate's numbers for one run, in the order the task lists them.

    With `items`, only the calls on those items count: the run as it stood after
    a round of an adaptive run.
    """
    scored = [
        entry
        for entry in store.scored_calls(run.id)
        if items is None or entry.call.item_id in items
    ]
    summary = summarize_calls(run, task, scored, store.prices(run.id))
    return replace(summary, judge=_judge(store, run.id))


def summarize_calls(
    run: RunInfo, task: Task, scored: list[ScoredCall], prices: dict[str, Price]
) -> RunSummary:
    """The numbers from calls and prices in hand, e.g. repriced ones."""
    by_model: dict[str, list[ScoredCall]] = defaultdict(list)
    for entry in scored:
        by_model[entry.call.model].append(entry)
    models = [
        c.model for c in task.candidates if c.model in prices or c.model in by_model
    ]
    models += [m for m in by_model if m not in models]
    candidates = [
        summarize_candidate(model, by_model.get(model, []), prices.get(model), task)
        for model in models
    ]
    return RunSummary(run=run, task=task, candidates=candidates)


def _judge(store: Store, run_id: str) -> JudgeSummary | None:
    calls = store.calls(run_id, purpose="judge")
    if not calls:
        return None
    return JudgeSummary(
        model=calls[0].model,
        calls=len(calls),
        errors=sum(1 for call in calls if call.status != "ok"),
        cost_usd=_total(call.cost_usd for call in calls),
    )


def summarize_candidate(
    model: str, calls: list[ScoredCall], price: Price | None, task: Task
) -> CandidateSummary:
    metric = task.floor.metric
    item_ids, outcomes = item_outcomes(calls)
    quality = _quality(outcomes, metric)
    quality_ci = stats.quality_interval(outcomes, metric) if calls else (0.0, 1.0)
    cost_usd = _total(c.call.cost_usd for c in calls)
    results = float(outcomes.results.sum())
    priced = price.priced if price is not None else cost_usd is not None
    latencies = [c.call.latency_ms for c in calls if c.call.cached_from is None]

    return CandidateSummary(
        model=model,
        items=len({c.call.item_id for c in calls}),
        calls=len(calls),
        errors=sum(1 for c in calls if c.call.status != "ok"),
        results=results,
        metric=metric,
        quality=quality,
        quality_ci=quality_ci,
        cost_usd=cost_usd if priced else None,
        spent_usd=_total(c.call.spent_usd for c in calls) if priced else None,
        cost_per_result_usd=_per_result(cost_usd, results) if priced else None,
        cost_per_result_ci=(
            stats.cost_per_result_interval(outcomes) if priced and calls else None
        ),
        clears_floor=bool(calls) and quality_ci[0] >= task.floor.min,
        tokens_in=sum(c.call.input_tokens for c in calls),
        tokens_out=sum(c.call.output_tokens for c in calls),
        latency_p50_ms=stats.percentile_ms(latencies, 50),
        latency_p95_ms=stats.percentile_ms(latencies, 95),
        cached_calls=sum(1 for c in calls if c.call.cached_from is not None),
        priced=priced,
        cost_kind=_cost_kind(calls, price),
        provider_cost_usd=_total_known(c.call.provider_cost_usd for c in calls),
        outcomes=outcomes,
        item_ids=item_ids,
    )


def item_outcomes(calls: list[ScoredCall]) -> tuple[list[str], stats.ItemOutcomes]:
    """Per-item sums over the item's calls (several with `--repeat`).

    `correct` is the share of an item's calls that were correct, so accuracy is
    the mean over items whatever the number of repeats.
    """
    rows: dict[str, list[float]] = {}
    for scored in calls:
        row = rows.setdefault(scored.call.item_id, [0.0] * 7)
        score = scored.score
        row[0] += float(scored.call.cost_usd or 0)
        row[6] += 1
        if score is None:
            continue
        row[1] += score.results
        row[2] += score.tp
        row[3] += score.fp
        row[4] += score.fn
        row[5] += int(score.correct)
    # Items in a fixed order, not the order their calls came back, so that the
    # seeded bootstrap gives the same intervals for the same outcomes.
    item_ids = sorted(rows)
    matrix = np.array([rows[i] for i in item_ids], dtype=np.float64).reshape(-1, 7)
    outcomes = stats.ItemOutcomes(
        cost_usd=matrix[:, 0],
        results=matrix[:, 1],
        tp=matrix[:, 2].astype(np.int64),
        fp=matrix[:, 3].astype(np.int64),
        fn=matrix[:, 4].astype(np.int64),
        correct=matrix[:, 5] / np.maximum(matrix[:, 6], 1),
    )
    return item_ids, outcomes


def _quality(outcomes: stats.ItemOutcomes, metric: stats.Metric) -> float:
    return stats.metric_value(
        metric,
        tp=float(outcomes.tp.sum()),
        fp=float(outcomes.fp.sum()),
        fn=float(outcomes.fn.sum()),
        correct_count=float(outcomes.correct.sum()),
        n=outcomes.n_items,
    )


def _total(values: Any) -> Decimal | None:
    total = Decimal(0)
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _total_known(values: Any) -> Decimal | None:
    known = [value for value in values if value is not None]
    return sum(known, Decimal(0)) if known else None


def _per_result(cost_usd: Decimal | None, results: float) -> Decimal | None:
    if cost_usd is None or results <= 0:
        return None
    return cost_usd / Decimal(str(results))


def _cost_kind(calls: list[ScoredCall], price: Price | None) -> str:
    if price is not None:
        return price.cost_kind
    kinds = {c.call.cost_kind for c in calls}
    return kinds.pop() if len(kinds) == 1 else "mixed"
