"""Router API keys: shown once, stored as a hash, checked in constant time.

A key reads `crk-<id>-<secret>`: the id finds the stored hash, and the SHA-256 of
the whole key is compared with `hmac.compare_digest`. The secret is 32 random
bytes, so a fast unsalted hash is enough. Keys are reloaded every few seconds,
so a revocation reaches every router sharing the store; budgets are held in
the store itself (see `costroute.server.budget`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from costroute.server.errors import unauthorized
from costroute.server.ledger import Database
from costroute.store import ApiKeyRecord, now_iso

logger = logging.getLogger(__name__)

PREFIX = "crk"


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: the record to store and the key to show once."""

    record: ApiKeyRecord
    key: str


def new_key(name: str, budget_usd: Decimal | None) -> NewKey:
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}-{key_id}-{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        key_hash=hash_key(key),
        budget_usd=budget_usd,
        created_at=now_iso(),
    )
    return NewKey(record, key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str | None:
    parts = key.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    return parts[1]


def this_month() -> str:
    return f"{datetime.now(UTC):%Y-%m}"


class KeyRing:
    """The keys this server accepts."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._keys: dict[str, ApiKeyRecord] = {}

    async def refresh(self) -> None:
        """Reload keys: new ones, revocations."""
        keys = await self.db.run(lambda store: store.api_keys())
        self._keys = {key.id: key for key in keys}

    async def authenticate(self, authorization: str | None) -> ApiKeyRecord:
        if not authorization or not authorization.startswith("Bearer "):
            raise unauthorized(
                "no API key; send `Authorization: Bearer <key>` with a key from "
                "`costroute keys create`"
            )
        key = authorization[len("Bearer ") :].strip()
        record = await self._record(key_id(key))
        # Hash the key even when the id is unknown, so timing tells nothing.
        if not hmac.compare_digest(hash_key(key), record.key_hash if record else ""):
            raise unauthorized(
                "invalid API key; check it, or make one with "
                "`costroute keys create --name NAME`"
            )
        assert record is not None
        if record.revoked_at is not None:
            raise unauthorized(f"the key {record.name!r} was revoked")
        return record

    async def _record(self, wanted: str | None) -> ApiKeyRecord | None:
        if wanted is None:
            return None
        record = self._keys.get(wanted)
        if record is None:
            # A key made after the last refresh; look it up once.
            record = await self.db.run(lambda store: store.api_key(wanted))
            if record is not None:
                self._keys[wanted] = record
        return record
