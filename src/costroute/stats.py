"""Confidence intervals and paired resampling for cost per result and quality.

Everything here is a pure function of per-item outcome arrays. Money is carried
as float64 only while resampling; the exact `Decimal` totals are computed by the
callers. Every bootstrap draws from `numpy.random.Generator(PCG64(seed))`, so the
same seed gives the same interval.

A bootstrap resample is held as a count matrix: row `r` says how many times each
item was drawn in resample `r`. The resampled sums of every column are then one
matrix product, which keeps 2,000 resamples of 200 items to a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Metric = Literal["accuracy", "precision", "recall", "f1"]

METRICS: tuple[Metric, ...] = get_args(Metric)
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class ItemOutcomes:
    """One candidate's outcomes on a batch, one array entry per item.

    When an item was called several times (repeats), the caller aggregates the
    calls first: `cost_usd` is the item's total cost, `results` the results it
    contributed, `tp`, `fp` and `fn` the summed counts, and `correct` 1 or 0 (or
    the share of its calls that were correct). The arrays are copied and made
    read-only, so an instance cannot change after it is built.
    """

    cost_usd: FloatArray
    results: FloatArray
    tp: IntArray
    fp: IntArray
    fn: IntArray
    correct: FloatArray

    def __post_init__(self) -> None:
        n_items = len(np.asarray(self.cost_usd))
        for field in fields(self):
            dtype = np.int64 if field.name in ("tp", "fp", "fn") else np.float64
            column = np.array(getattr(self, field.name), dtype=dtype)
            if column.shape != (n_items,):
                raise ValueError(
                    f"ItemOutcomes.{field.name} has shape {column.shape}; "
                    f"expected ({n_items},) like cost_usd"
                )
            column.flags.writeable = False
            object.__setattr__(self, field.name, column)

    @property
    def n_items(self) -> int:
        return len(self.cost_usd)


@dataclass(frozen=True)
class ResampledSums:
    """Column sums of one candidate's outcomes, one entry per bootstrap resample.

    `wrong` is the number of items not correct in each resample, for statistics
    that charge an error cost.
    """

    n_items: int
    cost_usd: FloatArray
    results: FloatArray
    tp: FloatArray
    fp: FloatArray
    fn: FloatArray
    correct: FloatArray
    wrong: FloatArray


def wilson_interval(
    successes: float, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a proportion of `successes` out of `n` trials.

    With no trials nothing is known, so the interval is the whole of [0, 1].
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (0.0, 1.0)

    z = _two_sided_z(confidence)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    spread = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    half_width = spread / denominator

    # At 0 or n successes the bound is exactly 0 or 1; rounding would shift it.
    lower = 0.0 if successes == 0 else max(0.0, centre - half_width)
    upper = 1.0 if successes == n else min(1.0, centre + half_width)
    return (lower, upper)


def metric_value(
    metric: Metric, tp: float, fp: float, fn: float, correct_count: float, n: int
) -> float:
    """The quality metric from summed counts; any 0/0 is taken as 0.0."""
    value = _metric_array(
        metric,
        tp=np.asarray(tp, dtype=np.float64),
        fp=np.asarray(fp, dtype=np.float64),
        fn=np.asarray(fn, dtype=np.float64),
        correct=np.asarray(correct_count, dtype=np.float64),
        n_items=n,
    )
    return float(value)


def quality_interval(
    outcomes: ItemOutcomes,
    metric: Metric,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Confidence interval for the quality metric over the batch.

    Accuracy, and precision or recall when every item adds at most one to the
    metric's denominator, are binomial proportions and get a Wilson interval.
    Otherwise the counts within an item are not independent trials, so the
    interval is a percentile bootstrap over items.
    """
    _check_metric(metric)
    _check_confidence(confidence)
    if metric == "accuracy":
        return wilson_interval(
            float(outcomes.correct.sum()), outcomes.n_items, confidence
        )

    trials = _binomial_trials(outcomes, metric)
    if trials is not None:
        return wilson_interval(float(outcomes.tp.sum()), trials, confidence)
    if outcomes.n_items == 0:
        return (0.0, 1.0)

    sums = resample_sums(outcomes, resamples, seed)
    values = _metric_array(
        metric, sums.tp, sums.fp, sums.fn, sums.correct, outcomes.n_items
    )
    return _percentile_interval(values, confidence)


