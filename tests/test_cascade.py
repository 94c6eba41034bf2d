"""Cascades simulated from stored per-item outcomes, and how they compete."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from costroute.assessment import Assessment
from costroute.cascade import in_fit_split, pairs, policies, simulate
from costroute.decide import Decision, decide_run, task_route
from costroute.expected import wrong_outputs
from costroute.routes import EscalationCheck
from costroute.stats import ItemOutcomes
from costroute.store import Store
from costroute.task import DialsConfig, Task
from tests.outcomes import Answer, answers, labelled, record_run, write_task

CHEAP, STRONG = "fake/cheap", "fake/strong"
ITEMS = 100


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


def _wrong(index: int) -> bool:
    """Three items in ten, spread over both halves of the split."""
    return index % 10 < 3


def _strong() -> list[Answer]:
    return answers(labelled([True] * ITEMS), "0.01")


def _decide(store: Store, task: Task, run_id: str, **dials: object) -> Decision:
    run = store.run(run_id)
    dial_config = task.dials.model_copy(update=dials)
    decision, _ = decide_run(store, run, task, dial_config, task.floor, 0.95)
    return decision


def _cascade_row(decision: Decision) -> Assessment:
    return next(a for a in decision.candidates if a.route.kind == "cascade")


def test_an_informative_validator_beats_both_single_models(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    cheap = [
        (True, "spam") if not _wrong(i) else (False, "not sure") for i in range(ITEMS)
    ]
    run_id = record_run(
        store, task, {CHEAP: answers(cheap, "0.001"), STRONG: _strong()}
    )

    decision = _decide(store, task, run_id)

    route = decision.route
    assert route is not None and route.kind == "cascade"
    assert (route.cheap, route.strong) == (CHEAP, STRONG)
    assert route.escalate_when == EscalationCheck(
        check="labels", labels=["spam", "ham"]
    )
    assert decision.status == "settled"
    winner = decision.winner
    assert winner is not None and winner.quality == 1.0
    # Every item pays the cheap call; the 30 escalated ones pay the strong too.
    assert winner.expected_cost_per_result_usd == Decimal("0.4") / 100
    cascade = winner.contender.cascade
    assert cascade is not None and cascade.escalation_rate == pytest.approx(0.3)
    assert cascade.holds
    assert cascade.fit.items + cascade.held_out.items == ITEMS
    assert decision.runner_up == STRONG


def test_an_uninformative_validator_loses(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    # 30 wrong answers still name a label, so the check catches only 5 misses.
    cheap = [
        (False, "ham")
        if _wrong(i)
        else (False, "no idea")
        if i % 20 == 5
        else (True, "spam")
        for i in range(ITEMS)
    ]
    run_id = record_run(
        store, task, {CHEAP: answers(cheap, "0.001"), STRONG: _strong()}
    )

    decision = _decide(store, task, run_id)

    assert decision.route is not None and decision.route.model == STRONG
    row = _cascade_row(decision)
    assert row.eligible is False
    assert row.why_not is not None and "below the floor" in row.why_not


def test_two_cheap_samples_that_disagree_escalate(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    first = labelled([not _wrong(i) for i in range(ITEMS)])
    # The second sample repeats right answers and flips wrong ones.
    second = [(True, "spam") for _ in range(ITEMS)]
    calls = {
        CHEAP: answers(first, "0.001") + answers(second, "0.001", repeat=1),
        STRONG: _strong(),
    }
    run_id = record_run(store, task, calls)

    decision = _decide(store, task, run_id)

    route = decision.route
    assert route is not None and route.kind == "cascade"
    assert route.escalate_when == EscalationCheck(check="agreement", samples=2)
    winner = decision.winner
    # Both cheap samples on every item, plus the strong call on 30 of them.
    assert winner is not None
    assert winner.expected_cost_per_result_usd == Decimal("0.5") / 100


def test_samples_that_agree_when_wrong_make_no_cascade(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    first = labelled([not _wrong(i) for i in range(ITEMS)])
    calls = {
        CHEAP: answers(first, "0.001") + answers(first, "0.001", repeat=1),
        STRONG: _strong(),
    }
    run_id = record_run(store, task, calls)

    decision = _decide(store, task, run_id)

    assert decision.route is not None and decision.route.model == STRONG
    assert all(a.route.kind == "single" for a in decision.candidates)
    cheap = next(a for a in decision.candidates if a.name == CHEAP)
    # With two calls an item, the wrong outputs are counted per call.
    assert cheap.contender.cost is not None
    assert cheap.contender.cost.wrong == 60


def test_a_logprob_threshold_is_fit_on_the_fit_items(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    right = [not _wrong(i) for i in range(ITEMS)]
    logprobs = [
        -0.1 - i / 1000 if ok else -3.0 - i / 1000 for i, ok in enumerate(right)
    ]
    cheap = answers(labelled(right), "0.001", logprobs=logprobs)
    run_id = record_run(store, task, {CHEAP: cheap, STRONG: _strong()})

    # A costly error makes every miss count, so only a clean cut is cheapest.
    decision = _decide(
        store, task, run_id, error_cost_usd=Decimal(1), recoverable=False
    )

    route = decision.route
    assert route is not None and route.escalate_when is not None
    assert route.escalate_when.check == "logprob"
    threshold = route.escalate_when.threshold
    assert threshold is not None and -3.0 < threshold < -0.1
    assert decision.winner is not None and decision.winner.quality == 1.0


def test_a_policy_that_does_not_hold_out_of_sample_is_not_eligible(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.88)
    items = 400
    held_out_wrong = [i for i in range(items) if not in_fit_split(f"i{i}")][:30]
    cheap: list[tuple[bool, str]] = []
    for i in range(items):
        if in_fit_split(f"i{i}") and i % 5 == 0:
            cheap.append((False, "not sure"))
        elif i in held_out_wrong:
            cheap.append((False, "ham"))
        else:
            cheap.append((True, "spam"))
    strong = answers(labelled([True] * items), "0.01")
    run_id = record_run(store, task, {CHEAP: answers(cheap, "0.001"), STRONG: strong})

    decision = _decide(store, task, run_id)

    row = _cascade_row(decision)
    cascade = row.contender.cascade
    assert cascade is not None
    assert cascade.fit.quality == 1.0 and not cascade.holds
    assert row.why_not is not None and "held-out" in row.why_not
    assert decision.route is not None and decision.route.model == STRONG


def test_on_prem_only_builds_cascades_from_local_models_only(
    tmp_path: Path, store: Store
) -> None:
    local = "vllm/llama"
    task = write_task(tmp_path, [CHEAP, local], floor=0.9)
    cheap = [
        (True, "spam") if not _wrong(i) else (False, "not sure") for i in range(ITEMS)
    ]
    run_id = record_run(
        store,
        task,
        {
            CHEAP: answers(cheap, "0.001"),
            local: answers(labelled([True] * ITEMS), "0.01"),
        },
    )

    anywhere = _decide(store, task, run_id)
    on_prem = _decide(store, task, run_id, on_prem_only=True)

    assert anywhere.route is not None and anywhere.route.kind == "cascade"
    assert on_prem.route is not None and on_prem.route.model == local
    assert all(a.route.kind == "single" for a in on_prem.candidates)


def test_the_routes_file_says_when_to_escalate(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    cheap = [
        (True, "spam") if not _wrong(i) else (False, "not sure") for i in range(ITEMS)
    ]
    run_id = record_run(
        store, task, {CHEAP: answers(cheap, "0.001"), STRONG: _strong()}
    )
    decision = _decide(store, task, run_id)

    section = task_route(decision, task, store.prices(run_id))

    assert section.route is not None and section.route.kind == "cascade"
    assert section.evidence.escalation_rate == pytest.approx(0.3)
    assert section.fallbacks == [STRONG]
    assert set(section.candidates) == {CHEAP, STRONG}


def test_an_escalated_item_pays_for_both_calls(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    calls = {
        CHEAP: answers([(False, "hmm"), (True, "spam")], "0.001"),
        STRONG: answers([(True, "spam"), (True, "spam")], "0.01"),
    }
    run_id = record_run(store, task, calls)
    (pair,) = pairs(store.scored_calls(run_id), [CHEAP, STRONG])
    (found,) = policies(pair, task, np.ones(2, dtype=bool))

    simulation = simulate(pair, *found)

    assert list(simulation.escalated) == [True, False]
    assert simulation.costs_usd == [Decimal("0.011"), Decimal("0.001")]
    assert list(simulation.outcomes.correct) == [1.0, 1.0]


def test_a_failed_cheap_call_always_escalates(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    failed = Answer("i0", False, Decimal(0), "spam", status="error")
    calls = {
        CHEAP: [failed],
        STRONG: answers([(True, "spam")], "0.01"),
    }
    run_id = record_run(store, task, calls)
    (pair,) = pairs(store.scored_calls(run_id), [CHEAP, STRONG])

    ((_, escalate),) = policies(pair, task, np.ones(1, dtype=bool))

    assert list(escalate) == [True]


@pytest.mark.parametrize(
    ("scorer", "good", "bad", "check"),
    [
        (
            'kind = "regex"\npattern = "answer: (\\\\w+)"\nflags = "i"',
            "Answer: spam",
            "dunno",
            EscalationCheck(check="regex", pattern="(?i)answer: (\\w+)"),
        ),
        (
            'kind = "json"\nfields = ["label"]',
            '{"label": "spam"}',
            '{"other": 1}',
            EscalationCheck(check="json", fields=["label"]),
        ),
    ],
)
def test_the_scorer_implies_the_output_check(
    tmp_path: Path,
    store: Store,
    scorer: str,
    good: str,
    bad: str,
    check: EscalationCheck,
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], scorer=scorer)
    calls = {
        CHEAP: answers([(True, good), (False, bad)], "0.001"),
        STRONG: answers([(True, good), (True, good)], "0.01"),
    }
    run_id = record_run(store, task, calls)
    (pair,) = pairs(store.scored_calls(run_id), [CHEAP, STRONG])

    ((found, escalate),) = policies(pair, task, np.ones(2, dtype=bool))

    assert found == check
    assert list(escalate) == [False, True]


def test_the_cheap_side_of_a_pair_costs_less(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    calls = {
        CHEAP: answers([(True, "spam")], "0.001"),
        STRONG: answers([(True, "spam")], "0.01"),
    }
    run_id = record_run(store, task, calls)

    found = pairs(store.scored_calls(run_id), [STRONG, CHEAP])

    assert [(p.cheap, p.strong) for p in found] == [(CHEAP, STRONG)]


def test_the_split_is_a_stable_half() -> None:
    ids = [f"item-{n}" for n in range(1000)]

    fit = [in_fit_split(item) for item in ids]

    assert 400 < sum(fit) < 600
    assert fit == [in_fit_split(item) for item in ids]


def test_findings_count_false_positives_and_misses_as_wrong() -> None:
    outcomes = ItemOutcomes(
        cost_usd=np.array([0.1, 0.1]),
        results=np.array([2.0, 0.0]),
        tp=np.array([2, 0]),
        fp=np.array([1, 0]),
        fn=np.array([0, 3]),
        correct=np.array([0.0, 0.0]),
    )

    assert list(wrong_outputs(outcomes, findings=True)) == [1.0, 3.0]
    assert list(wrong_outputs(outcomes, findings=False)) == [1.0, 1.0]


def test_dials_reach_the_cascade_choice(tmp_path: Path, store: Store) -> None:
    # At $5 an unrecoverable error the cascade, right on every item, still wins.
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.9)
    cheap = [
        (True, "spam") if not _wrong(i) else (False, "not sure") for i in range(ITEMS)
    ]
    run_id = record_run(
        store, task, {CHEAP: answers(cheap, "0.001"), STRONG: _strong()}
    )

    decision = _decide(
        store, task, run_id, error_cost_usd=Decimal(5), recoverable=False
    )

    assert decision.route is not None and decision.route.kind == "cascade"
    assert decision.dials == DialsConfig(error_cost_usd=Decimal(5), recoverable=False)
