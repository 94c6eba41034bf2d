"""Adaptive measurement: measure in rounds and stop once the route is settled.

Measuring costs money too. An adaptive run takes the batch's items in a seeded
shuffled order, round by round. Every candidate still measured answers the same
items in a round; then the run so far is decided with the task's floor and
dials, exactly as `costroute decide` would decide it.

The run aims at the decision the whole batch would give, so it stops only when
the items not yet measured are unlikely to change that decision (see `Look`):

- settled: the decision is settled, its winner is likely to clear the floor on
  the whole batch too, and every other contender still in play is likely to be
  shown dearer than the winner;
- no_candidate: no candidate can clear the floor any more, its quality's upper
  bound below the floor or all but no chance left of clearing it;
- all_items, or budget: the items or the money ran out.

A candidate that can no longer serve (a hard constraint, no price, no chance of
the floor) answers no later rounds, and neither does one whose further items
cannot change the decision: sure to clear the floor, all but sure to be dearer
than another candidate, and with its order against every other contender all
but settled. A member of the cascade that holds the route is always measured.

The first round is `rounds_of` items. Each later round is the number of items
the decision estimates would settle it, at least `rounds_of` and at most the
items measured so far, so a run at most doubles from one round to the next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from costroute import stats
from costroute.assessment import Assessment, expected_on
from costroute.decide import DEFAULT_CONFIDENCE, Decision, decide_run, items_to_clear
from costroute.store import Store
from costroute.task import Task

if TYPE_CHECKING:
    from costroute.runner import Runner

logger = logging.getLogger(__name__)

StopReason = Literal["settled", "no_candidate", "all_items", "budget"]
Standing = Literal["out", "open", "eligible"]

# Measures these item ids on these models; False when the budget stopped it.
Measure = Callable[[list[str], list[str]], Awaitable[bool]]

DEFAULT_ROUND_ITEMS = 20
DEFAULT_SEED = 0


@dataclass(frozen=True)
class AdaptivePlan:
    """How an adaptive run goes: the confidence to settle at and the round size."""

    confidence: float = DEFAULT_CONFIDENCE
    rounds_of: int = DEFAULT_ROUND_ITEMS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be within 0 to 1, got {self.confidence}")
        if self.rounds_of < 1:
            raise ValueError(f"rounds_of must be at least 1, got {self.rounds_of}")

    def params(self) -> dict[str, Any]:
        """What the run records, so that a resumed run plays the same rounds."""
        return {
            "adaptive": True,
            "rounds_of": self.rounds_of,
            "confidence": self.confidence,
            "seed": self.seed,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AdaptivePlan | None:
        """The plan a run was started with; None for a run that is not adaptive."""
        if not params.get("adaptive"):
            return None
        return cls(
            confidence=float(params.get("confidence", DEFAULT_CONFIDENCE)),
            rounds_of=int(params.get("rounds_of", DEFAULT_ROUND_ITEMS)),
            seed=int(params.get("seed", DEFAULT_SEED)),
        )


@dataclass(frozen=True)
class AdaptiveOutcome:
    """How far an adaptive run went and the decision it stopped at.

    `stopped_because` is None while the run is still going (or was interrupted).
    """

    rounds: int
    items: int
    calls: int
    full_calls: int
    stopped_because: StopReason | None
    decision: Decision

    @property
    def calls_saved(self) -> int:
        return max(0, self.full_calls - self.calls)

    def params(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "items": self.items,
            "calls": self.calls,
            "calls_saved": self.calls_saved,
            "stopped_because": self.stopped_because,
        }


class AdaptiveRounds:
    """The runner's rounds for `costroute run --adaptive` (see `runner.Rounds`)."""

    def __init__(self, plan: AdaptivePlan) -> None:
        self.plan = plan
        self.outcome: AdaptiveOutcome | None = None

    def params(self) -> dict[str, Any]:
        return self.plan.params()

    async def run(self, runner: Runner) -> None:
        by_id = {item.id: item for item in runner.items}

        async def measure(item_ids: list[str], models: list[str]) -> bool:
            return await runner.measure([by_id[i] for i in item_ids], models)

        self.outcome = await measure_adaptively(
            runner.store, runner.run_id, runner.task, self.plan, measure
        )


