"""Cascades: a cheap model answers, and a check escalates doubtful items to a
strong one.

A cascade costs nothing extra to evaluate: the run already holds both models'
outputs on the same items, so each escalation policy is simulated from the
stored calls. An escalated item pays for both calls (and for the second cheap
sample when the check compares two samples) and takes the strong model's answer.

The checks are those a router can run on a live cheap output: the scorer's
labels appear in it, the scorer's regex matches it, it holds a JSON object, two
cheap samples agree (runs with `--repeat` of 2 or more), or the mean token
log-probability clears a threshold (when the responses carry logprobs). A
failed cheap call always escalates.

The policy (pair, check, threshold) is chosen on a fit half of the items and
reported on the held-out half, split by a hash of the item id so the same item
always lands on the same side. The cascade then competes with the single models
on all the shared items, and only if its held-out quality reaches the floor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import permutations

import numpy as np
import numpy.typing as npt

from costroute import stats
from costroute.expected import ExpectedCost, effective_error_cost_usd
from costroute.routes import EscalationCheck, Route
from costroute.scorers.structured import find_json, is_object
from costroute.scorers.text import first_label
from costroute.scorers.verdict import normalise
from costroute.store import ScoredCall
from costroute.task import DialsConfig, FloorConfig, Task

BoolArray = npt.NDArray[np.bool_]
ByItem = dict[str, dict[int, ScoredCall]]

# Thresholds tried for the log-probability check: every gap between the fit
# items' values up to this many, evenly spaced quantiles of them beyond it.
LOGPROB_THRESHOLDS = 100

_REGEX_FLAGS = {"i": "i", "m": "m", "s": "s", "x": "x"}


@dataclass(frozen=True)
class SplitReport:
    """How a cascade does on one side of the fit/held-out split."""

    items: int
    quality: float | None
    quality_ci: tuple[float, float] | None
    expected_cost_per_result_usd: Decimal | None
    escalation_rate: float | None


@dataclass(frozen=True)
class Cascade:
    """One simulated cascade, with its per-item outcomes on the shared items."""

    cheap: str
    strong: str
    check: EscalationCheck
    item_ids: list[str]
    outcomes: stats.ItemOutcomes
    cost_usd: Decimal
    escalated: BoolArray
    fit: SplitReport
    held_out: SplitReport
    holds: bool

    @property
    def name(self) -> str:
        return f"{self.cheap} -> {self.strong}"

    @property
    def escalation_rate(self) -> float:
        return float(self.escalated.mean()) if len(self.escalated) else 0.0

    @property
    def route(self) -> Route:
        return Route(
            kind="cascade",
            cheap=self.cheap,
            strong=self.strong,
            escalate_when=self.check,
        )


@dataclass(frozen=True)
class Pair:
    """A cheap and a strong model's calls, aligned on the items both answered.

    `first` is the cheap model's first sample of each item, `second` its second
    sample where every item has one, `strong` the strong model's first sample.
    """

    cheap: str
    strong: str
    item_ids: list[str]
    first: list[ScoredCall]
    second: list[ScoredCall] | None
    strong_calls: list[ScoredCall]


@dataclass(frozen=True)
class Terms:
    """What a cascade is judged on: the floor's metric and what errors cost."""

    metric: stats.Metric
    floor_min: float
    findings: bool
    error_cost_usd: Decimal
    confidence: float

    @classmethod
    def of(
        cls, task: Task, floor: FloorConfig, dials: DialsConfig, confidence: float
    ) -> Terms:
        return cls(
            metric=floor.metric,
            floor_min=floor.min,
            findings=task.scorer.kind == "findings",
            error_cost_usd=effective_error_cost_usd(dials),
            confidence=confidence,
        )


@dataclass(frozen=True)
class Simulation:
    """A policy played over a pair's items: who escalated, what each item cost
    (exactly, in `costs_usd`) and the outcome of the answer that was kept."""

    check: EscalationCheck
    escalated: BoolArray
    outcomes: stats.ItemOutcomes
    costs_usd: list[Decimal]


