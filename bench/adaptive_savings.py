"""Adaptive measurement, checked by simulation over recorded per-item outcomes.

Each scenario is a set of recorded outcomes, one scored call per item and
candidate. A trial resamples the items with replacement to a batch, decides on
the whole batch, then measures the same batch adaptively with the code path of
`costroute run --adaptive` (`costroute.adaptive.measure_adaptively`), where the
measuring step copies the recorded calls into the run instead of calling a
model. It compares the two decisions (status and route) and counts the calls
the adaptive run did not make.

Scenarios:

- clear: cheap (accuracy 0.9) against strong (0.97) at 20× the price, floor 0.8;
- clear+weak: the same with a weaker, cheaper third candidate (0.6);
- close: two near-identical candidates (0.9 and 0.9 at the same price);
- near-floor: cheap at 0.86 against strong, so that whether cheap clears the
  floor of 0.8 on the whole batch is close to a coin toss;
- realvuln: the RealVuln scans imported as `costroute import realvuln` does from
  shared/data/realvuln beside the repository (skipped when it is missing):
  apps are the items, scanners the candidates, F1 floor 0.5.

Goals: the same decision as the whole batch in ≥ 95% of trials of every
scenario, and ≥ 40% fewer calls where the candidates clearly differ (clear,
clear+weak, realvuln). About a minute and a half on two cores.

    python bench/adaptive_savings.py [--trials 40] [--realvuln-trials 15]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from costroute import pricing  # noqa: E402
from costroute.adaptive import (  # noqa: E402
    AdaptiveOutcome,
    AdaptivePlan,
    measure_adaptively,
    share_saved,
)
from costroute.dataset import Item  # noqa: E402
from costroute.decide import Decision, decide_run  # noqa: E402
from costroute.imports import save_import  # noqa: E402
from costroute.imports.realvuln import prepare_realvuln  # noqa: E402
from costroute.pricing import Price  # noqa: E402
from costroute.routes import Route  # noqa: E402
from costroute.runner import task_from_run  # noqa: E402
from costroute.scorers import Score  # noqa: E402
from costroute.store import CallRecord, ScoredCall, Store  # noqa: E402
from costroute.task import Task, load_task  # noqa: E402

REALVULN = Path(__file__).resolve().parents[2] / "shared" / "data" / "realvuln"
BATCH_ITEMS = 200
POOL_ITEMS = 1000
AGREEMENT_GOAL = 0.95
SAVINGS_GOAL = 0.40

SYNTHETIC_TASK = """
name = "{name}"
category = "classification"
[dataset]
path = "items.jsonl"
target = "label"
[prompt]
user = "{{{{text}}}}"
[scorer]
kind = "label"
labels = ["spam", "ham"]
[floor]
metric = "accuracy"
min = {floor}
{candidates}
"""


@dataclass(frozen=True)
class Recorded:
    """Recorded outcomes: the task, its prices and one scored call per item."""

    name: str
    task: Task
    prices: list[Price]
    item_ids: list[str]
    calls: dict[tuple[str, str], ScoredCall]
    clearly_differ: bool


@dataclass(frozen=True)
class Trial:
    same: bool
    outcome: AdaptiveOutcome
    full: Decision


@dataclass(frozen=True)
class Synthetic:
    """A simulated candidate: its accuracy and what one call costs."""

    model: str
    accuracy: float
    cost_usd: Decimal


def synthetic(
    name: str,
    candidates: Sequence[Synthetic],
    floor: float,
    clearly_differ: bool,
    directory: Path,
    seed: int = 1,
) -> Recorded:
    """A pool of items on which each candidate is right at its own rate."""
    task = _synthetic_task(name, candidates, floor, directory)
    rng = np.random.default_rng(seed)
    item_ids = [f"s{n}" for n in range(POOL_ITEMS)]
    calls = {}
    for candidate in candidates:
        right = rng.random(POOL_ITEMS) < candidate.accuracy
        for item_id, correct in zip(item_ids, right, strict=True):
            calls[item_id, candidate.model] = _synthetic_call(
                item_id, candidate, bool(correct)
            )
    prices = [
        pricing.override_price(c.model, Decimal(1), Decimal(1)) for c in candidates
    ]
    return Recorded(name, task, prices, item_ids, calls, clearly_differ)


def _synthetic_task(
    name: str, candidates: Sequence[Synthetic], floor: float, directory: Path
) -> Task:
    entries = "".join(
        f'[[candidates]]\nmodel = "{c.model}"\n'
        "price = { input_mtok = 1, output_mtok = 1 }\n"
        for c in candidates
    )
    folder = directory / name
    folder.mkdir()
    (folder / "items.jsonl").write_text("", encoding="utf-8")
    path = folder / "task.toml"
    text = SYNTHETIC_TASK.format(name=name, floor=floor, candidates=entries)
    path.write_text(text, encoding="utf-8")
    return load_task(path)


def _synthetic_call(item_id: str, candidate: Synthetic, correct: bool) -> ScoredCall:
    call = CallRecord(
        run_id="",
        item_id=item_id,
        model=candidate.model,
        repeat=0,
        request_hash="",
        status="ok",
        cost_kind="metered",
        output="spam" if correct else "ham",
        cost_usd=candidate.cost_usd,
        spent_usd=candidate.cost_usd,
    )
    score = Score(
        results=float(correct),
        correct=correct,
        tp=int(correct),
        fp=int(not correct),
        fn=int(not correct),
        answer=call.output,
    )
    return ScoredCall(call=call, score=score)


def realvuln() -> Recorded | None:
    """RealVuln's scans as `costroute import realvuln` stores them."""
    if not REALVULN.is_dir():
        return None
    with Store(Path(":memory:")) as store:
        run_id = save_import(store, prepare_realvuln(REALVULN))
        run = store.run(run_id)
        task = task_from_run(run.task_json, run.task_path)
        calls = {(s.call.item_id, s.call.model): s for s in store.scored_calls(run_id)}
        item_ids = [item.id for item in store.items(run_id)]
        prices = list(store.prices(run_id).values())
    return Recorded("realvuln", task, prices, item_ids, calls, clearly_differ=True)


