"""The cascade sweep: quality and cost as the escalation policy moves.

The decision keeps one cascade, the best on the fit items. The sweep replays
every policy a router could run for that cascade's pair (`costroute.cascade`
simulates them from the stored calls, paying nothing) over all the pair's items,
plus the two ends: never escalating (the cheap model alone) and always
escalating (both calls on every item).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from costroute.cascade import (
    BoolArray,
    Cascade,
    Pair,
    Terms,
    in_fit_split,
    pairs,
    policies,
    simulate,
    split_report,
)
from costroute.decide import Decision
from costroute.render import format_usd
from costroute.routes import EscalationCheck
from costroute.store import ScoredCall
from costroute.task import DialsConfig, FloorConfig, Task

# The ends of the sweep sample the cheap model once, like every check but
# agreement, so they pay exactly the cheap model alone or both models.
_ONE_SAMPLE = EscalationCheck(check="labels")


def cascade_sweep(
    scored: Sequence[ScoredCall],
    task: Task,
    decision: Decision,
    floor: FloorConfig,
    dials: DialsConfig,
) -> dict[str, Any]:
    """The kept cascade's policies as points, or a message saying why none."""
    cascade = next(
        (a.contender.cascade for a in decision.candidates if a.contender.cascade),
        None,
    )
    if cascade is None:
        return {"available": False, "message": _no_cascade(decision)}
    pair = next(
        p
        for p in pairs(scored, [cascade.cheap, cascade.strong])
        if (p.cheap, p.strong) == (cascade.cheap, cascade.strong)
    )
    terms = Terms.of(task, floor, dials, decision.confidence)
    return {
        "available": True,
        "message": None,
        "cheap": cascade.cheap,
        "strong": cascade.strong,
        "is_route": decision.winner is not None
        and decision.winner.contender.cascade is cascade,
        "metric": floor.metric,
        "floor": floor.min,
        "points": _points(pair, task, cascade, terms),
        "splits": _splits(cascade),
    }


def _points(
    pair: Pair, task: Task, cascade: Cascade, terms: Terms
) -> list[dict[str, Any]]:
    everything = np.ones(len(pair.item_ids), dtype=bool)
    fit = np.array([in_fit_split(item) for item in pair.item_ids])
    if not fit.any():
        fit = everything
    ends = [
        ("never escalate: the cheap model alone", ~everything),
        ("always escalate: both models on every item", everything),
    ]
    points = [
        _played(pair, label, _ONE_SAMPLE, escalate, terms) for label, escalate in ends
    ]
    for check, escalate in policies(pair, task, fit):
        point = _played(pair, _policy_text(check), check, escalate, terms)
        points.append({**point, "chosen": check == cascade.check})
    return sorted(points, key=lambda point: (point["rate"], point["chosen"]))


def _played(
    pair: Pair,
    label: str,
    check: EscalationCheck,
    escalate: BoolArray,
    terms: Terms,
) -> dict[str, Any]:
    """One policy simulated over all the pair's items."""
    simulation = simulate(pair, check, escalate)
    report = split_report(simulation, np.ones(len(escalate), dtype=bool), terms)
    cost = report.expected_cost_per_result_usd
    return {
        "label": label,
        "rate": report.escalation_rate,
        "quality": report.quality,
        "cost": None if cost is None else float(cost),
        "cost_text": "—" if cost is None else format_usd(cost),
        "threshold": check.threshold,
        "chosen": False,
    }


def _policy_text(check: EscalationCheck) -> str:
    if check.check == "logprob" and check.threshold is not None:
        return f"escalate when mean log-probability < {check.threshold:.3f}"
    return {
        "labels": "escalate when the output has none of the labels",
        "regex": "escalate when the pattern does not match",
        "json": "escalate when the output holds no JSON object",
        "agreement": "escalate when two cheap samples disagree",
    }.get(check.check, f"escalate on {check.check}")


def _splits(cascade: Cascade) -> list[dict[str, Any]]:
    rows = []
    for name, split in (("fit", cascade.fit), ("held out", cascade.held_out)):
        cost = split.expected_cost_per_result_usd
        rows.append(
            {
                "split": name,
                "items": split.items,
                "quality": "—" if split.quality is None else f"{split.quality:.3f}",
                "cost": "—" if cost is None else format_usd(cost),
                "rate": (
                    "—"
                    if split.escalation_rate is None
                    else f"{split.escalation_rate:.0%}"
                ),
            }
        )
    return rows


def _no_cascade(decision: Decision) -> str:
    servable = [
        a.name
        for a in decision.candidates
        if a.route.kind == "single"
        and a.contender.cost is not None
        and a.contender.excluded is None
        and a.contender.cost.results > 0
    ]
    if len(servable) < 2:
        return (
            "No cascade: a cascade needs two priced candidates with correct results "
            f"that may serve the task, and this run has {len(servable)}."
        )
    return (
        "No cascade: no check a router can run on the cheap output (the scorer's "
        "labels, pattern or JSON form; two agreeing samples from --repeat 2; "
        "log-probabilities in the responses) splits the items for any pair of "
        f"{', '.join(servable)}."
    )
