"""The store on PostgreSQL: the same work gives the same figures as on SQLite,
and routers sharing one database hold a budget exactly.

These run against the server COSTROUTE_TEST_POSTGRES names (see
`tests.postgres`); `bash scripts/test.sh` starts one.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costroute.routes import Route, save_route
from costroute.server.budget import input_token_bound
from costroute.server.keys import this_month
from costroute.store import DbLocation, Hold, LedgerEntry, Store, now_iso
from tests.conftest import ITEMS, invoke, run_json, spam_answers, write_task
from tests.fakeserver import FakeServer
from tests.serving import (
    CHEAP_MTOK,
    Router,
    cost_usd,
    ledger,
    make_key,
    start_router,
    task_route,
)

# The same work, the same figures


def test_the_same_work_gives_the_same_figures_on_sqlite_and_postgresql(
    tmp_path: Path, fake: FakeServer, pg: str
) -> None:
    spam_answers(fake)
    task = write_task(tmp_path, fake.base_url)
    outcomes = _outcomes(tmp_path / "outcomes.jsonl")

    on_sqlite = _scenario(str(tmp_path / "store.db"), task, outcomes)
    on_postgres = _scenario(pg, task, outcomes)

    assert on_postgres == on_sqlite
    # The scenario measured something: both candidates, every item, an import.
    assert on_sqlite["decide"]["route"] == {"kind": "single", "model": "fake/strong"}
    assert len(on_sqlite["calls"]) == 2 * len(ITEMS)
    assert len(on_sqlite["imported_calls"]) == 2 * len(ITEMS)


def _scenario(db: str, task: Path, outcomes: Path) -> dict[str, Any]:
    """Measure, show, decide and import on one store; every figure it gives."""
    # One call at a time per model: a bootstrap interval depends on the order
    # in which the calls were stored, and concurrent calls come back in any.
    run = run_json(str(task), "--db", db, "--concurrency", "1")
    imported = _json("import", "outcomes", str(outcomes), "--task", str(task), db=db)
    figures = {
        "run": run,
        "show": _json("show", run["run_id"], db=db),
        "decide": _json("decide", run["run_id"], db=db),
        "import": imported,
        "show_import": _json("show", imported["run_id"], db=db),
        "decide_import": _json("decide", imported["run_id"], db=db),
    }
    with Store(db) as store:
        figures["calls"] = _calls(store, run["run_id"])
        figures["imported_calls"] = _calls(store, imported["run_id"])
        figures["prices"] = {
            model: asdict(price) for model, price in store.prices(run["run_id"]).items()
        }
        figures["items"] = [asdict(item) for item in store.items(run["run_id"])]
        figures["runs"] = [(r.task_name, r.source, r.status) for r in store.runs()]
    return _without_timing(figures)


def _json(*args: str, db: str | None = None) -> dict[str, Any]:
    where = ("--db", db) if db else ()
    result = invoke(*args, *where, "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _calls(store: Store, run_id: str) -> list[dict[str, Any]]:
    calls = [
        {**asdict(scored.call), "score": scored.score and asdict(scored.score)}
        for scored in store.scored_calls(run_id)
    ]
    # Calls are stored in the order they came back, which may differ.
    return sorted(calls, key=lambda call: (call["model"], call["item_id"]))


# Which run, when, and how long the fake server took: the only things two
# runs of the same work may differ in.
_TIMING = {
    "run_id",
    "id",
    "latency_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "started_s",
    "ended_s",
    "response_json",
}


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _without_timing(item)
            for key, item in value.items()
            if key not in _TIMING
        }
    if isinstance(value, list | tuple):
        return [_without_timing(item) for item in value]
    return value


def _outcomes(path: Path) -> Path:
    rows = []
    for model, right, cost in [
        ("openai/cheap", 9, "0.001"),
        ("openai/big", 12, "0.01"),
    ]:
        for n, item in enumerate(ITEMS):
            wrong = "ham" if item["label"] == "spam" else "spam"
            rows.append(
                {
                    "item_id": item["id"],
                    "model": model,
                    "output": item["label"] if n < right else wrong,
                    "cost_usd": cost,
                    "input_tokens": 100,
                    "output_tokens": 2,
                    "latency_ms": 250 + n,
                }
            )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# Budgets across routers

MAX_TOKENS = 8


def test_two_routers_on_one_database_never_pass_a_budget(
    tmp_path: Path, fake: FakeServer, pg: str
) -> None:
    allowed, sent = 10, 40
    messages = [{"role": "user", "content": "is this spam"}]
    # Every request costs exactly what it holds, so exactly `allowed` fit.
    fake.prompt_tokens = input_token_bound({"messages": messages})
    fake.completion_tokens = MAX_TOKENS
    fake.latency_ms = 30
    each_usd = cost_usd(CHEAP_MTOK, fake.prompt_tokens, MAX_TOKENS)
    budget_usd = each_usd * allowed
    routes = tmp_path / "routes.toml"
    route = task_route(Route(kind="single", model="fake/cheap"), fake.base_url)
    save_route(routes, "t", route)
    key = make_key(pg, "shared", "--budget-usd", str(budget_usd))
    routers = [start_router(routes, pg, tmp_path / f"router-{n}.log") for n in (1, 2)]
    try:
        statuses = _send(routers, key, messages, sent)
    finally:
        stopped = [router.stop() for router in routers]

    assert stopped == [0, 0]
    assert statuses.count(200) == allowed
    assert statuses.count(429) == sent - allowed
    rows = ledger(pg)
    assert len(rows) == sent
    spent_usd = sum(row.cost_usd or Decimal(0) for row in rows.values())
    assert spent_usd == budget_usd
    with Store(pg) as store:
        spend = store.key_spend(key.split("-")[1], this_month())
    assert spend.spent_usd == budget_usd and spend.held_usd == 0


def _send(
    routers: list[Router], key: str, messages: list[dict[str, str]], count: int
) -> list[int]:
    """`count` requests at once, half to each router; their statuses."""
    body = {"model": "route/t", "messages": messages, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {key}"}
    clients = [httpx.Client(base_url=router.url, timeout=30) for router in routers]

    def one(n: int) -> int:
        client = clients[n % len(clients)]
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        return response.status_code

    try:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def test_holds_settle_and_a_dead_routers_holds_are_given_back(
    location: DbLocation,
) -> None:
    month = now_iso()[:7]
    budget_usd = Decimal("0.00003")
    with Store(location) as store:

        def hold(request_id: str, holder: str = "alive") -> bool:
            held = Hold(request_id, "k", month, Decimal("0.00001"), holder)
            return store.reserve(held, budget_usd)

        assert [hold("r1"), hold("r2"), hold("r3", "dead"), hold("r4")] == [
            True,
            True,
            True,
            False,
        ]
        # r1 cost more than it held; r2 less.
        store.record_ledger(
            [_entry("r1", "0.000012"), _entry("r2", "0.000004")],
            [Hold(r, "k", month, Decimal("0.00001"), "alive") for r in ("r1", "r2")],
        )
        assert store.key_spend("k", month).spent_usd == Decimal("0.000016")
        assert store.key_spend("k", month).held_usd == Decimal("0.00001")
        assert not hold("r5")

        store.heartbeat("dead", now_iso())
        time.sleep(0.01)
        assert store.heartbeat("alive", now_iso()) == 1
        assert store.key_spend("k", month).held_usd == 0
        assert hold("r5") and not hold("r6")


def _entry(request_id: str, cost_usd: str) -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id,
        created_at=now_iso(),
        key_id="k",
        task="t",
        model="fake/cheap",
        status=200,
        latency_ms=1.0,
        cost_usd=Decimal(cost_usd),
    )


# Opening a PostgreSQL store


def test_a_postgresql_store_without_psycopg_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "costroute.store.postgres", raising=False)
    result = invoke("runs", "--db", "postgresql://127.0.0.1:1/costroute")

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: a postgresql:// store needs psycopg; install it: "
        "pip install 'costroute[postgres]'\n"
    )


def test_an_unreachable_server_is_an_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    result = invoke("runs", "--db", "postgresql://me:s3cret@127.0.0.1:1/costroute")

    assert result.exit_code == 2
    assert "me:***@127.0.0.1:1/costroute: cannot open the store" in result.stderr
    assert "s3cret" not in result.stderr


def test_costroute_db_selects_postgresql(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSTROUTE_DB", pg)
    created = invoke("keys", "create", "--name", "from-env")
    assert created.exit_code == 0, created.output

    with Store(pg) as store:
        assert [key.name for key in store.api_keys()] == ["from-env"]
