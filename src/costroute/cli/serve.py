"""`costroute serve`: the OpenAI-compatible router over a routes file."""

from __future__ import annotations

import importlib.util
import logging
from decimal import Decimal
from pathlib import Path

import click

from costroute.addresses import is_loopback_host
from costroute.cli.common import db_option, parse_usd
from costroute.errors import CostrouteError, UsageError
from costroute.store import DbLocation, default_db_path

INSTALL = "pip install 'costroute[serve]'"


@click.command("serve")
@click.option(
    "--routes",
    "routes_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The routes file written by `costroute decide`.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="Port; 0 picks a free one.",
)
@db_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes sharing the port (SO_REUSEPORT) and the store.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Accept requests without a key (loopback addresses only).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Retries per model on 429, 5xx and timeouts before the next model.",
)
@click.option(
    "--reload-poll",
    "poll_s",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds between checks of the routes file for changes; 0 turns it off.",
)
@click.option(
    "--reserve-usd",
    "reserve_usd",
    callback=parse_usd,
    help="What a budgeted request holds of its key's budget when its cost has no "
    "bound (no max_tokens, or a model without a token price)  [default: 0]",
)
@click.pass_context
def serve_command(
    ctx: click.Context,
    routes_path: Path,
    host: str,
    port: int,
    db_path: DbLocation | None,
    workers: int,
    no_auth: bool,
    retries: int,
    poll_s: float,
    reserve_usd: Decimal | None,
) -> None:
    """Route live traffic: POST /v1/chat/completions with model route/<task>."""
    if no_auth and not is_loopback_host(host):
        raise UsageError(
            f"--no-auth is refused on {host}: anyone who can reach it could spend "
            "your keys; listen on 127.0.0.1, or make keys with `costroute keys create`"
        )
    _require_extra()
    from costroute.server.process import ServeOptions, serve

    options = ServeOptions(
        routes_path=routes_path,
        host=host,
        port=port,
        db_path=db_path or default_db_path(),
        workers=workers,
        auth=not no_auth,
        retries=retries,
        poll_s=poll_s,
        log_level=logging.getLogger().getEffectiveLevel(),
        reserve_usd=reserve_usd or Decimal(0),
    )
    ctx.exit(serve(options))


def _require_extra() -> None:
    if importlib.util.find_spec("uvicorn") is None:
        raise CostrouteError(f"`costroute serve` needs uvicorn; run: {INSTALL}")


COMMANDS = [serve_command]
