"""What a report shows, gathered from a stored run as plain JSON-ready data.

Money for display is formatted here, once, the way the terminal shows it; the
charts get the same amounts as floats. An unbounded interval end is `None`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from costroute.assessment import Assessment
from costroute.decide import DEFAULT_CONFIDENCE, Decision, decide_run
from costroute.expected import effective_error_cost_usd
from costroute.pricing import Price
from costroute.render import COST_KIND_NOTES, format_usd
from costroute.report.disagreements import disagreements
from costroute.report.sweep import cascade_sweep
from costroute.store import RunInfo, Store
from costroute.summary import CandidateSummary, RunSummary
from costroute.task import DialsConfig, FloorConfig, Task

STATUS_TEXT = {
    "settled": "settled: the route is the cheapest with the chosen confidence",
    "unsettled": "unsettled: the route leads, but not yet with the chosen confidence",
    "no_candidate": "no candidate: nothing clears the floor",
    "unmeasured": "unmeasured: the starting map's default",
}


@dataclass(frozen=True)
class Report:
    """Everything the page shows; `page()` is what goes into it as JSON."""

    title: str
    task: str
    run: dict[str, Any]
    decision: dict[str, Any]
    notices: list[str]
    candidates: list[dict[str, Any]]
    frontier: list[str]
    charts: dict[str, Any]
    cascade: dict[str, Any]
    disagreements: dict[str, Any]
    costs: dict[str, Any]

    def page(self) -> dict[str, Any]:
        return asdict(self)


def gather(
    store: Store,
    run: RunInfo,
    task: Task,
    dials: DialsConfig,
    floor: FloorConfig,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Report:
    """Decide on the run under these dials and collect what the report shows."""
    decision, summary = decide_run(store, run, task, dials, floor, confidence)
    scored = store.scored_calls(run.id)
    candidates = [_candidate(a, decision) for a in decision.candidates]
    models = [c.model for c in summary.candidates]
    return Report(
        title=f"{task.name} · run {run.id}",
        task=task.name,
        run=_run(run),
        decision=_decision(decision),
        notices=_notices(summary),
        candidates=candidates,
        frontier=frontier(candidates),
        charts=_charts(candidates, dials),
        cascade=cascade_sweep(scored, task, decision, floor, dials),
        disagreements=disagreements(scored, store.items(run.id), task, models),
        costs=_costs(summary, store.prices(run.id), run, decision),
    )


def frontier(candidates: list[dict[str, Any]]) -> list[str]:
    """The plotted candidates no other beats on both cost and quality, cheapest
    first: each one buys more quality than every cheaper one."""
    plotted = sorted(
        (c for c in candidates if c["plotted"]),
        key=lambda c: (c["expected"], -c["quality"]),
    )
    found: list[str] = []
    best = -math.inf
    for candidate in plotted:
        if candidate["quality"] > best:
            found.append(candidate["name"])
            best = candidate["quality"]
    return found


def _run(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _decision(decision: Decision) -> dict[str, Any]:
    winner = decision.winner
    return {
        "status": decision.status,
        "status_text": STATUS_TEXT[decision.status],
        "sentence": _sentence(decision),
        "reason": decision.reason,
        "route": winner.name if winner else None,
        "route_text": _route_text(decision),
        "money": _money_lines(decision),
        "dials": _dials(decision),
        "floor": {"metric": decision.floor.metric, "min": decision.floor.min},
        "confidence": decision.confidence,
        "volume": decision.dials.volume_per_month,
    }


def _sentence(decision: Decision) -> str:
    floor = decision.floor
    winner = decision.winner
    if winner is None:
        return (
            f"Route {decision.task} nowhere yet: no candidate clears the "
            f"{floor.metric} floor {floor.min:g} at {decision.confidence:.0%} "
            "confidence."
        )
    volume = decision.dials.volume_per_month
    return (
        f"Route {decision.task} to {_route_text(decision)}: "
        f"{_usd(winner.expected_cost_per_result_usd)} expected per result, about "
        f"{_usd(winner.monthly_cost_usd)} a month at {volume:,} outputs a month."
    )


def _route_text(decision: Decision) -> str:
    winner = decision.winner
    if winner is None:
        return "none"
    cascade = winner.contender.cascade
    if cascade is None:
        return winner.name
    return (
        f"the cascade {cascade.cheap} → {cascade.strong}, escalating on "
        f"{check_text(cascade.check.check, cascade.check.threshold)} "
        f"({cascade.escalation_rate:.0%} of items)"
    )


def check_text(check: str, threshold: float | None) -> str:
    """An escalation check in words."""
    if check == "logprob" and threshold is not None:
        return f"mean token log-probability < {threshold:.3f}"
    return {
        "labels": "an output without one of the scorer's labels",
        "regex": "an output the scorer's pattern does not match",
        "json": "an output without the JSON object",
        "agreement": "two cheap samples that disagree",
        "logprob": "a low mean token log-probability",
    }.get(check, check)


def _money_lines(decision: Decision) -> list[str]:
    lines = []
    if decision.runner_up is not None and decision.monthly_savings_usd is not None:
        lines.append(
            f"Saves {_usd(decision.monthly_savings_usd)} a month against "
            f"{decision.runner_up}."
        )
    if decision.probability_best is not None and decision.runner_up is not None:
        settle = decision.items_to_settle
        extra = f"; about {settle} more items would settle it" if settle else ""
        lines.append(
            f"P(route cheaper than {decision.runner_up}) = "
            f"{decision.probability_best:.2f}{extra}."
        )
    if decision.break_even_volume is not None:
        lines.append(
            f"Measuring cost {_usd(decision.measurement_cost_usd)}; below "
            f"{decision.break_even_volume:,} outputs a month a month's savings "
            "do not cover it."
        )
    return lines


def _dials(decision: Decision) -> list[list[str]]:
    dials = decision.dials
    floor = decision.floor
    if dials.recoverable:
        errors = (
            f"{format_usd(dials.error_cost_usd)} each, recoverable: caught for "
            f"{format_usd(dials.catch_cost_usd)}"
        )
    else:
        errors = f"{format_usd(dials.error_cost_usd)} each, unrecoverable"
    return [
        ["floor", f"{floor.metric} ≥ {floor.min:g}"],
        ["confidence", f"{decision.confidence:.0%}"],
        ["volume", f"{dials.volume_per_month:,} outputs a month"],
        ["wrong output", errors],
        ["on-prem only", "yes" if dials.on_prem_only else "no"],
    ]


def _candidate(a: Assessment, decision: Decision) -> dict[str, Any]:
    cost = a.contender.cost
    cost_per_result = cost.cost_per_result_usd if cost else None
    expected = a.expected_cost_per_result_usd
    entry = {
        "name": a.name,
        "kind": a.route.kind,
        "route": decision.winner is not None and a.route == decision.route,
        "eligible": a.eligible,
        "why_not": a.why_not,
        "items": a.items,
        "quality": a.quality,
        "quality_ci": list(a.quality_ci) if a.quality_ci else None,
        "cost_per_result": _float(cost_per_result),
        "cost_per_result_ci": _interval(a.cost_per_result_ci),
        "expected": _float(expected),
        "expected_ci": _interval(a.expected_cost_per_result_ci),
        "monthly": _float(a.monthly_cost_usd),
        "text": {
            "quality": _quality_text(a),
            "cost_per_result": _usd(cost_per_result),
            "cost_per_result_ci": _interval_text(a.cost_per_result_ci),
            "expected": _usd(expected),
            "expected_ci": _interval_text(a.expected_cost_per_result_ci),
            "monthly": _usd(a.monthly_cost_usd),
        },
    }
    entry["left_out"] = _left_out(a)
    entry["plotted"] = entry["left_out"] is None
    return entry


def _left_out(a: Assessment) -> str | None:
    """Why a candidate has no point on the quality/cost chart, or None."""
    if a.quality is None:
        return a.why_not or "not measured in this run"
    cost = a.contender.cost
    if cost is None:
        return "unpriced: no known price, so no cost per result"
    if cost.results <= 0:
        return "no correct results, so its cost per result is unbounded"
    return None


def _charts(candidates: list[dict[str, Any]], dials: DialsConfig) -> dict[str, Any]:
    error_cost = effective_error_cost_usd(dials)
    axis = "expected cost per result"
    if error_cost:
        axis += f" (model cost + {format_usd(error_cost)} per wrong output)"
    plotted = [c for c in candidates if c["plotted"]]
    left_out = [f"{c['name']}: {c['left_out']}" for c in candidates if c["left_out"]]
    nothing = (
        "Nothing to chart: no candidate has both a measured quality and a cost per "
        "result in this run."
    )
    return {
        "cost_axis": axis,
        "message": None if plotted else nothing,
        "left_out": left_out,
        "monthly_note": (
            f"Expected cost of {dials.volume_per_month:,} outputs a month, wrong "
            "outputs charged at the error dial."
        ),
    }


def _notices(summary: RunSummary) -> list[str]:
    notices = []
    measured = [c for c in summary.candidates if c.calls]
    if not measured:
        notices.append(
            "This run has no results yet: no candidate has a scored call, so there "
            "is nothing to chart."
        )
    elif len(measured) == 1:
        notices.append(
            f"Only one candidate was measured ({measured[0].model}): there is "
            "nothing to compare it with and no cascade to simulate."
        )
    for candidate in summary.candidates:
        if candidate.calls and not candidate.priced:
            notices.append(
                f"{candidate.model} is unpriced: with no known price its cost per "
                "result is unknown, so it is left off the cost charts."
            )
    if summary.run.status != "done":
        notices.append(
            f"The run's status is {summary.run.status}: resume it with "
            f"`costroute run {summary.task.path} --resume {summary.run.id}`."
        )
    return notices


def _costs(
    summary: RunSummary, prices: dict[str, Price], run: RunInfo, decision: Decision
) -> dict[str, Any]:
    versions = sorted({price.catalog_version for price in prices.values()})
    judge = summary.judge
    return {
        "rows": [_cost_row(c, prices.get(c.model)) for c in summary.candidates],
        "prices": [_price_row(price) for _, price in sorted(prices.items())],
        "taken_at": run.created_at,
        "catalog": ", ".join(versions) or "none recorded",
        "measurement": _usd(decision.measurement_cost_usd),
        "judge": (
            f"Grading by {judge.model}: {judge.calls} calls, "
            f"{_usd(judge.cost_usd)}, not included in the candidates' costs."
            if judge
            else None
        ),
    }


def _cost_row(c: CandidateSummary, price: Price | None) -> dict[str, Any]:
    return {
        "model": c.model,
        "cost_kind": c.cost_kind,
        "how": COST_KIND_NOTES.get(c.cost_kind, c.cost_kind),
        "calls": c.calls,
        "cached_calls": c.cached_calls,
        "cost": _usd(c.cost_usd),
        "spent": _usd(c.spent_usd),
        "provider": _usd(c.provider_cost_usd),
        "price": _price_text(price) if price else "no price recorded",
    }


def _price_row(price: Price) -> dict[str, str]:
    return {
        "model": price.model,
        "source": price.source,
        "catalog_version": price.catalog_version,
        "input_mtok": _usd(price.input_mtok),
        "output_mtok": _usd(price.output_mtok),
        "cache_read_mtok": _usd(price.cache_read_mtok),
        "cache_write_mtok": _usd(price.cache_write_mtok),
        "hourly": _usd(price.hourly_usd),
        "gpus": str(price.gpus) if price.hourly_usd is not None else "—",
    }


def _price_text(price: Price) -> str:
    if price.source == "compute":
        gpus = f" × {price.gpus} GPUs" if price.gpus != 1 else ""
        return f"{_usd(price.hourly_usd)} an hour{gpus} of busy time"
    if price.source == "none":
        return "unpriced"
    if price.source == "reported":
        return "the provider's reported charge"
    where = "the task's override" if price.source == "override" else price.source
    return (
        f"{_usd(price.input_mtok)} in / {_usd(price.output_mtok)} out per "
        f"million tokens ({where})"
    )


def _quality_text(a: Assessment) -> str:
    if a.quality is None or a.quality_ci is None:
        return "—"
    return f"{a.quality:.3f} [{a.quality_ci[0]:.3f}, {a.quality_ci[1]:.3f}]"


def _interval(interval: tuple[float, float] | None) -> list[float | None] | None:
    if interval is None:
        return None
    return [bound if math.isfinite(bound) else None for bound in interval]


def _interval_text(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    low, high = (
        format_usd(bound) if math.isfinite(bound) else "∞" for bound in interval
    )
    return f"[{low}, {high}]"


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _usd(value: Decimal | None) -> str:
    return "—" if value is None else format_usd(value)
