"""From the routes file to plans: which models a request tries, in what order.

`route/<task>` takes the task's decided route: one model, or a cascade's cheap
model, its check and the strong model, then the task's fallbacks, minus any
that break a hard constraint (`dials.on_prem_only` keeps only self-hosted
models). Any other `provider/model` passes through to that model. Providers
resolve as `costroute.providers` resolves a task's: the presets plus the
routes file's `[providers]` sections, keys from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from costroute import pricing
from costroute.errors import UsageError
from costroute.pricing import Price
from costroute.providers import PRESETS, Endpoint, openai_endpoint
from costroute.routes import (
    EscalationCheck,
    ModelPrice,
    RoutesFile,
    TaskRoute,
    load_routes,
)
from costroute.server import escalation
from costroute.server.errors import not_found
from costroute.task import ProviderConfig

logger = logging.getLogger(__name__)

ROUTE_PREFIX = "route/"
_PASSTHROUGH_CACHE = 1024


@dataclass(frozen=True)
class Target:
    """One model as the router calls it: where, with which key, at what price."""

    model: str
    upstream_model: str
    endpoint: Endpoint
    price: Price
    self_hosted: bool
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.endpoint.base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {**self.endpoint.headers, "Content-Type": "application/json"}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        return headers

    def timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        timeout_s = self.endpoint.timeout_s
        connect_s = min(timeout_s, 10.0)
        if stream:
            # A long answer may stream for minutes; what matters is silence.
            return aiohttp.ClientTimeout(sock_connect=connect_s, sock_read=timeout_s)
        return aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_s)


@dataclass(frozen=True)
class Plan:
    """What one request tries: a cascade's cheap stage, then `chain` in order."""

    task: str | None
    chain: tuple[Target, ...]
    cheap: Target | None = None
    check: EscalationCheck | None = None


class RouteTable:
    """The plans of one routes file; a reload builds a new table and swaps it in."""

    def __init__(self, routes: RoutesFile, source: str = "routes file") -> None:
        self.routes = routes
        self.providers = _merged_providers(routes)
        self.snapshots = _merged_snapshots(routes)
        self.plans: dict[str, Plan] = {}
        for task, route in routes.routes.items():
            if route.route is not None:
                self.plans[task] = _plan(task, route, self.providers, source)
        self._passthrough: dict[str, Target] = {}

    def plan(self, model: str) -> Plan:
        if model.startswith(ROUTE_PREFIX):
            return self._route_plan(model[len(ROUTE_PREFIX) :])
        target = self._passthrough.get(model)
        if target is None:
            target = self._passthrough_target(model)
        return Plan(task=None, chain=(target,))

    def _route_plan(self, task: str) -> Plan:
        plan = self.plans.get(task)
        if plan is not None:
            return plan
        route = self.routes.routes.get(task)
        if route is not None:
            raise not_found(
                f"task {task!r} has no route ({route.status}: {route.reason})",
                "route_not_found",
            )
        known = ", ".join(f"route/{name}" for name in sorted(self.plans)) or "none"
        raise not_found(
            f"no route for task {task!r} in the routes file; known: {known}",
            "route_not_found",
        )

    def _passthrough_target(self, model: str) -> Target:
        target = make_target(model, self.providers, None, self.snapshots.get(model))
        if target is None:
            known = ", ".join(sorted({*PRESETS, *self.providers}))
            raise not_found(
                f"unknown model {model!r}; use route/<task> or provider/model with "
                f"a provider of {known}"
            )
        # Any model name of a known provider passes, so the cache is bounded.
        if len(self._passthrough) < _PASSTHROUGH_CACHE:
            self._passthrough[model] = target
        return target


