"""The store's schema: one list of migrations for SQLite and PostgreSQL.

Each migration is written once, in SQLite's words; `Connection.ddl` gives it
PostgreSQL's types. A store is migrated to the newest schema when it is
opened, under the write lock, so that several processes opening one database
at once migrate it once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from costroute.errors import UsageError
from costroute.store.connection import Connection, statements
from costroute.store.records import nano_usd

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """DDL, then optionally a step that moves data into the new tables."""

    sql: str
    data: Callable[[Connection], None] | None = None


def _seed_key_spend(db: Connection) -> None:
    """Start the budget counters at what the ledger says budgeted keys spent."""
    rows = db.execute(
        "SELECT ledger_totals.key_id, ledger_totals.month, ledger_totals.spent_usd "
        "FROM ledger_totals JOIN api_keys ON api_keys.id = ledger_totals.key_id "
        "WHERE api_keys.budget_usd IS NOT NULL"
    ).fetchall()
    spent: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for key_id, month, spent_usd in rows:
        spent[(key_id, month)] += Decimal(spent_usd)
    db.executemany(
        "INSERT INTO key_spend (key_id, month, spent_nano_usd, reserved_nano_usd) "
        "VALUES (?, ?, ?, 0)",
        [(key_id, month, nano_usd(usd)) for (key_id, month), usd in spent.items()],
    )


MIGRATIONS: list[Migration] = [
    Migration("""
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
    """),
    # Serving: API keys, one ledger row per routed request, feedback on results,
    # and running totals per key, task and month so budgets read a few rows.
    Migration("""
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
    """),
    # Budgets enforced in the database, exactly across routers sharing it: each
    # budgeted key's month has one counter row of settled and held nano-dollars
    # that a request's hold updates with a single conditional UPDATE. Each hold
    # is a row too, named for the router process that made it, and each router
    # says it is alive in `replicas`, so a dead one's holds can be given back.
    Migration(
        """
    CREATE TABLE key_spend (
        key_id TEXT NOT NULL,
        month TEXT NOT NULL,
        spent_nano_usd BIGINT NOT NULL DEFAULT 0,
        reserved_nano_usd BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, month)
    );
    CREATE TABLE reservations (
        request_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        month TEXT NOT NULL,
        amount_nano_usd BIGINT NOT NULL,
        holder TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX reservations_by_holder ON reservations (holder);
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL
    );
    """,
        _seed_key_spend,
    ),
]


def migrate(db: Connection) -> None:
    """Bring the database to the newest schema, or refuse a newer one."""
    if _checked_version(db) == len(MIGRATIONS):
        return
    db.begin(lock=True)
    try:
        # Another process may have migrated while this one waited for the lock.
        version = _checked_version(db)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            logger.info("migrating %s to schema %d", db.where, number)
            for statement in statements(db.ddl(migration.sql)):
                db.execute(statement)
            if migration.data is not None:
                migration.data(db)
            db.set_schema_version(number)
    except BaseException:
        db.rollback()
        raise
    db.commit()


def _checked_version(db: Connection) -> int:
    version = db.schema_version()
    if version > len(MIGRATIONS):
        raise UsageError(
            f"{db.where}: the store was written by a newer costroute "
            f"(schema {version}); upgrade costroute"
        )
    return version
