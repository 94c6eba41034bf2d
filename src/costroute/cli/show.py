"""`costroute show` and `costroute runs`: look at stored runs again."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from costroute.cli.common import db_option, emit, format_option, open_store
from costroute.runner import task_from_run
from costroute.summary import summarize


@click.command("show")
@click.argument("run_id")
@db_option
@format_option
def show_command(
    run_id: str, db_path: Path | None, fmt: str, output_path: Path | None
) -> None:
    """Print the cost-per-result summary of a stored run."""
    with open_store(db_path) as store:
        run = store.run(run_id)
        task = task_from_run(run.task_json, run.task_path)
        emit(summarize(store, run, task), fmt, output_path)


@click.command("runs")
@db_option
def runs_command(db_path: Path | None) -> None:
    """List the stored runs, newest first."""
    with open_store(db_path) as store:
        runs = store.runs()
    if not runs:
        click.echo("No runs yet; start one with `costroute run TASK`.")
        return
    table = Table("run", "task", "source", "status", "started")
    for run in runs:
        table.add_row(run.id, run.task_name, run.source, run.status, run.created_at)
    Console(width=120).print(table)


COMMANDS = [show_command, runs_command]
