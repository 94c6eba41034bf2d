"""Monthly budgets, exact across every router that shares the store.

Before a budgeted key's request goes upstream, it holds the most it can cost
in the store (`Store.reserve`: one conditional UPDATE of the key's month), and
is refused with 429 when that would pass the budget. Its ledger row settles
the hold: the hold is given back and the actual cost spent. So no router
admits a request on a stale view of the others' spend.

The most a request can cost is known when every model it may call has a
token price and a cap on its output (`max_completion_tokens` or `max_tokens`,
from the request or the route's candidate settings). Its input is bounded by
its size: a token is at least one byte of text, and the JSON around each
message outweighs the tokens a chat template adds. A cascade adds its cheap
samples to the dearest model of the chain. A request without such a bound (no
output cap, a model without a token price, an image) holds `reserve_usd`,
by default 0: it is admitted while any of the budget is left, and may pass the
budget by its own cost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from costroute import pricing
from costroute.pricing import Usage
from costroute.server import escalation
from costroute.server.errors import ApiError
from costroute.server.keys import this_month
from costroute.server.ledger import Database
from costroute.server.routing import Plan, Target
from costroute.store import ApiKeyRecord, Hold, KeySpend, LedgerEntry

logger = logging.getLogger(__name__)

# A router not heard from for this long is taken for dead, and its holds given
# back; a live one says it is alive every `keys_refresh_s`.
STALE_S = 60.0
_INPUT_FIELDS = ("messages", "tools", "functions", "tool_choice", "response_format")


def max_cost_usd(plan: Plan, body: dict[str, Any]) -> Decimal | None:
    """The most the request can cost on `plan`; None when it has no bound."""
    input_tokens = input_token_bound(body)
    if input_tokens is None:
        return None
    at = datetime.now(UTC)
    chain = [call_bound_usd(target, body, input_tokens, at) for target in plan.chain]
    known = [bound for bound in chain if bound is not None]
    if not known or len(known) < len(chain):
        return None
    total = max(known)
    if plan.cheap is not None and plan.check is not None:
        cheap = call_bound_usd(plan.cheap, body, input_tokens, at)
        if cheap is None:
            return None
        total += cheap * escalation.samples(plan.check)
    return total


def input_token_bound(body: dict[str, Any]) -> int | None:
    """At most one token per byte of the request's JSON; None when a message
    carries more than text (an image costs tokens by its size, not its URL)."""
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list) and not all(_is_text(part) for part in content):
            return None
    return len(
        orjson.dumps({name: body[name] for name in _INPUT_FIELDS if name in body})
    )


def call_bound_usd(
    target: Target, body: dict[str, Any], input_tokens: int, at: datetime
) -> Decimal | None:
    """The most one call to `target` can cost: its whole input, its output cap."""
    if target.price.source == "compute":
        # Busy time has no bound a request states.
        return None
    output_tokens = max_output_tokens(body, target)
    if output_tokens is None:
        return None
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return pricing.token_cost_usd(target.price, usage, at)


def max_output_tokens(body: dict[str, Any], target: Target) -> int | None:
    request = {**target.defaults, **body}
    cap = request.get("max_completion_tokens") or request.get("max_tokens")
    choices = request.get("n", 1)
    if not _count(cap) or not _count(choices):
        return None
    tokens: int = cap * choices
    return tokens


@dataclass(frozen=True)
class _Ask:
    """A request waiting to hold part of its key's budget."""

    hold: Hold
    budget_usd: Decimal
    unsettled_usd: Decimal
    answer: asyncio.Future[bool]


