"""`costroute import`: store recorded outcomes as a run, then summarize it."""

from __future__ import annotations

from pathlib import Path

import click

from costroute.cli.common import db_option, emit, format_option, open_store
from costroute.imports import ImportBatch, save_import
from costroute.imports.outcomes import prepare_outcomes
from costroute.imports.realvuln import prepare_realvuln
from costroute.runner import task_from_run
from costroute.summary import summarize
from costroute.task import load_task


@click.group("import")
def import_group() -> None:
    """Judge outputs that already exist; deciding from them costs nothing."""


@import_group.command(
    "outcomes", short_help="Import recorded outcomes (JSONL) as a run."
)
@click.argument(
    "file_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--task",
    "task_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The task file whose dataset holds the items and targets.",
)
@db_option
@format_option
def outcomes_command(
    file_path: Path,
    task_path: Path,
    db_path: Path | None,
    fmt: str,
    output_path: Path | None,
) -> None:
    """Import FILE, one JSON line per item and model, and print cost per result.

    Each line holds item_id, model, output and cost_usd (a decimal string), and
    may hold input_tokens, output_tokens, latency_ms, score (0 to 1; else the
    task's scorer judges output) and error.
    """
    task = load_task(task_path, require_candidates=False)
    batch = prepare_outcomes(file_path, task)
    _store_and_emit(batch, db_path, fmt, output_path)


@import_group.command(
    "realvuln", short_help="Import RealVuln scans: cost per vulnerability found."
)
@click.argument(
    "root",
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--run",
    "run_number",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Which run-N.json of each scanner to read.",
)
@db_option
@format_option
def realvuln_command(
    root: Path,
    run_number: int,
    db_path: Path | None,
    fmt: str,
    output_path: Path | None,
) -> None:
    """Import the RealVuln benchmark at DIR and print cost per vulnerability found.

    Items are the apps under ground-truth/, candidates the scanners under
    scan-results/; results are true positives, so cost/result is what each
    vulnerability found cost.
    """
    batch = prepare_realvuln(root, run_number)
    _store_and_emit(batch, db_path, fmt, output_path)
    click.echo(
        "results are true positives: cost/result is the cost per vulnerability found.",
        err=True,
    )


def _store_and_emit(
    batch: ImportBatch, db_path: Path | None, fmt: str, output_path: Path | None
) -> None:
    # The store is opened only once the whole import has been read and scored.
    with open_store(db_path) as store:
        run_id = save_import(store, batch)
        run = store.run(run_id)
        task = task_from_run(run.task_json, run.task_path)
        emit(summarize(store, run, task), fmt, output_path)


COMMANDS = [import_group]
