"""The router's ASGI application: endpoints, lifespan, per-request accounting.

Endpoints: `POST /v1/chat/completions` (see `chat`), `POST /v1/feedback`,
`GET /v1/routes`, `GET /v1/models`, `GET /metrics`, `GET /healthz`. Every
request ends in `finish`: its ledger row is queued (settling its budget hold
when written), its metrics counted and one INFO line logged, never with a body
or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeGuard

from costroute.routes import TaskRoute
from costroute.server import chat
from costroute.server.budget import Budgets
from costroute.server.errors import ApiError, bad_request, not_found
from costroute.server.http import (
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_bytes,
    send_error,
    send_json,
)
from costroute.server.keys import KeyRing
from costroute.server.ledger import Database, LedgerWriter
from costroute.server.metrics import Metrics
from costroute.server.routing import RoutesWatcher, RouteTable
from costroute.server.upstream import Upstream
from costroute.store import (
    ApiKeyRecord,
    DbLocation,
    LedgerEntry,
    TaskTotals,
    now_iso,
)

logger = logging.getLogger(__name__)

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AppOptions:
    routes_path: Path
    db_path: DbLocation
    auth: bool = True
    retries: int = 2
    poll_s: float = 1.0
    keys_refresh_s: float = 2.0
    reserve_usd: Decimal = Decimal(0)


class App:
    """One server process: its routes, keys, ledger, upstream pool and metrics."""

    def __init__(
        self,
        table: RouteTable,
        options: AppOptions,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.table = table
        self.options = options
        self.on_ready = on_ready
        self.db = Database(options.db_path)
        self.keys = KeyRing(self.db)
        self.budgets = Budgets(self.db, options.reserve_usd)
        self.ledger = LedgerWriter(self.db, self.budgets.written)
        self.upstream = Upstream(retries=options.retries)
        self.metrics = Metrics()
        self.watcher = RoutesWatcher(options.routes_path, self._swap, options.poll_s)
        self._refresher: asyncio.Task[None] | None = None
        self._handlers: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/feedback"): self._feedback,
            ("GET", "/v1/routes"): self._routes,
            ("GET", "/v1/models"): self._models,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/healthz"): self._healthz,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/") or "/"
        handler = self._handlers.get((scope["method"], path))
        try:
            if handler is None:
                raise self._no_route(scope["method"], path)
            await handler(scope, receive, send)
        except ApiError as error:
            await send_error(send, error)

    def _no_route(self, method: str, path: str) -> ApiError:
        if any(known == path for _, known in self._handlers):
            return ApiError(405, f"{method} is not allowed on {path}")
        return not_found(f"no endpoint {method} {path}", "unknown_url")

    # Lifespan

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await self.startup()
        except Exception as exc:
            logger.exception("the router could not start")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> None:
        await self.keys.refresh()
        await self.budgets.heartbeat()
        self.ledger.start()
        await self.upstream.start()
        self.watcher.start()
        self._refresher = asyncio.create_task(self._refresh_keys())
        if self.on_ready is not None:
            self.on_ready()

    async def shutdown(self) -> None:
        """Runs once requests in flight are done: write the ledger, close."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        self.watcher.stop()
        await self.ledger.close()
        try:
            await self.budgets.close()
        except Exception as exc:
            logger.warning("could not leave the routers sharing the store: %s", exc)
        await self.upstream.close()
        await self.db.close()

    async def _refresh_keys(self) -> None:
        while True:
            await asyncio.sleep(self.options.keys_refresh_s)
            try:
                await self.keys.refresh()
                await self.budgets.heartbeat()
            except Exception as exc:
                logger.warning("could not refresh keys or the heartbeat: %s", exc)

    def _swap(self, table: RouteTable) -> None:
        self.table = table

    # Requests

    async def authenticate(self, scope: Scope) -> ApiKeyRecord | None:
        """The caller's key (None without auth); 401 when refused."""
        if not self.options.auth:
            return None
        return await self.keys.authenticate(header(scope, b"authorization"))

    def finish(self, exchange: chat.Exchange) -> None:
        """Account for a finished chat request, off the response path."""
        latency_ms = (time.perf_counter() - exchange.started_s) * 1000
        spend = exchange.spend
        entry = LedgerEntry(
            request_id=exchange.request_id,
            created_at=now_iso(),
            key_id=exchange.key.id if exchange.key else None,
            task=exchange.task,
            model=exchange.model,
            status=exchange.status,
            latency_ms=round(latency_ms, 3),
            input_tokens=spend.input_tokens,
            output_tokens=spend.output_tokens,
            cost_usd=spend.total_usd,
            cost_estimated=spend.estimated,
            escalated=exchange.escalated,
            stream=exchange.stream,
            calls=spend.calls,
            error=exchange.error,
        )
        self.budgets.finished(entry, exchange.hold)
        self.ledger.submit(entry, exchange.hold)
        self.metrics.observe(
            entry.task,
            entry.model,
            entry.status,
            latency_ms / 1000,
            entry.cost_usd,
            entry.escalated,
        )
        logger.info(
            "POST %s model=%s status=%d latency_ms=%.1f cost_usd=%s",
            exchange.requested or "-",
            entry.model or "-",
            entry.status,
            latency_ms,
            "unknown" if entry.cost_usd is None else f"{entry.cost_usd:f}",
        )

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await chat.handle(self, scope, receive, send)

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = await self.authenticate(scope)
        request_id, score = parse_feedback(await read_body(receive))
        # The request's row may still be queued.
        await self.ledger.flush()
        entry = await self.db.run(lambda store: store.ledger_entry(request_id))
        if entry is None or (key is not None and entry.key_id != key.id):
            raise not_found(
                f"no request {request_id!r} made with this key; send the "
                "x-costroute-request-id of a response",
                "request_not_found",
            )
        await self.db.run(lambda store: store.record_feedback(request_id, score))
        answer = {"request_id": request_id, "task": entry.task, "score": score}
        await send_json(send, 200, answer)

    async def _routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.authenticate(scope)
        await self.ledger.flush()
        totals = await self.db.run(lambda store: store.task_totals())
        routes = [
            route_view(task, route, totals.get(task, TaskTotals()))
            for task, route in self.table.routes.routes.items()
        ]
        passthrough = live_view(totals.get("", TaskTotals()))
        await send_json(send, 200, {"routes": routes, "passthrough": passthrough})

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.authenticate(scope)
        data = [
            {
                "id": f"route/{task}",
                "object": "model",
                "created": 0,
                "owned_by": "costroute",
            }
            for task in sorted(self.table.plans)
        ]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        gauges = {"ledger_pending_rows": float(self.ledger.pending)}
        text = self.metrics.render(gauges)
        await send_bytes(send, 200, text.encode(), METRICS_TYPE)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = {
            "status": "ok",
            "routes": len(self.table.plans),
            "ledger_pending_rows": self.ledger.pending,
        }
        await send_json(send, 200, status)