class Budgets:
    """Holds budgeted keys' requests in the store, and settles what it can't.

    The holds asked for while the store is busy go to it together, in one trip
    to the database thread. A request that cost more than it held (its bound
    was 0, or wrong) has spent the difference before its ledger row is
    written; this router counts that against the key itself until then.
    """

    def __init__(self, db: Database, reserve_usd: Decimal = Decimal(0)) -> None:
        self.db = db
        self.reserve_usd = reserve_usd
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._unsettled_usd: dict[str, Decimal] = {}
        self._unsettled_by_request: dict[str, tuple[str, Decimal]] = {}
        self._asks: list[_Ask] = []
        self._asking: asyncio.Task[None] | None = None

    async def hold(
        self, key: ApiKeyRecord, request_id: str, plan: Plan, body: dict[str, Any]
    ) -> Hold | None:
        """The request's hold on the key's budget; 429 when it does not fit."""
        budget_usd = key.budget_usd
        if budget_usd is None:
            return None
        bound = max_cost_usd(plan, body)
        amount_usd = self.reserve_usd if bound is None else bound
        hold = Hold(request_id, key.id, this_month(), amount_usd, self.holder)
        unsettled_usd = self._unsettled_usd.get(key.id, Decimal(0))
        if await self._ask(hold, budget_usd, unsettled_usd):
            return hold
        spend = await self.db.run(lambda store: store.key_spend(key.id, hold.month))
        raise over_budget(key, spend, unsettled_usd, amount_usd)

    async def _ask(
        self, hold: Hold, budget_usd: Decimal, unsettled_usd: Decimal
    ) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asks.append(_Ask(hold, budget_usd, unsettled_usd, answer))
        if self._asking is None:
            self._asking = asyncio.create_task(self._ask_store())
        return await answer

    async def _ask_store(self) -> None:
        """Put the holds asked for to the store, a batch at a time."""
        try:
            while self._asks:
                asks, self._asks = self._asks, []
                await self._answer(asks)
        finally:
            self._asking = None

    async def _answer(self, asks: list[_Ask]) -> None:
        wanted = [(ask.hold, ask.budget_usd, ask.unsettled_usd) for ask in asks]
        try:
            granted = await self.db.run(lambda store: store.reserve_all(wanted))
        except Exception as exc:
            for ask in asks:
                if not ask.answer.done():
                    ask.answer.set_exception(exc)
            return
        unused: list[str] = []
        for ask, held in zip(asks, granted, strict=True):
            if not ask.answer.done():
                ask.answer.set_result(held)
            elif held:
                # The request was cancelled while it waited: it went nowhere.
                unused.append(ask.hold.request_id)
        if unused:
            await self.db.run(lambda store: store.release(unused))

    def finished(self, entry: LedgerEntry, hold: Hold | None) -> None:
        """Count what a finished request spent beyond its hold."""
        if hold is None or entry.cost_usd is None:
            return
        beyond_usd = entry.cost_usd - hold.amount_usd
        if beyond_usd <= 0:
            return
        self._unsettled_by_request[entry.request_id] = (hold.key_id, beyond_usd)
        self._unsettled_usd[hold.key_id] = (
            self._unsettled_usd.get(hold.key_id, Decimal(0)) + beyond_usd
        )

    def written(self, entries: list[LedgerEntry]) -> None:
        """Rows written have settled their holds: stop counting them here."""
        for entry in entries:
            unsettled = self._unsettled_by_request.pop(entry.request_id, None)
            if unsettled is not None:
                key_id, beyond_usd = unsettled
                self._unsettled_usd[key_id] -= beyond_usd

    async def heartbeat(self) -> None:
        """Say this router is alive; give back the holds of dead ones."""
        stale = datetime.now(UTC) - timedelta(seconds=STALE_S)
        stale_before = stale.isoformat(timespec="milliseconds")
        released = await self.db.run(
            lambda store: store.heartbeat(self.holder, stale_before)
        )
        if released:
            logger.warning(
                "gave back %d budget holds of routers silent for %ds",
                released,
                STALE_S,
            )

    async def close(self) -> None:
        """Once every request has settled: leave the routers sharing the store."""
        await self.db.run(lambda store: store.forget_holder(self.holder))


def over_budget(
    key: ApiKeyRecord, spend: KeySpend, unsettled_usd: Decimal, amount_usd: Decimal
) -> ApiError:
    spent_usd = spend.spent_usd + unsettled_usd
    held = (
        f" (and ${spend.held_usd:.6f} is held by requests in flight)"
        if spend.held_usd
        else ""
    )
    asked = f"; this request may cost up to ${amount_usd:.6f}" if amount_usd else ""
    return ApiError(
        429,
        f"the key {key.name!r} has spent ${spent_usd:.6f}{held} of its monthly "
        f"budget of ${key.budget_usd}{asked}; it resets on the 1st (UTC), or use "
        "a key with a larger --budget-usd",
        kind="insufficient_quota",
        code="budget_exceeded",
        retry=False,
    )


def _is_text(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "text"


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
