"""The store's migrations, on a SQLite file and on PostgreSQL alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costroute.errors import UsageError
from costroute.store import MIGRATIONS, CallRecord, DbLocation, KeySpend, Store
from costroute.store.connection import connect, statements


def _at_schema(location: DbLocation, version: int) -> None:
    """A store as an older costroute left it."""
    db = connect(location)
    for migration in MIGRATIONS[:version]:
        for statement in statements(db.ddl(migration.sql)):
            db.execute(statement)
    db.set_schema_version(version)
    db.close()


def test_upgrading_starts_the_budget_counters_at_the_ledgers_spend(
    location: DbLocation,
) -> None:
    _at_schema(location, 2)
    db = connect(location)
    db.executemany(
        "INSERT INTO api_keys (id, name, key_hash, budget_usd, created_at) "
        "VALUES (?, ?, '', ?, '2026-01-01')",
        [("capped", "capped", "1"), ("open", "open", None)],
    )
    db.executemany(
        "INSERT INTO ledger_totals VALUES (?, ?, '2026-01', 1, 0, 0, 0, ?)",
        [
            ("capped", "spam", "0.25"),
            ("capped", "", "0.0000000001"),
            ("open", "spam", "3"),
        ],
    )
    db.close()

    with Store(location) as store:
        assert store.db.schema_version() == len(MIGRATIONS)
        # Rounded up to a whole nano-dollar: a budget never counts less.
        assert store.key_spend("capped", "2026-01") == KeySpend(
            spent_usd=Decimal("0.250000001")
        )
        assert store.key_spend("open", "2026-01") == KeySpend()


def test_opening_twice_migrates_once(location: DbLocation) -> None:
    Store(location).close()
    with Store(location) as store:
        assert store.db.schema_version() == len(MIGRATIONS)
        assert store.runs() == []


def test_a_store_from_a_newer_costroute_is_refused(location: DbLocation) -> None:
    Store(location).close()
    db = connect(location)
    db.set_schema_version(len(MIGRATIONS) + 1)
    db.close()

    with pytest.raises(UsageError, match="newer costroute"):
        Store(location)


def test_an_output_with_a_nul_character_is_stored(location: DbLocation) -> None:
    with Store(location) as store:
        run_id = store.create_run("t", "task.toml", "{}", {})
        call = CallRecord(
            run_id, "a", "x/y", 0, "h", "ok", "metered", output="ham\x00spam"
        )
        store.record_calls([call])

        (stored,) = store.calls(run_id)

    # SQLite keeps the NUL; PostgreSQL's TEXT cannot, so it holds U+FFFD there.
    assert stored.output in {"ham\x00spam", "ham\ufffdspam"}
    assert stored.output.startswith("ham") and stored.output.endswith("spam")