def parse_feedback(raw: bytes) -> tuple[str, float]:
    """The request id and its score in 0–1 from `{request_id, correct|score}`."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("the body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
        raise bad_request(
            'send {"request_id": "...", "correct": true} or a "score" in 0-1',
            "missing_request_id",
        )
    correct, score = body.get("correct"), body.get("score")
    if isinstance(correct, bool) and score is None:
        return body["request_id"], 1.0 if correct else 0.0
    if _is_score(score) and correct is None:
        return body["request_id"], float(score)
    raise bad_request(
        'send either "correct": true/false or "score": a number in 0-1',
        "invalid_score",
    )


def _is_score(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= 1


def route_view(task: str, route: TaskRoute, totals: TaskTotals) -> dict[str, Any]:
    """A route as decided, its measured prediction and its live numbers."""
    decided = route.route
    return {
        "task": task,
        "model": f"route/{task}",
        "status": route.status,
        "reason": route.reason,
        "route": decided.model_dump(mode="json", exclude_none=True)
        if decided
        else None,
        "fallbacks": route.fallbacks,
        "measured": route.evidence.model_dump(mode="json"),
        "live": live_view(totals),
    }


def live_view(totals: TaskTotals) -> dict[str, Any]:
    """Live spend and cost per result.

    Cost per result divides the spend of the requests that got feedback by the
    sum of their scores, so feedback on a sample of requests still estimates it.
    """
    cost_per_result = None
    if totals.feedback_results > 0 and totals.feedback_unpriced == 0:
        cost_per_result = totals.feedback_spent_usd / Decimal(
            repr(totals.feedback_results)
        )
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "escalation_rate": (
            totals.escalated / totals.requests if totals.requests else None
        ),
        "spend_usd": _money(totals.spent_usd),
        "unpriced_requests": totals.unpriced,
        "feedback": totals.feedback,
        "results": totals.feedback_results,
        "feedback_spend_usd": _money(totals.feedback_spent_usd),
        "cost_per_result_usd": _money(cost_per_result),
    }


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"
