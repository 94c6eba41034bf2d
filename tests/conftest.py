"""Shared fixtures: a fake OpenAI-compatible server and task files that use it."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from costroute.cli import cli
from costroute.store import DbLocation
from tests.fakeserver import FakeServer
from tests.postgres import fresh_database, server_url

ITEMS = [
    {
        "id": f"m{n}",
        "text": f"message {n} {'win money' if n % 3 == 0 else 'lunch'}",
        "label": "spam" if n % 3 == 0 else "ham",
    }
    for n in range(12)
]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(models=("cheap", "strong")) as server:
        yield server


@pytest.fixture
def pg() -> Iterator[str]:
    """A fresh PostgreSQL database (see `tests.postgres`)."""
    with fresh_database(server_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DbLocation]:
    """A new store on each database: a SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        yield tmp_path / "store.db"
        return
    with fresh_database(server_url()) as url:
        yield url


def write_task(
    directory: Path,
    base_url: str,
    *,
    items: list[dict[str, Any]] | None = None,
    candidates: str | None = None,
    extra: str = "",
) -> Path:
    """A spam-triage task whose candidates live on the fake server."""
    rows = ITEMS if items is None else items
    (directory / "items.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
    )
    if candidates is None:
        candidates = """
[[candidates]]
model = "fake/cheap"
price = { input_mtok = 0.1, output_mtok = 0.4 }
[[candidates]]
model = "fake/strong"
price = { input_mtok = 2.5, output_mtok = 10 }
"""
    text = f"""
name = "spam-triage"
category = "classification"
[dataset]
path = "items.jsonl"
target = "label"
id = "id"
[prompt]
system = "Answer with one word."
user = "Is this message spam or ham?\\n{{{{text}}}}"
[scorer]
kind = "label"
labels = ["spam", "ham"]
[floor]
metric = "accuracy"
min = 0.5
[providers.fake]
kind = "openai"
base_url = "{base_url}"
{extra}
{candidates}
"""
    path = directory / "task.toml"
    path.write_text(text, encoding="utf-8")
    return path


def spam_answers(server: FakeServer, strong_right: bool = True) -> None:
    """The strong model is always right; the cheap one calls everything ham."""
    server.model_answers = {
        "cheap": lambda request: "ham",
        "strong": lambda request: (
            "spam" if "win money" in request["messages"][-1]["content"] else "ham"
        ),
    }


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_json(*args: str) -> dict[str, Any]:
    result = invoke("run", *args, "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_for_stored_calls(db: Path, minimum: int) -> str:
    """The run id, once a run in another process has stored `minimum` calls."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as connection:
                    row = connection.execute(
                        "SELECT run_id, COUNT(*) FROM calls GROUP BY run_id"
                    ).fetchone()
            except sqlite3.OperationalError:
                row = None
            if row is not None and row[1] >= minimum:
                return str(row[0])
        time.sleep(0.05)
    raise AssertionError("the run stored too few calls in 30 s")


def stored_keys(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as connection:
        return [
            (row[0], row[1])
            for row in connection.execute("SELECT model, item_id FROM calls")
        ]


def assert_sent_once(server: FakeServer, stored: list[tuple[str, str]]) -> None:
    """Every call stored before a kill reached the server exactly once."""
    sent = Counter(
        (request.model, request.messages[-1]["content"]) for request in server.requests
    )
    for model, item_id in stored:
        text = f"Is this message spam or ham?\nnote {item_id[1:]}"
        assert sent[(model.split("/")[1], text)] == 1


def assert_stopped_by_budget(result: Result, server: FakeServer, limit: str) -> None:
    """The run stopped before passing `--max-cost`, and said how to go on."""
    assert result.exit_code == 1
    assert "--max-cost" in result.stderr and "--resume" in result.stderr
    spent = sum(
        Decimal(c["spent_usd"]) for c in json.loads(result.stdout)["candidates"]
    )
    assert Decimal(0) < spent <= Decimal(limit)
    assert server.calls < 24
