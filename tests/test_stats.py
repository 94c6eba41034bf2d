from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from costroute.stats import (
    FloatArray,
    ItemOutcomes,
    Metric,
    ResampledSums,
    cost_per_result_interval,
    items_to_settle,
    metric_value,
    paired_bootstrap_difference,
    paired_resample_sums,
    percentile_ms,
    probability_lower,
    quality_interval,
    resample_sums,
    wilson_interval,
)


def make_outcomes(
    cost_usd: list[float],
    correct: list[int],
    tp: list[int] | None = None,
    fp: list[int] | None = None,
    fn: list[int] | None = None,
    results: list[float] | None = None,
) -> ItemOutcomes:
    zeros = [0] * len(cost_usd)
    return ItemOutcomes(
        cost_usd=np.array(cost_usd, dtype=np.float64),
        results=np.array(correct if results is None else results, dtype=np.float64),
        tp=np.array(zeros if tp is None else tp, dtype=np.int64),
        fp=np.array(zeros if fp is None else fp, dtype=np.int64),
        fn=np.array(zeros if fn is None else fn, dtype=np.int64),
        correct=np.array(correct, dtype=np.float64),
    )


def binary_outcomes(n_items: int, accuracy: float, cost_usd: float) -> ItemOutcomes:
    """Items whose first `accuracy` share is correct, each costing `cost_usd`."""
    n_correct = round(n_items * accuracy)
    correct = [1] * n_correct + [0] * (n_items - n_correct)
    return make_outcomes([cost_usd] * n_items, correct)


def test_wilson_known_value() -> None:
    lower, upper = wilson_interval(8, 10)

    assert lower == pytest.approx(0.4902, abs=1e-4)
    assert upper == pytest.approx(0.9433, abs=1e-4)


def test_wilson_no_trials_is_whole_range() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_all_successes() -> None:
    lower, upper = wilson_interval(10, 10)

    assert lower == pytest.approx(0.7225, abs=1e-4)
    assert upper == 1.0


def test_wilson_no_successes() -> None:
    lower, upper = wilson_interval(0, 10)

    assert lower == 0.0
    assert upper == pytest.approx(0.2775, abs=1e-4)


def test_wilson_widens_with_confidence() -> None:
    narrow = wilson_interval(8, 10, confidence=0.8)
    wide = wilson_interval(8, 10, confidence=0.99)

    assert wide[0] < narrow[0] and narrow[1] < wide[1]


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(11, 10, 0.95), (-1, 10, 0.95), (1, -1, 0.95), (1, 10, 1.0), (1, 10, 0.0)],
)
def test_wilson_rejects_bad_arguments(
    successes: float, n: int, confidence: float
) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, n, confidence)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("accuracy", 0.7),
        ("precision", 6 / 8),
        ("recall", 6 / 10),
        ("f1", 12 / 18),
    ],
)
def test_metric_value(metric: Metric, expected: float) -> None:
    value = metric_value(metric, tp=6, fp=2, fn=4, correct_count=7, n=10)

    assert value == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1"])
def test_metric_value_zero_over_zero_is_zero(metric: Metric) -> None:
    value = metric_value(metric, tp=0, fp=0, fn=0, correct_count=0, n=0)

    assert value == 0.0


def test_metric_value_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        unknown: Any = "auc"
        metric_value(unknown, tp=1, fp=0, fn=0, correct_count=1, n=1)


def test_item_outcomes_checks_alignment() -> None:
    with pytest.raises(ValueError, match="correct has shape"):
        ItemOutcomes(
            cost_usd=np.zeros(3),
            results=np.zeros(3),
            tp=np.zeros(3, dtype=np.int64),
            fp=np.zeros(3, dtype=np.int64),
            fn=np.zeros(3, dtype=np.int64),
            correct=np.zeros(2),
        )


def test_item_outcomes_are_read_only_copies() -> None:
    cost_usd = np.array([0.1, 0.2])
    outcomes = make_outcomes(list(cost_usd), [1, 0])

    with pytest.raises(ValueError):
        outcomes.cost_usd[0] = 5.0
    assert outcomes.n_items == 2


