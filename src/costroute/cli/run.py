"""`costroute run`: measure a task's candidates on its labeled items."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import click

from costroute.adaptive import AdaptivePlan, AdaptiveRounds
from costroute.cli.common import db_option, emit, format_option, open_store, parse_usd
from costroute.cli.progress import BarProgress
from costroute.errors import CostrouteError, UsageError
from costroute.executors import Executor, ExecutorFailed
from costroute.runner import (
    Progress,
    Rounds,
    Runner,
    RunOptions,
    RunStopped,
    retry_policy,
    run_sync,
    task_from_run,
)
from costroute.store import RunInfo, Store
from costroute.summary import summarize
from costroute.task import Task, load_task


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
    callback=parse_usd,
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
@click.option(
    "--adaptive",
    is_flag=True,
    help="Measure in rounds and stop once the route is settled.",
)
@click.option(
    "--rounds-of",
    "rounds_of",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --adaptive: items in the first round and fewest per round [20].",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="With --adaptive: confidence the route must be settled at [0.95].",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Make the calls in this process, or on a Ray cluster.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    help="With --executor ray: join this cluster [default: start a local one].",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --executor ray: actors per pool for API calls [one per CPU].",
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
    adaptive: bool,
    rounds_of: int | None,
    confidence: float | None,
    executor_kind: str,
    ray_address: str | None,
    ray_workers: int | None,
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
    plan = _plan(adaptive, rounds_of, confidence)
    with open_store(db_path) as store:
        task = _task(store, task_path, resume_id, models)
        if resume_id is not None:
            options.repeat = int(store.run(resume_id).params.get("repeat", 1))
            plan = _resumed_plan(store.run(resume_id), plan)
        progress = None if quiet or not sys.stderr.isatty() else BarProgress()
        rounds = AdaptiveRounds(plan) if plan is not None else None
        with _executor(executor_kind, ray_address, ray_workers, task, options) as ex:
            run_id, stopped = _measure(
                task, store, options, progress, resume_id, rounds, ex
            )
        run = store.run(run_id)
        emit(summarize(store, run, task), fmt, output_path)
        _report_rounds(run)
    if stopped is not None:
        raise CostrouteError(stopped)


@contextmanager
def _executor(
    kind: str,
    ray_address: str | None,
    ray_workers: int | None,
    task: Task,
    options: RunOptions,
) -> Iterator[Executor | None]:
    """Where the calls are made: None for this process, the runner's default."""
    if kind == "local":
        if ray_address is not None or ray_workers is not None:
            raise UsageError("--ray-address and --ray-workers need --executor ray")
        yield None
        return
    from costroute.ray_executor import RayOptions, ray_executor

    ray_options = RayOptions(address=ray_address, workers=ray_workers)
    policy = retry_policy(options)
    with ray_executor(task, options.concurrency, policy, ray_options) as executor:
        yield executor


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


def _plan(
    adaptive: bool, rounds_of: int | None, confidence: float | None
) -> AdaptivePlan | None:
    if not adaptive:
        if rounds_of is not None or confidence is not None:
            raise UsageError("--rounds-of and --confidence apply only with --adaptive")
        return None
    defaults = AdaptivePlan()
    return AdaptivePlan(
        confidence=defaults.confidence if confidence is None else confidence,
        rounds_of=defaults.rounds_of if rounds_of is None else rounds_of,
    )


def _resumed_plan(run: RunInfo, asked: AdaptivePlan | None) -> AdaptivePlan | None:
    """A resumed run keeps the rounds it was started with."""
    plan = AdaptivePlan.from_params(run.params)
    if asked is not None and plan is None:
        raise UsageError(
            f"run {run.id} was not started with --adaptive; resume it without "
            "--adaptive, or start a new adaptive run"
        )
    return plan


def _report_rounds(run: RunInfo) -> None:
    """How many calls an adaptive run made and saved, on stderr."""
    result = run.params.get("adaptive_result")
    if not run.params.get("adaptive") or not result:
        return
    calls, saved = result["calls"], result["calls_saved"]
    full = calls + saved
    share = f" ({saved / full:.0%})" if full else ""
    click.echo(
        f"adaptive: {result['rounds']} rounds on {result['items']} items, stopped "
        f"because {_STOPS.get(result['stopped_because'], 'it was interrupted')}; "
        f"{calls} calls made, {saved} saved against the full batch{share}",
        err=True,
    )


_STOPS = {
    "settled": "the route is settled",
    "no_candidate": "no candidate can clear the floor",
    "all_items": "the items ran out",
    "budget": "the budget ran out",
}


def _measure(
    task: Task,
    store: Store,
    options: RunOptions,
    progress: Progress | None,
    resume_id: str | None,
    rounds: Rounds | None = None,
    executor: Executor | None = None,
) -> tuple[str, str | None]:
    runner = Runner(task, store, options, progress, rounds, executor)
    try:
        if resume_id is not None:
            return run_sync(runner.resume(resume_id)), None
        return run_sync(runner.start()), None
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
    except ExecutorFailed as failed:
        if runner.run_id:
            raise ExecutorFailed(
                f"{failed}; continue with: costroute run {task.path} "
                f"--resume {runner.run_id}"
            ) from None
        raise


COMMANDS = [run_command]
