"""Connections to the store's database: a SQLite file, or a PostgreSQL server.

The store writes one SQL for both: `?` placeholders, `ON CONFLICT` upserts and
`RETURNING`, which SQLite (3.35 and later) and PostgreSQL both accept. What
differs lives here: placeholders, column types in the migrations, where the
schema version is kept and how a writer takes the lock that SQLite's
`BEGIN IMMEDIATE` takes.
"""

from __future__ import annotations

import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from costroute.errors import UsageError

DEFAULT_DB = Path(".costroute") / "costroute.db"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
INSTALL_POSTGRES = "pip install 'costroute[postgres]'"

# Where a store lives: a SQLite file, or a postgresql:// URL kept as a string.
DbLocation = Path | str


class Row(Protocol):
    """A result row, read by column name or position."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class Cursor(Protocol):
    """What a query returns: its rows, and how many rows a write touched."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


def is_postgres_url(location: DbLocation) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def parse_location(value: str | Path) -> DbLocation:
    """A postgresql:// URL as it is; anything else as a SQLite file's path."""
    if isinstance(value, str) and is_postgres_url(value):
        return value
    return Path(value)


def default_db_path() -> DbLocation:
    return parse_location(os.environ.get("COSTROUTE_DB") or DEFAULT_DB)


def store_exists(location: DbLocation) -> bool:
    """False only for a SQLite file not made yet; a server is asked on open."""
    return is_postgres_url(location) or Path(location).exists()


def describe(location: DbLocation) -> str:
    """The location for a message: a URL without its password."""
    if not is_postgres_url(location):
        return str(location)
    parts = urlsplit(str(location))
    if parts.password is None:
        return str(location)
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Connection(ABC):
    """One connection, in autocommit mode: `begin` opens a transaction."""

    dialect: str
    where: DbLocation
    # Whether an UPDATE … RETURNING can feed an INSERT in one statement (a
    # data-modifying WITH), so a write of two rows needs no transaction.
    writable_ctes = False

    @abstractmethod
    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    @property
    @abstractmethod
    def in_transaction(self) -> bool: ...

    @abstractmethod
    def begin(self, lock: bool = False) -> None:
        """Open a transaction; with `lock`, the only writing one until it ends."""

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def set_schema_version(self, version: int) -> None: ...

    def ddl(self, script: str) -> str:
        """A migration's SQL, as written for SQLite, in this database's types."""
        return script

    @abstractmethod
    def close(self) -> None: ...


class SQLiteConnection(Connection):
    """A SQLite file in WAL mode; the schema version is `PRAGMA user_version`."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.where = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.raw = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"{path}: cannot open the store ({exc})") from None
        self.raw.row_factory = sqlite3.Row
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self.raw.execute("PRAGMA foreign_keys=ON")
        self.raw.execute("PRAGMA busy_timeout=5000")

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.raw.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def begin(self, lock: bool = False) -> None:
        # IMMEDIATE takes the write lock at once, so two writers sharing the
        # file cannot both read a total and then lose one's update.
        self.raw.execute("BEGIN IMMEDIATE" if lock else "BEGIN")

    def schema_version(self) -> int:
        version: int = self.raw.execute("PRAGMA user_version").fetchone()[0]
        return version

    def set_schema_version(self, version: int) -> None:
        self.raw.execute(f"PRAGMA user_version={int(version)}")

    def close(self) -> None:
        self.raw.close()


def connect(location: DbLocation) -> Connection:
    """Open the store's database: PostgreSQL for a postgresql:// URL."""
    if not is_postgres_url(location):
        return SQLiteConnection(Path(location))
    try:
        from costroute.store.postgres import PostgresConnection
    except ImportError:
        raise UsageError(
            f"a postgresql:// store needs psycopg; install it: {INSTALL_POSTGRES}"
        ) from None
    return PostgresConnection(str(location))


def statements(script: str) -> list[str]:
    """A migration script's statements; the store's DDL has no `;` in literals."""
    return [part.strip() for part in script.split(";") if part.strip()]


class Transaction:
    """BEGIN … COMMIT, or ROLLBACK when the block raises.

    Inside another transaction it joins that one, so a caller can make several
    writes (a whole imported run) all-or-nothing.
    """

    def __init__(self, db: Connection, lock: bool = False) -> None:
        self.db = db
        self.lock = lock
        self.joined = False

    def __enter__(self) -> None:
        self.joined = self.db.in_transaction
        if not self.joined:
            self.db.begin(self.lock)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.joined:
            return
        if exc_type is not None:
            self.db.rollback()
        else:
            self.db.commit()


class Tables:
    """What the store's table groups share: the connection and its name."""

    db: Connection
    path: DbLocation

    def transaction(self, lock: bool = False) -> Transaction:
        return Transaction(self.db, lock)
