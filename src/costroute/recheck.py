"""Re-measure: whether each decision in a routes file still holds today.

For every route, and without calling any model:

- *prices*: the deciding run's stored usage is priced again at today's catalog
  and the decision is made again from those costs. Calls priced by a task's
  override, by compute time or as reported by an import keep their price.
- *age*: a decision older than the allowed age is stale whatever the prices.
- *drift*: live feedback from the router's ledger since the decision is
  compared with the measured intervals.

With new candidates it does call models, but only those: a copy of the
deciding run keeps every other candidate's results, and the runner measures
the new models on the same items, so nothing is paid for twice.

Today's prices are those of the active genai-prices snapshot: the installed
catalog, one fetched with genai-prices' updater (`costroute recheck
--update-prices`), or one a test sets with `set_custom_snapshot`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from costroute.assessment import Assessment
from costroute.decide import (
    DEFAULT_CONFIDENCE,
    Decision,
    decide_with_cascade,
)
from costroute.errors import CostrouteError, UsageError
from costroute.pricing import Price, catalog_price, token_cost_usd, unpriced
from costroute.render import format_usd
from costroute.routes import Route, RoutesFile, TaskRoute, line_of, load_routes
from costroute.runner import Runner, RunOptions, task_from_run
from costroute.store import CallRecord, RunInfo, ScoredCall, Store
from costroute.summary import RunSummary, summarize_calls
from costroute.task import CandidateConfig, FloorConfig, Task, load_task

DEFAULT_MAX_AGE_DAYS = 30
# A route whose monthly cost moves by more than this share is stale.
MONTHLY_MOVE = Decimal("0.10")
# Fewer feedback scores than this say too little to call drift.
MIN_FEEDBACK = 30

Status = Literal["fresh", "stale", "flips"]
Reason = Literal["age", "prices", "drift", "candidate"]
_REASON_ORDER: list[Reason] = ["age", "prices", "drift", "candidate"]

_KEPT = {
    "override": "price override, kept",
    "compute": "compute time, kept",
    "reported": "cost reported by the import, kept",
}


@dataclass(frozen=True)
class RecheckOptions:
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    candidates: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    save: bool = False
    concurrency: int = 8
    now: datetime | None = None


@dataclass(frozen=True)
class CandidateCost:
    """One candidate's cost per result when the route was decided and today."""

    model: str
    then_usd: Decimal | None
    now_usd: Decimal | None
    price: str
    new: bool = False


@dataclass(frozen=True)
class LiveDrift:
    """Live feedback since the decision against the measured intervals."""

    feedback: int
    quality: float | None
    cost_per_result_usd: Decimal | None
    findings: list[str]
    note: str | None = None


@dataclass(frozen=True)
class RouteCheck:
    """Whether one route still holds; `*_then_usd` are the route's numbers when
    decided, `*_now_usd` those of `route_now` at today's prices."""

    task: str
    status: Status
    reasons: list[Reason]
    notes: list[str]
    decided_at: str
    age_days: float
    route: Route | None
    route_now: Route | None
    run_id: str | None = None
    run_id_now: str | None = None
    task_path: str | None = None
    cost_per_result_then_usd: Decimal | None = None
    cost_per_result_now_usd: Decimal | None = None
    monthly_cost_then_usd: Decimal | None = None
    monthly_cost_now_usd: Decimal | None = None
    candidates: tuple[CandidateCost, ...] = ()
    drift: LiveDrift | None = None
    catalog_then: str | None = None


@dataclass(frozen=True)
class _Remeasured:
    then: Decision
    now: Decision
    run_id_now: str
    candidates: list[CandidateCost]
    notes: list[str]


def recheck(store: Store, path: Path, options: RecheckOptions) -> list[RouteCheck]:
    """Check every route of the routes file at `path` (or those in `tasks`)."""
    routes = load_routes(path)
    _check_tasks(routes, options.tasks, path)
    text = path.read_text(encoding="utf-8")
    now = options.now or datetime.now(UTC)
    return [
        check_route(store, name, route, options, now, _Place(path, text, name))
        for name, route in routes.routes.items()
        if not options.tasks or name in options.tasks
    ]


