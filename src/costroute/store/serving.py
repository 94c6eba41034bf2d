"""The router's tables: API keys, the request ledger, feedback and budgets.

A budget is enforced in the database, so routers sharing it never overspend
because one did not see another's spend in time. Before a budgeted key's
request goes upstream, `reserve` holds its most possible cost with a single
conditional UPDATE of the key's month, which admits it only when what is spent
plus what is held plus this hold fits the budget. Writing the request's ledger
row settles the hold in the same transaction: the hold is released and the
actual cost is spent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from decimal import Decimal

from costroute.errors import UsageError
from costroute.store.connection import Tables
from costroute.store.records import (
    LEDGER_COLUMNS,
    ApiKeyRecord,
    Hold,
    KeySpend,
    LedgerEntry,
    TaskTotals,
    api_key,
    from_nano_usd,
    iter_chunks,
    ledger_deltas,
    ledger_entry,
    ledger_row,
    money,
    nano_usd,
    nano_usd_floor,
    now_iso,
)

_INSERT_LEDGER = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in LEDGER_COLUMNS)}) ON CONFLICT DO NOTHING"
)
# Admit when spent + held + what this router has spent but not yet settled,
# plus this hold, fits the budget. A hold of 0 (a request whose cost has no
# bound) is admitted while anything of the budget is left.
_HOLD = (
    "UPDATE key_spend SET reserved_nano_usd = reserved_nano_usd + ? "
    "WHERE key_id = ? AND month = ? "
    "AND spent_nano_usd + reserved_nano_usd + ? <= ? "
    "AND spent_nano_usd + reserved_nano_usd + ? < ?"
)
# `_HOLD` and the hold's row in one statement, where the database can: no row
# comes back when the hold does not fit, or the key's month has no counter yet.
_HOLD_AT_ONCE = (
    f"WITH held AS ({_HOLD} RETURNING key_id, month) "
    "INSERT INTO reservations (request_id, key_id, month, amount_nano_usd, "
    "holder, created_at) SELECT ?, key_id, month, ?, ?, ? FROM held "
    "RETURNING request_id"
)
_ADD_SPEND = (
    "INSERT INTO key_spend (key_id, month, spent_nano_usd, reserved_nano_usd) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (key_id, month) DO UPDATE SET "
    "spent_nano_usd = key_spend.spent_nano_usd + excluded.spent_nano_usd, "
    "reserved_nano_usd = key_spend.reserved_nano_usd + excluded.reserved_nano_usd"
)

Group = tuple[str, str]


class ServingTables(Tables):
    """The tables `costroute serve` and `costroute keys` write."""

    # Keys

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
            (key.id, key.name, key.key_hash, money(key.budget_usd), key.created_at),
        )

    def api_keys(self) -> list[ApiKeyRecord]:
        rows = self.db.execute("SELECT * FROM api_keys ORDER BY created_at")
        return [api_key(row) for row in rows]

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        row = self.db.execute(
            "SELECT * FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        return None if row is None else api_key(row)

    def revoke_api_key(self, id_or_name: str) -> list[str]:
        """Revoke the active key with this id or name; the ids revoked."""
        rows = self.db.execute(
            "SELECT id FROM api_keys WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
            (id_or_name, id_or_name),
        ).fetchall()
        ids: list[str] = [row["id"] for row in rows]
        self.db.executemany(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ?",
            [(now_iso(), key_id) for key_id in ids],
        )
        return ids

    # The ledger

    def record_ledger(
        self, entries: list[LedgerEntry], holds: Collection[Hold] = ()
    ) -> None:
        """Write ledger rows, add them to the running totals and settle the
        holds of their requests, all or nothing."""
        with self.transaction(lock=True):
            self.db.executemany(
                _INSERT_LEDGER, [ledger_row(entry) for entry in entries]
            )
            for group, totals in ledger_deltas(entries).items():
                self._add_totals(group, totals)
            if holds:
                self._settle(entries, holds)

    def _add_totals(self, group: tuple[str, str, str], delta: TaskTotals) -> None:
        # Spend is exact decimal text, so it is added here rather than in SQL;
        # the write lock keeps another writer from adding in between.
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
            "requests = ledger_totals.requests + excluded.requests, "
            "errors = ledger_totals.errors + excluded.errors, "
            "escalated = ledger_totals.escalated + excluded.escalated, "
            "unpriced = ledger_totals.unpriced + excluded.unpriced, "
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
        sql = "SELECT * FROM ledger ORDER BY id DESC"
        rows = (
            self.db.execute(sql + " LIMIT ?", (limit,))
            if limit >= 0
            else self.db.execute(sql)
        )
        return [ledger_entry(row) for row in rows]

    def ledger_entry(self, request_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            "SELECT * FROM ledger WHERE request_id = ?", (request_id,)
        ).fetchone()
        return None if row is None else ledger_entry(row)

    def month_spend_usd(self, month: str) -> dict[str, Decimal]:
        """What each key has spent in `month` (YYYY-MM), by key id."""
        rows = self.db.execute(
            "SELECT key_id, spent_usd FROM ledger_totals WHERE month = ?", (month,)
        )
        spent: dict[str, Decimal] = {}
        for row in rows:
            spent[row[0]] = spent.get(row[0], Decimal(0)) + Decimal(row[1])
        return spent

    # Feedback

    def record_feedback(self, request_id: str, score: float) -> None:
        self.db.execute(
            "INSERT INTO feedback (request_id, score, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (request_id) DO UPDATE SET score = excluded.score, "
            "created_at = excluded.created_at",
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

    # Budgets

    def reserve(
        self, hold: Hold, budget_usd: Decimal, unsettled_usd: Decimal = Decimal(0)
    ) -> bool:
        """Hold `hold.amount_usd` of the key's budget for its month; False when
        spent, held, `unsettled_usd` (spent but not yet settled, known only to
        the caller) and the hold together would pass `budget_usd`."""
        amount = nano_usd(hold.amount_usd)
        budget = nano_usd_floor(budget_usd)
        unsettled = nano_usd(unsettled_usd)
        args = (
            *(amount, hold.key_id, hold.month),
            *(unsettled + amount, budget, unsettled, budget),
        )
        if amount == 0:
            # Nothing to give back later: the counter alone, no hold row.
            return self._hold(args)
        row = (hold.request_id, amount, hold.holder, now_iso())
        # One statement where the database can, so one round trip.
        if self.db.writable_ctes and self._hold_at_once(args, row):
            return True
        # The write lock from the start: a SQLite reader that then writes can
        # find its snapshot stale and fail instead of waiting.
        with self.transaction(lock=True):
            held = self._hold(args)
            if held:
                self.db.execute(
                    "INSERT INTO reservations (request_id, key_id, month, "
                    "amount_nano_usd, holder, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (hold.request_id, hold.key_id, hold.month, *row[1:]),
                )
        return held

    def reserve_all(self, asks: Sequence[tuple[Hold, Decimal, Decimal]]) -> list[bool]:
        """`reserve(hold, budget_usd, unsettled_usd)` for each of several
        requests: SQLite's writers queue for one lock anyway, so there in one
        transaction; elsewhere one statement each, so no hold waits for the
        others' row locks."""
        if self.db.writable_ctes:
            return [self.reserve(*ask) for ask in asks]
        with self.transaction(lock=True):
            return [self.reserve(*ask) for ask in asks]

    def release(self, request_ids: list[str]) -> None:
        """Give back the holds of requests that never went upstream."""
        with self.transaction(lock=True):
            self._apply(_given_back(self._release(request_ids)))

    def _hold_at_once(self, args: tuple[object, ...], row: tuple[object, ...]) -> bool:
        return self.db.execute(_HOLD_AT_ONCE, (*args, *row)).fetchone() is not None

    def _hold(self, args: tuple[object, ...]) -> bool:
        if self.db.execute(_HOLD, args).rowcount == 1:
            return True
        # The key's first request this month makes its counter row.
        self.db.execute(
            "INSERT INTO key_spend (key_id, month) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            args[1:3],
        )
        return self.db.execute(_HOLD, args).rowcount == 1

    def key_spend(self, key_id: str, month: str) -> KeySpend:
        """What the budget counters say of the key's month."""
        row = self.db.execute(
            "SELECT spent_nano_usd, reserved_nano_usd FROM key_spend "
            "WHERE key_id = ? AND month = ?",
            (key_id, month),
        ).fetchone()
        if row is None:
            return KeySpend()
        return KeySpend(from_nano_usd(row[0]), from_nano_usd(row[1]))

    def _settle(self, entries: list[LedgerEntry], holds: Collection[Hold]) -> None:
        """Release the holds and spend what their requests cost."""
        changes = _given_back(self._release([hold.request_id for hold in holds]))
        by_request = {hold.request_id: hold for hold in holds}
        for entry in entries:
            hold = by_request.get(entry.request_id)
            if hold is None:
                continue
            # An unpriced request spends what it held: its cost is not known.
            cost_usd = hold.amount_usd if entry.cost_usd is None else entry.cost_usd
            changes[(hold.key_id, entry.created_at[:7])][0] += nano_usd(cost_usd)
        self._apply(changes)

    def _release(self, request_ids: list[str]) -> list[tuple[Group, int]]:
        """Delete these requests' holds; each one's key, month and amount."""
        released: list[tuple[Group, int]] = []
        for chunk in iter_chunks(request_ids, 500):
            marks = ", ".join("?" for _ in chunk)
            rows = self.db.execute(
                f"DELETE FROM reservations WHERE request_id IN ({marks}) "
                "RETURNING key_id, month, amount_nano_usd",
                chunk,
            )
            released.extend(((key_id, month), amount) for key_id, month, amount in rows)
        return released

    def _apply(self, changes: dict[Group, list[int]]) -> None:
        # In one order, so that two writers never wait on each other's rows.
        rows = [
            (key_id, month, spent, held)
            for (key_id, month), (spent, held) in sorted(changes.items())
        ]
        self.db.executemany(_ADD_SPEND, rows)

    # Routers sharing the database

    def heartbeat(self, holder: str, stale_before: str) -> int:
        """Say that router `holder` is alive, and give back the holds of any
        not heard from since `stale_before`; how many holds were given back."""
        self.db.execute(
            "INSERT INTO replicas (id, seen_at) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            (holder, now_iso()),
        )
        stale = self.db.execute(
            "SELECT id FROM replicas WHERE seen_at < ?", (stale_before,)
        ).fetchall()
        released = 0
        for row in stale:
            released += self.forget_holder(row[0])
        return released

    def forget_holder(self, holder: str) -> int:
        """Give back every hold of router `holder`; how many there were."""
        with self.transaction(lock=True):
            rows = self.db.execute(
                "DELETE FROM reservations WHERE holder = ? "
                "RETURNING key_id, month, amount_nano_usd",
                (holder,),
            ).fetchall()
            released = [((key_id, month), amount) for key_id, month, amount in rows]
            self._apply(_given_back(released))
            self.db.execute("DELETE FROM replicas WHERE id = ?", (holder,))
        return len(rows)


def _given_back(released: list[tuple[Group, int]]) -> dict[Group, list[int]]:
    """Changes to the counters, [spent, held] by key and month, for holds
    given back."""
    changes: dict[Group, list[int]] = defaultdict(lambda: [0, 0])
    for group, amount in released:
        changes[group][1] -= amount
    return changes