def in_fit_split(item_id: str) -> bool:
    """Whether an item is on the fit side; a hash, so it never changes."""
    return hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0


def best_cascade(
    scored: Sequence[ScoredCall],
    task: Task,
    models: Sequence[str],
    floor: FloorConfig,
    dials: DialsConfig,
    confidence: float = 0.95,
) -> Cascade | None:
    """The cheapest cascade on the fit items among `models`, or None.

    A policy is judged on the fit items by the decision's own rule: the lower
    bound of its quality at `confidence` must reach the floor, and among those
    the lowest expected cost per result wins. A point estimate would favour the
    policy that just scrapes the floor by luck, which then fails held out.
    `models` should hold only the candidates that may serve the task (priced,
    within the hard constraints).
    """
    terms = Terms.of(task, floor, dials, confidence)
    found: list[tuple[tuple[bool, float], Pair, Simulation]] = []
    for pair in pairs(scored, models):
        fit = np.array([in_fit_split(item) for item in pair.item_ids])
        if not fit.any():
            fit = np.ones(len(pair.item_ids), dtype=bool)
        for check, escalate in policies(pair, task, fit):
            # Escalating nothing or everything is one of the single models.
            if not escalate.any() or escalate.all():
                continue
            simulation = simulate(pair, check, escalate)
            found.append((_fit_key(simulation, fit, terms), pair, simulation))
    if not found:
        return None

    _, pair, simulation = min(found, key=lambda entry: entry[0])
    return _cascade(pair, simulation, terms)


def pairs(scored: Sequence[ScoredCall], models: Sequence[str]) -> list[Pair]:
    """Every (cheap, strong) pair of `models` where the cheap one costs less."""
    calls = _by_model_item(scored)
    found = []
    for cheap, strong in permutations([m for m in models if m in calls], 2):
        pair = _pair(cheap, strong, calls[cheap], calls[strong])
        if pair is not None and _mean_cost(pair.first) < _mean_cost(pair.strong_calls):
            found.append(pair)
    return found


def policies(
    pair: Pair, task: Task, fit: BoolArray
) -> list[tuple[EscalationCheck, BoolArray]]:
    """Each check a router could run, with the items it would escalate."""
    failed = np.array([c.call.status != "ok" for c in pair.first])
    outputs = [c.call.output or "" for c in pair.first]
    found = [(check, failed | ~passed) for check, passed in _validators(task, outputs)]
    if pair.second is not None:
        found.append(_agreement(pair, failed))
    logprobs = np.array([_mean_logprob(c.call.response_json) for c in pair.first])
    if not np.isnan(logprobs).all():
        found += _logprob_policies(logprobs, failed, fit)
    return found


def simulate(pair: Pair, check: EscalationCheck, escalate: BoolArray) -> Simulation:
    """The cascade's per-item outcomes when `escalate` marks the escalated items."""
    rows = []
    costs_usd = []
    for index, first in enumerate(pair.first):
        cost_usd = _cost(first)
        if check.check == "agreement" and pair.second is not None:
            cost_usd += _cost(pair.second[index])
        answer = first
        if escalate[index]:
            answer = pair.strong_calls[index]
            cost_usd += _cost(answer)
        costs_usd.append(cost_usd)
        rows.append([float(cost_usd), *_score_row(answer)])

    matrix = np.array(rows, dtype=np.float64).reshape(-1, 6)
    outcomes = stats.ItemOutcomes(
        cost_usd=matrix[:, 0],
        results=matrix[:, 1],
        tp=matrix[:, 2].astype(np.int64),
        fp=matrix[:, 3].astype(np.int64),
        fn=matrix[:, 4].astype(np.int64),
        correct=matrix[:, 5],
    )
    return Simulation(check, escalate, outcomes, costs_usd)