@dataclass(frozen=True)
class _Place:
    """Where a route sits in its file, so an error can name the line."""

    path: Path
    text: str
    task: str

    def error(self, keys: tuple[str, ...], message: str) -> UsageError:
        loc = ("routes", self.task, *keys)
        line = line_of(self.text, loc)
        at = f"line {line}: " if line is not None else ""
        return UsageError(f"{self.path}: {at}{'.'.join(loc)}: {message}")


def check_route(
    store: Store,
    name: str,
    route: TaskRoute,
    options: RecheckOptions,
    now: datetime,
    place: _Place,
) -> RouteCheck:
    decided = _decided_at(route.decided_at, place)
    age_days = (now - decided).total_seconds() / 86400
    reasons: list[Reason] = []
    notes: list[str] = []
    if age_days > options.max_age_days:
        reasons.append("age")
        notes.append(
            f"decided {age_days:.0f} days ago, more than --max-age-days "
            f"{options.max_age_days:g}"
        )
    drift = live_drift(store, name, route, decided)
    if drift is not None and drift.findings:
        reasons.append("drift")
    base = RouteCheck(
        task=name,
        status="fresh",
        reasons=reasons,
        notes=notes,
        decided_at=route.decided_at,
        age_days=age_days,
        route=route.route,
        route_now=route.route,
        run_id=route.evidence.run_id,
        task_path=route.task_path,
        cost_per_result_then_usd=route.evidence.cost_per_result_usd,
        monthly_cost_then_usd=route.evidence.monthly_cost_usd,
        drift=drift,
        catalog_then=route.prices.catalog_version if route.prices else None,
    )
    if route.evidence.run_id is None:
        if options.candidates:
            notes.append("unmeasured, so --candidate has no run to add to")
        return _with_status(base)
    measured = remeasure(store, route, options, now, place)
    return _with_status(_compared(base, route, measured))


def remeasure(
    store: Store,
    route: TaskRoute,
    options: RecheckOptions,
    now: datetime,
    place: _Place,
) -> _Remeasured:
    """Decide the route's run again at its stored costs and at today's."""
    run = _run(store, route, place)
    task = task_from_run(run.task_json, run.task_path)
    evidence = route.evidence
    floor = FloorConfig.model_validate(
        {
            "metric": evidence.metric or task.floor.metric,
            "min": task.floor.min if evidence.floor is None else evidence.floor,
        }
    )
    confidence = evidence.confidence or DEFAULT_CONFIDENCE
    scored, prices = store.scored_calls(run.id), store.prices(run.id)
    then, then_summary = decide_calls(
        run, task, scored, prices, route, floor, confidence
    )

    run_now, task_now = run, task
    measured = {c.model for c in task.candidates}
    new = [ref for ref in options.candidates if ref not in measured]
    if new or options.save:
        run_now, task_now = extend_run(store, run, task, new, options.concurrency, now)
        scored, prices = store.scored_calls(run_now.id), store.prices(run_now.id)
    scored, prices = reprice(scored, prices, now)
    decision, summary = decide_calls(
        run_now, task_now, scored, prices, route, floor, confidence
    )
    costs = _candidate_costs(then_summary, summary, prices)
    notes = [
        f"{ref} is already a candidate of run {run.id}"
        for ref in options.candidates
        if ref in measured
    ]
    return _Remeasured(then, decision, run_now.id, costs, notes + _price_notes(costs))


def decide_calls(
    run: RunInfo,
    task: Task,
    scored: list[ScoredCall],
    prices: dict[str, Price],
    route: TaskRoute,
    floor: FloorConfig,
    confidence: float,
) -> tuple[Decision, RunSummary]:
    """`decide_run` on calls and prices given rather than read from the store."""
    summary = summarize_calls(run, task, scored, prices)
    decision = decide_with_cascade(summary, scored, route.dials, floor, confidence)
    return decision, summary