def item_order(item_ids: Sequence[str], seed: int) -> list[str]:
    """The items in the seeded shuffled order an adaptive run takes them in."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return [item_ids[i] for i in rng.permutation(len(item_ids))]


async def measure_adaptively(
    store: Store, run_id: str, task: Task, plan: AdaptivePlan, measure: Measure
) -> AdaptiveOutcome:
    """Measure run `run_id` in rounds until its decision settles.

    `measure(item_ids, models)` makes the calls and stores them in the run. Each
    round is decided only on the items of the rounds so far, so a resumed run
    replays the same rounds over what is stored and pays only for the rest.
    """
    run = store.run(run_id)
    order = item_order([item.id for item in store.items(run_id)], plan.seed)
    models = [candidate.model for candidate in task.candidates]
    full_calls = len(order) * len(models) * int(run.params.get("repeat", 1))
    active, done, size, rounds = models, 0, plan.rounds_of, 0
    while True:
        rounds += 1
        finished = await measure(order[done : done + size], active)
        done = min(len(order), done + size)
        measured = set(order[:done])
        decision, _ = decide_run(
            store, run, task, task.dials, task.floor, plan.confidence, measured
        )
        look = Look(decision, len(order))
        stop = look.stop_reason(finished, done == len(order))
        calls = len(store.calls(run_id))
        outcome = AdaptiveOutcome(rounds, done, calls, full_calls, stop, decision)
        store.update_run_params(run_id, {"adaptive_result": outcome.params()})
        _log_round(outcome, active)
        if stop is not None:
            return outcome
        active = look.still_measured(active)
        size = look.next_round_size(done, plan.rounds_of)


@dataclass(frozen=True)
class Look:
    """One look at the decision on the items so far, against the whole batch.

    The run aims at the decision the whole batch of `batch_items` would give,
    so each rule asks how likely the items not yet measured are to change it:
    a predictive probability, under a normal approximation in which the items
    still to come behave like those seen so far, with the uncertainty about
    how those really behave added in.
    """

    decision: Decision
    batch_items: int
    _pairs: dict[tuple[int, int], tuple[float, int] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def confidence(self) -> float:
        return self.decision.confidence

    @property
    def strict(self) -> float:
        """The level for what cannot be undone or rests on few items: one minus
        the square of the error the confidence allows (0.9975 for 0.95)."""
        return 1 - (1 - self.confidence) ** 2

    def spent_level(self, measured: int) -> float:
        """The level after `measured` items, spending the error the confidence
        allows by the square of the share of the batch measured, so that an
        early stop must be far surer: 0.9995 after a tenth of the batch, 0.9875
        at half, the confidence itself at its end."""
        share = min(1.0, measured / max(self.batch_items, 1))
        return 1 - (1 - self.confidence) * share**2

    def standing(self, assessment: Assessment) -> Standing:
        """Where a contender stands against the floor.

        `out` can no longer serve: excluded by a hard constraint or a missing
        price, the upper end of its quality interval below the floor, or hardly
        a chance (1 - strict) of clearing the floor on the whole batch.
        `eligible` clears the floor now; `open` may still clear it.
        """
        if assessment.eligible:
            return "eligible"
        if assessment.items == 0:
            return "open"
        if assessment.contender.excluded is not None:
            return "out"
        if assessment.route.kind != "single":
            # A cascade that does not clear the floor now is simulated afresh
            # from its members' calls each round; it has nothing to keep.
            return "out"
        upper = assessment.quality_ci[1] if assessment.quality_ci else 0.0
        if upper < self.decision.floor.min:
            return "out"
        out = self.clear_chance(assessment) <= 1 - self.strict
        return "out" if out else "open"

    def in_play(self) -> list[Assessment]:
        return [a for a in self.decision.candidates if self.standing(a) != "out"]

    def stop_reason(self, finished: bool, out_of_items: bool) -> StopReason | None:
        """Why the run stops after this round, or None to measure another."""
        if not finished:
            return "budget"
        status = self.decision.status
        if status == "settled" and not self.undecided():
            return "settled"
        if status == "no_candidate" and not self.undecided():
            return "no_candidate"
        return "all_items" if out_of_items else None

    def undecided(self) -> list[Assessment]:
        """Contenders whose standing the rest of the batch may still change.

        With a winner: the winner, unless it is likely enough (`spent_level`)
        to clear the floor on the whole batch too, and every other contender in play
        unless the whole batch is likely to show the winner cheaper than it.
        One that does not clear the floor yet must be shown dearer at the
        strict level: it is not part of the decision's own P(best), and the
        paired bootstrap is overconfident on the few items where two
        contenders differ early on. Without a winner: every contender in play.
        """
        winner = self.decision.winner
        in_play = self.in_play()
        if winner is None:
            return in_play
        holds = self.clear_chance(winner) >= self.spent_level(winner.items)
        found = [] if holds else [winner]
        for assessment in in_play:
            needed = self.confidence if assessment.eligible else self.strict
            if assessment is winner:
                continue
            if self.settle_chance(winner, assessment) < needed:
                found.append(assessment)
        return found

    def still_measured(self, active: list[str]) -> list[str]:
        """The candidates that answer the next round.

        All but those that are out or dominated; a member of the cascade that
        holds the route stays, since the cascade's numbers come from its calls.
        """
        route = self.decision.route
        keep = set(route.models()) if route and route.kind == "cascade" else set()
        keep |= {
            a.name
            for a in self.in_play()
            if a.route.kind == "single" and not self.dominated(a)
        }
        return [model for model in active if model in keep]

    def dominated(self, assessment: Assessment) -> bool:
        """Whether more items of a contender can no longer change the decision.

        It is all but sure to clear the floor on the whole batch, another
        single candidate is all but sure to be shown cheaper, and its order
        against every other contender in play is all but settled either way:
        so whichever of them takes the route, what it has shown so far ranks
        and compares it as the whole batch would.
        """
        if not assessment.eligible or self.clear_chance(assessment) < self.strict:
            return False
        others = [a for a in self.in_play() if a is not assessment]
        beaten = any(
            self.settle_chance(other, assessment) >= self.strict
            for other in others
            if other.route.kind == "single"
        )
        return beaten and all(
            max(self.settle_chance(assessment, o), self.settle_chance(o, assessment))
            >= self.strict
            for o in others
        )

    def next_round_size(self, done: int, rounds_of: int) -> int:
        """Items for the next round: what would settle the decision, within bounds.

        The estimate is the largest of the decision's own `items_to_settle` and,
        for each undecided contender, the fewer of the items it needs to clear
        the floor and the items that would show it dearer than the winner. With
        no estimate the run doubles; it never more than doubles.
        """
        wanted = [self._settle_items()]
        wanted += [self._resolve_items(a) for a in self.undecided()]
        known = [items for items in wanted if items is not None]
        if len(known) < len(wanted):
            return max(rounds_of, done)
        return max(rounds_of, min(max(known), done))

    def clear_chance(self, assessment: Assessment) -> float:
        """The predictive probability that a contender clears the floor on the
        whole batch.

        The lower end of its interval on the whole batch is taken as its
        quality less the present lower half-width shrunk by the square root of
        the items. The spread per item and the uncertainty of the quality
        itself are read off the present interval.
        """
        assert assessment.quality is not None and assessment.quality_ci is not None
        measured, floor_min = assessment.items, self.decision.floor.min
        lower, upper = assessment.quality_ci
        quality = assessment.quality
        if measured >= self.batch_items:
            return 1.0 if lower >= floor_min else 0.0

        needed = floor_min + (quality - lower) * math.sqrt(measured / self.batch_items)
        z = _two_sided_z(self.confidence)
        item_sd = (upper - lower) / 2 / z * math.sqrt(measured)
        quality_sd = max(quality - lower, upper - quality) / z
        rest = self.batch_items - measured
        spread = (
            rest / self.batch_items * math.hypot(item_sd / math.sqrt(rest), quality_sd)
        )
        if spread == 0:
            return 1.0 if quality >= needed else 0.0
        return NormalDist().cdf((quality - needed) / spread)

    def settle_chance(self, a: Assessment, b: Assessment) -> float:
        """The predictive probability that the whole batch shows `a` cheaper per
        result than `b` with at least the confidence."""
        found = self._probability_cheaper(a, b)
        if found is None:
            return 0.0
        probability, shared = found
        if shared >= self.batch_items:
            return 1.0 if probability >= self.confidence else 0.0

        # A bootstrap cannot tell a probability closer to 0 or 1 than this.
        resolution = 0.5 / stats.DEFAULT_RESAMPLES
        z_now = NormalDist().inv_cdf(min(max(probability, resolution), 1 - resolution))
        z_needed = NormalDist().inv_cdf(self.confidence)
        lead = z_now / math.sqrt(shared) - z_needed / math.sqrt(self.batch_items)
        rest = self.batch_items - shared
        spread = rest / self.batch_items * math.sqrt(1 / rest + 1 / shared)
        return NormalDist().cdf(lead / spread)

    def _probability_cheaper(
        self, a: Assessment, b: Assessment
    ) -> tuple[float, int] | None:
        """P(`a`'s expected cost per result is below `b`'s), paired over the
        items both answered, with the number of those items; None when either
        has no cost or they share no item."""
        key = (id(a), id(b))
        if key not in self._pairs:
            reverse = self._pairs.get((id(b), id(a)))
            if reverse is not None:
                self._pairs[key] = (1 - reverse[0], reverse[1])
            else:
                self._pairs[key] = _probability_cheaper(a, b)
        return self._pairs[key]

    def _settle_items(self) -> int | None:
        if self.decision.status == "unsettled":
            return self.decision.items_to_settle
        return 0

    def _resolve_items(self, assessment: Assessment) -> int | None:
        """Rough items until a contender clears the floor or is shown dearer."""
        winner = self.decision.winner
        if winner is None or assessment is winner:
            # The winner clears the floor already; a short round shows whether
            # it holds. Without a winner, the floor is all there is to clear.
            return 0 if winner is not None else self._clear_items(assessment)
        estimates = [self._clear_items(assessment)]
        found = self._probability_cheaper(winner, assessment)
        if found is not None:
            probability, shared = found
            estimates.append(
                stats.items_to_settle(probability, shared, self.confidence)
            )
        known = [items for items in estimates if items is not None]
        return min(known) if known else None

    def _clear_items(self, assessment: Assessment) -> int | None:
        if assessment.eligible or assessment.quality is None:
            return None
        return items_to_clear(
            assessment.quality,
            assessment.items,
            self.decision.floor.min,
            self.confidence,
        )


def _probability_cheaper(a: Assessment, b: Assessment) -> tuple[float, int] | None:
    if a.contender.cost is None or b.contender.cost is None:
        return None
    shared = set(a.contender.item_ids) & set(b.contender.item_ids)
    if not shared:
        return None

    order = [item for item in a.contender.item_ids if item in shared]
    differences = stats.paired_bootstrap_difference(
        expected_on(a.contender, order), expected_on(b.contender, order)
    )
    return stats.probability_lower(differences), len(shared)


def _two_sided_z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _log_round(outcome: AdaptiveOutcome, active: list[str]) -> None:
    decision = outcome.decision
    route = ", ".join(decision.route.models()) if decision.route else "none"
    best = decision.probability_best
    logger.info(
        "round %d: %d items, %d candidates; %s (route %s, P(best) %s); %s",
        outcome.rounds,
        outcome.items,
        len(active),
        decision.status,
        route,
        "n/a" if best is None else f"{best:.3f}",
        outcome.stopped_because or "continuing",
    )


def share_saved(outcome: AdaptiveOutcome) -> float:
    """The share of the full batch's calls the run did not make."""
    if outcome.full_calls == 0:
        return 0.0
    return outcome.calls_saved / outcome.full_calls
