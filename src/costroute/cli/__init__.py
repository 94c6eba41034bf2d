"""The `costroute` command: one module per subcommand."""

from __future__ import annotations

import logging
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler

from costroute.errors import CostrouteError

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


class _Group(click.Group):
    """Turns expected errors into `Error: …` on stderr with their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CostrouteError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="costroute")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="How much to log on stderr.",
)
def cli(log_level: str) -> None:
    """What each correct answer costs, per model, and where to route each task."""
    handler = RichHandler(console=Console(stderr=True), show_path=False)
    logging.basicConfig(
        level=log_level.upper(), format="%(message)s", handlers=[handler]
    )


def _register() -> None:
    from costroute.cli import (
        decide,
        imports,
        keys,
        recheck,
        report,
        run,
        serve,
        show,
        validate,
    )

    for module in (run, show, validate, imports, decide, serve, keys, report, recheck):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli()
