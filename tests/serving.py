"""Helpers for the router's tests: a fake upstream, routes, keys and the router.

The router runs as its own process (`python -m costroute serve --port 0`), so
signals, reloads and the ledger after shutdown are tested as a user meets them;
the fake upstream runs in a thread of the test process, so tests script its
answers and faults.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai

from costroute.routes import (
    CandidateSettings,
    DialsConfig,
    EscalationCheck,
    Evidence,
    ModelPrice,
    PriceSnapshot,
    Route,
    TaskRoute,
    save_route,
)
from costroute.store import DbLocation, LedgerEntry, Store
from costroute.task import ProviderConfig
from tests.conftest import invoke
from tests.fakeserver import FakeServer

CHEAP_MTOK = (Decimal("0.1"), Decimal("0.4"))
STRONG_MTOK = (Decimal("2.5"), Decimal("10"))
START_TIMEOUT_S = 20.0


def cost_usd(mtok: tuple[Decimal, Decimal], tokens_in: int, tokens_out: int) -> Decimal:
    return (tokens_in * mtok[0] + tokens_out * mtok[1]) / Decimal(1_000_000)


def price(mtok: tuple[Decimal, Decimal]) -> ModelPrice:
    return ModelPrice(source="override", input_mtok=mtok[0], output_mtok=mtok[1])


PRICES = PriceSnapshot(
    catalog_version="test",
    taken_at="2026-01-01T00:00:00Z",
    models={
        "fake/cheap": price(CHEAP_MTOK),
        "fake/strong": price(STRONG_MTOK),
        "onprem/strong": price(STRONG_MTOK),
        "onprem/backup": price(CHEAP_MTOK),
        "slow/hang": price(STRONG_MTOK),
    },
)


def cascade(check: EscalationCheck) -> Route:
    return Route(
        kind="cascade", cheap="fake/cheap", strong="fake/strong", escalate_when=check
    )


def task_route(
    route: Route, base_url: str, fallbacks: tuple[str, ...] = (), **extra: Any
) -> TaskRoute:
    providers = {
        "fake": ProviderConfig(base_url=base_url),
        "onprem": ProviderConfig(base_url=base_url, self_hosted=True),
        "slow": ProviderConfig(base_url=base_url, timeout_s=0.5),
    }
    return TaskRoute(
        status="settled",
        decided_at="2026-01-01T00:00:00Z",
        reason="cheapest that clears the floor",
        route=route,
        fallbacks=list(fallbacks),
        prices=PRICES,
        providers=providers,
        **extra,
    )


def write_routes(path: Path, base_url: str) -> None:
    single = Route(kind="single", model="fake/strong")
    routes = {
        "spam": task_route(
            cascade(EscalationCheck(check="labels", labels=["spam", "ham"])),
            base_url,
            evidence=Evidence(cost_per_result_usd=Decimal("0.00002"), quality=0.9),
        ),
        "extract": task_route(
            cascade(EscalationCheck(check="json", fields=["label"])), base_url
        ),
        "number": task_route(
            cascade(EscalationCheck(check="regex", pattern=r"^\d+$")), base_url
        ),
        "agree": task_route(
            cascade(EscalationCheck(check="agreement", samples=2)), base_url
        ),
        "single": task_route(single, base_url, ("fake/cheap",)),
        "budget": task_route(single, base_url),
        "feedback": task_route(Route(kind="single", model="fake/cheap"), base_url),
        "onprem": task_route(
            Route(kind="single", model="onprem/strong"),
            base_url,
            ("fake/cheap", "onprem/backup"),
            dials=DialsConfig(on_prem_only=True),
            candidates={"onprem/backup": CandidateSettings(self_hosted=True)},
        ),
        "slow": task_route(
            Route(kind="single", model="slow/hang"), base_url, ("fake/cheap",)
        ),
    }
    for task, route in routes.items():
        save_route(path, task, route)


@dataclass
class Router:
    """`costroute serve` in a subprocess, logging at INFO to a file."""

    process: subprocess.Popen[str]
    url: str
    log: Path
    db: DbLocation

    def client(self, key: str | None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key or "", max_retries=0
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def start_router(routes: Path, db: DbLocation, log: Path, *args: str) -> Router:
    command = [
        sys.executable,
        "-m",
        "costroute",
        "--log-level",
        "INFO",
        "serve",
        "--routes",
        str(routes),
        "--port",
        "0",
        "--db",
        str(db),
        *args,
    ]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("Serving on "):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(f"router did not start: {line!r}\n{log.read_text()}")
    url = line.split()[2]
    wait_healthy(url)
    return Router(process, url, log, db)


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never became healthy")
        time.sleep(0.05)


def make_key(db: DbLocation, name: str, *budget: str) -> str:
    result = invoke("keys", "create", "--name", name, "--db", str(db), *budget)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def ledger(db: DbLocation) -> dict[str, LedgerEntry]:
    with Store(db) as store:
        return {entry.request_id: entry for entry in store.ledger()}


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def ask(
    client: openai.OpenAI, model: str, text: str = "is this spam", **extra: Any
) -> Any:
    """A raw response, so tests see the router's headers."""
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.with_raw_response.create(
        model=model, messages=messages, **extra
    )


@dataclass
class Setup:
    fake: FakeServer
    router: Router
    key: str
    routes: Path


def running(directory: Path) -> Iterator[Setup]:
    """A fake upstream and a router on every route of `write_routes`."""
    with FakeServer(models=("cheap", "strong")) as fake:
        routes = directory / "routes.toml"
        write_routes(routes, fake.base_url)
        db = directory / "ledger.db"
        key = make_key(db, "tests")
        router = start_router(routes, db, directory / "router.log")
        try:
            yield Setup(fake, router, key, routes)
        finally:
            router.stop()


def reset(setup: Setup) -> Setup:
    """The shared router, with the fake upstream as new."""
    fake = setup.fake
    fake.clear_faults()
    fake.reset_counts()
    fake.model_answers = {}
    fake.answer = fake.answer_from_table
    fake.default_answer = "ok"
    fake.prompt_tokens = None
    fake.completion_tokens = None
    return setup


def header(raw: Any, name: str) -> str:
    value = raw.headers.get(name)
    assert value is not None, f"no {name} header"
    return str(value)
