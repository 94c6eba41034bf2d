"""A decision as JSON, a terminal table or Markdown."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from rich.table import Table
from rich.text import Text

from costroute.assessment import Assessment
from costroute.cascade import SplitReport
from costroute.decide import Decision
from costroute.expected import effective_error_cost_usd
from costroute.render import format_usd, rich_text

FORMATS = ("table", "json", "markdown")

HEADERS = [
    "candidate",
    "eligible",
    "quality [CI]",
    "cost/result",
    "expected cost/result [CI]",
    "monthly",
    "why not",
]


def decision_dict(decision: Decision) -> dict[str, Any]:
    """The JSON shape of a decision: money as decimal strings, unknowns as null."""
    route = decision.route
    return {
        "task": decision.task,
        "status": decision.status,
        "route": route.model_dump(mode="json", exclude_none=True) if route else None,
        "reason": decision.reason,
        "run_id": decision.run_id,
        "floor": {"metric": decision.floor.metric, "min": decision.floor.min},
        "confidence": decision.confidence,
        "dials": _dials(decision),
        "candidates": [_candidate(a) for a in decision.candidates],
        "fallbacks": decision.fallbacks,
        "runner_up": decision.runner_up,
        "probability_best": _round(decision.probability_best),
        "items_to_settle": decision.items_to_settle,
        "monthly_savings_usd": money(decision.monthly_savings_usd),
        "most_expensive": decision.most_expensive,
        "monthly_savings_vs_most_expensive_usd": money(
            decision.monthly_savings_vs_most_expensive_usd
        ),
        "measurement_cost_usd": money(decision.measurement_cost_usd),
        "break_even_volume": decision.break_even_volume,
        "closest": decision.closest,
    }


def render_decision(decision: Decision, fmt: str, color: bool = False) -> str:
    if fmt == "json":
        return json.dumps(decision_dict(decision), indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(decision)
    return _table(decision, color)


def money(value: Decimal | None) -> str | None:
    """A decimal string to the picodollar; None stays None."""
    if value is None:
        return None
    return format(value.quantize(Decimal("1e-12")).normalize(), "f") if value else "0"


def _dials(decision: Decision) -> dict[str, Any]:
    dials = decision.dials
    return {
        "volume_per_month": dials.volume_per_month,
        "error_cost_usd": money(dials.error_cost_usd),
        "recoverable": dials.recoverable,
        "catch_cost_usd": money(dials.catch_cost_usd),
        "on_prem_only": dials.on_prem_only,
        "effective_error_cost_usd": money(effective_error_cost_usd(dials)),
    }


def _candidate(a: Assessment) -> dict[str, Any]:
    cost = a.contender.cost
    entry: dict[str, Any] = {
        "model": a.name,
        "kind": a.route.kind,
        "eligible": a.eligible,
        "why_not": a.why_not,
        "items": a.items,
        "quality": _round(a.quality),
        "quality_ci": _interval(a.quality_ci),
        "cost_per_result_usd": money(cost.cost_per_result_usd if cost else None),
        "cost_per_result_ci": _money_interval(a.cost_per_result_ci),
        "expected_cost_per_result_usd": money(a.expected_cost_per_result_usd),
        "expected_cost_per_result_ci": _money_interval(a.expected_cost_per_result_ci),
        "monthly_cost_usd": money(a.monthly_cost_usd),
    }
    cascade = a.contender.cascade
    if cascade is not None:
        entry |= {
            "cheap": cascade.cheap,
            "strong": cascade.strong,
            "escalate_when": cascade.check.model_dump(mode="json", exclude_none=True),
            "escalation_rate": _round(cascade.escalation_rate),
            "fit": _split(cascade.fit),
            "held_out": _split(cascade.held_out),
        }
    return entry


def _split(report: SplitReport) -> dict[str, Any]:
    return {
        "items": report.items,
        "quality": _round(report.quality),
        "quality_ci": _interval(report.quality_ci),
        "expected_cost_per_result_usd": money(report.expected_cost_per_result_usd),
        "escalation_rate": _round(report.escalation_rate),
    }


def _rows(decision: Decision) -> list[list[str]]:
    rows = []
    for a in decision.candidates:
        cost = a.contender.cost
        name = a.name + (" ◀ route" if a.route == decision.route else "")
        rows.append(
            [
                name,
                "yes" if a.eligible else "no",
                _quality_text(a),
                _usd(cost.cost_per_result_usd if cost else None),
                f"{_usd(a.expected_cost_per_result_usd)} "
                f"{_usd_interval(a.expected_cost_per_result_ci)}".strip(),
                _usd(a.monthly_cost_usd),
                a.why_not or "",
            ]
        )
    return rows


def _summary_lines(decision: Decision) -> list[str]:
    route = decision.route
    lines = [f"status: {decision.status}", f"route: {_route_text(decision)}"]
    lines.append(decision.reason)
    if route is not None and decision.status != "unmeasured":
        lines += _money_lines(decision)
    dials = decision.dials
    handling = "recoverable" if dials.recoverable else "unrecoverable"
    lines.append(
        f"dials: volume {dials.volume_per_month}/month, error cost "
        f"{format_usd(dials.error_cost_usd)} ({handling}, catch cost "
        f"{format_usd(dials.catch_cost_usd)}), on-prem only "
        f"{'yes' if dials.on_prem_only else 'no'}; confidence {decision.confidence:g}"
    )
    return lines


def _money_lines(decision: Decision) -> list[str]:
    lines = []
    if decision.runner_up is not None:
        line = (
            f"saves {_usd(decision.monthly_savings_usd)}/month against "
            f"{decision.runner_up}"
        )
        if decision.most_expensive != decision.runner_up:
            most = _usd(decision.monthly_savings_vs_most_expensive_usd)
            line += f", {most}/month against {decision.most_expensive}"
        lines.append(line)
    if decision.probability_best is not None and decision.runner_up is not None:
        settle = decision.items_to_settle
        extra = f"; about {settle} more items to settle" if settle else ""
        lines.append(
            f"P(route cheaper than {decision.runner_up}) = "
            f"{decision.probability_best:.2f}{extra}"
        )
    if decision.break_even_volume is not None:
        lines.append(
            f"measuring cost {_usd(decision.measurement_cost_usd)}; below "
            f"{decision.break_even_volume} items/month a month of savings does "
            "not cover it"
        )
    return lines


def _route_text(decision: Decision) -> str:
    route = decision.route
    if route is None:
        return "none"
    if route.kind == "single":
        return str(route.model)
    check = route.escalate_when
    how: str = check.check if check else "?"
    if check is not None and check.threshold is not None:
        how += f" < {check.threshold:.3f}"
    winner = decision.winner
    cascade = winner.contender.cascade if winner else None
    if cascade is not None:
        how += f" ({cascade.escalation_rate:.0%} of items escalated)"
    return f"cascade {route.cheap} → {route.strong}, escalate on {how}"


def _table(decision: Decision, color: bool) -> str:
    floor = f"{decision.floor.metric} ≥ {decision.floor.min:g}"
    run = f" · run {decision.run_id}" if decision.run_id else ""
    table = Table(title=f"{decision.task}{run} · floor {floor}", title_justify="left")
    for header in HEADERS:
        left = header in ("candidate", "why not")
        table.add_column(header, justify="left" if left else "right")
    for row in _rows(decision):
        table.add_row(*row)
    lines = [Text(line) for line in _summary_lines(decision)]
    return rich_text([table, *lines], color)


def _markdown(decision: Decision) -> str:
    floor = f"{decision.floor.metric} ≥ {decision.floor.min:g}"
    run = f" · run `{decision.run_id}`" if decision.run_id else ""
    lines = [
        f"**{decision.task}**{run} · floor {floor}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(_align(h) for h in HEADERS) + "|",
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
        for row in _rows(decision)
    ]
    lines += ["", *(f"- {line}" for line in _summary_lines(decision))]
    return "\n".join(lines) + "\n"


def _align(header: str) -> str:
    return "---" if header in ("candidate", "why not") else "---:"


def _quality_text(a: Assessment) -> str:
    if a.quality is None or a.quality_ci is None:
        return "—"
    return f"{a.quality:.3f} [{a.quality_ci[0]:.3f}, {a.quality_ci[1]:.3f}]"


def _usd(value: Decimal | None) -> str:
    return "—" if value is None else format_usd(value)


def _usd_interval(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    low, high = ("∞" if math.isinf(bound) else format_usd(bound) for bound in interval)
    return f"[{low}, {high}]"


def _money_interval(interval: tuple[float, float] | None) -> list[str | None] | None:
    if interval is None:
        return None
    return [
        None if not math.isfinite(bound) else money(Decimal(repr(bound)))
        for bound in interval
    ]


def _interval(interval: tuple[float, float] | None) -> list[float] | None:
    if interval is None:
        return None
    return [round(interval[0], 6), round(interval[1], 6)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
