"""The decision: where a task should go, from what was measured.

The rules, in order:

1. Hard constraints first. With `on_prem_only` only models on our own hardware
   may serve the task; an unpriced or unmeasured candidate cannot be weighed.
2. A candidate clears the floor when the lower bound of its quality interval,
   at the chosen confidence, is at or above the floor.
3. Among those, the route is the lowest expected cost per result (see
   `costroute.expected`); a simulated cascade competes on the same terms.
4. The winner is `settled` when a paired bootstrap over the shared items says it
   is cheaper than the runner-up with at least the chosen confidence, else
   `unsettled`, with an estimate of how many more items would settle it.

Monthly cost is the expected cost per output times the volume, which equals the
expected cost per result times the results that volume yields at the candidate's
own observed rate.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from costroute import stats
from costroute.assessment import (
    Assessment,
    Contender,
    assess,
    cascade_contender,
    exclusion,
    expected_on,
    own_hardware,
    single_contender,
    unmeasured_assessment,
)
from costroute.cascade import Cascade, best_cascade
from costroute.pricing import Price
from costroute.render import format_usd
from costroute.routes import (
    CandidateSettings,
    Evidence,
    ModelPrice,
    PriceSnapshot,
    Route,
    TaskRoute,
)
from costroute.startmap import starting_route
from costroute.store import RunInfo, ScoredCall, Store, now_iso
from costroute.summary import CandidateSummary, RunSummary, summarize
from costroute.task import DialsConfig, FloorConfig, Task

Status = Literal["settled", "unsettled", "no_candidate", "unmeasured"]

DEFAULT_CONFIDENCE = 0.95
_MAX_ITEMS = 10_000_000


@dataclass(frozen=True)
class Decision:
    """Where a task goes and why; `candidates` lists the eligible ones first."""

    task: str
    status: Status
    reason: str
    route: Route | None
    candidates: list[Assessment]
    dials: DialsConfig
    floor: FloorConfig
    confidence: float
    run_id: str | None = None
    runner_up: str | None = None
    probability_best: float | None = None
    items_to_settle: int | None = None
    monthly_savings_usd: Decimal | None = None
    most_expensive: str | None = None
    monthly_savings_vs_most_expensive_usd: Decimal | None = None
    measurement_cost_usd: Decimal | None = None
    break_even_volume: int | None = None
    closest: str | None = None

    @property
    def winner(self) -> Assessment | None:
        if self.route is None or self.status == "unmeasured":
            return None
        return next((a for a in self.candidates if a.route == self.route), None)

    @property
    def fallbacks(self) -> list[str]:
        """Eligible single models other than the route's own, cheapest first."""
        taken = (
            {self.route.model} if self.route and self.route.kind == "single" else set()
        )
        return [
            a.name
            for a in self.candidates
            if a.eligible and a.route.kind == "single" and a.name not in taken
        ]


def decide_run(
    store: Store,
    run: RunInfo,
    task: Task,
    dials: DialsConfig,
    floor: FloorConfig,
    confidence: float = DEFAULT_CONFIDENCE,
    items: Collection[str] | None = None,
) -> tuple[Decision, RunSummary]:
    """Decide from a stored run, simulating cascades from its calls.

    With `items`, only the calls on those items count (see `summarize`).
    """
    summary = summarize(store, run, task, items)
    scored = [
        s
        for s in store.scored_calls(run.id)
        if items is None or s.call.item_id in items
    ]
    return decide_with_cascade(summary, scored, dials, floor, confidence), summary


