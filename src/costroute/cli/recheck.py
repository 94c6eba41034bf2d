"""`costroute recheck`: whether the routes file's decisions still hold today."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from genai_prices import UpdatePrices
from genai_prices.data_snapshot import get_snapshot, set_custom_snapshot
from genai_prices.update_prices import DEFAULT_UPDATE_URL
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from costroute.cli.common import db_option
from costroute.decision_render import money
from costroute.errors import CostrouteError, UsageError
from costroute.pricing import catalog_version
from costroute.recheck import (
    DEFAULT_MAX_AGE_DAYS,
    CandidateCost,
    RecheckOptions,
    RouteCheck,
    recheck,
    route_text,
)
from costroute.render import format_usd, rich_text
from costroute.store import DbLocation, Store, default_db_path, describe, store_exists

FORMATS = ("table", "json", "markdown")
PRICES_URL_ENV = "COSTROUTE_PRICES_URL"
# The exit status when any route is stale or flips, for a scheduled job to act on.
EXIT_NEEDS_ATTENTION = 3

SUMMARY_HEADERS = [
    "task",
    "status",
    "reasons",
    "route",
    "route now",
    "cost/result then → now",
    "monthly then → now",
]
CANDIDATE_HEADERS = ["candidate", "cost/result then", "cost/result now", "price"]


@click.command("recheck")
@click.argument(
    "routes_path",
    metavar="[ROUTES]",
    required=False,
    default="routes.toml",
    type=click.Path(dir_okay=False, path_type=Path),
)
@db_option
@click.option(
    "--max-age-days",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_AGE_DAYS,
    show_default=True,
    help="A decision older than this is stale whatever the prices.",
)
@click.option(
    "--update-prices",
    is_flag=True,
    help="Fetch today's genai-prices catalog first (network) instead of the "
    "installed one.",
)
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    metavar="REF",
    help="Measure this new model on each deciding run's items, reusing the "
    "other candidates' results, and decide again (repeatable).",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="NAME",
    help="Only this task's route (repeatable) [default: every route].",
)
@click.option(
    "--save",
    is_flag=True,
    help="Store each deciding run at today's prices as a new run, to decide from.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format; markdown is the text of a ticket.",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to this file instead of stdout.",
)
@click.pass_context
def recheck_command(
    ctx: click.Context,
    routes_path: Path,
    db_path: DbLocation | None,
    max_age_days: float,
    update_prices: bool,
    candidates: tuple[str, ...],
    tasks: tuple[str, ...],
    save: bool,
    fmt: str,
    output_path: Path | None,
) -> None:
    """Check each route in ROUTES (default routes.toml) against today's prices,
    its age and live feedback; exit 3 when any is stale or flips."""
    db = db_path or default_db_path()
    if not store_exists(db):
        raise UsageError(
            f"no store at {describe(db)}; pass --db with the store the routes were "
            "decided from"
        )
    if update_prices:
        update_catalog()
    options = RecheckOptions(
        max_age_days=max_age_days, candidates=candidates, tasks=tasks, save=save
    )
    with Store(db) as store:
        checks = recheck(store, routes_path, options)
    text = render_checks(checks, fmt, routes_path, max_age_days, color=_color(fmt))
    _emit(text, output_path)
    _announce(checks, save or bool(candidates))
    if any(check.status != "fresh" for check in checks):
        ctx.exit(EXIT_NEEDS_ATTENTION)


def update_catalog(url: str | None = None) -> None:
    """Fetch today's catalog with genai-prices' updater and use it from now on."""
    url = url or os.environ.get(PRICES_URL_ENV) or DEFAULT_UPDATE_URL
    try:
        snapshot = UpdatePrices(url=url).fetch()
    except Exception as exc:
        # Network, HTTP and parsing failures all leave the user with one fix.
        raise CostrouteError(
            f"could not fetch today's prices from {url} ({exc}); check the "
            f"network (or {PRICES_URL_ENV}), or drop --update-prices to use the "
            f"installed catalog, {catalog_version()}"
        ) from None
    set_custom_snapshot(snapshot)


def catalog_description() -> str:
    """The catalog today's prices come from, for the report."""
    snapshot = get_snapshot()
    if snapshot.from_auto_update:
        return f"{catalog_version()} updated {snapshot.timestamp:%Y-%m-%d %H:%M}"
    return catalog_version()


