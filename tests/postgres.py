"""A fresh PostgreSQL database per test, on the server COSTROUTE_TEST_POSTGRES names.

`bash scripts/test.sh` starts a throwaway server on loopback and sets the
variable. Without it the PostgreSQL tests are skipped, except in CI, where
they fail: there a missing server is a broken setup, not a choice.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = "COSTROUTE_TEST_POSTGRES"


def server_url() -> str:
    url = os.environ.get(ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(
            f"{ENV} is not set in CI: scripts/test.sh should have started a "
            "PostgreSQL server and set it",
            pytrace=False,
        )
    pytest.skip(f"no PostgreSQL server: set {ENV}, or run bash scripts/test.sh")


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server; dropped afterwards."""
    import psycopg

    name = f"costroute_test_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())