def test_quality_interval_accuracy_is_wilson() -> None:
    outcomes = binary_outcomes(10, accuracy=0.8, cost_usd=0.01)

    assert quality_interval(outcomes, "accuracy") == wilson_interval(8, 10)


def test_quality_interval_precision_is_wilson_for_one_finding_per_item() -> None:
    outcomes = make_outcomes(
        [0.01] * 6, [1, 1, 0, 1, 0, 0], tp=[1, 1, 0, 1, 0, 0], fp=[0, 0, 1, 0, 0, 0]
    )

    assert quality_interval(outcomes, "precision") == wilson_interval(3, 4)


def test_quality_interval_recall_bootstraps_for_several_findings_per_item() -> None:
    rng = np.random.default_rng(7)
    tp = rng.integers(0, 4, size=80).tolist()
    fn = rng.integers(0, 3, size=80).tolist()
    outcomes = make_outcomes([0.01] * 80, [0] * 80, tp=tp, fn=fn, results=tp)
    point = metric_value("recall", sum(tp), 0, sum(fn), 0, 80)

    lower, upper = quality_interval(outcomes, "recall")

    assert lower < point < upper
    assert (lower, upper) != wilson_interval(sum(tp), sum(tp) + sum(fn))


def test_quality_interval_f1_contains_point_and_narrows() -> None:
    def f1_outcomes(n_items: int) -> ItemOutcomes:
        rng = np.random.default_rng(3)
        tp = rng.integers(0, 4, size=n_items).tolist()
        fp = rng.integers(0, 2, size=n_items).tolist()
        fn = rng.integers(0, 2, size=n_items).tolist()
        return make_outcomes([0.01] * n_items, [0] * n_items, tp, fp, fn, tp)

    small, large = f1_outcomes(50), f1_outcomes(200)
    point = metric_value(
        "f1", small.tp.sum(), small.fp.sum(), small.fn.sum(), 0, small.n_items
    )

    small_lower, small_upper = quality_interval(small, "f1")
    large_lower, large_upper = quality_interval(large, "f1")

    assert 0.0 <= small_lower < point < small_upper <= 1.0
    assert large_upper - large_lower < small_upper - small_lower


def test_quality_interval_empty_batch() -> None:
    empty = make_outcomes([], [])

    assert quality_interval(empty, "accuracy") == (0.0, 1.0)
    assert quality_interval(empty, "f1") == (0.0, 1.0)


def test_cost_per_result_interval_contains_point_and_narrows() -> None:
    def outcomes(n_items: int) -> ItemOutcomes:
        rng = np.random.default_rng(11)
        cost_usd = rng.uniform(0.001, 0.003, size=n_items).tolist()
        correct = (rng.random(n_items) < 0.7).astype(int).tolist()
        return make_outcomes(cost_usd, correct)

    small, large = outcomes(50), outcomes(200)
    point = small.cost_usd.sum() / small.results.sum()

    small_interval = cost_per_result_interval(small)
    large_interval = cost_per_result_interval(large)

    assert small_interval is not None and large_interval is not None
    assert small_interval[0] < point < small_interval[1]
    large_width = large_interval[1] - large_interval[0]
    assert large_width < small_interval[1] - small_interval[0]


def test_cost_per_result_interval_is_deterministic_with_seed() -> None:
    outcomes = binary_outcomes(60, accuracy=0.6, cost_usd=0.002)

    first = cost_per_result_interval(outcomes, seed=5)
    again = cost_per_result_interval(outcomes, seed=5)
    other = cost_per_result_interval(outcomes, seed=6)

    assert first == again
    assert first != other


def test_cost_per_result_upper_bound_is_inf_when_results_are_rare() -> None:
    outcomes = binary_outcomes(50, accuracy=0.02, cost_usd=0.01)

    interval = cost_per_result_interval(outcomes)

    assert interval is not None
    lower, upper = interval
    assert 0 < lower < 0.5
    assert upper == math.inf


def test_cost_per_result_without_any_result_is_infinite() -> None:
    outcomes = binary_outcomes(20, accuracy=0.0, cost_usd=0.01)

    assert cost_per_result_interval(outcomes) == (math.inf, math.inf)


def test_cost_per_result_interval_empty_batch_is_none() -> None:
    assert cost_per_result_interval(make_outcomes([], [])) is None


