"""`costroute keys`: make, list and revoke the router's API keys."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click

from costroute.cli.common import db_option, open_store, parse_usd
from costroute.errors import UsageError
from costroute.server.keys import new_key, this_month


@click.group("keys")
def keys_group() -> None:
    """API keys for `costroute serve`: the store keeps only their hashes."""


@keys_group.command("create")
@click.option("--name", required=True, help="Who or what uses the key.")
@click.option(
    "--budget-usd",
    "budget_usd",
    callback=parse_usd,
    help="Monthly budget (UTC calendar month); requests past it get 429.",
)
@db_option
def create(name: str, budget_usd: Decimal | None, db_path: Path | None) -> None:
    """Make a key and print it once."""
    made = new_key(name, budget_usd)
    with open_store(db_path) as store:
        store.create_api_key(made.record)
    click.echo(made.key)
    budget = f"${budget_usd} a month" if budget_usd is not None else "no budget"
    click.echo(
        f"Key {made.record.id} ({name}, {budget}). It is not shown again; "
        "store it now.",
        err=True,
    )


@keys_group.command("list")
@db_option
def list_keys(db_path: Path | None) -> None:
    """List keys with this month's spend; never the keys themselves."""
    with open_store(db_path) as store:
        keys = store.api_keys()
        spent = store.month_spend_usd(this_month())
    if not keys:
        click.echo("No keys; make one with `costroute keys create --name NAME`.")
        return
    click.echo(f"{'id':<14}{'name':<20}{'budget_usd':>12}{'spent_usd':>14}  status")
    for key in keys:
        budget = "-" if key.budget_usd is None else f"{key.budget_usd}"
        spent_usd = spent.get(key.id, Decimal(0))
        status = f"revoked {key.revoked_at[:10]}" if key.revoked_at else "active"
        click.echo(
            f"{key.id:<14}{key.name:<20}{budget:>12}{spent_usd:>14.6f}  {status}"
        )


@keys_group.command("revoke")
@click.argument("key", metavar="ID_OR_NAME")
@db_option
def revoke(key: str, db_path: Path | None) -> None:
    """Revoke a key; running servers refuse it within seconds."""
    with open_store(db_path) as store:
        revoked = store.revoke_api_key(key)
    if not revoked:
        raise UsageError(
            f"no active key with id or name {key!r}; see `costroute keys list`"
        )
    click.echo(f"Revoked {', '.join(revoked)}.")


COMMANDS = [keys_group]