def cost_per_result_interval(
    outcomes: ItemOutcomes,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval for total cost over total results, in USD.

    A resample with no results has an infinite cost per result. When more than
    (1 - confidence) / 2 of the resamples are infinite the upper bound is
    `math.inf`: the batch cannot rule out that results are too rare to price.
    Returns None for an empty batch.
    """
    _check_confidence(confidence)
    if outcomes.n_items == 0:
        return None

    sums = resample_sums(outcomes, resamples, seed)
    return _percentile_interval(resampled_cost_per_result(sums), confidence)


def resample_sums(
    outcomes: ItemOutcomes,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> ResampledSums:
    """Bootstrap one candidate's items and sum each column per resample."""
    return paired_resample_sums({"": outcomes}, resamples, seed)[""]


def paired_resample_sums(
    candidates: Mapping[str, ItemOutcomes],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, ResampledSums]:
    """Bootstrap items jointly for candidates measured on the same items.

    Every candidate's arrays must be aligned by item. Resample `r` draws the same
    items for all candidates, so a difference between two candidates' statistics
    in resample `r` is a paired difference: the variation that comes from which
    items happened to be in the batch cancels out.
    """
    n_items = _common_item_count(candidates)
    counts = _resample_counts(n_items, resamples, seed)
    return {
        name: _column_sums(counts, outcomes) for name, outcomes in candidates.items()
    }


def resampled_cost_per_result(sums: ResampledSums) -> FloatArray:
    """Cost per result in USD for each resample; +inf where there were no results."""
    return _ratio_or_inf(sums.cost_usd, sums.results)


def paired_bootstrap_difference(
    a: ItemOutcomes,
    b: ItemOutcomes,
    statistic: Callable[[ResampledSums], FloatArray] = resampled_cost_per_result,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> FloatArray:
    """Resampled differences `statistic(a) - statistic(b)` over shared items.

    `statistic` maps resampled sums to one value per resample, for example
    `resampled_cost_per_result`, or cost plus an error cost times `wrong` over
    results. Where both values are infinite the difference is NaN, which
    `probability_lower` counts as a tie.
    """
    sums = paired_resample_sums({"a": a, "b": b}, resamples, seed)
    with np.errstate(invalid="ignore"):
        return statistic(sums["a"]) - statistic(sums["b"])


def probability_lower(differences: FloatArray) -> float:
    """Share of resampled differences below zero, with ties and NaN as half.

    Applied to `paired_bootstrap_difference(a, b)` this is P(a's statistic is
    lower than b's), e.g. P(a is cheaper per result than b).
    """
    if len(differences) == 0:
        raise ValueError("need at least one resampled difference")

    below = np.count_nonzero(differences < 0)
    above = np.count_nonzero(differences > 0)
    ties = len(differences) - below - above

    return float((below + ties / 2) / len(differences))


def items_to_settle(
    p_best: float, n_items: int, confidence: float = 0.95
) -> int | None:
    """A rough estimate of how many more items would settle a comparison.

    `p_best` is the bootstrap probability that the leading candidate is better,
    for example from `probability_lower`. Under a normal approximation of the
    paired differences, Phi^-1(p_best) is the observed z, mean / sd of the
    differences, and z grows with the square root of the number of items. So
    `n_items * (z_needed / z_observed) ** 2` items would bring p_best to
    `confidence` if the per-item effect stayed the same, which it need not.
    Returns 0 when already settled, and None when nothing leans either way
    (p_best <= 0.5), since no batch size can then be estimated.
    """
    _check_confidence(confidence)
    if not 0 <= p_best <= 1:
        raise ValueError(f"p_best must be a probability, got {p_best}")
    if p_best >= confidence:
        return 0
    if p_best <= 0.5:
        return None

    z_needed = NormalDist().inv_cdf(confidence)
    z_observed = NormalDist().inv_cdf(p_best)
    items_needed = n_items * (z_needed / z_observed) ** 2

    return max(0, math.ceil(items_needed) - n_items)


def percentile_ms(values_ms: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 to 100) of latencies, linearly interpolated."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0 to 100, got {q}")
    if len(values_ms) == 0:
        return None
    return float(np.percentile(np.asarray(values_ms, dtype=np.float64), q))


def _resample_counts(n_items: int, resamples: int, seed: int) -> FloatArray:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, n_items, size=(resamples, n_items))

    # Offsetting each row's draws lets one bincount count all rows at once.
    offsets = np.arange(resamples)[:, np.newaxis] * n_items
    flat_counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n_items)

    return flat_counts.reshape(resamples, n_items).astype(np.float64)


