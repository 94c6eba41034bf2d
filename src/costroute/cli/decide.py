"""`costroute decide`: route a task to the cheapest candidate that clears its floor."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from costroute.cli.common import db_option
from costroute.decide import DEFAULT_CONFIDENCE, Decision, decide_run, task_route
from costroute.decide import unmeasured as unmeasured_decision
from costroute.decision_render import FORMATS, render_decision
from costroute.errors import CostrouteError, UsageError
from costroute.pricing import Price
from costroute.routes import save_route
from costroute.runner import task_from_run
from costroute.stats import METRICS
from costroute.store import RunInfo, Store, default_db_path
from costroute.task import DialsConfig, FloorConfig, Task, load_task


@dataclass(frozen=True)
class _Outcome:
    decision: Decision
    task: Task
    prices: dict[str, Price]
    prices_taken_at: str | None


def _usd(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter("must be an amount of 0 or more, e.g. 0.05")
    return amount


def _floor(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str | None, float] | None:
    if value is None:
        return None
    metric, _, number = value.rpartition("=")
    if metric and metric not in METRICS:
        raise click.BadParameter(
            f"unknown metric {metric!r}; use one of {', '.join(METRICS)}, "
            "e.g. accuracy=0.9"
        )
    try:
        minimum = float(number)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not METRIC=X, e.g. f1=0.8") from None
    if not 0 <= minimum <= 1:
        raise click.BadParameter(f"the floor must be within 0 to 1, got {minimum}")
    return (metric or None, minimum)


@click.command("decide")
@click.argument("target", metavar="RUN_ID|TASK")
@click.option(
    "--floor",
    "floor_spec",
    metavar="METRIC=X",
    callback=_floor,
    help="Quality floor, e.g. accuracy=0.9 [default: the task's [floor]].",
)
@click.option(
    "--volume", type=click.IntRange(min=0), help="Times the task runs per month."
)
@click.option(
    "--error-cost",
    "error_cost_usd",
    metavar="USD",
    callback=_usd,
    help="What one wrong output costs if it gets through.",
)
@click.option(
    "--recoverable/--unrecoverable",
    default=None,
    help="Whether a wrong output is caught cheaply downstream.",
)
@click.option(
    "--catch-cost",
    "catch_cost_usd",
    metavar="USD",
    callback=_usd,
    help="What catching one wrong output costs, when recoverable.",
)
@click.option(
    "--on-prem-only",
    is_flag=True,
    default=None,
    help="Only models on our own hardware may serve the task.",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULT_CONFIDENCE,
    show_default=True,
    help="Confidence of the quality intervals and of settling the winner.",
)
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    "routes_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the task's route into this routes file, keeping other tasks.",
)
def decide_command(
    target: str,
    floor_spec: tuple[str | None, float] | None,
    volume: int | None,
    error_cost_usd: Decimal | None,
    recoverable: bool | None,
    catch_cost_usd: Decimal | None,
    on_prem_only: bool | None,
    confidence: float,
    db_path: Path | None,
    fmt: str,
    routes_path: Path | None,
) -> None:
    """Route RUN_ID's task (or TASK's latest run) to the cheapest model that
    clears the floor; a TASK never measured gets the starting map's default."""
    dial_changes = {
        "volume_per_month": volume,
        "error_cost_usd": error_cost_usd,
        "recoverable": recoverable,
        "catch_cost_usd": catch_cost_usd,
        "on_prem_only": on_prem_only,
    }
    outcome = _decide(target, db_path, dial_changes, floor_spec, confidence)
    decision = outcome.decision
    color = fmt == "table" and sys.stdout.isatty()
    click.echo(render_decision(decision, fmt, color=color), nl=False)

    if decision.status == "no_candidate":
        kept = f"; {routes_path} left unchanged" if routes_path else ""
        raise CostrouteError(
            f"no candidate clears the {decision.floor.metric} floor "
            f"{decision.floor.min:g}{kept}. Lower it with --floor, measure more "
            "items, or add candidates to the task and run it again"
        )
    if routes_path is not None:
        section = task_route(
            decision, outcome.task, outcome.prices, outcome.prices_taken_at
        )
        save_route(routes_path, decision.task, section)
        click.echo(f"Wrote the {decision.task!r} route to {routes_path}", err=True)


def _decide(
    target: str,
    db_path: Path | None,
    dial_changes: dict[str, Any],
    floor_spec: tuple[str | None, float] | None,
    confidence: float,
) -> _Outcome:
    db = db_path or default_db_path()
    task_file = Path(target)
    if task_file.is_file():
        task = load_task(task_file)
        if not db.exists():
            return _unmeasured(task, dial_changes, floor_spec, confidence)
        with Store(db) as store:
            run = _latest_run(store, task.name)
            if run is None:
                return _unmeasured(task, dial_changes, floor_spec, confidence)
            return _measured(store, run, task, dial_changes, floor_spec, confidence)

    if not db.exists():
        raise UsageError(_not_found(target, db))
    with Store(db) as store:
        run = _run(store, target, db)
        task = task_from_run(run.task_json, run.task_path)
        return _measured(store, run, task, dial_changes, floor_spec, confidence)


def _measured(
    store: Store,
    run: RunInfo,
    task: Task,
    dial_changes: dict[str, Any],
    floor_spec: tuple[str | None, float] | None,
    confidence: float,
) -> _Outcome:
    dials, floor = _dials(task, dial_changes), _floor_of(task, floor_spec)
    decision, _ = decide_run(store, run, task, dials, floor, confidence)
    return _Outcome(decision, task, store.prices(run.id), run.created_at)


def _unmeasured(
    task: Task,
    dial_changes: dict[str, Any],
    floor_spec: tuple[str | None, float] | None,
    confidence: float,
) -> _Outcome:
    dials, floor = _dials(task, dial_changes), _floor_of(task, floor_spec)
    decision = unmeasured_decision(task, dials, floor, confidence)
    return _Outcome(decision, task, {}, None)


def _dials(task: Task, changes: dict[str, Any]) -> DialsConfig:
    given = {name: value for name, value in changes.items() if value is not None}
    return DialsConfig.model_validate({**task.dials.model_dump(), **given})


def _floor_of(task: Task, spec: tuple[str | None, float] | None) -> FloorConfig:
    if spec is None:
        return task.floor
    metric, minimum = spec
    return FloorConfig.model_validate(
        {"metric": metric or task.floor.metric, "min": minimum}
    )


def _latest_run(store: Store, task_name: str) -> RunInfo | None:
    # Runs come newest first.
    return next((run for run in store.runs() if run.task_name == task_name), None)


def _run(store: Store, run_id: str, db: Path) -> RunInfo:
    try:
        return store.run(run_id)
    except UsageError:
        raise UsageError(_not_found(run_id, db)) from None


def _not_found(target: str, db: Path) -> str:
    return (
        f"{target!r} is neither a task file nor a run in {db}; pass a task file, "
        "or a run id from `costroute runs`"
    )


COMMANDS = [decide_command]
