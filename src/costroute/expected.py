"""Expected cost: what a candidate's outputs cost once the wrong ones are charged.

A wrong output is not free even when its call was cheap: it costs what catching
it costs when errors are recoverable downstream, or the full error cost when they
are not. The expected cost per result is therefore

    (model cost + wrong outputs × effective error cost) ÷ results

For single-answer scorers a wrong output is an output that is not correct. For
the findings scorer it is a false positive or a miss (fp + fn), since each is a
separate mistake that somebody pays for.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from costroute import stats
from costroute.task import DialsConfig


def effective_error_cost_usd(dials: DialsConfig) -> Decimal:
    """The catch cost when errors are recoverable, else the full error cost."""
    return dials.catch_cost_usd if dials.recoverable else dials.error_cost_usd


def wrong_outputs(
    outcomes: stats.ItemOutcomes, findings: bool, calls_per_item: float = 1.0
) -> stats.FloatArray:
    """Wrong outputs per item: fp + fn for findings, else outputs not correct.

    `correct` is the share of an item's calls that were correct, so with repeats
    the item's wrong outputs are its calls times the share that were wrong.
    """
    if findings:
        return (outcomes.fp + outcomes.fn).astype(np.float64)
    return calls_per_item * (1.0 - outcomes.correct)


def with_error_cost(
    outcomes: stats.ItemOutcomes, wrong: stats.FloatArray, error_cost_usd: Decimal
) -> stats.ItemOutcomes:
    """The same outcomes with each item's wrong outputs charged into its cost.

    Cost per result of the result is the expected cost per result, so the
    intervals and paired bootstraps of `costroute.stats` apply to it unchanged.
    """
    return stats.ItemOutcomes(
        cost_usd=outcomes.cost_usd + wrong * float(error_cost_usd),
        results=outcomes.results,
        tp=outcomes.tp,
        fp=outcomes.fp,
        fn=outcomes.fn,
        correct=outcomes.correct,
    )


@dataclass(frozen=True)
class ExpectedCost:
    """Exact totals of one way of serving a task over a measured batch.

    `outputs` counts what the route would produce for those items: one output per
    call for a single model, one per item for a cascade.
    """

    cost_usd: Decimal
    wrong: float
    results: float
    outputs: float
    error_cost_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.cost_usd + to_decimal(self.wrong) * self.error_cost_usd

    @property
    def cost_per_result_usd(self) -> Decimal | None:
        return _per(self.cost_usd, self.results)

    @property
    def expected_per_result_usd(self) -> Decimal | None:
        return _per(self.total_usd, self.results)

    @property
    def expected_per_output_usd(self) -> Decimal | None:
        return _per(self.total_usd, self.outputs)

    def monthly_usd(self, volume_per_month: int) -> Decimal | None:
        """Expected cost of `volume_per_month` outputs, error charges included."""
        per_output = self.expected_per_output_usd
        return None if per_output is None else per_output * volume_per_month


def to_decimal(value: float) -> Decimal:
    """A float count as a Decimal, exact for whole numbers."""
    if float(value).is_integer():
        return Decimal(int(value))
    return Decimal(repr(float(value)))


def _per(total_usd: Decimal, count: float) -> Decimal | None:
    if count <= 0:
        return None
    return total_usd / to_decimal(count)