def test_resample_sums_keep_totals_on_average() -> None:
    outcomes = binary_outcomes(100, accuracy=0.7, cost_usd=0.002)

    sums = resample_sums(outcomes, resamples=4000)

    assert isinstance(sums, ResampledSums)
    assert sums.cost_usd.shape == (4000,)
    assert np.allclose(sums.correct + sums.wrong, 100)
    assert sums.results.mean() == pytest.approx(70, rel=0.01)


def test_paired_resample_sums_draw_the_same_items() -> None:
    a = binary_outcomes(40, accuracy=0.5, cost_usd=0.01)
    b = make_outcomes([0.02] * 40, a.correct.astype(int).tolist())

    sums = paired_resample_sums({"a": a, "b": b}, resamples=500)

    assert np.array_equal(sums["a"].results, sums["b"].results)
    assert np.allclose(sums["b"].cost_usd, 2 * sums["a"].cost_usd)


def test_paired_resample_sums_reject_misaligned_candidates() -> None:
    a = binary_outcomes(40, accuracy=0.5, cost_usd=0.01)
    b = binary_outcomes(39, accuracy=0.5, cost_usd=0.01)

    with pytest.raises(ValueError, match="same items"):
        paired_resample_sums({"a": a, "b": b})


def test_paired_difference_sign_for_clearly_different_candidates() -> None:
    cheap = binary_outcomes(100, accuracy=0.8, cost_usd=0.001)
    dear = binary_outcomes(100, accuracy=0.9, cost_usd=0.01)

    differences = paired_bootstrap_difference(cheap, dear)

    assert differences.shape == (2000,)
    assert np.all(differences < 0)
    assert probability_lower(differences) == 1.0
    assert probability_lower(-differences) == 0.0


def test_paired_difference_of_a_custom_statistic() -> None:
    good = binary_outcomes(100, accuracy=0.95, cost_usd=0.01)
    poor = binary_outcomes(100, accuracy=0.5, cost_usd=0.01)

    def error_rate(sums: ResampledSums) -> FloatArray:
        return sums.wrong / sums.n_items

    differences = paired_bootstrap_difference(good, poor, error_rate)

    assert probability_lower(differences) > 0.99


def test_paired_difference_both_infinite_counts_as_tie() -> None:
    a = binary_outcomes(30, accuracy=0.0, cost_usd=0.01)
    b = binary_outcomes(30, accuracy=0.0, cost_usd=0.02)

    differences = paired_bootstrap_difference(a, b, resamples=100)

    assert np.all(np.isnan(differences))
    assert probability_lower(differences) == 0.5


def test_percentile_ms() -> None:
    latencies_ms = [100.0, 200.0, 300.0, 400.0, 1000.0]

    assert percentile_ms(latencies_ms, 50) == 300.0
    assert percentile_ms(latencies_ms, 95) == pytest.approx(880.0)
    assert percentile_ms([250.0], 95) == 250.0
    assert percentile_ms([], 50) is None


def test_percentile_ms_rejects_fraction_above_100() -> None:
    with pytest.raises(ValueError, match="0 to 100"):
        percentile_ms([1.0], 150)


def test_items_to_settle() -> None:
    assert items_to_settle(0.97, 100) == 0
    assert items_to_settle(0.5, 100) is None
    assert items_to_settle(0.3, 100) is None

    # Observed z of 0.8416 against the 1.6449 needed: about 3.8 times the items.
    assert items_to_settle(0.8, 100) == 282
    nearer = items_to_settle(0.9, 100)
    assert nearer is not None and 0 < nearer < 282


def test_bootstrap_is_fast() -> None:
    rng = np.random.default_rng(1)
    outcomes = make_outcomes(
        rng.uniform(0.001, 0.01, size=200).tolist(),
        (rng.random(200) < 0.7).astype(int).tolist(),
    )
    elapsed_ms = []

    # The best of three runs, so that a busy test machine does not fail it.
    for _ in range(3):
        started_s = time.perf_counter()
        cost_per_result_interval(outcomes, resamples=2000)
        elapsed_ms.append((time.perf_counter() - started_s) * 1000)

    assert min(elapsed_ms) < 50
