"""`costroute validate`: check a task file and every dataset row, call nothing."""

from __future__ import annotations

from pathlib import Path

import click

from costroute.dataset import load_items
from costroute.prompt import check_fields
from costroute.scorers import make_scorer
from costroute.task import load_task


@click.command("validate")
@click.argument("task_path", metavar="TASK", type=click.Path(path_type=Path))
def validate_command(task_path: Path) -> None:
    """Check TASK and its dataset without calling any model."""
    task = load_task(task_path)
    make_scorer(task.scorer, task.base_dir)
    items = load_items(task)
    dataset_name = task.dataset_path.name
    for item in items:
        check_fields(task.prompt, item, dataset_name)
    models = ", ".join(c.model for c in task.candidates)
    click.echo(f"{task_path}: OK: {len(items)} items, candidates: {models}")


COMMANDS = [validate_command]
