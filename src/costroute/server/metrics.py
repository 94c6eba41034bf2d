"""Prometheus text exposition, written by hand: a few dicts, no dependency.

Series are labelled by task and model; a request refused before it had a task
or reached a model is labelled `-`, so clients cannot grow the label set.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NONE = "-"


@dataclass
class _Series:
    """Everything counted for one (task, model)."""

    statuses: dict[int, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    spent_usd: Decimal = Decimal(0)
    unpriced: int = 0
    escalated: int = 0


class Metrics:
    """Counters and latency histograms of one server process."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(
        self,
        task: str | None,
        model: str | None,
        status: int,
        latency_s: float,
        cost_usd: Decimal | None,
        escalated: bool,
    ) -> None:
        labels = (task or NONE, model or NONE)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series()
        series.statuses[status] = series.statuses.get(status, 0) + 1
        series.buckets[bisect_left(BUCKETS_S, latency_s)] += 1
        series.latency_sum_s += latency_s
        if cost_usd is None:
            series.unpriced += 1
        else:
            series.spent_usd += cost_usd
        series.escalated += int(escalated)

    def render(self, gauges: dict[str, float]) -> str:
        lines: list[str] = []
        self._counters(lines)
        self._histogram(lines)
        for name, value in gauges.items():
            lines += [f"# TYPE costroute_{name} gauge", f"costroute_{name} {value}"]
        return "\n".join(lines) + "\n"

    def _counters(self, lines: list[str]) -> None:
        series = sorted(self._series.items())
        lines.append("# HELP costroute_requests_total Requests answered, by status.")
        lines.append("# TYPE costroute_requests_total counter")
        for labels, one in series:
            for status, count in sorted(one.statuses.items()):
                lines.append(
                    f"costroute_requests_total{{{_labels(labels)},"
                    f'status="{status}"}} {count}'
                )
        lines.append("# HELP costroute_errors_total Requests answered with 4xx or 5xx.")
        lines.append("# TYPE costroute_errors_total counter")
        for labels, one in series:
            errors = sum(n for status, n in one.statuses.items() if status >= 400)
            lines.append(f"costroute_errors_total{{{_labels(labels)}}} {errors}")
        self._simple(lines, series, "spend_usd_total", "USD spent.", "spent_usd")
        self._simple(
            lines, series, "unpriced_total", "Requests of unknown cost.", "unpriced"
        )
        self._simple(
            lines, series, "escalations_total", "Cascade escalations.", "escalated"
        )

    def _simple(
        self,
        lines: list[str],
        series: list[tuple[tuple[str, str], _Series]],
        name: str,
        help_text: str,
        attribute: str,
    ) -> None:
        lines.append(f"# HELP costroute_{name} {help_text}")
        lines.append(f"# TYPE costroute_{name} counter")
        for labels, one in series:
            lines.append(
                f"costroute_{name}{{{_labels(labels)}}} {getattr(one, attribute)}"
            )

    def _histogram(self, lines: list[str]) -> None:
        name = "costroute_request_duration_seconds"
        lines.append(f"# HELP {name} Time from request to last byte.")
        lines.append(f"# TYPE {name} histogram")
        for labels, one in sorted(self._series.items()):
            label_text = _labels(labels)
            cumulative = 0
            for bound, count in zip([*BUCKETS_S, "+Inf"], one.buckets, strict=True):
                cumulative += count
                lines.append(f'{name}_bucket{{{label_text},le="{bound}"}} {cumulative}')
            lines.append(f"{name}_sum{{{label_text}}} {one.latency_sum_s}")
            lines.append(f"{name}_count{{{label_text}}} {cumulative}")


def _labels(labels: tuple[str, str]) -> str:
    task, model = (_escape(value) for value in labels)
    return f'task="{task}",model="{model}"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