# Prices


def todays_price(price: Price) -> Price:
    """A catalog price looked up again; any other kind of price is kept."""
    if price.source != "catalog" or price.model.startswith("judge:"):
        return price
    return catalog_price(price.model) or unpriced(price.model)


def reprice(
    scored: list[ScoredCall], prices: dict[str, Price], at: datetime
) -> tuple[list[ScoredCall], dict[str, Price]]:
    """The calls with their stored usage priced at today's prices, and those prices."""
    today = {model: todays_price(price) for model, price in prices.items()}
    repriced = [_repriced(entry, today.get(entry.call.model), at) for entry in scored]
    return repriced, today


def _repriced(entry: ScoredCall, price: Price | None, at: datetime) -> ScoredCall:
    if price is None or price.source not in ("catalog", "none"):
        return entry
    call = entry.call
    cost_usd = call.cost_usd
    if price.source == "none":
        cost_usd = None
    elif call.status == "ok":
        cost_usd = token_cost_usd(price, call.usage, at)
    return ScoredCall(call=replace(call, cost_usd=cost_usd), score=entry.score)


def _candidate_costs(
    then: RunSummary, now: RunSummary, prices: dict[str, Price]
) -> list[CandidateCost]:
    before = {c.model: c for c in then.candidates}
    costs = []
    for candidate in now.candidates:
        old = before.get(candidate.model)
        price = prices.get(candidate.model)
        costs.append(
            CandidateCost(
                model=candidate.model,
                then_usd=old.cost_per_result_usd if old else None,
                now_usd=candidate.cost_per_result_usd,
                price=_price_text(price),
                new=old is None or old.calls == 0,
            )
        )
    return costs


def _price_text(price: Price | None) -> str:
    if price is None or price.source == "none":
        return "no price today"
    return _KEPT.get(price.source, price.source)


def _price_notes(costs: list[CandidateCost]) -> list[str]:
    kept = [c for c in costs if c.price.endswith("kept")]
    gone = [c.model for c in costs if c.price == "no price today"]
    notes = [f"{c.model}: {c.price}" for c in kept]
    if gone:
        notes.append(
            f"{', '.join(gone)}: no price in today's catalog, so it cannot be "
            "weighed; add a price override to the task"
        )
    return notes


# Comparing


def _compared(base: RouteCheck, route: TaskRoute, measured: _Remeasured) -> RouteCheck:
    reasons, notes = list(base.reasons), [*base.notes, *measured.notes]
    now = measured.now
    kept = _assessment(now, route.route)
    moved = _monthly_move(route.evidence.monthly_cost_usd, kept)
    if moved is not None:
        reasons.append("prices")
        notes.append(moved)
    if measured.then.route != route.route:
        notes.append(
            f"run {base.run_id} at its stored costs now decides "
            f"{route_text(measured.then.route)}, not the route in the file"
        )
    if now.route != route.route:
        reasons.append(_flip_reason(now, measured.candidates))
        notes.append(f"today's numbers choose {route_text(now.route)}: {now.reason}")
    winner = _assessment(now, now.route)
    cost = winner.contender.cost if winner else None
    return replace(
        base,
        reasons=reasons,
        notes=notes,
        route_now=now.route,
        run_id_now=measured.run_id_now,
        cost_per_result_now_usd=cost.cost_per_result_usd if cost else None,
        monthly_cost_now_usd=winner.monthly_cost_usd if winner else None,
        candidates=tuple(measured.candidates),
    )


def _assessment(decision: Decision, route: Route | None) -> Assessment | None:
    if route is None:
        return None
    return next((a for a in decision.candidates if a.route == route), None)


