"""What the store holds, as Python values, and how they map to rows."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from costroute.pricing import Price, Usage
from costroute.scorers import Score
from costroute.store.connection import Row

# Budgets are counted in whole nano-dollars, so that both databases add and
# compare them exactly in SQL; a cost rounds up, a budget down.
NANO = Decimal("1e9")


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
class Hold:
    """Part of a key's monthly budget held for one request until it is settled.

    `holder` names the router process, so that the holds of one that died are
    given back.
    """

    request_id: str
    key_id: str
    month: str
    amount_usd: Decimal
    holder: str


@dataclass(frozen=True)
class KeySpend:
    """A key's month in the budget counters: settled spend and what is held."""

    spent_usd: Decimal = Decimal(0)
    held_usd: Decimal = Decimal(0)


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


MONEY = {"cost_usd", "spent_usd", "provider_cost_usd"}
CALL_COLUMNS = [f.name for f in fields(CallRecord) if f.name != "id"]
LEDGER_COLUMNS = [f.name for f in fields(LedgerEntry)]
_LEDGER_FLAGS = ("cost_estimated", "escalated", "stream")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def nano_usd(amount_usd: Decimal) -> int:
    """A cost in whole nano-dollars, rounded up."""
    return int((amount_usd * NANO).to_integral_value(rounding=ROUND_CEILING))


def nano_usd_floor(amount_usd: Decimal) -> int:
    """A budget in whole nano-dollars, rounded down."""
    return int((amount_usd * NANO).to_integral_value(rounding=ROUND_FLOOR))


def from_nano_usd(amount: int) -> Decimal:
    return Decimal(amount) / NANO


def money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def call_values(call: CallRecord) -> list[object]:
    values: list[object] = []
    for name in CALL_COLUMNS:
        value = getattr(call, name)
        values.append(money(value) if name in MONEY else value)
    return values


def call_record(row: Row) -> CallRecord:
    values: dict[str, Any] = {name: row[name] for name in [*CALL_COLUMNS, "id"]}
    for name in MONEY:
        if values[name] is not None:
            values[name] = Decimal(values[name])
    return CallRecord(**values)


def score(row: Row) -> Score | None:
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


def run_info(row: Row) -> RunInfo:
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


def price(data: dict[str, Any]) -> Price:
    money_fields = (
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "hourly_usd",
    )
    for name in money_fields:
        if data.get(name) is not None:
            data[name] = Decimal(data[name])
    return Price(**data)


def api_key(row: Row) -> ApiKeyRecord:
    budget = row["budget_usd"]
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        key_hash=row["key_hash"],
        budget_usd=None if budget is None else Decimal(budget),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def ledger_row(entry: LedgerEntry) -> list[object]:
    values = [getattr(entry, name) for name in LEDGER_COLUMNS]
    values[LEDGER_COLUMNS.index("cost_usd")] = money(entry.cost_usd)
    # Flags are integers in both databases; PostgreSQL takes no bool for them.
    for name in _LEDGER_FLAGS:
        index = LEDGER_COLUMNS.index(name)
        values[index] = int(values[index])
    return values


def ledger_entry(row: Row) -> LedgerEntry:
    values: dict[str, Any] = {name: row[name] for name in LEDGER_COLUMNS}
    for name in _LEDGER_FLAGS:
        values[name] = bool(values[name])
    if values["cost_usd"] is not None:
        values["cost_usd"] = Decimal(values["cost_usd"])
    return LedgerEntry(**values)


def ledger_deltas(
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