def split_report(simulation: Simulation, mask: BoolArray, terms: Terms) -> SplitReport:
    """Quality, expected cost per result and escalation rate on masked items."""
    items = int(mask.sum())
    if items == 0:
        return SplitReport(0, None, None, None, None)

    outcomes = _subset(simulation.outcomes, mask)
    quality = stats.metric_value(
        terms.metric,
        tp=float(outcomes.tp.sum()),
        fp=float(outcomes.fp.sum()),
        fn=float(outcomes.fn.sum()),
        correct_count=float(outcomes.correct.sum()),
        n=items,
    )
    quality_ci = stats.quality_interval(outcomes, terms.metric, terms.confidence)
    cost = _expected(simulation, mask, terms)
    rate = float(simulation.escalated[mask].mean())
    return SplitReport(items, quality, quality_ci, cost.expected_per_result_usd, rate)


def _fit_key(
    simulation: Simulation, fit: BoolArray, terms: Terms
) -> tuple[bool, float]:
    """Policies that clear the floor on the fit items come first, cheapest first;
    then the rest, by how close the lower bound of their quality comes."""
    report = split_report(simulation, fit, terms)
    lower = report.quality_ci[0] if report.quality_ci else 0.0
    if lower < terms.floor_min:
        return (True, -lower)
    per_result = report.expected_cost_per_result_usd
    return (False, math.inf if per_result is None else float(per_result))


def _cascade(pair: Pair, simulation: Simulation, terms: Terms) -> Cascade:
    fit = np.array([in_fit_split(item) for item in pair.item_ids])
    held_out = split_report(simulation, ~fit, terms)
    holds = held_out.quality is None or held_out.quality >= terms.floor_min
    return Cascade(
        cheap=pair.cheap,
        strong=pair.strong,
        check=simulation.check,
        item_ids=pair.item_ids,
        outcomes=simulation.outcomes,
        cost_usd=sum(simulation.costs_usd, Decimal(0)),
        escalated=simulation.escalated,
        fit=split_report(simulation, fit, terms),
        held_out=held_out,
        holds=holds,
    )


def _subset(outcomes: stats.ItemOutcomes, mask: BoolArray) -> stats.ItemOutcomes:
    return stats.ItemOutcomes(
        cost_usd=outcomes.cost_usd[mask],
        results=outcomes.results[mask],
        tp=outcomes.tp[mask],
        fp=outcomes.fp[mask],
        fn=outcomes.fn[mask],
        correct=outcomes.correct[mask],
    )


def _expected(simulation: Simulation, mask: BoolArray, terms: Terms) -> ExpectedCost:
    outcomes = simulation.outcomes
    if terms.findings:
        wrong = float((outcomes.fp[mask] + outcomes.fn[mask]).sum())
    else:
        wrong = float((1.0 - outcomes.correct[mask]).sum())
    costs = [
        cost for cost, keep in zip(simulation.costs_usd, mask, strict=True) if keep
    ]
    return ExpectedCost(
        cost_usd=sum(costs, Decimal(0)),
        wrong=wrong,
        results=float(outcomes.results[mask].sum()),
        outputs=float(mask.sum()),
        error_cost_usd=terms.error_cost_usd,
    )


def _validators(
    task: Task, outputs: list[str]
) -> list[tuple[EscalationCheck, BoolArray]]:
    """Checks on the output's form that the task's scorer implies."""
    options = task.scorer.options()
    kind = task.scorer.kind
    if kind == "label" and options.get("labels"):
        labels = tuple(str(label) for label in options["labels"])
        passed = np.array([first_label(out, labels) is not None for out in outputs])
        return [(EscalationCheck(check="labels", labels=list(labels)), passed)]
    if kind == "regex" and options.get("pattern"):
        pattern = _inline_flags(str(options.get("flags") or "")) + options["pattern"]
        compiled = re.compile(pattern)
        passed = np.array([compiled.search(out) is not None for out in outputs])
        return [(EscalationCheck(check="regex", pattern=pattern), passed)]
    if kind == "json":
        fields = [str(field) for field in options.get("fields") or []]
        passed = np.array([_has_json(out, fields) for out in outputs])
        return [(EscalationCheck(check="json", fields=fields), passed)]
    return []


