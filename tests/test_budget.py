"""The most a routed request can cost, which it holds of its key's budget."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costroute.routes import CandidateSettings, Route, load_routes, save_route
from costroute.server.budget import Budgets, input_token_bound, max_cost_usd
from costroute.server.keys import this_month
from costroute.server.ledger import Database
from costroute.server.routing import RouteTable
from costroute.store import ApiKeyRecord, KeySpend, now_iso
from tests.serving import CHEAP_MTOK, STRONG_MTOK, cost_usd, task_route, write_routes

MESSAGES = [{"role": "user", "content": "is this spam"}]


@pytest.fixture
def table(tmp_path: Path) -> RouteTable:
    path = tmp_path / "routes.toml"
    write_routes(path, "http://127.0.0.1:9/v1")
    capped = task_route(
        Route(kind="single", model="fake/cheap"),
        "http://127.0.0.1:9/v1",
        candidates={"fake/cheap": CandidateSettings(max_tokens=16)},
    )
    save_route(path, "capped", capped)
    return RouteTable(load_routes(path))


def _bound(table: RouteTable, model: str, **body: Any) -> Decimal | None:
    return max_cost_usd(table.plan(model), {"messages": MESSAGES, **body})


def test_a_request_holds_its_whole_input_and_its_output_cap(
    table: RouteTable,
) -> None:
    input_tokens = input_token_bound({"messages": MESSAGES})
    assert input_tokens == len(
        '{"messages":[{"role":"user","content":"is this spam"}]}'
    )

    assert _bound(table, "route/feedback", max_tokens=10) == cost_usd(
        CHEAP_MTOK, input_tokens, 10
    )
    # max_completion_tokens wins, as upstream; n answers cost n times the cap.
    both = {"max_tokens": 10, "max_completion_tokens": 5, "n": 3}
    assert _bound(table, "route/feedback", **both) == cost_usd(
        CHEAP_MTOK, input_tokens, 15
    )
    # The route's candidate settings cap a request that does not.
    assert _bound(table, "route/capped") == cost_usd(CHEAP_MTOK, input_tokens, 16)


def test_fallbacks_hold_the_dearest_and_a_cascade_adds_its_cheap_samples(
    table: RouteTable,
) -> None:
    input_tokens = input_token_bound({"messages": MESSAGES})
    cheap = cost_usd(CHEAP_MTOK, input_tokens, 10)
    strong = cost_usd(STRONG_MTOK, input_tokens, 10)

    assert _bound(table, "route/single", max_tokens=10) == strong
    assert _bound(table, "route/spam", max_tokens=10) == cheap + strong
    assert _bound(table, "route/agree", max_tokens=10) == 2 * cheap + strong


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"max_tokens": True},
        {"max_tokens": 10, "n": 0},
        {
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "x"}}],
                }
            ],
        },
    ],
)
def test_no_bound_without_an_output_cap_or_with_an_image(
    table: RouteTable, body: dict[str, Any]
) -> None:
    assert _bound(table, "route/feedback", **body) is None


def test_no_bound_for_a_model_without_a_token_price(table: RouteTable) -> None:
    assert _bound(table, "fake/unpriced-model", max_tokens=10) is None


def test_a_request_cancelled_while_it_waits_for_its_hold_gives_it_back(
    table: RouteTable, tmp_path: Path
) -> None:
    key = ApiKeyRecord("k", "k", "", Decimal(1), now_iso())
    body = {"messages": MESSAGES, "max_tokens": 10}

    async def cancel_while_waiting() -> KeySpend:
        db = Database(tmp_path / "store.db")
        budgets = Budgets(db)
        waiting = asyncio.create_task(
            budgets.hold(key, "r1", table.plan("route/feedback"), body)
        )
        await asyncio.sleep(0)
        waiting.cancel()
        while budgets._asking is not None:
            await asyncio.sleep(0.01)
        spend = await db.run(lambda store: store.key_spend("k", this_month()))
        await db.close()
        return spend

    assert asyncio.run(cancel_while_waiting()) == KeySpend()
