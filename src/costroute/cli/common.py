"""Options and helpers that several commands share."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from costroute.decide import DEFAULT_CONFIDENCE
from costroute.errors import UsageError
from costroute.render import FORMATS, render
from costroute.stats import METRICS
from costroute.store import (
    DbLocation,
    RunInfo,
    Store,
    default_db_path,
    describe,
    parse_location,
)
from costroute.summary import RunSummary
from costroute.task import DialsConfig, FloorConfig, Task

F = TypeVar("F", bound=Callable[..., Any])


if TYPE_CHECKING:
    _ParamType = click.ParamType[DbLocation]
else:
    # Generic only in newer click; the project supports click 8.1.
    _ParamType = click.ParamType


class _DbLocation(_ParamType):
    """A SQLite file's path, or a postgresql:// URL."""

    name = "PATH|URL"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> DbLocation:
        location = parse_location(value)
        if isinstance(location, Path) and location.is_dir():
            self.fail(f"{value} is a directory, not a store file", param, ctx)
        return location


def db_option(function: F) -> F:
    return click.option(
        "--db",
        "db_path",
        type=_DbLocation(),
        default=None,
        help="The store: a SQLite file, or a postgresql:// URL "
        "[default: $COSTROUTE_DB or .costroute/costroute.db].",
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


def open_store(db_path: DbLocation | None) -> Store:
    return Store(db_path or default_db_path())


def emit(summary: RunSummary, fmt: str, output_path: Path | None) -> None:
    """Print or write a run summary in the chosen format."""
    if output_path is not None:
        output_path.write_text(render(summary, fmt), encoding="utf-8")
        click.echo(f"Wrote {output_path}", err=True)
        return
    color = fmt == "table" and sys.stdout.isatty()
    click.echo(render(summary, fmt, color=color), nl=False)


def parse_usd(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> Decimal | None:
    """A click callback: an amount in USD, exact, 0 or more."""
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter("must be an amount of 0 or more, e.g. 0.05")
    return amount


def parse_floor(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str | None, float] | None:
    """A click callback: `METRIC=X` or a bare `X` for the task's own metric."""
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


@dataclass(frozen=True)
class DialFlags:
    """The floor and dial flags given on the command line, over the task's own."""

    floor_spec: tuple[str | None, float] | None
    changes: dict[str, Any]
    confidence: float

    def dials(self, task: Task) -> DialsConfig:
        given = {
            name: value for name, value in self.changes.items() if value is not None
        }
        return DialsConfig.model_validate({**task.dials.model_dump(), **given})

    def floor(self, task: Task) -> FloorConfig:
        if self.floor_spec is None:
            return task.floor
        metric, minimum = self.floor_spec
        return FloorConfig.model_validate(
            {"metric": metric or task.floor.metric, "min": minimum}
        )


_DIAL_OPTIONS = [
    click.option(
        "--floor",
        "floor_spec",
        metavar="METRIC=X",
        callback=parse_floor,
        help="Quality floor, e.g. accuracy=0.9 [default: the task's [floor]].",
    ),
    click.option(
        "--volume", type=click.IntRange(min=0), help="Times the task runs per month."
    ),
    click.option(
        "--error-cost",
        "error_cost_usd",
        metavar="USD",
        callback=parse_usd,
        help="What one wrong output costs if it gets through.",
    ),
    click.option(
        "--recoverable/--unrecoverable",
        default=None,
        help="Whether a wrong output is caught cheaply downstream.",
    ),
    click.option(
        "--catch-cost",
        "catch_cost_usd",
        metavar="USD",
        callback=parse_usd,
        help="What catching one wrong output costs, when recoverable.",
    ),
    click.option(
        "--on-prem-only",
        is_flag=True,
        default=None,
        help="Only models on our own hardware may serve the task.",
    ),
    click.option(
        "--confidence",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=DEFAULT_CONFIDENCE,
        show_default=True,
        help="Confidence of the quality intervals and of settling the winner.",
    ),
]


def dial_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the floor and dial flags; the command receives them as `flags`."""

    @functools.wraps(function)
    def with_flags(
        *args: Any,
        floor_spec: tuple[str | None, float] | None,
        volume: int | None,
        error_cost_usd: Decimal | None,
        recoverable: bool | None,
        catch_cost_usd: Decimal | None,
        on_prem_only: bool | None,
        confidence: float,
        **kwargs: Any,
    ) -> Any:
        changes = {
            "volume_per_month": volume,
            "error_cost_usd": error_cost_usd,
            "recoverable": recoverable,
            "catch_cost_usd": catch_cost_usd,
            "on_prem_only": on_prem_only,
        }
        flags = DialFlags(floor_spec, changes, confidence)
        return function(*args, flags=flags, **kwargs)

    for option in reversed(_DIAL_OPTIONS):
        with_flags = option(with_flags)
    return with_flags


def find_run(store: Store, run_id: str, db: DbLocation) -> RunInfo:
    """The run, or an error that says what else the argument could have been."""
    try:
        return store.run(run_id)
    except UsageError:
        raise UsageError(not_found(run_id, db)) from None


def not_found(target: str, db: DbLocation) -> str:
    return (
        f"{target!r} is neither a task file nor a run in {describe(db)}; pass a "
        "task file, or a run id from `costroute runs`"
    )
