"""The router's operations: keys and budgets, feedback, metrics, reloads,
shutdown and workers.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from costroute.routes import Route, save_route
from costroute.server.metrics import Metrics
from costroute.store import Store
from tests.conftest import invoke
from tests.fakeserver import FakeServer
from tests.serving import (
    CHEAP_MTOK,
    Setup,
    ask,
    cost_usd,
    header,
    ledger,
    make_key,
    reset,
    running,
    start_router,
    task_route,
    wait_for,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from running(tmp_path_factory.mktemp("serve"))


@pytest.fixture
def env(setup: Setup) -> Setup:
    return reset(setup)


@pytest.fixture
def client(env: Setup) -> Iterator[openai.OpenAI]:
    with env.router.client(env.key) as client:
        yield client


# Keys and budgets


def test_bad_missing_and_revoked_keys_are_401(env: Setup) -> None:
    missing = httpx.post(f"{env.router.url}/v1/chat/completions", json={})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    for key in ["crk-nope-nope", env.key + "x", "sk-something"]:
        with (
            env.router.client(key) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            ask(client, "route/single")

    fresh = make_key(env.router.db, "fresh")
    with env.router.client(fresh) as client:
        # A key made while the server runs works at once.
        assert ask(client, "route/single").http_response.status_code == 200
        result = invoke("keys", "revoke", "fresh", "--db", str(env.router.db))
        assert result.exit_code == 0, result.output

        def refused() -> bool:
            try:
                ask(client, "route/single")
            except openai.AuthenticationError:
                return True
            return False

        wait_for(refused, timeout_s=6.0)


def test_a_key_over_its_budget_gets_429(env: Setup) -> None:
    key = make_key(env.router.db, "small", "--budget-usd", "0.00002")
    with env.router.client(key) as client:
        # A streamed call counts against the budget too: 3 + 1 tokens at the
        # strong price is $0.0000175, then one more passes it.
        stream = client.chat.completions.create(
            model="route/budget",
            messages=[{"role": "user", "content": "is this spam"}],
            stream=True,
        )
        list(stream)
        ask(client, "route/budget")
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "route/budget")

    assert "budget" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert env.fake.calls_by_model == {"strong": 2}


# Feedback and live cost per result


def test_feedback_gives_live_cost_per_result_next_to_the_measured_one(
    env: Setup, client: openai.OpenAI
) -> None:
    ids = [
        header(ask(client, "route/feedback"), "x-costroute-request-id")
        for _ in range(3)
    ]
    for request_id, correct in zip(ids, [True, True, False], strict=True):
        response = httpx.post(
            f"{env.router.url}/v1/feedback",
            json={"request_id": request_id, "correct": correct},
            headers={"Authorization": f"Bearer {env.key}"},
        )
        assert response.status_code == 200, response.text

    routes = httpx.get(
        f"{env.router.url}/v1/routes", headers={"Authorization": f"Bearer {env.key}"}
    ).json()["routes"]
    view = {route["task"]: route for route in routes}
    live = view["feedback"]["live"]
    spend = cost_usd(CHEAP_MTOK, 3, 1) * 3
    assert live["requests"] == 3 and live["feedback"] == 3 and live["results"] == 2
    assert Decimal(live["spend_usd"]) == spend
    assert Decimal(live["cost_per_result_usd"]) == spend / 2
    assert view["spam"]["measured"]["cost_per_result_usd"] == "0.00002"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"request_id": "cr-unknown", "correct": True}, 404),
        ({"request_id": "cr-unknown"}, 400),
        ({"request_id": "cr-unknown", "score": 1.5}, 400),
        ({"correct": True}, 400),
    ],
)
def test_bad_feedback(env: Setup, body: dict[str, Any], status: int) -> None:
    response = httpx.post(
        f"{env.router.url}/v1/feedback",
        json=body,
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert response.status_code == status
    assert "error" in response.json()


# Metrics, health and the request log


def test_metrics_text(env: Setup, client: openai.OpenAI) -> None:
    ask(client, "route/single")
    text = httpx.get(f"{env.router.url}/metrics").text

    assert (
        'costroute_requests_total{task="single",model="fake/strong",status="200"}'
        in text
    )
    bucket = 'task="single",model="fake/strong",le="+Inf"'
    assert f"costroute_request_duration_seconds_bucket{{{bucket}}}" in text
    assert "costroute_spend_usd_total" in text and "costroute_errors_total" in text
    assert httpx.get(f"{env.router.url}/healthz").json()["status"] == "ok"


def test_metrics_histogram_counts_add_up() -> None:
    metrics = Metrics()
    for latency_s in (0.001, 0.02, 0.02, 100.0):
        metrics.observe("t", "m", 200, latency_s, Decimal("0.5"), False)
    text = metrics.render({})
    assert (
        'costroute_request_duration_seconds_bucket{task="t",model="m",le="0.025"} 3'
        in text
    )
    assert 'costroute_request_duration_seconds_count{task="t",model="m"} 4' in text
    assert 'costroute_spend_usd_total{task="t",model="m"} 2.0' in text


def test_one_log_line_per_request_without_bodies_or_keys(
    env: Setup, client: openai.OpenAI
) -> None:
    ask(client, "route/single", "a very secret message")
    wait_for(lambda: "route/single" in env.router.log.read_text())
    log = env.router.log.read_text()
    assert "POST route/single" in log and "status=200" in log
    assert "secret" not in log and env.key not in log


# Reloads


def test_reload_on_file_change_and_a_broken_file_keeps_the_old_routes(
    tmp_path: Path, fake: FakeServer
) -> None:
    routes = tmp_path / "routes.toml"
    save_route(
        routes,
        "first",
        task_route(Route(kind="single", model="fake/cheap"), fake.base_url),
    )
    router = start_router(
        routes, tmp_path / "db", tmp_path / "log", "--no-auth", "--reload-poll", "0.1"
    )
    try:
        with router.client("unused") as client:
            with pytest.raises(openai.NotFoundError):
                ask(client, "route/second")
            save_route(
                routes,
                "second",
                task_route(Route(kind="single", model="fake/strong"), fake.base_url),
            )

            def served() -> bool:
                try:
                    return ask(client, "route/second").http_response.status_code == 200
                except openai.NotFoundError:
                    return False

            wait_for(served)
            routes.write_text(routes.read_text() + "\n[[[broken", encoding="utf-8")
            wait_for(
                lambda: "keeping the routes loaded before" in router.log.read_text()
            )
            assert (
                header(ask(client, "route/second"), "x-costroute-model")
                == "fake/strong"
            )
    finally:
        assert router.stop() == 0


def test_reload_on_sighup(tmp_path: Path, fake: FakeServer) -> None:
    routes = tmp_path / "routes.toml"
    save_route(
        routes,
        "first",
        task_route(Route(kind="single", model="fake/cheap"), fake.base_url),
    )
    router = start_router(
        routes, tmp_path / "db", tmp_path / "log", "--no-auth", "--reload-poll", "0"
    )
    try:
        save_route(
            routes,
            "first",
            task_route(Route(kind="single", model="fake/strong"), fake.base_url),
        )
        router.process.send_signal(signal.SIGHUP)
        with router.client("unused") as client:
            wait_for(
                lambda: (
                    header(ask(client, "route/first"), "x-costroute-model")
                    == "fake/strong"
                )
            )
    finally:
        router.stop()


# Shutdown and workers


def test_sigterm_drains_requests_in_flight_and_writes_the_ledger(
    tmp_path: Path, fake: FakeServer
) -> None:
    routes = tmp_path / "routes.toml"
    save_route(
        routes,
        "slow",
        task_route(Route(kind="single", model="fake/cheap"), fake.base_url),
    )
    db = tmp_path / "ledger.db"
    key = make_key(db, "drain")
    router = start_router(routes, db, tmp_path / "log")
    fake.latency_ms = 500

    def call(_: int) -> str:
        with router.client(key) as client:
            return header(ask(client, "route/slow"), "x-costroute-request-id")

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, n) for n in range(8)]
        wait_for(lambda: fake.calls == 8)
        assert router.stop() == 0
        ids = [future.result() for future in futures]

    rows = ledger(db)
    assert set(ids) <= set(rows)
    assert all(rows[request_id].status == 200 for request_id in ids)


def test_workers_share_the_port_and_the_ledger(
    tmp_path: Path, fake: FakeServer
) -> None:
    routes = tmp_path / "routes.toml"
    save_route(
        routes, "t", task_route(Route(kind="single", model="fake/cheap"), fake.base_url)
    )
    db = tmp_path / "ledger.db"
    key = make_key(db, "workers")
    router = start_router(routes, db, tmp_path / "log", "--workers", "2")
    with router.client(key) as client:
        ids = {
            header(ask(client, "route/t"), "x-costroute-request-id") for _ in range(20)
        }
    assert router.stop() == 0
    assert set(ledger(db)) == ids


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    result = invoke(
        "serve", "--routes", str(tmp_path / "r.toml"), "--no-auth", "--host", "0.0.0.0"
    )
    assert result.exit_code == 2
    assert "Error: --no-auth is refused on 0.0.0.0" in result.stderr


def test_keys_cli_shows_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    key = make_key(db, "ci", "--budget-usd", "5")
    listing = invoke("keys", "list", "--db", str(db))

    assert key.startswith("crk-") and key not in listing.output
    assert "ci" in listing.output and "active" in listing.output
    with Store(db) as store:
        (record,) = store.api_keys()
    assert key not in json.dumps(record.__dict__, default=str)
    assert invoke("keys", "revoke", "ci", "--db", str(db)).exit_code == 0
    assert "revoked" in invoke("keys", "list", "--db", str(db)).output
    assert invoke("keys", "revoke", "ci", "--db", str(db)).exit_code == 2
