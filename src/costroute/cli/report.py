"""`costroute report`: a run's decision, charts and disagreements as one HTML file,
or the same summary as Markdown."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click

# The dial and floor flags are `decide`'s own, so both commands read them alike.
from costroute.cli.decide import _dials, _floor, _floor_of, _run, _usd
from costroute.decide import DEFAULT_CONFIDENCE
from costroute.errors import UsageError
from costroute.report import FORMATS, gather, render_html, render_markdown
from costroute.runner import task_from_run
from costroute.store import Store, default_db_path


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
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite store [default: $COSTROUTE_DB or .costroute/costroute.db].",
)
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
def report_command(
    run_id: str,
    output_path: Path | None,
    fmt: str,
    db_path: Path | None,
    floor_spec: tuple[str | None, float] | None,
    volume: int | None,
    error_cost_usd: Decimal | None,
    recoverable: bool | None,
    catch_cost_usd: Decimal | None,
    on_prem_only: bool | None,
    confidence: float,
) -> None:
    """Report RUN_ID: the decision, quality against cost per result, the cascade
    sweep, the items where candidates disagree and where the costs came from."""
    db = db_path or default_db_path()
    if not db.exists():
        raise UsageError(f"no store at {db}; pass --db, or run a task first")
    changes = {
        "volume_per_month": volume,
        "error_cost_usd": error_cost_usd,
        "recoverable": recoverable,
        "catch_cost_usd": catch_cost_usd,
        "on_prem_only": on_prem_only,
    }
    with Store(db) as store:
        run = _run(store, run_id, db)
        task = task_from_run(run.task_json, run.task_path)
        dials, floor = _dials(task, changes), _floor_of(task, floor_spec)
        report = gather(store, run, task, dials, floor, confidence)

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
