"""A progress bar per candidate: items done, spend so far, time left."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class BarProgress:
    """Rich progress bars on stderr, one per candidate."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("spent ${task.fields[spent]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.bars.start()

    def start(self, model: str, total: int, done: int) -> None:
        # An adaptive run starts each candidate again every round, on one bar.
        if model in self.tasks:
            self.bars.update(self.tasks[model], total=total, completed=done)
            return
        self.tasks[model] = self.bars.add_task(
            model, total=total, completed=done, spent="0"
        )

    def advance(self, model: str, spent_usd: Decimal) -> None:
        spent = f"{float(spent_usd):.4f}"
        self.bars.update(self.tasks[model], advance=1, spent=spent)

    def close(self) -> None:
        self.bars.stop()