def _monthly_move(then_usd: Decimal | None, kept: Assessment | None) -> str | None:
    """Why the route's own monthly cost at today's prices makes it stale, if so."""
    if then_usd is None:
        return None
    now_usd = kept.monthly_cost_usd if kept else None
    if now_usd is None:
        return "the route cannot be priced today, so its monthly cost is unknown"
    if then_usd == now_usd:
        return None
    if then_usd and abs(now_usd - then_usd) / then_usd <= MONTHLY_MOVE:
        return None
    change = f" {(now_usd - then_usd) / then_usd:+.0%}" if then_usd else ""
    return (
        f"the route's monthly cost moved{change}, from {format_usd(then_usd)} "
        f"to {format_usd(now_usd)} at today's prices"
    )


def _flip_reason(now: Decision, costs: list[CandidateCost]) -> Reason:
    new = {c.model for c in costs if c.new}
    models = now.route.models() if now.route else []
    return "candidate" if new & set(models) else "prices"


def _with_status(check: RouteCheck) -> RouteCheck:
    check = replace(check, reasons=_unique(check.reasons))
    if check.route_now != check.route:
        return replace(check, status="flips")
    return replace(check, status="stale" if check.reasons else "fresh")


def route_text(route: Route | None) -> str:
    if route is None:
        return "no route"
    if route.kind == "single":
        return str(route.model)
    check = route.escalate_when.check if route.escalate_when else "?"
    return f"cascade {route.cheap} → {route.strong} ({check})"


# Live drift


def live_drift(
    store: Store, task: str, route: TaskRoute, since: datetime
) -> LiveDrift | None:
    """Feedback on the task's requests since the decision, against the
    measured intervals; None when the router has no feedback for it."""
    since_utc = since.astimezone(UTC).isoformat(timespec="milliseconds")
    totals = store.feedback_totals(task, since_utc)
    if totals.feedback == 0:
        return None
    quality = totals.feedback_results / totals.feedback
    cost_usd = None
    if totals.feedback_unpriced == 0 and totals.feedback_results > 0:
        cost_usd = totals.feedback_spent_usd / Decimal(repr(totals.feedback_results))
    drift = LiveDrift(totals.feedback, quality, cost_usd, [])
    if totals.feedback < MIN_FEEDBACK:
        note = f"{totals.feedback} feedback so far; drift is judged from {MIN_FEEDBACK}"
        return replace(drift, note=note)
    return replace(drift, findings=_drift_findings(drift, route, totals.feedback))


def _drift_findings(drift: LiveDrift, route: TaskRoute, feedback: int) -> list[str]:
    evidence = route.evidence
    found = []
    if evidence.metric == "accuracy" and len(evidence.quality_ci) == 2:
        found.append(_quality_finding(drift, evidence.quality_ci, feedback))
    low_usd, high_usd = [*evidence.cost_per_result_ci, None, None][:2]
    if low_usd is not None and high_usd is not None:
        found.append(_cost_finding(drift, low_usd, high_usd, feedback))
    return [finding for finding in found if finding]


def _quality_finding(drift: LiveDrift, interval: list[float], feedback: int) -> str:
    low, high = interval
    if drift.quality is None or low <= drift.quality <= high:
        return ""
    return (
        f"live accuracy {drift.quality:.3f} from {feedback} feedback is outside "
        f"the measured interval [{low:.3f}, {high:.3f}]"
    )


def _cost_finding(
    drift: LiveDrift, low_usd: Decimal, high_usd: Decimal, feedback: int
) -> str:
    live = drift.cost_per_result_usd
    if live is not None and low_usd <= live <= high_usd:
        return ""
    shown = "unbounded" if live is None else format_usd(live)
    return (
        f"live cost per result {shown} from {feedback} feedback is outside the "
        f"measured interval [{format_usd(low_usd)}, {format_usd(high_usd)}]"
    )


# New candidates


