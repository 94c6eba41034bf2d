"""`costroute run`: measure a task's candidates on its labeled items."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from costroute.cli.common import db_option, emit, format_option, open_store
from costroute.cli.progress import BarProgress
from costroute.errors import CostrouteError, UsageError
from costroute.runner import Progress, Runner, RunOptions, RunStopped, task_from_run
from costroute.store import Store
from costroute.summary import summarize
from costroute.task import Task, load_task


def _usd(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD") from None
    if amount < 0:
        raise click.BadParameter("must not be negative")
    return amount


@click.command("run")
@click.argument("task_path", metavar="TASK", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Measure this model ref instead of the task's candidates (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items.")
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Calls in flight per candidate.",
)
@click.option(
    "--max-cost",
    "max_cost_usd",
    callback=_usd,
    help="Start no call that could take spend past this many USD.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run each item K times.",
)
@click.option(
    "--resume", "resume_id", metavar="RUN_ID", help="Continue an interrupted run."
)
@click.option(
    "--allow-unpriced",
    is_flag=True,
    help="Run models without a known price, marked unpriced.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Retries per call on 429, 5xx, timeouts.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@db_option
@format_option
def run_command(
    task_path: Path,
    models: tuple[str, ...],
    limit: int | None,
    concurrency: int,
    max_cost_usd: Decimal | None,
    repeat: int,
    resume_id: str | None,
    allow_unpriced: bool,
    retries: int,
    quiet: bool,
    db_path: Path | None,
    fmt: str,
    output_path: Path | None,
) -> None:
    """Run TASK's labeled batch on every candidate and print cost per result."""
    options = RunOptions(
        concurrency=concurrency,
        limit=limit,
        repeat=repeat,
        max_cost_usd=max_cost_usd,
        allow_unpriced=allow_unpriced,
        max_attempts=retries + 1,
    )
    with open_store(db_path) as store:
        task = _task(store, task_path, resume_id, models)
        if resume_id is not None:
            options.repeat = int(store.run(resume_id).params.get("repeat", 1))
        progress = None if quiet or not sys.stderr.isatty() else BarProgress()
        run_id, stopped = _measure(task, store, options, progress, resume_id)
        run = store.run(run_id)
        emit(summarize(store, run, task), fmt, output_path)
    if stopped is not None:
        raise CostrouteError(stopped)


def _task(
    store: Store, task_path: Path, resume_id: str | None, models: tuple[str, ...]
) -> Task:
    if resume_id is None:
        task = load_task(task_path)
        return task.with_models(list(models)) if models else task
    run = store.run(resume_id)
    if run.source != "live":
        raise UsageError(
            f"run {resume_id} was imported, not measured; nothing to resume"
        )
    return task_from_run(run.task_json, run.task_path)


def _measure(
    task: Task,
    store: Store,
    options: RunOptions,
    progress: Progress | None,
    resume_id: str | None,
) -> tuple[str, str | None]:
    runner = Runner(task, store, options, progress)
    try:
        if resume_id is not None:
            return asyncio.run(runner.resume(resume_id)), None
        return asyncio.run(runner.start()), None
    except RunStopped as stop:
        return stop.run_id, stop.reason
    except KeyboardInterrupt:
        if runner.run_id:
            click.echo(
                f"Interrupted; continue with: costroute run {task.path} "
                f"--resume {runner.run_id}",
                err=True,
            )
        raise


COMMANDS = [run_command]
