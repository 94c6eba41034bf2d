"""Recorded outcomes: runs built from outputs that already exist.

Deciding from outputs someone already paid for costs nothing. An import reads
them, checks every line and scores every output first, and only then writes the
whole run in one transaction, so a bad line never leaves half a run behind.
The run it writes looks like a live one to every other command.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.pricing import Price
from costroute.scorers import Score
from costroute.store import CallRecord, Store
from costroute.task import Task

# Live request hashes are bare hex digests, so this prefix keeps the store's
# cache from ever serving an imported call to a live run.
HASH_PREFIX = "import:"


@dataclass(frozen=True)
class Outcome:
    """One recorded call and its score, ready to store."""

    call: CallRecord
    score: Score


@dataclass(frozen=True)
class ImportBatch:
    """Everything an import writes: the task, its items, prices and outcomes."""

    task: Task
    items: list[Item]
    prices: list[Price]
    outcomes: list[Outcome]
    params: dict[str, Any] = field(default_factory=dict)


def import_hash(*parts: str) -> str:
    """A request hash for an imported call that no live request can have."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return HASH_PREFIX + digest


def save_import(store: Store, batch: ImportBatch) -> str:
    """Write the whole batch as one run with source "import"; returns its id."""
    task = batch.task
    with store.transaction():
        run_id = store.create_run(
            task.name,
            str(task.path),
            task.model_dump_json(),
            batch.params,
            source="import",
        )
        store.save_items(run_id, batch.items)
        for price in batch.prices:
            store.save_price(run_id, price)

        scores: list[tuple[int, Score]] = []
        for outcome in batch.outcomes:
            outcome.call.run_id = run_id
            scores.append((store.record_call(outcome.call), outcome.score))
        store.record_scores(scores)
        store.finish_run(run_id, "done")
    return run_id


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object, numbers with a fraction read as exact `Decimal`s."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{path}: not valid JSON ({exc}); fix the file or remove it"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
