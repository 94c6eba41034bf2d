"""Dataset items: the labeled rows a task is measured on."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costroute.errors import UsageError
from costroute.task import Task


@dataclass(frozen=True)
class Item:
    """One labeled row: its fields, the known answer and where it came from."""

    id: str
    line: int
    fields: dict[str, Any]
    target: Any


def load_items(task: Task, limit: int | None = None) -> list[Item]:
    """Read every row of the task's dataset, raising on the first bad one."""
    path = task.dataset_path
    rows = _read_rows(path, task.dataset.format)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        item = _make_item(task, path, line, row)
        if item.id in seen:
            raise UsageError(
                f"{path.name} line {line}: id {item.id!r} repeats line "
                f"{seen[item.id]}; ids must be unique"
            )
        seen[item.id] = line
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise UsageError(f"{path}: the dataset has no rows")
    return items


def _make_item(task: Task, path: Path, line: int, row: dict[str, Any]) -> Item:
    target_field = task.dataset.target
    if target_field not in row:
        raise UsageError(
            f"{path.name} line {line}: no field {target_field!r}; add it, or set "
            "[dataset] target to the field that holds the known answer"
        )
    id_field = task.dataset.id
    if id_field is None:
        item_id = str(line)
    elif id_field in row:
        item_id = str(row[id_field])
    else:
        raise UsageError(
            f"{path.name} line {line}: no field {id_field!r} (the [dataset] id)"
        )
    return Item(id=item_id, line=line, fields=row, target=row[target_field])


def _read_rows(path: Path, fmt: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise UsageError(f"{path}: no such dataset file; check [dataset] path")
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if kind == "csv":
        return _read_csv(path)
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{path.name} line {line}: not valid JSON ({exc.msg}); "
                    "each line must hold one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise UsageError(
                    f"{path.name} line {line}: expected a JSON object, "
                    f"got {type(row).__name__}"
                )
            yield line, row


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:
                raise UsageError(
                    f"{path.name} line {reader.line_num}: more cells than the "
                    "header has columns"
                )
            yield reader.line_num, dict(row)