def trial(recorded: Recorded, plan: AdaptivePlan, rng: np.random.Generator) -> Trial:
    """One resampled batch, decided whole and measured adaptively."""
    picks = rng.integers(0, len(recorded.item_ids), size=BATCH_ITEMS)
    batch = {
        f"{recorded.item_ids[p]}#{k}": recorded.item_ids[p] for k, p in enumerate(picks)
    }
    models = [c.model for c in recorded.task.candidates]
    with Store(Path(":memory:")) as store:
        full_id = _new_run(store, recorded, batch, {"repeat": 1})
        _replay(store, full_id, recorded, batch, list(batch), models)
        full, _ = decide_run(
            store,
            store.run(full_id),
            recorded.task,
            recorded.task.dials,
            recorded.task.floor,
            plan.confidence,
        )
        run_id = _new_run(store, recorded, batch, {"repeat": 1, **plan.params()})

        async def measure(item_ids: list[str], chosen: list[str]) -> bool:
            _replay(store, run_id, recorded, batch, item_ids, chosen)
            return True

        outcome = asyncio.run(
            measure_adaptively(store, run_id, recorded.task, plan, measure)
        )
    return Trial(_key(outcome.decision) == _key(full), outcome, full)


def _key(decision: Decision) -> tuple[str, Route | None]:
    """What must agree: the status and the route."""
    return decision.status, decision.route


def _new_run(
    store: Store, recorded: Recorded, batch: dict[str, str], params: dict[str, object]
) -> str:
    task = recorded.task
    run_id = store.create_run(task.name, str(task.path), task.model_dump_json(), params)
    items = [
        Item(id=i, line=n + 1, fields={}, target=None) for n, i in enumerate(batch)
    ]
    store.save_items(run_id, items)
    for price in recorded.prices:
        store.save_price(run_id, price)
    return run_id