def _color(fmt: str) -> bool:
    return fmt == "table" and sys.stdout.isatty()


def _emit(text: str, output_path: Path | None) -> None:
    if output_path is None:
        click.echo(text, nl=False)
        return
    output_path.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {output_path}", err=True)


def _announce(checks: list[RouteCheck], wrote_runs: bool) -> None:
    if wrote_runs:
        for check in checks:
            if check.run_id_now and check.run_id_now != check.run_id:
                click.echo(
                    f"{check.task}: today's numbers in run {check.run_id_now}",
                    err=True,
                )
    waiting = [c for c in checks if c.status != "fresh"]
    if waiting:
        names = ", ".join(f"{c.task} ({c.status})" for c in waiting)
        click.echo(
            f"{len(waiting)} of {len(checks)} routes need a look: {names}", err=True
        )


def render_checks(
    checks: list[RouteCheck],
    fmt: str,
    routes_path: Path,
    max_age_days: float,
    color: bool = False,
) -> str:
    if fmt == "json":
        return json.dumps([check_dict(c) for c in checks], indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(checks, routes_path, max_age_days)
    return _table(checks, routes_path, max_age_days, color)


def check_dict(check: RouteCheck) -> dict[str, Any]:
    """The JSON shape of one route's check: money as decimal strings."""
    drift = check.drift
    return {
        "task": check.task,
        "status": check.status,
        "reasons": check.reasons,
        "decided_at": check.decided_at,
        "route": _route_dict(check.route),
        "route_now": _route_dict(check.route_now),
        "cost_per_result_then_usd": money(check.cost_per_result_then_usd),
        "cost_per_result_now_usd": money(check.cost_per_result_now_usd),
        "monthly_cost_then_usd": money(check.monthly_cost_then_usd),
        "monthly_cost_now_usd": money(check.monthly_cost_now_usd),
        "age_days": round(check.age_days, 2),
        "run_id": check.run_id,
        "run_id_now": check.run_id_now,
        "catalog_then": check.catalog_then,
        "catalog_now": catalog_description(),
        "notes": check.notes,
        "candidates": [_candidate_dict(c) for c in check.candidates],
        "drift": None
        if drift is None
        else {
            "feedback": drift.feedback,
            "quality": None if drift.quality is None else round(drift.quality, 6),
            "cost_per_result_usd": money(drift.cost_per_result_usd),
            "findings": drift.findings,
            "note": drift.note,
        },
    }


def _route_dict(route: Any) -> dict[str, Any] | None:
    if route is None:
        return None
    data: dict[str, Any] = route.model_dump(mode="json", exclude_none=True)
    return data


def _candidate_dict(cost: CandidateCost) -> dict[str, Any]:
    return {
        "model": cost.model,
        "cost_per_result_then_usd": money(cost.then_usd),
        "cost_per_result_now_usd": money(cost.now_usd),
        "price": cost.price,
        "new": cost.new,
    }


# Table and Markdown share their rows and lines.


def _summary_row(check: RouteCheck) -> list[str]:
    return [
        check.task,
        check.status,
        ", ".join(check.reasons) or "—",
        route_text(check.route),
        route_text(check.route_now) if check.route_now != check.route else "same",
        _then_now(check.cost_per_result_then_usd, check.cost_per_result_now_usd),
        _then_now(check.monthly_cost_then_usd, check.monthly_cost_now_usd),
    ]


def _candidate_row(cost: CandidateCost) -> list[str]:
    name = cost.model + (" (new)" if cost.new else "")
    return [name, _usd(cost.then_usd), _usd(cost.now_usd), cost.price]


def _lines(check: RouteCheck, routes_path: Path) -> list[str]:
    """What a reader needs to act on one route: when, why, and what to run."""
    run = f" from run {check.run_id}" if check.run_id else ", unmeasured"
    prices = f", prices from {check.catalog_then}" if check.catalog_then else ""
    lines = [f"decided {check.decided_at} ({check.age_days:.0f} days ago){run}{prices}"]
    lines += check.notes
    drift = check.drift
    if drift is not None:
        lines += drift.findings
        if drift.note:
            lines.append(drift.note)
    return lines + [f"to act: {action}" for action in _actions(check, routes_path)]


def _actions(check: RouteCheck, routes_path: Path) -> list[str]:
    if check.status == "fresh":
        return []
    actions = []
    routes = str(routes_path)
    if check.run_id_now and check.run_id_now != check.run_id:
        actions.append(
            f"decide from today's numbers with "
            f"`costroute decide {check.run_id_now} -o {routes}`"
        )
    elif check.status == "flips" or "prices" in check.reasons:
        actions.append(
            f"store today's numbers with `costroute recheck {routes} --task "
            f"{check.task} --save`, then `costroute decide RUN -o {routes}` "
            "with the run it names"
        )
    if {"age", "drift"} & set(check.reasons):
        task = check.task_path or "TASK"
        actions.append(
            f"measure again with `costroute run {task}`, then "
            f"`costroute decide {task} -o {routes}`"
        )
    return actions


def _heading(checks: list[RouteCheck]) -> str:
    waiting = sum(1 for c in checks if c.status != "fresh")
    if not waiting:
        return f"all {len(checks)} routes are fresh"
    return f"{waiting} of {len(checks)} routes need a look"


def _context(routes_path: Path, max_age_days: float) -> str:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return (
        f"Rechecked {routes_path} on {today} against {catalog_description()}; "
        f"decisions older than {max_age_days:g} days are stale."
    )


def _table(
    checks: list[RouteCheck], routes_path: Path, max_age_days: float, color: bool
) -> str:
    parts: list[RenderableType] = [Text(_context(routes_path, max_age_days))]
    summary = Table(title=_heading(checks), title_justify="left")
    for header in SUMMARY_HEADERS:
        summary.add_column(header, justify="right" if "→" in header else "left")
    for check in checks:
        summary.add_row(*_summary_row(check))
    parts.append(summary)
    for check in checks:
        if check.status == "fresh" and not check.notes:
            continue
        parts.append(Text(f"\n{check.task}: {check.status}"))
        parts += [Text(f"  {line}") for line in _lines(check, routes_path)]
        if check.candidates:
            parts.append(_candidate_table(check))
    return rich_text(parts, color)


def _candidate_table(check: RouteCheck) -> Table:
    table = Table(box=None, padding=(0, 2))
    for header in CANDIDATE_HEADERS:
        table.add_column(header, justify="right" if "cost" in header else "left")
    for cost in check.candidates:
        table.add_row(*_candidate_row(cost))
    return table


def _markdown(checks: list[RouteCheck], routes_path: Path, max_age_days: float) -> str:
    lines = [
        f"## costroute recheck: {_heading(checks)}",
        "",
        _context(routes_path, max_age_days),
        "",
        *_md_table(SUMMARY_HEADERS, [_summary_row(c) for c in checks]),
    ]
    for check in checks:
        if check.status == "fresh":
            continue
        lines += ["", f"### {check.task}: {check.status}", ""]
        lines += [f"- {line}" for line in _lines(check, routes_path)]
        if check.candidates:
            rows = [_candidate_row(cost) for cost in check.candidates]
            lines += ["", *_md_table(CANDIDATE_HEADERS, rows)]
    return "\n".join(lines) + "\n"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---:" if "→" in h or "cost" in h else "---" for h in headers]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows),
    ]


def _then_now(then_usd: Decimal | None, now_usd: Decimal | None) -> str:
    return f"{_usd(then_usd)} → {_usd(now_usd)}"


def _usd(value: Decimal | None) -> str:
    return "—" if value is None else format_usd(value)


COMMANDS = [recheck_command]
