"""One contender's standing: its numbers under the floor, dials and confidence.

A contender is a way to serve the task as measured: a single model or a
simulated cascade. Hard constraints come before any number: with `on_prem_only`
only models on our own hardware may serve, and a candidate without calls or
without a price cannot be weighed at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from costroute import stats
from costroute.cascade import Cascade
from costroute.expected import (
    ExpectedCost,
    effective_error_cost_usd,
    with_error_cost,
    wrong_outputs,
)
from costroute.providers import PRESETS
from costroute.routes import Route
from costroute.summary import CandidateSummary
from costroute.task import DialsConfig, FloorConfig, Task


@dataclass(frozen=True)
class Contender:
    """One way to serve the task as measured: a single model or a cascade.

    `excluded` says why it may not serve the task whatever its numbers (a hard
    constraint, no price, no calls); `cost` is None when it has no price.
    """

    name: str
    route: Route
    item_ids: list[str]
    outcomes: stats.ItemOutcomes
    wrong: stats.FloatArray
    cost: ExpectedCost | None
    excluded: str | None = None
    cascade: Cascade | None = None


@dataclass(frozen=True)
class Assessment:
    """A contender's numbers under the decision's floor, dials and confidence."""

    contender: Contender
    eligible: bool
    why_not: str | None
    quality: float | None
    quality_ci: tuple[float, float] | None
    cost_per_result_ci: tuple[float, float] | None
    expected_cost_per_result_ci: tuple[float, float] | None
    monthly_cost_usd: Decimal | None

    @property
    def name(self) -> str:
        return self.contender.name

    @property
    def route(self) -> Route:
        return self.contender.route

    @property
    def items(self) -> int:
        return self.contender.outcomes.n_items

    @property
    def expected_cost_per_result_usd(self) -> Decimal | None:
        cost = self.contender.cost
        return None if cost is None else cost.expected_per_result_usd

    @property
    def expected_cost_per_output_usd(self) -> Decimal | None:
        cost = self.contender.cost
        return None if cost is None else cost.expected_per_output_usd


def assess(
    contender: Contender, floor: FloorConfig, dials: DialsConfig, confidence: float
) -> Assessment:
    """Quality and cost intervals of one contender, and whether it may serve."""
    outcomes = contender.outcomes
    if outcomes.n_items == 0:
        unmeasured = contender.excluded or "not measured in this run"
        return Assessment(contender, False, unmeasured, None, None, None, None, None)

    quality = stats.metric_value(
        floor.metric,
        tp=float(outcomes.tp.sum()),
        fp=float(outcomes.fp.sum()),
        fn=float(outcomes.fn.sum()),
        correct_count=float(outcomes.correct.sum()),
        n=outcomes.n_items,
    )
    quality_ci = stats.quality_interval(outcomes, floor.metric, confidence)
    cost = contender.cost
    cost_ci = expected_ci = monthly = None
    if cost is not None:
        cost_ci = stats.cost_per_result_interval(outcomes, confidence)
        expected = with_error_cost(outcomes, contender.wrong, cost.error_cost_usd)
        expected_ci = stats.cost_per_result_interval(expected, confidence)
        monthly = cost.monthly_usd(dials.volume_per_month)

    why = _why_not(contender, quality, quality_ci, floor)
    return Assessment(
        contender, why is None, why, quality, quality_ci, cost_ci, expected_ci, monthly
    )


def own_hardware(task: Task, model: str, cost_kind: str | None = None) -> bool:
    """Whether `model` runs on the team's own machines, judged from the task only.

    An explicit `self_hosted` on its provider decides; otherwise `local/…`, a
    provider priced by the hour and the self-hosted presets (ollama, vllm) count
    as ours. A custom endpoint priced by compute time counts too; any other
    endpoint is taken as hosted elsewhere, since data sent there leaves us.
    """
    provider = model.split("/", 1)[0]
    config = task.providers.get(provider)
    if config is not None and config.self_hosted is not None:
        return config.self_hosted
    if provider == "local" or (config is not None and config.kind == "local"):
        return True
    if config is not None and config.hourly_usd is not None:
        return True

    preset = PRESETS.get(provider)
    if preset is not None:
        return preset.self_hosted
    return config is not None and cost_kind == "compute"


def single_contender(
    candidate: CandidateSummary, task: Task, dials: DialsConfig
) -> Contender:
    """A measured candidate as a contender; repeats count as separate outputs."""
    outcomes = candidate.outcomes
    calls_per_item = candidate.calls / candidate.items if candidate.items else 1.0
    wrong = wrong_outputs(outcomes, task.scorer.kind == "findings", calls_per_item)
    cost = None
    if candidate.priced and candidate.cost_usd is not None:
        cost = ExpectedCost(
            cost_usd=candidate.cost_usd,
            wrong=float(wrong.sum()),
            results=candidate.results,
            outputs=float(candidate.calls),
            error_cost_usd=effective_error_cost_usd(dials),
        )
    return Contender(
        name=candidate.model,
        route=Route(kind="single", model=candidate.model),
        item_ids=candidate.item_ids,
        outcomes=outcomes,
        wrong=wrong,
        cost=cost,
        excluded=exclusion(candidate, task, dials),
    )


def cascade_contender(cascade: Cascade, task: Task, dials: DialsConfig) -> Contender:
    """A simulated cascade as a contender: one output per shared item."""
    wrong = wrong_outputs(cascade.outcomes, task.scorer.kind == "findings")
    cost = ExpectedCost(
        cost_usd=cascade.cost_usd,
        wrong=float(wrong.sum()),
        results=float(cascade.outcomes.results.sum()),
        outputs=float(cascade.outcomes.n_items),
        error_cost_usd=effective_error_cost_usd(dials),
    )
    return Contender(
        name=cascade.name,
        route=cascade.route,
        item_ids=cascade.item_ids,
        outcomes=cascade.outcomes,
        wrong=wrong,
        cost=cost,
        cascade=cascade,
    )


def exclusion(
    candidate: CandidateSummary, task: Task, dials: DialsConfig
) -> str | None:
    """Why a candidate may not serve the task whatever its numbers, or None."""
    if dials.on_prem_only and not own_hardware(
        task, candidate.model, candidate.cost_kind
    ):
        return "hosted elsewhere, and the data must stay on our own hardware"
    if candidate.calls == 0:
        return "not measured in this run"
    if not candidate.priced or candidate.cost_usd is None:
        return "unpriced: with no known price its cost per result is unknown"
    return None


def _why_not(
    contender: Contender,
    quality: float,
    quality_ci: tuple[float, float],
    floor: FloorConfig,
) -> str | None:
    if contender.excluded is not None:
        return contender.excluded
    if quality_ci[0] < floor.min:
        return (
            f"{floor.metric} lower bound {quality_ci[0]:.3f} is below the floor "
            f"{floor.min:g} ({floor.metric} {quality:.3f})"
        )
    if contender.cost is None or contender.cost.results <= 0:
        return "no correct outputs, so its cost per result is unbounded"
    cascade = contender.cascade
    if cascade is not None and not cascade.holds:
        held_out = cascade.held_out.quality or 0.0
        return (
            f"on held-out items its {floor.metric} {held_out:.3f} falls below the "
            "floor; the escalation policy does not hold beyond the items it was fit on"
        )
    return None


def expected_on(contender: Contender, items: list[str]) -> stats.ItemOutcomes:
    """The contender's outcomes on `items`, in that order, errors charged in."""
    assert contender.cost is not None
    position = {item: index for index, item in enumerate(contender.item_ids)}
    index = np.array([position[item] for item in items], dtype=np.int64)
    o = contender.outcomes
    subset = stats.ItemOutcomes(
        cost_usd=o.cost_usd[index],
        results=o.results[index],
        tp=o.tp[index],
        fp=o.fp[index],
        fn=o.fn[index],
        correct=o.correct[index],
    )
    return with_error_cost(
        subset, contender.wrong[index], contender.cost.error_cost_usd
    )


def unmeasured_assessment(model: str) -> Assessment:
    """A task's candidate listed before any run: nothing known, not eligible."""
    contender = Contender(
        name=model,
        route=Route(kind="single", model=model),
        item_ids=[],
        outcomes=_no_outcomes(),
        wrong=np.zeros(0),
        cost=None,
        excluded="not measured yet",
    )
    return Assessment(
        contender, False, "not measured yet", None, None, None, None, None
    )


def _no_outcomes() -> stats.ItemOutcomes:
    nothing = np.zeros(0, dtype=np.float64)
    none = np.zeros(0, dtype=np.int64)
    return stats.ItemOutcomes(nothing, nothing, none, none, none, nothing)