def _agreement(pair: Pair, failed: BoolArray) -> tuple[EscalationCheck, BoolArray]:
    assert pair.second is not None
    second_failed = np.array([c.call.status != "ok" for c in pair.second])
    differ = np.array(
        [_answer(a) != _answer(b) for a, b in zip(pair.first, pair.second, strict=True)]
    )
    return EscalationCheck(
        check="agreement", samples=2
    ), failed | second_failed | differ


def _logprob_policies(
    logprobs: stats.FloatArray, failed: BoolArray, fit: BoolArray
) -> list[tuple[EscalationCheck, BoolArray]]:
    known = logprobs[fit & ~np.isnan(logprobs)]
    if len(known) == 0:
        known = logprobs[~np.isnan(logprobs)]
    # An item without logprobs cannot show confidence, so it escalates.
    found = []
    for threshold in _thresholds(known):
        escalate = failed | ~(logprobs >= threshold)
        check = EscalationCheck(check="logprob", threshold=float(threshold))
        found.append((check, escalate))
    return found


def _thresholds(values: stats.FloatArray) -> list[float]:
    """Midpoints between neighbouring distinct values, so each separates cleanly."""
    distinct = np.unique(values)
    if len(distinct) < 2:
        return []
    gaps = np.arange(len(distinct) - 1)
    if len(gaps) > LOGPROB_THRESHOLDS:
        gaps = np.unique(np.linspace(0, len(gaps) - 1, LOGPROB_THRESHOLDS).round())
    chosen = gaps.astype(np.int64)
    return [float(v) for v in (distinct[chosen] + distinct[chosen + 1]) / 2]


def _by_model_item(scored: Sequence[ScoredCall]) -> dict[str, ByItem]:
    calls: dict[str, ByItem] = defaultdict(dict)
    for entry in scored:
        call = entry.call
        calls[call.model].setdefault(call.item_id, {})[call.repeat] = entry
    return calls


def _pair(
    cheap: str, strong: str, cheap_calls: ByItem, strong_calls: ByItem
) -> Pair | None:
    items = [
        item
        for item in cheap_calls
        if 0 in cheap_calls[item] and 0 in strong_calls.get(item, {})
    ]
    if not items:
        return None

    has_second = all(1 in cheap_calls[item] for item in items)
    return Pair(
        cheap=cheap,
        strong=strong,
        item_ids=items,
        first=[cheap_calls[item][0] for item in items],
        second=[cheap_calls[item][1] for item in items] if has_second else None,
        strong_calls=[strong_calls[item][0] for item in items],
    )


def _mean_cost(calls: list[ScoredCall]) -> Decimal:
    return sum((_cost(c) for c in calls), Decimal(0)) / max(len(calls), 1)


def _cost(scored: ScoredCall) -> Decimal:
    return scored.call.cost_usd or Decimal(0)


def _score_row(scored: ScoredCall) -> list[float]:
    score = scored.score
    if score is None:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    return [score.results, score.tp, score.fp, score.fn, float(score.correct)]


def _answer(scored: ScoredCall) -> str:
    if scored.score is not None and scored.score.answer is not None:
        return normalise(scored.score.answer)
    return normalise(scored.call.output or "")


def _has_json(output: str, fields: list[str]) -> bool:
    found = find_json(output, is_object)
    return found is not None and all(field in found for field in fields)


def _inline_flags(letters: str) -> str:
    kept = "".join(
        sorted({_REGEX_FLAGS[c] for c in letters.lower() if c in _REGEX_FLAGS})
    )
    return f"(?{kept})" if kept else ""


def _mean_logprob(response_json: str | None) -> float:
    """Mean token log-probability of an OpenAI-style response; NaN if absent."""
    if not response_json or '"logprob"' not in response_json:
        return math.nan
    try:
        choice = json.loads(response_json)["choices"][0]
        tokens = choice["logprobs"]["content"]
        values = [float(token["logprob"]) for token in tokens]
    except (ValueError, KeyError, IndexError, TypeError):
        return math.nan
    return sum(values) / len(values) if values else math.nan
