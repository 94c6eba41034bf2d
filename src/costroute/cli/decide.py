"""`costroute decide`: route a task to the cheapest candidate that clears its floor."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from costroute.cli.common import (
    DialFlags,
    db_option,
    dial_options,
    find_run,
    not_found,
)
from costroute.decide import Decision, decide_run, task_route
from costroute.decide import unmeasured as unmeasured_decision
from costroute.decision_render import FORMATS, render_decision
from costroute.errors import CostrouteError, UsageError
from costroute.pricing import Price
from costroute.routes import save_route
from costroute.runner import task_from_run
from costroute.store import (
    DbLocation,
    RunInfo,
    Store,
    default_db_path,
    store_exists,
)
from costroute.task import Task, load_task


@dataclass(frozen=True)
class _Outcome:
    decision: Decision
    task: Task
    prices: dict[str, Price]
    prices_taken_at: str | None


@click.command("decide")
@click.argument("target", metavar="RUN_ID|TASK")
@dial_options
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
    flags: DialFlags,
    db_path: DbLocation | None,
    fmt: str,
    routes_path: Path | None,
) -> None:
    """Route RUN_ID's task (or TASK's latest run) to the cheapest model that
    clears the floor; a TASK never measured gets the starting map's default."""
    outcome = _decide(target, db_path, flags)
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


def _decide(target: str, db_path: DbLocation | None, flags: DialFlags) -> _Outcome:
    db = db_path or default_db_path()
    task_file = Path(target)
    if task_file.is_file():
        task = load_task(task_file)
        if not store_exists(db):
            return _unmeasured(task, flags)
        with Store(db) as store:
            run = _latest_run(store, task.name)
            if run is None:
                return _unmeasured(task, flags)
            return _measured(store, run, task, flags)

    if not store_exists(db):
        raise UsageError(not_found(target, db))
    with Store(db) as store:
        run = find_run(store, target, db)
        task = task_from_run(run.task_json, run.task_path)
        return _measured(store, run, task, flags)


def _measured(store: Store, run: RunInfo, task: Task, flags: DialFlags) -> _Outcome:
    dials, floor = flags.dials(task), flags.floor(task)
    decision, _ = decide_run(store, run, task, dials, floor, flags.confidence)
    return _Outcome(decision, task, store.prices(run.id), run.created_at)


def _unmeasured(task: Task, flags: DialFlags) -> _Outcome:
    dials, floor = flags.dials(task), flags.floor(task)
    decision = unmeasured_decision(task, dials, floor, flags.confidence)
    return _Outcome(decision, task, {}, None)


def _latest_run(store: Store, task_name: str) -> RunInfo | None:
    # Runs come newest first.
    return next((run for run in store.runs() if run.task_name == task_name), None)


COMMANDS = [decide_command]