def make_target(
    model: str,
    providers: dict[str, ProviderConfig],
    route: TaskRoute | None,
    snapshot: ModelPrice | None = None,
) -> Target | None:
    """The model ref as a callable target, or None when no provider serves it.

    Its price is the one its route recorded (`snapshot` for a pass-through
    model that some route prices), else the provider's hourly rate, else the
    catalog's; a model none of them prices costs "unknown", never $0.
    """
    provider, _, name = model.partition("/")
    if not name:
        return None
    config = providers.get(provider)
    endpoint = openai_endpoint(provider, config)
    if endpoint is None:
        return None
    settings = route.candidates.get(model) if route is not None else None
    defaults: dict[str, Any] = {}
    if settings is not None:
        if settings.max_tokens is not None:
            defaults["max_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            defaults["temperature"] = settings.temperature
    self_hosted = endpoint.self_hosted or bool(settings and settings.self_hosted)
    if route is not None and route.prices is not None:
        snapshot = route.prices.models.get(model, snapshot)
    price = _price(model, snapshot, config, self_hosted)
    return Target(model, name, endpoint, price, self_hosted, defaults)


def _plan(
    task: str, route: TaskRoute, providers: dict[str, ProviderConfig], source: str
) -> Plan:
    where = f"{source}: routes.{task}"
    decided = route.route
    assert decided is not None
    models = decided.models()
    if not models or (decided.kind == "cascade" and len(models) != 2):
        raise UsageError(f"{where}.route: names no model to call")
    merged = {**providers, **route.providers}
    targets = [_target(model, merged, route, where) for model in models]
    fallbacks = [
        _target(model, merged, route, where)
        for model in route.fallbacks
        if model not in models
    ]
    if route.dials.on_prem_only:
        fallbacks = _on_prem(fallbacks, route, task)
    if decided.kind == "single":
        return Plan(task, (targets[0], *fallbacks))
    check = decided.escalate_when
    if check is None:
        raise UsageError(f"{where}.route: a cascade needs escalate_when")
    escalation.validate(check, f"{where}.route.escalate_when")
    return Plan(task, (targets[1], *fallbacks), cheap=targets[0], check=check)


def _target(
    model: str, providers: dict[str, ProviderConfig], route: TaskRoute, where: str
) -> Target:
    target = make_target(model, providers, route)
    if target is None:
        raise UsageError(
            f"{where}: no provider serves {model!r} over the OpenAI API; add a "
            f"[routes.<task>.providers.NAME] section with base_url"
        )
    if target.endpoint.missing_key:
        logger.warning(
            "%s: %s needs %s set for the router", where, model, target.endpoint.key_env
        )
    return target


def _on_prem(fallbacks: list[Target], route: TaskRoute, task: str) -> list[Target]:
    kept = [target for target in fallbacks if target.self_hosted]
    for target in fallbacks:
        if not target.self_hosted:
            logger.warning(
                "route/%s: fallback %s is not self-hosted and the task is "
                "on_prem_only; it is never used",
                task,
                target.model,
            )
    return kept


def _merged_providers(routes: RoutesFile) -> dict[str, ProviderConfig]:
    merged: dict[str, ProviderConfig] = {}
    for task, route in routes.routes.items():
        for name, config in route.providers.items():
            if name in merged and merged[name] != config:
                logger.warning(
                    "provider %s differs between tasks; pass-through uses the first; "
                    "route/%s keeps its own",
                    name,
                    task,
                )
                continue
            merged[name] = config
    return merged


def _merged_snapshots(routes: RoutesFile) -> dict[str, ModelPrice]:
    merged: dict[str, ModelPrice] = {}
    for route in routes.routes.values():
        if route.prices is not None:
            for model, price in route.prices.models.items():
                merged.setdefault(model, price)
    return merged


def _price(
    model: str,
    snapshot: ModelPrice | None,
    config: ProviderConfig | None,
    self_hosted: bool,
) -> Price:
    if snapshot is not None:
        if snapshot.hourly_usd is not None:
            return pricing.compute_price(model, snapshot.hourly_usd, snapshot.gpus)
        if snapshot.source == "catalog":
            found = pricing.catalog_price(model)
            if found is not None:
                return found
        if snapshot.input_mtok is not None and snapshot.output_mtok is not None:
            return pricing.override_price(
                model,
                snapshot.input_mtok,
                snapshot.output_mtok,
                snapshot.cache_read_mtok,
                snapshot.cache_write_mtok,
            )
    if config is not None and config.hourly_usd is not None:
        return pricing.compute_price(model, config.hourly_usd, config.gpus)
    if self_hosted:
        return pricing.unpriced(model)
    return pricing.catalog_price(model) or pricing.unpriced(model)


class RoutesWatcher:
    """Reloads the routes file on SIGHUP or when its mtime changes.

    A file that does not load is logged and ignored; the old table stays.
    Requests already planned keep their plan, so a reload drops none.
    """

    def __init__(
        self, path: Path, swap: Callable[[RouteTable], None], poll_s: float = 1.0
    ) -> None:
        self.path = path
        self.swap = swap
        self.poll_s = poll_s
        self._stamp = _stamp(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Signals can be caught only on the main thread.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.poll_s > 0:
            self._task = asyncio.create_task(self._poll(), name="costroute-reload")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def reload(self) -> bool:
        try:
            table = RouteTable(load_routes(self.path), str(self.path))
        except UsageError as exc:
            logger.error("%s; keeping the routes loaded before", exc)
            return False
        self.swap(table)
        logger.info("reloaded %s: %d routes", self.path, len(table.plans))
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            stamp = _stamp(self.path)
            if stamp != self._stamp:
                self._stamp = stamp
                self.reload()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