def decide_with_cascade(
    summary: RunSummary,
    scored: list[ScoredCall],
    dials: DialsConfig,
    floor: FloorConfig,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Decision:
    """Decide among the single candidates and the best cascade of their calls."""
    task = summary.task
    servable = [
        c.model
        for c in summary.candidates
        if exclusion(c, task, dials) is None and c.results > 0
    ]
    cascade = best_cascade(scored, task, servable, floor, dials, confidence)
    return decide(summary, dials, floor, confidence, cascade)


def decide(
    summary: RunSummary,
    dials: DialsConfig,
    floor: FloorConfig,
    confidence: float = DEFAULT_CONFIDENCE,
    cascade: Cascade | None = None,
) -> Decision:
    """Apply the routing rules to a run's candidates (and one cascade)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    task = summary.task
    contenders = [single_contender(c, task, dials) for c in summary.candidates]
    if cascade is not None:
        contenders.append(cascade_contender(cascade, task, dials))

    assessed = [assess(c, floor, dials, confidence) for c in contenders]
    ranked = sorted((a for a in assessed if a.eligible), key=_expected_key)
    rest = [a for a in assessed if not a.eligible]
    base = Decision(
        task=task.name,
        status="no_candidate",
        reason="",
        route=None,
        candidates=ranked + rest,
        dials=dials,
        floor=floor,
        confidence=confidence,
        run_id=summary.run.id,
        measurement_cost_usd=_measurement_cost_usd(summary.candidates),
    )
    if not ranked:
        return _no_candidate(base, rest)
    return _measured(base, ranked)


def unmeasured(
    task: Task,
    dials: DialsConfig,
    floor: FloorConfig,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Decision:
    """The starting map's route for a task that has no run yet."""
    start = starting_route(task.category, dials)
    reason = (
        f"Unmeasured: {start.model} is the starting map's default because "
        f"{start.why}; run `costroute run {task.path}` to measure it."
    )
    return Decision(
        task=task.name,
        status="unmeasured",
        reason=reason,
        route=Route(kind="single", model=start.model),
        candidates=[unmeasured_assessment(c.model) for c in task.candidates],
        dials=dials,
        floor=floor,
        confidence=confidence,
    )


def task_route(
    decision: Decision,
    task: Task,
    prices: dict[str, Price],
    prices_taken_at: str | None = None,
) -> TaskRoute:
    """The routes-file section for a decision: enough to serve it without the task.

    `prices` are the prices the run was charged at (`Store.prices`), recorded
    with their catalog version so a later check can tell when they went stale.
    """
    route = decision.route
    served = [*(route.models() if route else []), *decision.fallbacks]
    return TaskRoute(
        status=decision.status,
        decided_at=now_iso(),
        reason=decision.reason,
        route=route,
        fallbacks=decision.fallbacks,
        dials=decision.dials,
        evidence=_evidence(decision),
        prices=_snapshot(prices, prices_taken_at) if prices else None,
        candidates={model: _settings(task, model, prices) for model in served},
        providers={
            name: config
            for name, config in task.providers.items()
            if any(model.split("/", 1)[0] == name for model in served)
        },
        task_path=str(task.path),
    )


def items_to_clear(
    quality: float, items: int, floor: float, confidence: float
) -> int | None:
    """More items that would lift the Wilson lower bound to the floor.

    Assumes the quality stays where it is; None when it is not above the floor,
    since then no number of items clears it.
    """
    if quality <= floor:
        return None

    def clears(n: int) -> bool:
        return stats.wilson_interval(quality * n, n, confidence)[0] >= floor

    high = max(items, 1)
    while not clears(high):
        high *= 2
        if high > _MAX_ITEMS:
            return None
    low = max(items, 1) if high == max(items, 1) else high // 2
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if clears(middle) else (middle + 1, high)
    return max(0, high - items)


def _evidence(decision: Decision) -> Evidence:
    floor = decision.floor
    winner = decision.winner
    if winner is None or winner.contender.cost is None:
        return Evidence(run_id=decision.run_id, metric=floor.metric, floor=floor.min)
    cascade = winner.contender.cascade
    return Evidence(
        run_id=decision.run_id,
        metric=floor.metric,
        floor=floor.min,
        quality=_round(winner.quality),
        quality_ci=[round(bound, 6) for bound in winner.quality_ci or ()],
        cost_per_result_usd=_round_usd(winner.contender.cost.cost_per_result_usd),
        cost_per_result_ci=_finite_usd(winner.cost_per_result_ci),
        expected_cost_per_result_usd=_round_usd(winner.expected_cost_per_result_usd),
        monthly_cost_usd=_round_usd(winner.monthly_cost_usd),
        escalation_rate=cascade.escalation_rate if cascade else None,
        confidence=decision.confidence,
        probability_best=decision.probability_best,
    )


def _finite_usd(interval: tuple[float, float] | None) -> list[Decimal | None]:
    # TOML has no null, so an interval with an unbounded end is left out.
    if interval is None or not all(math.isfinite(bound) for bound in interval):
        return []
    return [_round_usd(Decimal(repr(bound))) for bound in interval]


def _round_usd(value: Decimal | None) -> Decimal | None:
    """Money to the picodollar, which keeps a routes file readable."""
    if value is None:
        return None
    return value.quantize(Decimal("1e-12")).normalize()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _snapshot(prices: dict[str, Price], taken_at: str | None) -> PriceSnapshot:
    versions = sorted({price.catalog_version for price in prices.values()})
    models = {
        model: ModelPrice(
            source=price.source,
            input_mtok=price.input_mtok,
            output_mtok=price.output_mtok,
            cache_read_mtok=price.cache_read_mtok,
            cache_write_mtok=price.cache_write_mtok,
            hourly_usd=price.hourly_usd,
            gpus=price.gpus,
        )
        for model, price in prices.items()
    }
    return PriceSnapshot(
        catalog_version=", ".join(versions),
        taken_at=taken_at or now_iso(),
        models=models,
    )


def _settings(task: Task, model: str, prices: dict[str, Price]) -> CandidateSettings:
    candidate = task.candidate(model)
    price = prices.get(model)
    return CandidateSettings(
        max_tokens=candidate.max_tokens,
        temperature=candidate.temperature,
        self_hosted=own_hardware(task, model, price.cost_kind if price else None),
    )


def _measured(base: Decision, ranked: list[Assessment]) -> Decision:
    winner = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    probability: float | None = 1.0
    to_settle: int | None = 0
    if runner_up is not None:
        probability, to_settle = _probability_best(winner, runner_up, base.confidence)
    settled = probability is not None and probability >= base.confidence
    decision = _with_money(base, winner, runner_up, ranked)
    return replace(
        decision,
        status="settled" if settled else "unsettled",
        route=winner.route,
        runner_up=runner_up.name if runner_up else None,
        probability_best=probability,
        items_to_settle=to_settle,
        reason=_measured_reason(base, winner, runner_up, probability, to_settle),
    )


def _probability_best(
    winner: Assessment, runner_up: Assessment, confidence: float
) -> tuple[float | None, int | None]:
    a, b = _paired_expected(winner.contender, runner_up.contender)
    if a is None or b is None:
        return None, None
    differences = stats.paired_bootstrap_difference(a, b)
    probability = stats.probability_lower(differences)
    return probability, stats.items_to_settle(probability, a.n_items, confidence)


def _paired_expected(
    a: Contender, b: Contender
) -> tuple[stats.ItemOutcomes | None, stats.ItemOutcomes | None]:
    """Both contenders' expected-cost outcomes on the items they share, aligned."""
    shared = set(a.item_ids) & set(b.item_ids)
    if not shared or a.cost is None or b.cost is None:
        return None, None
    order = [item for item in a.item_ids if item in shared]
    return expected_on(a, order), expected_on(b, order)


def _with_money(
    base: Decision,
    winner: Assessment,
    runner_up: Assessment | None,
    ranked: list[Assessment],
) -> Decision:
    priciest = max(ranked, key=lambda a: a.monthly_cost_usd or Decimal(0))
    break_even = None
    if runner_up is not None:
        break_even = _break_even_volume(winner, runner_up, base.measurement_cost_usd)
    return replace(
        base,
        monthly_savings_usd=_difference(runner_up, winner) if runner_up else None,
        most_expensive=priciest.name,
        monthly_savings_vs_most_expensive_usd=_difference(priciest, winner),
        break_even_volume=break_even,
    )


def _break_even_volume(
    winner: Assessment, runner_up: Assessment, measurement_cost_usd: Decimal | None
) -> int | None:
    """The monthly volume below which measuring cost more than a month's savings."""
    ours = winner.expected_cost_per_output_usd
    theirs = runner_up.expected_cost_per_output_usd
    if ours is None or theirs is None or measurement_cost_usd is None:
        return None
    saving_per_output = theirs - ours
    if saving_per_output <= 0:
        return None
    return math.ceil(measurement_cost_usd / saving_per_output)


def _difference(more: Assessment, less: Assessment) -> Decimal | None:
    if more.monthly_cost_usd is None or less.monthly_cost_usd is None:
        return None
    return more.monthly_cost_usd - less.monthly_cost_usd


def _measurement_cost_usd(candidates: list[CandidateSummary]) -> Decimal | None:
    """What the batch cost to measure, cached calls included: re-measuring pays it."""
    known = [c.cost_usd for c in candidates if c.cost_usd is not None]
    return sum(known, Decimal(0)) if known else None


def _measured_reason(
    base: Decision,
    winner: Assessment,
    runner_up: Assessment | None,
    probability: float | None,
    to_settle: int | None,
) -> str:
    floor = base.floor
    assert winner.quality_ci is not None
    clears = (
        f"clears the {floor.metric} floor {floor.min:g} "
        f"(lower bound {winner.quality_ci[0]:.3f})"
    )
    ours = _usd(winner.expected_cost_per_result_usd)
    if runner_up is None:
        return (
            f"{winner.name} is the only candidate that {clears}, at {ours} expected "
            "per result."
        )

    theirs = f"{_usd(runner_up.expected_cost_per_result_usd)} for {runner_up.name}"
    if probability is None:
        return (
            f"{winner.name} {clears} at the lowest expected cost per result, {ours} "
            f"against {theirs}, but the two share no items to compare them on."
        )
    if probability >= base.confidence:
        return (
            f"{winner.name} {clears} at the lowest expected cost per result, {ours} "
            f"against {theirs}; P(cheaper) = {probability:.2f}."
        )
    more = (
        f"about {to_settle} more items would settle it"
        if to_settle is not None
        else "the two are about even, so more items may not settle it"
    )
    return (
        f"{winner.name} {clears} at the lowest expected cost per result, {ours} "
        f"against {theirs}, but P(cheaper) = {probability:.2f} is below "
        f"{base.confidence:g}; {more}."
    )


def _no_candidate(base: Decision, assessed: list[Assessment]) -> Decision:
    closest = _closest(assessed)
    floor = base.floor
    head = (
        f"No candidate clears the {floor.metric} floor {floor.min:g} at "
        f"{base.confidence:.0%} confidence"
    )
    if closest is None:
        reason = f"{head}: none was measured and priced within the hard constraints."
    else:
        reason = f"{head}; closest is {closest.name}: {_lack(closest, base)}."
    return replace(base, reason=reason, closest=closest.name if closest else None)


def _closest(assessed: list[Assessment]) -> Assessment | None:
    measured = [a for a in assessed if a.quality_ci is not None]
    allowed = [a for a in measured if a.contender.excluded is None]
    pool = allowed or measured
    if not pool:
        return None
    return max(pool, key=lambda a: a.quality_ci[0] if a.quality_ci else 0.0)


def _lack(closest: Assessment, base: Decision) -> str:
    if closest.contender.excluded is not None:
        return closest.contender.excluded
    assert closest.quality is not None and closest.quality_ci is not None
    metric, floor = base.floor.metric, base.floor.min
    more = items_to_clear(closest.quality, closest.items, floor, base.confidence)
    if more is None:
        return (
            f"its {metric} {closest.quality:.3f} is not above the floor, so more "
            "items alone will not clear it"
        )
    return (
        f"its {metric} {closest.quality:.3f} is above the floor but its lower bound "
        f"{closest.quality_ci[0]:.3f} is not; about {more} more items at this "
        f"{metric} would clear it"
    )


def _expected_key(assessment: Assessment) -> Decimal:
    value = assessment.expected_cost_per_result_usd
    return value if value is not None else Decimal("Infinity")


def _usd(value: Decimal | None) -> str:
    return "unknown" if value is None else format_usd(value)