def extend_run(
    store: Store,
    run: RunInfo,
    task: Task,
    models: list[str],
    concurrency: int,
    now: datetime,
) -> tuple[RunInfo, Task]:
    """A new run holding `run`'s items and results at today's prices, with
    `models` measured on the same items; only their calls are paid for."""
    new = [_candidate(run, ref) for ref in models]
    full = task.model_copy(update={"candidates": [*task.candidates, *new]})
    params = {**run.params, "rechecked_from": run.id}
    run_id = store.create_run(
        task.name, run.task_path, full.model_dump_json(), params, source=run.source
    )
    store.save_items(run_id, store.items(run.id))
    scored, prices = reprice(store.scored_calls(run.id), store.prices(run.id), now)
    for price in prices.values():
        store.save_price(run_id, price)
    _copy_calls(store, run_id, scored, store.calls(run.id, purpose="judge"))
    if not new:
        store.finish_run(run_id, "done")
        return store.run(run_id), full
    extra = full.model_copy(update={"candidates": new})
    repeat = int(run.params.get("repeat", 1))
    runner = Runner(extra, store, RunOptions(concurrency=concurrency, repeat=repeat))
    try:
        asyncio.run(runner.resume(run_id))
    except CostrouteError:
        # Nothing was called yet (an unknown provider, no price): leave no
        # half-made run behind.
        if not any(store.calls(run_id, model) for model in models):
            store.delete_run(run_id)
        raise
    return store.run(run_id), full


def _candidate(run: RunInfo, ref: str) -> CandidateConfig:
    """The task file's settings for `ref` when it lists it now, else defaults."""
    if "/" not in ref:
        raise UsageError(f"--candidate {ref!r} needs a provider, e.g. openai/{ref}")
    try:
        current = load_task(Path(run.task_path), require_candidates=False)
    except UsageError:
        return CandidateConfig(model=ref)
    return current.candidate(ref)


def _copy_calls(
    store: Store, run_id: str, scored: list[ScoredCall], judged: list[CallRecord]
) -> None:
    """Copy results into `run_id` as cached calls: their cost counts, their
    spend is zero, since nothing is paid again."""
    with store.transaction():
        ids: dict[int | None, int] = {}
        scores = []
        for entry in scored:
            new_id = store.record_call(_copy(entry.call, run_id))
            ids[entry.call.id] = new_id
            if entry.score is not None:
                scores.append((new_id, entry.score))
        for call in judged:
            copy = _copy(call, run_id)
            copy.judged_call_id = ids.get(call.judged_call_id)
            store.record_call(copy)
        store.record_scores(scores)


def _copy(call: CallRecord, run_id: str) -> CallRecord:
    return replace(
        call,
        id=None,
        run_id=run_id,
        cached_from=call.cached_from or call.id,
        spent_usd=Decimal(0),
    )


# Helpers


def _check_tasks(routes: RoutesFile, tasks: tuple[str, ...], path: Path) -> None:
    unknown = [task for task in tasks if task not in routes.routes]
    if unknown:
        known = ", ".join(routes.routes) or "none"
        raise UsageError(
            f"{path} has no route for {', '.join(unknown)}; its tasks: {known}"
        )


def _decided_at(text: str, place: _Place) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise place.error(
            ("decided_at",),
            f"{text!r} is not a date and time; write one like "
            "2025-06-01T09:00:00+00:00",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run(store: Store, route: TaskRoute, place: _Place) -> RunInfo:
    run_id = route.evidence.run_id
    assert run_id is not None
    try:
        return store.run(run_id)
    except UsageError:
        fix = f"`costroute run {route.task_path}`" if route.task_path else "a run"
        raise place.error(
            ("evidence", "run_id"),
            f"no run {run_id!r} in {store.path}; pass the --db that decided it, "
            f"or measure the task again with {fix} and decide",
        ) from None


def _unique(reasons: list[Reason]) -> list[Reason]:
    return sorted(set(reasons), key=_REASON_ORDER.index)
