"""A run summary as a terminal table, JSON, Markdown or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from decimal import Decimal
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from costroute.summary import CandidateSummary, RunSummary

FORMATS = ("table", "json", "markdown", "csv")

COST_KIND_NOTES = {
    "metered": "metered: token usage × catalog or overridden price",
    "provider": "provider-reported charge",
    "compute": "compute-time estimate: measured busy time × hourly price",
    "unpriced": "unpriced: no price known, cost not counted",
}
COST_KIND_MARKS = {"metered": "", "provider": "ᵖ", "compute": "*", "unpriced": "?"}


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """The JSON shape of a run: money as decimal strings, unknowns as null."""
    data = {
        "run_id": summary.run.id,
        "task": summary.task.name,
        "status": summary.run.status,
        "floor": {"metric": summary.floor_metric, "min": summary.floor_min},
        "candidates": [_candidate_dict(c) for c in summary.candidates],
        "judge": _judge_dict(summary),
    }
    if summary.run.params.get("adaptive"):
        data["adaptive"] = _adaptive_dict(summary.run.params)
    return data


def _adaptive_dict(params: dict[str, Any]) -> dict[str, Any]:
    """How an adaptive run went, as `costroute run --adaptive` recorded it."""
    result = params.get("adaptive_result") or {}
    names = ("rounds", "items", "calls", "calls_saved", "stopped_because")
    return {name: result.get(name) for name in names}


def _judge_dict(summary: RunSummary) -> dict[str, Any] | None:
    judge = summary.judge
    if judge is None:
        return None
    return {
        "model": judge.model,
        "calls": judge.calls,
        "errors": judge.errors,
        "cost_usd": _money(judge.cost_usd),
    }


def _candidate_dict(c: CandidateSummary) -> dict[str, Any]:
    return {
        "model": c.model,
        "items": c.items,
        "calls": c.calls,
        "errors": c.errors,
        "results": int(c.results) if c.results.is_integer() else c.results,
        "metric": c.metric,
        "quality": round(c.quality, 6),
        "quality_ci": [round(c.quality_ci[0], 6), round(c.quality_ci[1], 6)],
        "cost_usd": _money(c.cost_usd),
        "spent_usd": _money(c.spent_usd),
        "cost_per_result_usd": _money(c.cost_per_result_usd),
        "cost_per_result_ci": _ci_money(c.cost_per_result_ci),
        "clears_floor": c.clears_floor,
        "tokens_in": c.tokens_in,
        "tokens_out": c.tokens_out,
        "latency_p50_ms": _round(c.latency_p50_ms),
        "latency_p95_ms": _round(c.latency_p95_ms),
        "cached_calls": c.cached_calls,
        "priced": c.priced,
        "cost_kind": c.cost_kind,
        "provider_cost_usd": _money(c.provider_cost_usd),
        "provider_cost_gap_usd": _money(_gap_usd(c)),
    }


def render(summary: RunSummary, fmt: str, color: bool = False) -> str:
    if fmt == "json":
        return json.dumps(summary_dict(summary), indent=2)
    if fmt == "markdown":
        return _markdown(summary)
    if fmt == "csv":
        return _csv(summary)
    return _table(summary, color)


def _rows(summary: RunSummary) -> list[list[str]]:
    rows = []
    for c in summary.candidates:
        mark = COST_KIND_MARKS.get(c.cost_kind, "")
        rows.append(
            [
                c.model,
                str(c.items),
                _number(c.results),
                f"{c.quality:.3f} [{c.quality_ci[0]:.3f}, {c.quality_ci[1]:.3f}]",
                _usd(c.cost_usd) + mark,
                _usd(c.cost_per_result_usd) + mark,
                _ci_text(c.cost_per_result_ci),
                "yes" if c.clears_floor else "no",
                f"{_ms(c.latency_p50_ms)} / {_ms(c.latency_p95_ms)}",
                f"{c.tokens_in} / {c.tokens_out}",
                f"{c.errors}",
                f"{c.cached_calls}",
            ]
        )
    return rows


HEADERS = [
    "model",
    "items",
    "results",
    "quality [95% CI]",
    "cost",
    "cost/result",
    "cost/result 95% CI",
    "clears floor",
    "latency p50/p95",
    "tokens in/out",
    "errors",
    "cached",
]


def _table(summary: RunSummary, color: bool) -> str:
    floor = f"{summary.floor_metric} ≥ {summary.floor_min:g}"
    table = Table(
        title=f"{summary.task.name} · run {summary.run.id} · floor {floor}",
        title_justify="left",
    )
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in _rows(summary):
        table.add_row(*row)
    return rich_text([table, _notes(summary)], color)


def rich_text(parts: list[RenderableType], color: bool) -> str:
    """Rich renderables as text, as wide as the widest needs, so that a pipe or a
    file gets tables unwrapped, with no padding at the ends of lines."""
    measure = Console(width=1000)
    width = max(measure.measure(part).maximum for part in parts)
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=color, no_color=not color
    )
    for part in parts:
        console.print(part, highlight=False)
    lines = buffer.getvalue().rstrip().splitlines()
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _notes(summary: RunSummary) -> str:
    kinds = sorted({c.cost_kind for c in summary.candidates})
    lines = [
        f"{COST_KIND_MARKS.get(kind, '') or ' '} {COST_KIND_NOTES.get(kind, kind)}"
        for kind in kinds
    ]
    lines.append("cost/result = total cost ÷ correct results; quality CI: 95%.")
    lines += [line for c in summary.candidates if (line := _charge_gap(c))]
    if summary.judge is not None:
        judge = summary.judge
        lines.append(
            f"judge {judge.model}: {judge.calls} calls, {_usd(judge.cost_usd)} "
            "(not included in the candidates' cost)"
        )
    if summary.run.status != "done":
        lines.append(f"run status: {summary.run.status} (resume with --resume)")
    return "\n".join(lines)


def _gap_usd(c: CandidateSummary) -> Decimal | None:
    if c.provider_cost_usd is None or c.cost_usd is None or c.cost_kind != "metered":
        return None
    return c.provider_cost_usd - c.cost_usd


def _charge_gap(c: CandidateSummary) -> str:
    """Where a provider reported its own charge and it differs from the price."""
    reported, priced = c.provider_cost_usd, c.cost_usd
    if reported is None or priced is None or c.cost_kind != "metered":
        return ""
    if reported == priced:
        return ""
    gap = reported - priced
    share = f" ({gap / priced:+.1%})" if priced else ""
    return (
        f"{c.model}: the provider reported {_usd(reported)}, the price list gives "
        f"{_usd(priced)}; gap {_usd(gap)}{share}"
    )


def _markdown(summary: RunSummary) -> str:
    floor = f"{summary.floor_metric} ≥ {summary.floor_min:g}"
    lines = [
        f"**{summary.task.name}** · run `{summary.run.id}` · floor {floor}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" if h == "model" else "---:" for h in HEADERS) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(summary)]
    lines += ["", *(f"- {line.strip()}" for line in _notes(summary).splitlines())]
    return "\n".join(lines) + "\n"


def _csv(summary: RunSummary) -> str:
    buffer = io.StringIO()
    rows = [_candidate_dict(c) for c in summary.candidates]
    if not rows:
        return ""
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_value(value: object) -> object:
    if isinstance(value, list):
        return " ".join("" if v is None else str(v) for v in value)
    return "" if value is None else value


def _money(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return str(value.quantize(Decimal("1e-12")).normalize()) if value else "0"


def _ci_money(ci: tuple[float, float] | None) -> list[str | None] | None:
    if ci is None:
        return None
    return [_float_money(ci[0]), _float_money(ci[1])]


def _float_money(value: float) -> str | None:
    if math.isinf(value) or math.isnan(value):
        return None
    return _money(Decimal(repr(value)))


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "—"
    return format_usd(value)


def format_usd(value: Decimal | float) -> str:
    """Dollars with enough significant digits for fractions of a cent."""
    amount = float(value)
    if amount == 0:
        return "$0"
    if amount < 0:
        return "-" + format_usd(-amount)
    if abs(amount) >= 100:
        return f"${amount:,.2f}"
    if abs(amount) >= 0.01:
        return f"${amount:.4f}"
    # Three significant digits in plain notation: $0.00000700, not $7e-06.
    places = 2 - math.floor(math.log10(abs(amount)))
    return f"${amount:.{places}f}"


def _ci_text(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "—"
    high = "∞" if math.isinf(ci[1]) else format_usd(ci[1])
    low = "∞" if math.isinf(ci[0]) else format_usd(ci[0])
    return f"[{low}, {high}]"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}ms"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
