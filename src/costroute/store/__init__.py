"""The store: the only place that writes SQL.

A SQLite file by default; a `postgresql://` URL puts it on a PostgreSQL server
that several machines and routers share, with the same schema and the same
results. Every paid response lands here before it is scored, so a crash never
pays twice.
"""

from __future__ import annotations

from costroute.store.connection import (
    DEFAULT_DB,
    INSTALL_POSTGRES,
    Connection,
    DbLocation,
    connect,
    default_db_path,
    describe,
    is_postgres_url,
    parse_location,
    store_exists,
)
from costroute.store.records import (
    ApiKeyRecord,
    CallRecord,
    Hold,
    KeySpend,
    LedgerEntry,
    RunInfo,
    ScoredCall,
    TaskTotals,
    iter_chunks,
    new_run_id,
    now_iso,
)
from costroute.store.runs import RunTables
from costroute.store.schema import MIGRATIONS, Migration, migrate
from costroute.store.serving import ServingTables

__all__ = [
    "DEFAULT_DB",
    "INSTALL_POSTGRES",
    "MIGRATIONS",
    "ApiKeyRecord",
    "CallRecord",
    "DbLocation",
    "Hold",
    "KeySpend",
    "LedgerEntry",
    "Migration",
    "RunInfo",
    "ScoredCall",
    "Store",
    "TaskTotals",
    "default_db_path",
    "describe",
    "is_postgres_url",
    "iter_chunks",
    "new_run_id",
    "now_iso",
    "parse_location",
    "store_exists",
]


class Store(RunTables, ServingTables):
    """The store's database, migrated to the newest schema on open.

    `location` is a SQLite file's path, or a postgresql:// URL. `path` names
    it in messages, a URL without its password.
    """

    def __init__(self, location: DbLocation) -> None:
        self.db: Connection = connect(location)
        self.path: DbLocation = self.db.where
        try:
            migrate(self.db)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
