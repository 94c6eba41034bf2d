"""The SQLite store: the only module that writes SQL.

Every paid response lands here before it is scored, so a crash never pays twice.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.pricing import Price, Usage
from costroute.scorers import Score

logger = logging.getLogger(__name__)

DEFAULT_DB = Path(".costroute") / "costroute.db"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task_name TEXT NOT NULL,
        task_path TEXT NOT NULL,
        task_json TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'live',
        params_json TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'running',
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE items (
        run_id TEXT NOT NULL REFERENCES runs(id),
        item_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        line INTEGER NOT NULL,
        fields_json TEXT NOT NULL,
        target_json TEXT NOT NULL,
        PRIMARY KEY (run_id, item_id)
    );
    CREATE TABLE prices (
        run_id TEXT NOT NULL REFERENCES runs(id),
        model TEXT NOT NULL,
        source TEXT NOT NULL,
        catalog_version TEXT NOT NULL,
        price_json TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (run_id, model)
    );
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        item_id TEXT NOT NULL,
        model TEXT NOT NULL,
        repeat INTEGER NOT NULL DEFAULT 0,
        request_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        output TEXT,
        response_json TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 1,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd TEXT,
        spent_usd TEXT,
        provider_cost_usd TEXT,
        cost_kind TEXT NOT NULL,
        latency_ms REAL NOT NULL DEFAULT 0,
        started_s REAL NOT NULL DEFAULT 0,
        ended_s REAL NOT NULL DEFAULT 0,
        cached_from INTEGER,
        purpose TEXT NOT NULL DEFAULT 'candidate',
        judged_call_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX calls_once ON calls
        (run_id, item_id, model, repeat, purpose, COALESCE(judged_call_id, 0));
    CREATE INDEX calls_by_hash ON calls (request_hash, status);
    CREATE TABLE scores (
        call_id INTEGER PRIMARY KEY REFERENCES calls(id),
        results REAL NOT NULL,
        correct INTEGER NOT NULL,
        tp INTEGER NOT NULL,
        fp INTEGER NOT NULL,
        fn INTEGER NOT NULL,
        answer TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # Serving: API keys, one ledger row per routed request, feedback on results,
    # and running totals per key, task and month so budgets read a few rows.
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        budget_usd TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        key_id TEXT,
        task TEXT,
        model TEXT,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd TEXT,
        cost_estimated INTEGER NOT NULL DEFAULT 0,
        escalated INTEGER NOT NULL DEFAULT 0,
        stream INTEGER NOT NULL DEFAULT 0,
        calls INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX ledger_by_task ON ledger (task, created_at);
    CREATE TABLE ledger_totals (
        key_id TEXT NOT NULL,
        task TEXT NOT NULL,
        month TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        escalated INTEGER NOT NULL,
        unpriced INTEGER NOT NULL,
        spent_usd TEXT NOT NULL,
        PRIMARY KEY (key_id, task, month)
    );
    CREATE TABLE feedback (
        request_id TEXT PRIMARY KEY,
        score REAL NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
]


@dataclass
class CallRecord:
    """One provider call as stored: what was asked, what came back, what it cost."""

    run_id: str
    item_id: str
    model: str
    repeat: int
    request_hash: str
    status: str
    cost_kind: str
    output: str | None = None
    response_json: str | None = None
    error: str | None = None
    attempts: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    spent_usd: Decimal | None = None
    provider_cost_usd: Decimal | None = None
    latency_ms: float = 0.0
    started_s: float = 0.0
    ended_s: float = 0.0
    cached_from: int | None = None
    purpose: str = "candidate"
    judged_call_id: int | None = None
    id: int | None = None

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )


@dataclass(frozen=True)
class RunInfo:
    id: str
    task_name: str
    task_path: str
    task_json: str
    source: str
    params: dict[str, Any]
    status: str
    created_at: str
    finished_at: str | None


@dataclass(frozen=True)
class ScoredCall:
    call: CallRecord
    score: Score | None


_MONEY = {"cost_usd", "spent_usd", "provider_cost_usd"}
_CALL_COLUMNS = [f.name for f in fields(CallRecord) if f.name != "id"]


def default_db_path() -> Path:
    return Path(os.environ.get("COSTROUTE_DB") or DEFAULT_DB)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class Store:
    """A SQLite file in WAL mode, migrated to the newest schema on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"{path}: cannot open the store ({exc})") from None
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise UsageError(
                f"{self.path}: the store was written by a newer costroute "
                f"(schema {version}); upgrade costroute"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            logger.info("migrating %s to schema %d", self.path, number)
            self.db.executescript(
                f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;"
            )

    # Runs

    def create_run(
        self,
        task_name: str,
        task_path: str,
        task_json: str,
        params: dict[str, Any],
        source: str = "live",
    ) -> str:
        run_id = new_run_id()
        self.db.execute(
            "INSERT INTO runs (id, task_name, task_path, task_json, source, "
            "params_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                task_name,
                task_path,
                task_json,
                source,
                json.dumps(params),
                now_iso(),
            ),
        )
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        self.db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
            (status, now_iso(), run_id),
        )

    def update_run_params(self, run_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the run's params, e.g. how an adaptive run went."""
        params = {**self.run(run_id).params, **changes}
        self.db.execute(
            "UPDATE runs SET params_json = ? WHERE id = ?",
            (json.dumps(params), run_id),
        )

    def run(self, run_id: str) -> RunInfo:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(
                f"no run {run_id!r} in {self.path}; `costroute runs` lists them"
            )
        return _run_info(row)

    def runs(self) -> list[RunInfo]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created_at DESC")
        return [_run_info(row) for row in rows]

    def delete_run(self, run_id: str) -> None:
        with self.transaction():
            self.db.execute(
                "DELETE FROM scores WHERE call_id IN "
                "(SELECT id FROM calls WHERE run_id = ?)",
                (run_id,),
            )
            for table in ("calls", "prices", "items"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self.db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # Items and prices

    def save_items(self, run_id: str, items: Iterable[Item]) -> None:
        rows = [
            (
                run_id,
                item.id,
                position,
                item.line,
                json.dumps(item.fields),
                json.dumps(item.target),
            )
            for position, item in enumerate(items)
        ]
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO items (run_id, item_id, position, line, "
                "fields_json, target_json) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def items(self, run_id: str) -> list[Item]:
        rows = self.db.execute(
            "SELECT * FROM items WHERE run_id = ? ORDER BY position", (run_id,)
        )
        return [
            Item(
                id=row["item_id"],
                line=row["line"],
                fields=json.loads(row["fields_json"]),
                target=json.loads(row["target_json"]),
            )
            for row in rows
        ]

    def save_price(self, run_id: str, price: Price) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO prices (run_id, model, source, catalog_version, "
            "price_json, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                run_id,
                price.model,
                price.source,
                price.catalog_version,
                json.dumps(asdict(price), default=str),
                now_iso(),
            ),
        )

    def prices(self, run_id: str) -> dict[str, Price]:
        rows = self.db.execute("SELECT * FROM prices WHERE run_id = ?", (run_id,))
        return {row["model"]: _price(json.loads(row["price_json"])) for row in rows}

    # Calls and scores

    def record_calls(self, calls: list[CallRecord]) -> None:
        """Store several calls in one transaction, setting each one's id."""
        with self.transaction():
            for call in calls:
                self.record_call(call)

    def record_call(self, call: CallRecord) -> int:
        values = [_to_sql(name, getattr(call, name)) for name in _CALL_COLUMNS]
        marks = ", ".join("?" for _ in _CALL_COLUMNS)
        cursor = self.db.execute(
            f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}, created_at) "
            f"VALUES ({marks}, ?)",
            [*values, now_iso()],
        )
        assert cursor.lastrowid is not None
        call.id = cursor.lastrowid
        return cursor.lastrowid

    def record_scores(self, scores: list[tuple[int, Score]]) -> None:
        rows = [
            (call_id, s.results, int(s.correct), s.tp, s.fp, s.fn, s.answer, s.detail)
            for call_id, s in scores
        ]
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO scores (call_id, results, correct, tp, fp, "
                "fn, answer, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def set_costs(self, costs: dict[int, Decimal]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE calls SET cost_usd = ?, spent_usd = CASE WHEN cached_from "
                "IS NULL THEN ? ELSE '0' END WHERE id = ?",
                [(str(cost), str(cost), call_id) for call_id, cost in costs.items()],
            )

    def cached_calls(self, request_hashes: list[str]) -> dict[str, CallRecord]:
        """The first successful stored call for each of these request hashes."""
        found: dict[str, CallRecord] = {}
        for chunk in iter_chunks(sorted(set(request_hashes)), 500):
            marks = ", ".join("?" for _ in chunk)
            rows = self.db.execute(
                f"SELECT * FROM calls WHERE request_hash IN ({marks}) AND "
                "status = 'ok' AND cost_usd IS NOT NULL ORDER BY id",
                chunk,
            )
            for row in rows:
                found.setdefault(row["request_hash"], _call(row))
        return found

    def done_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        rows = self.db.execute(
            "SELECT item_id, model, repeat FROM calls WHERE run_id = ? "
            "AND purpose = 'candidate'",
            (run_id,),
        )
        return {(row[0], row[1], row[2]) for row in rows}

    def calls(
        self, run_id: str, model: str | None = None, purpose: str = "candidate"
    ) -> list[CallRecord]:
        sql = "SELECT * FROM calls WHERE run_id = ? AND purpose = ?"
        args: tuple[str, ...] = (run_id, purpose)
        if model is not None:
            sql += " AND model = ?"
            args = (run_id, purpose, model)
        return [_call(row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def scored_calls(self, run_id: str) -> list[ScoredCall]:
        rows = self.db.execute(
            "SELECT calls.*, scores.results AS s_results, scores.correct AS "
            "s_correct, scores.tp AS s_tp, scores.fp AS s_fp, scores.fn AS s_fn, "
            "scores.answer AS s_answer, scores.detail AS s_detail FROM calls "
            "LEFT JOIN scores ON scores.call_id = calls.id WHERE calls.run_id = ? "
            "AND calls.purpose = 'candidate' "
            "ORDER BY calls.id",
            (run_id,),
        )
        return [ScoredCall(call=_call(row), score=_score(row)) for row in rows]

    def unscored_calls(self, run_id: str) -> list[CallRecord]:
        rows = self.db.execute(
            "SELECT calls.* FROM calls LEFT JOIN scores ON scores.call_id = "
            "calls.id WHERE calls.run_id = ? AND calls.purpose = 'candidate' AND "
            "scores.call_id IS NULL ORDER BY calls.id",
            (run_id,),
        )
        return [_call(row) for row in rows]

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # Serving: API keys, the request ledger and feedback, for `costroute serve`.

    def create_api_key(self, key: ApiKeyRecord) -> None:
        taken = self.db.execute(
            "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL",
            (key.name,),
        ).fetchone()
        if taken:
            raise UsageError(
                f"an active key is already named {key.name!r}; pick another name "
                f"or revoke it with `costroute keys revoke {key.name}`"
            )
        self.db.execute(
            "INSERT INTO api_keys (id, name, key_hash, budget_usd, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key.id, key.name, key.key_hash, _money(key.budget_usd), key.created_at),
        )

    def api_keys(self) -> list[ApiKeyRecord]:
        rows = self.db.execute("SELECT * FROM api_keys ORDER BY created_at")
        return [_api_key(row) for row in rows]

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        row = self.db.execute(
            "SELECT * FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        return None if row is None else _api_key(row)

    def revoke_api_key(self, id_or_name: str) -> list[str]:
        """Revoke the active key with this id or name; the ids revoked."""
        rows = self.db.execute(
            "SELECT id FROM api_keys WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
            (id_or_name, id_or_name),
        ).fetchall()
        ids = [row["id"] for row in rows]
        self.db.executemany(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ?",
            [(now_iso(), key_id) for key_id in ids],
        )
        return ids

    def record_ledger(self, entries: list[LedgerEntry]) -> None:
        """Write ledger rows and add them to the running totals, all or nothing."""
        # IMMEDIATE takes the write lock first, so workers of one server that
        # share this file cannot both read a total and lose an update.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                f"INSERT OR IGNORE INTO ledger ({', '.join(_LEDGER_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _LEDGER_COLUMNS)})",
                [_ledger_row(entry) for entry in entries],
            )
            for group, totals in _ledger_deltas(entries).items():
                self._add_totals(group, totals)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _add_totals(self, group: tuple[str, str, str], delta: TaskTotals) -> None:
        row = self.db.execute(
            "SELECT spent_usd FROM ledger_totals WHERE key_id = ? AND task = ? "
            "AND month = ?",
            group,
        ).fetchone()
        spent_usd = delta.spent_usd + (Decimal(row[0]) if row else Decimal(0))
        self.db.execute(
            "INSERT INTO ledger_totals (key_id, task, month, requests, errors, "
            "escalated, unpriced, spent_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key_id, task, month) DO UPDATE SET "
            "requests = requests + excluded.requests, "
            "errors = errors + excluded.errors, "
            "escalated = escalated + excluded.escalated, "
            "unpriced = unpriced + excluded.unpriced, "
            "spent_usd = excluded.spent_usd",
            (
                *group,
                delta.requests,
                delta.errors,
                delta.escalated,
                delta.unpriced,
                str(spent_usd),
            ),
        )

    def ledger(self, limit: int = -1) -> list[LedgerEntry]:
        """Ledger rows, newest first; a negative limit means all of them."""
        rows = self.db.execute(
            "SELECT * FROM ledger ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_ledger_entry(row) for row in rows]

    def ledger_entry(self, request_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            "SELECT * FROM ledger WHERE request_id = ?", (request_id,)
        ).fetchone()
        return None if row is None else _ledger_entry(row)

    def month_spend_usd(self, month: str) -> dict[str, Decimal]:
        """What each key has spent in `month` (YYYY-MM), by key id."""
        rows = self.db.execute(
            "SELECT key_id, spent_usd FROM ledger_totals WHERE month = ?", (month,)
        )
        spent: dict[str, Decimal] = {}
        for row in rows:
            spent[row[0]] = spent.get(row[0], Decimal(0)) + Decimal(row[1])
        return spent

    def record_feedback(self, request_id: str, score: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO feedback (request_id, score, created_at) "
            "VALUES (?, ?, ?)",
            (request_id, score, now_iso()),
        )

    def task_totals(self) -> dict[str, TaskTotals]:
        """Requests, spend and feedback per task over the whole ledger."""
        totals: dict[str, TaskTotals] = {}
        for row in self.db.execute("SELECT * FROM ledger_totals"):
            delta = TaskTotals(
                requests=row["requests"],
                errors=row["errors"],
                escalated=row["escalated"],
                unpriced=row["unpriced"],
                spent_usd=Decimal(row["spent_usd"]),
            )
            totals[row["task"]] = totals.get(row["task"], TaskTotals()) + delta
        rows = self.db.execute(
            "SELECT ledger.task, ledger.cost_usd, feedback.score FROM feedback "
            "JOIN ledger ON ledger.request_id = feedback.request_id"
        )
        for task, cost_usd, score in rows:
            delta = TaskTotals(
                feedback=1,
                feedback_results=score,
                feedback_spent_usd=Decimal(cost_usd or 0),
                feedback_unpriced=int(cost_usd is None),
            )
            totals[task or ""] = totals.get(task or "", TaskTotals()) + delta
        return totals

    def feedback_totals(self, task: str, since: str) -> TaskTotals:
        """Feedback on `task`'s requests made at or after `since` (ISO, UTC)."""
        rows = self.db.execute(
            "SELECT ledger.cost_usd, feedback.score FROM feedback JOIN ledger ON "
            "ledger.request_id = feedback.request_id WHERE ledger.task = ? AND "
            "ledger.created_at >= ?",
            (task, since),
        )
        known = Decimal(0)
        feedback = unpriced = 0
        results = 0.0
        for cost_usd, score in rows:
            feedback += 1
            results += score
            if cost_usd is None:
                unpriced += 1
            else:
                known += Decimal(cost_usd)
        return TaskTotals(
            feedback=feedback,
            feedback_results=results,
            feedback_spent_usd=known,
            feedback_unpriced=unpriced,
        )


class _Transaction:
    """BEGIN … COMMIT, or ROLLBACK when the block raises.

    Inside another transaction it joins that one, so a caller can make several
    writes (a whole imported run) all-or-nothing.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.joined = False

    def __enter__(self) -> None:
        self.joined = self.db.in_transaction
        if not self.joined:
            self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.joined:
            self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _to_sql(name: str, value: object) -> object:
    if name in _MONEY:
        return None if value is None else str(value)
    return value


def _call(row: sqlite3.Row) -> CallRecord:
    values: dict[str, Any] = {name: row[name] for name in [*_CALL_COLUMNS, "id"]}
    for name in _MONEY:
        if values[name] is not None:
            values[name] = Decimal(values[name])
    return CallRecord(**values)


def _score(row: sqlite3.Row) -> Score | None:
    if row["s_results"] is None:
        return None
    return Score(
        results=row["s_results"],
        correct=bool(row["s_correct"]),
        tp=row["s_tp"],
        fp=row["s_fp"],
        fn=row["s_fn"],
        answer=row["s_answer"],
        detail=row["s_detail"],
    )


def _run_info(row: sqlite3.Row) -> RunInfo:
    return RunInfo(
        id=row["id"],
        task_name=row["task_name"],
        task_path=row["task_path"],
        task_json=row["task_json"],
        source=row["source"],
        params=json.loads(row["params_json"]),
        status=row["status"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _price(data: dict[str, Any]) -> Price:
    money = (
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "hourly_usd",
    )
    for name in money:
        if data.get(name) is not None:
            data[name] = Decimal(data[name])
    return Price(**data)


# Serving records.


@dataclass(frozen=True)
class ApiKeyRecord:
    """A router key as stored: only the SHA-256 of the key, never the key."""

    id: str
    name: str
    key_hash: str
    budget_usd: Decimal | None
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One request the router answered (or refused), with what it cost."""

    request_id: str
    created_at: str
    key_id: str | None
    task: str | None
    model: str | None
    status: int
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None
    cost_estimated: bool = False
    escalated: bool = False
    stream: bool = False
    calls: int = 0
    error: str | None = None


@dataclass(frozen=True)
class TaskTotals:
    """Live totals of one task; the feedback ones cover requests with feedback."""

    requests: int = 0
    errors: int = 0
    escalated: int = 0
    unpriced: int = 0
    spent_usd: Decimal = Decimal(0)
    feedback: int = 0
    feedback_results: float = 0.0
    feedback_spent_usd: Decimal = Decimal(0)
    feedback_unpriced: int = 0

    def __add__(self, other: TaskTotals) -> TaskTotals:
        values = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(TaskTotals)
        }
        return TaskTotals(**values)


_LEDGER_COLUMNS = [f.name for f in fields(LedgerEntry)]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _api_key(row: sqlite3.Row) -> ApiKeyRecord:
    budget = row["budget_usd"]
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        key_hash=row["key_hash"],
        budget_usd=None if budget is None else Decimal(budget),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _ledger_row(entry: LedgerEntry) -> list[object]:
    values = [getattr(entry, name) for name in _LEDGER_COLUMNS]
    values[_LEDGER_COLUMNS.index("cost_usd")] = _money(entry.cost_usd)
    return values


def _ledger_entry(row: sqlite3.Row) -> LedgerEntry:
    values: dict[str, Any] = {name: row[name] for name in _LEDGER_COLUMNS}
    for name in ("cost_estimated", "escalated", "stream"):
        values[name] = bool(values[name])
    if values["cost_usd"] is not None:
        values["cost_usd"] = Decimal(values["cost_usd"])
    return LedgerEntry(**values)


def _ledger_deltas(
    entries: list[LedgerEntry],
) -> dict[tuple[str, str, str], TaskTotals]:
    # Plain lists, not dataclass sums: this runs on every ledger batch.
    sums: dict[tuple[str, str, str], list[Any]] = {}
    for entry in entries:
        group = (entry.key_id or "", entry.task or "", entry.created_at[:7])
        row = sums.get(group)
        if row is None:
            row = sums[group] = [0, 0, 0, 0, Decimal(0)]
        row[0] += 1
        row[1] += entry.status >= 400
        row[2] += entry.escalated
        if entry.cost_usd is not None:
            row[4] += entry.cost_usd
        elif entry.calls > 0:
            row[3] += 1
    return {
        group: TaskTotals(
            requests=row[0],
            errors=row[1],
            escalated=row[2],
            unpriced=row[3],
            spent_usd=row[4],
        )
        for group, row in sums.items()
    }


def iter_chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
