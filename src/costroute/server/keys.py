"""Router API keys: shown once, stored as a hash, checked in constant time.

A key reads `crk-<id>-<secret>`: the id finds the stored hash, and the SHA-256 of
the whole key is compared with `hmac.compare_digest`. The secret is 32 random
bytes, so a fast unsalted hash is enough. Spend counts against a key's monthly
budget (calendar month, UTC) from the ledger totals, refreshed every few
seconds so that every worker sharing the store sees the others' spend, plus the
rows this process has not yet written.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from costroute.server.errors import ApiError, unauthorized
from costroute.server.ledger import Database
from costroute.store import ApiKeyRecord, LedgerEntry, now_iso

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
    """The keys this server accepts and what each has spent this month."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._keys: dict[str, ApiKeyRecord] = {}
        self._month = this_month()
        self._spent_usd: dict[str, Decimal] = {}
        self._unwritten_usd: dict[str, Decimal] = {}

    async def refresh(self) -> None:
        """Reload keys (new ones, revocations) and every key's spend."""
        month = this_month()
        keys, spent = await self.db.run(
            lambda store: (store.api_keys(), store.month_spend_usd(month))
        )
        self._keys = {key.id: key for key in keys}
        self._month = month
        self._spent_usd = spent

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

    def spent_usd(self, key: ApiKeyRecord) -> Decimal:
        return self._spent_usd.get(key.id, Decimal(0)) + self._unwritten_usd.get(
            key.id, Decimal(0)
        )

    def check_budget(self, key: ApiKeyRecord) -> None:
        if key.budget_usd is None:
            return
        spent_usd = self.spent_usd(key)
        if spent_usd >= key.budget_usd:
            raise ApiError(
                429,
                f"the key {key.name!r} has spent ${spent_usd:.4f} of its monthly "
                f"budget of ${key.budget_usd}; it resets on the 1st (UTC), or "
                "use a key with a larger --budget-usd",
                kind="insufficient_quota",
                code="budget_exceeded",
                retry=False,
            )

    def charge(self, entry: LedgerEntry) -> None:
        """Count a request's cost before its ledger row is written."""
        if entry.key_id is None or entry.cost_usd is None:
            return
        self._unwritten_usd[entry.key_id] = (
            self._unwritten_usd.get(entry.key_id, Decimal(0)) + entry.cost_usd
        )

    def written(self, entries: list[LedgerEntry]) -> None:
        """Move written rows' costs from the unwritten to the written spend."""
        for entry in entries:
            if entry.key_id is None or entry.cost_usd is None:
                continue
            cost_usd = entry.cost_usd
            self._unwritten_usd[entry.key_id] -= cost_usd
            if entry.created_at[:7] == self._month:
                self._spent_usd[entry.key_id] = (
                    self._spent_usd.get(entry.key_id, Decimal(0)) + cost_usd
                )
