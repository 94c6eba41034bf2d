"""`costroute report`: a run's decision, charts and disagreements as one HTML file,
or the same summary as Markdown."""

from __future__ import annotations

from pathlib import Path

import click

from costroute.cli.common import DialFlags, db_option, dial_options, find_run
from costroute.errors import UsageError
from costroute.report import FORMATS, gather, render_html, render_markdown
from costroute.runner import task_from_run
from costroute.store import DbLocation, Store, default_db_path, describe, store_exists


@click.command("report")
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Write here ('-' for stdout) [default: report-RUN_ID.html for html, "
    "stdout for markdown].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="html",
    show_default=True,
    help="One offline HTML page, or a short Markdown block for a pull request.",
)
@db_option
@dial_options
def report_command(
    run_id: str,
    output_path: Path | None,
    fmt: str,
    db_path: DbLocation | None,
    flags: DialFlags,
) -> None:
    """Report RUN_ID: the decision, quality against cost per result, the cascade
    sweep, the items where candidates disagree and where the costs came from."""
    db = db_path or default_db_path()
    if not store_exists(db):
        raise UsageError(f"no store at {describe(db)}; pass --db, or run a task first")
    with Store(db) as store:
        run = find_run(store, run_id, db)
        task = task_from_run(run.task_json, run.task_path)
        dials, floor = flags.dials(task), flags.floor(task)
        report = gather(store, run, task, dials, floor, flags.confidence)

    text = render_html(report) if fmt == "html" else render_markdown(report)
    _write(text, _destination(output_path, fmt, run_id))


def _destination(output_path: Path | None, fmt: str, run_id: str) -> Path | None:
    """Where the report goes; None for stdout."""
    if output_path is not None:
        return None if str(output_path) == "-" else output_path
    return Path(f"report-{run_id}.html") if fmt == "html" else None


def _write(text: str, path: Path | None) -> None:
    if path is None:
        click.echo(text, nl=False)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"Wrote {path} ({len(text.encode()) / 1024:,.0f} KiB)", err=True)


COMMANDS = [report_command]
