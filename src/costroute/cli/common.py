"""Options and helpers that several commands share."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from costroute.render import FORMATS, render
from costroute.store import Store, default_db_path
from costroute.summary import RunSummary

F = TypeVar("F", bound=Callable[..., Any])


def db_option(function: F) -> F:
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="SQLite store [default: $COSTROUTE_DB or .costroute/costroute.db].",
    )(function)


def format_option(function: F) -> F:
    function = click.option(
        "-o",
        "--output",
        "output_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write the summary to this file instead of stdout.",
    )(function)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(function)


def open_store(db_path: Path | None) -> Store:
    return Store(db_path or default_db_path())


def emit(summary: RunSummary, fmt: str, output_path: Path | None) -> None:
    """Print or write a run summary in the chosen format."""
    if output_path is not None:
        output_path.write_text(render(summary, fmt), encoding="utf-8")
        click.echo(f"Wrote {output_path}", err=True)
        return
    color = fmt == "table" and sys.stdout.isatty()
    click.echo(render(summary, fmt, color=color), nl=False)