def _replay(
    store: Store,
    run_id: str,
    recorded: Recorded,
    batch: dict[str, str],
    item_ids: list[str],
    models: list[str],
) -> None:
    """Store the recorded calls of these items and models, as if just made."""
    scores: list[tuple[int, Score]] = []
    with store.transaction():
        for item_id in item_ids:
            for model in models:
                scored = recorded.calls.get((batch[item_id], model))
                if scored is None or scored.score is None:
                    continue
                call = replace(
                    scored.call,
                    id=None,
                    run_id=run_id,
                    item_id=item_id,
                    request_hash=f"replay:{run_id}:{item_id}:{model}",
                )
                scores.append((store.record_call(call), scored.score))
        store.record_scores(scores)


def scenario(recorded: Recorded, trials: int, plan: AdaptivePlan) -> bool:
    """Run the trials of one scenario, print its figures, say if it met its goals."""
    rng = np.random.default_rng(7)
    started_s = time.perf_counter()
    results = [trial(recorded, plan, rng) for _ in range(trials)]
    elapsed_s = time.perf_counter() - started_s

    agreement = sum(r.same for r in results) / trials
    saved = float(np.mean([share_saved(r.outcome) for r in results]))
    rounds = float(np.mean([r.outcome.rounds for r in results]))
    items = float(np.mean([r.outcome.items for r in results]))
    met = agreement >= AGREEMENT_GOAL and (
        not recorded.clearly_differ or saved >= SAVINGS_GOAL
    )
    print(
        f"{recorded.name:<11} trials {trials:>3}  agreement {agreement:6.1%}  "
        f"calls saved {saved:6.1%}  rounds {rounds:4.1f}  items {items:5.1f}  "
        f"{_stops(results)}  [{elapsed_s:.0f} s]  {'ok' if met else 'MISSED'}"
    )
    print(f"{'':<11} full batch: {_full_decisions(results)}")
    return met


def _stops(results: list[Trial]) -> str:
    reasons: dict[str, int] = {}
    for r in results:
        reason = r.outcome.stopped_because or "?"
        reasons[reason] = reasons.get(reason, 0) + 1
    return ", ".join(f"{name} {count}" for name, count in sorted(reasons.items()))


def _full_decisions(results: list[Trial]) -> str:
    found: dict[str, int] = {}
    for r in results:
        route = ", ".join(r.full.route.models()) if r.full.route else "none"
        key = f"{r.full.status} {route}"
        found[key] = found.get(key, 0) + 1
    ranked = sorted(found.items(), key=lambda entry: -entry[1])
    return "; ".join(f"{key} ×{count}" for key, count in ranked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--realvuln-trials", type=int, default=15)
    args = parser.parse_args()
    plan = AdaptivePlan()
    print(
        f"batch {BATCH_ITEMS} items resampled with replacement; rounds of "
        f"{plan.rounds_of}, confidence {plan.confidence}"
    )

    met = True
    with tempfile.TemporaryDirectory() as directory:
        for recorded in _synthetic_scenarios(Path(directory)):
            met &= scenario(recorded, args.trials, plan)
    recorded_vuln = realvuln()
    if recorded_vuln is None:
        print(f"realvuln    skipped: no RealVuln data at {REALVULN}")
    else:
        met &= scenario(recorded_vuln, args.realvuln_trials, plan)
    print("goals met" if met else "goals MISSED")
    return 0 if met else 1


def _synthetic_scenarios(directory: Path) -> list[Recorded]:
    cheap = Synthetic("sim/cheap", 0.90, Decimal("0.0001"))
    strong = Synthetic("sim/strong", 0.97, Decimal("0.002"))
    weak = Synthetic("sim/weak", 0.60, Decimal("0.00005"))
    twin = Synthetic("sim/twin", 0.90, Decimal("0.0001"))
    marginal = Synthetic("sim/cheap", 0.86, Decimal("0.0001"))
    return [
        synthetic("clear", [cheap, strong], 0.8, True, directory),
        synthetic("clear+weak", [weak, cheap, strong], 0.8, True, directory),
        synthetic("close", [cheap, twin], 0.8, False, directory),
        synthetic("near-floor", [marginal, strong], 0.8, False, directory),
    ]


if __name__ == "__main__":
    sys.exit(main())