def _column_sums(counts: FloatArray, outcomes: ItemOutcomes) -> ResampledSums:
    columns = np.column_stack(
        [
            outcomes.cost_usd,
            outcomes.results,
            outcomes.tp,
            outcomes.fp,
            outcomes.fn,
            outcomes.correct,
        ]
    ).astype(np.float64)
    # einsum's own loop rather than BLAS: on a busy machine a threaded BLAS call
    # here took ten times longer, and its summation order can vary with threads.
    sums = np.einsum("ri,ic->rc", counts, columns)

    return ResampledSums(
        n_items=outcomes.n_items,
        cost_usd=sums[:, 0],
        results=sums[:, 1],
        tp=sums[:, 2],
        fp=sums[:, 3],
        fn=sums[:, 4],
        correct=sums[:, 5],
        wrong=outcomes.n_items - sums[:, 5],
    )


def _common_item_count(candidates: Mapping[str, ItemOutcomes]) -> int:
    item_counts = {name: outcomes.n_items for name, outcomes in candidates.items()}
    if not item_counts:
        raise ValueError("need at least one candidate to resample")
    if len(set(item_counts.values())) > 1:
        raise ValueError(
            f"paired resampling needs the same items for every candidate, "
            f"got item counts {item_counts}"
        )
    n_items = next(iter(item_counts.values()))
    if n_items == 0:
        raise ValueError("cannot resample an empty batch")
    return n_items


def _binomial_trials(outcomes: ItemOutcomes, metric: Metric) -> int | None:
    misses = outcomes.fp if metric == "precision" else outcomes.fn
    trials_per_item = outcomes.tp + misses
    if np.any(trials_per_item > 1):
        return None
    return int(trials_per_item.sum())


def _metric_array(
    metric: Metric,
    tp: FloatArray,
    fp: FloatArray,
    fn: FloatArray,
    correct: FloatArray,
    n_items: int,
) -> FloatArray:
    _check_metric(metric)
    if metric == "accuracy":
        return _ratio_or_zero(correct, np.full_like(correct, n_items))
    if metric == "precision":
        return _ratio_or_zero(tp, tp + fp)
    if metric == "recall":
        return _ratio_or_zero(tp, tp + fn)
    return _ratio_or_zero(2 * tp, 2 * tp + fp + fn)


def _ratio_or_zero(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    ratio = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=ratio, where=denominator != 0)
    return ratio


def _ratio_or_inf(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    ratio = np.full_like(numerator, np.inf, dtype=np.float64)
    np.divide(numerator, denominator, out=ratio, where=denominator != 0)
    return ratio


def _percentile_interval(values: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    infinite_share = np.count_nonzero(np.isinf(values)) / len(values)
    if infinite_share > 1 - tail:
        return (math.inf, math.inf)

    # Capping inf at the largest finite value keeps the interpolation from
    # producing NaN next to the infinite tail; an upper bound that falls in the
    # tail is set to inf explicitly below.
    finite = values[np.isfinite(values)]
    capped = np.minimum(values, finite.max())
    lower, upper = np.quantile(capped, [tail, 1 - tail])
    if infinite_share > tail:
        upper = math.inf

    return (float(lower), float(upper))


def _two_sided_z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
