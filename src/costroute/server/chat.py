"""Chat completions through the router: plan, cascade, fallbacks, streaming.

A request's plan (see `routing`) says what to try. A cascade asks the cheap
model first, without streaming, runs the route's check on its answer and asks
the strong model only when the check says so. Then the chain: each model with
its retries, the next model when one still fails. A stream goes to the client
chunk by chunk as the upstream sends it; the upstream is always asked for usage
in the stream, and a stream that brings none is priced from its text and marked
estimated, never $0.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson

from costroute import pricing
from costroute.pricing import Usage
from costroute.providers.openai import parse_usage
from costroute.server import escalation
from costroute.server.errors import ApiError, bad_request
from costroute.server.http import (
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_bytes,
    send_error,
    start_stream,
    stream_chunk,
)
from costroute.server.routing import Plan, Target
from costroute.server.upstream import Completion, UpstreamError
from costroute.store import ApiKeyRecord, Hold

if TYPE_CHECKING:
    from costroute.server.app import App

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CHARS_PER_TOKEN = 4
_DONE = b"data: [DONE]\n\n"
_UNAVAILABLE = {None, 408, 429, 503, 504, 529}


@dataclass
class Spend:
    """What the upstream calls of one request used and cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: bool = False
    estimated: bool = False

    def add(
        self, target: Target, usage: Usage, busy_ms: float, estimated: bool = False
    ) -> None:
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.estimated |= estimated
        cost_usd = call_cost_usd(target, usage, busy_ms)
        if cost_usd is None:
            self.unpriced = True
        else:
            self.cost_usd += cost_usd

    @property
    def total_usd(self) -> Decimal | None:
        """The request's cost; None when a call had no known price."""
        return None if self.unpriced else self.cost_usd


@dataclass
class Exchange:
    """One chat request on its way through the router."""

    request_id: str
    started_s: float
    requested: str | None = None
    key: ApiKeyRecord | None = None
    hold: Hold | None = None
    task: str | None = None
    model: str | None = None
    stream: bool = False
    status: int = 200
    escalated: bool = False
    error: str | None = None
    responded: bool = False
    spend: Spend = field(default_factory=Spend)

    def headers(self) -> Headers:
        headers = [
            (b"x-costroute-request-id", self.request_id.encode()),
            (b"x-costroute-escalated", b"true" if self.escalated else b"false"),
        ]
        if self.model is not None:
            headers.append((b"x-costroute-model", _header_value(self.model)))
        return headers

    def cost_header(self) -> tuple[bytes, bytes]:
        return (b"x-costroute-cost-usd", _cost_text(self.spend.total_usd).encode())


# A random prefix per process and a counter: unique across workers and restarts,
# without a system call per request. Ids need not be secret; feedback on a
# request needs the key that made it.
_ID_PREFIX = f"cr-{secrets.token_hex(6)}"
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


def call_cost_usd(target: Target, usage: Usage, busy_ms: float) -> Decimal | None:
    """One call's cost at its target's price: metered, or by busy time."""
    if target.price.source == "compute":
        return pricing.compute_cost_usd(target.price, busy_ms)
    return pricing.token_cost_usd(target.price, usage, datetime.now(UTC))


async def handle(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    exchange = Exchange(new_request_id(), time.perf_counter())
    try:
        await _serve(app, exchange, scope, receive, send)
    except ApiError as error:
        exchange.status = error.status
        exchange.error = error.code or error.kind
        if not exchange.responded:
            headers = exchange.headers()
            if exchange.spend.calls:
                # A cascade whose strong model failed still paid for the cheap one.
                headers.append(exchange.cost_header())
            await send_error(send, error, headers)
    except Exception:
        # A bug, not the client's doing: uvicorn answers 500 and logs it.
        exchange.status, exchange.error = 500, "internal_error"
        raise
    finally:
        app.finish(exchange)


async def _serve(
    app: App, exchange: Exchange, scope: Scope, receive: Receive, send: Send
) -> None:
    exchange.key = await app.authenticate(scope)
    body = parse_body(await read_body(receive))
    exchange.requested = printable(body["model"])
    plan = app.table.plan(body["model"])
    exchange.task = plan.task
    if exchange.key is not None:
        exchange.hold = await app.budgets.hold(
            exchange.key, exchange.request_id, plan, body
        )
    exchange.stream = bool(body.get("stream"))
    if exchange.stream:
        await _stream(app, exchange, plan, body, send)
        return
    completion = await _answer(app, exchange, plan, body)
    headers = [*exchange.headers(), exchange.cost_header()]
    exchange.responded = True
    await send_bytes(send, 200, completion.body, headers=headers)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request, checked enough that a client mistake is a 400, not a 500."""
    try:
        body = orjson.loads(raw)
    except ValueError:
        raise bad_request(
            "the body is not valid JSON; send a chat completion request object",
            "invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "missing model; use route/<task> or provider/model", "missing_model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "missing messages; send a non-empty list of {role, content}",
            "missing_messages",
        )
    if not all(isinstance(message, dict) for message in messages):
        raise bad_request("each message must be an object with role and content")
    if not isinstance(body.get("stream", False), bool):
        raise bad_request("stream must be true or false")
    return body


def upstream_body(
    body: dict[str, Any], target: Target, *, stream: bool, logprobs: bool = False
) -> dict[str, Any]:
    """The client's request for `target`: its model name, route defaults filled."""
    request = {**target.defaults, **body, "model": target.upstream_model}
    request.pop("stream_options", None)
    if stream:
        options = body.get("stream_options")
        request["stream"] = True
        request["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    else:
        request.pop("stream", None)
    if logprobs:
        request["logprobs"] = True
    return request


async def _answer(
    app: App, exchange: Exchange, plan: Plan, body: dict[str, Any]
) -> Completion:
    if plan.cheap is not None:
        accepted = await _cheap_stage(app, exchange, plan, body)
        if accepted is not None:
            return accepted

    async def call(target: Target) -> Completion:
        request = upstream_body(body, target, stream=False)
        return await _complete(app, exchange, target, request)

    return await _chain(exchange, plan, call)


async def _complete(
    app: App, exchange: Exchange, target: Target, request: dict[str, Any]
) -> Completion:
    completion = await app.upstream.complete(target, request)
    usage = completion.usage
    estimated = usage is None
    if usage is None:
        usage = estimate_usage(request, completion.output)
    exchange.spend.add(target, usage, completion.busy_ms, estimated)
    return completion


async def _cheap_stage(
    app: App, exchange: Exchange, plan: Plan, body: dict[str, Any]
) -> Completion | None:
    """The cheap model's answer if the check passes it; None to escalate."""
    cheap, check = plan.cheap, plan.check
    assert cheap is not None and check is not None
    wants_logprobs = escalation.wants_logprobs(check)
    request = upstream_body(body, cheap, stream=False, logprobs=wants_logprobs)
    results = await asyncio.gather(
        *(
            _complete(app, exchange, cheap, request)
            for _ in range(escalation.samples(check))
        ),
        return_exceptions=True,
    )
    completions = [result for result in results if isinstance(result, Completion)]
    failures = [result for result in results if not isinstance(result, Completion)]
    for failure in failures:
        if not isinstance(failure, UpstreamError):
            raise failure
    if failures:
        reason: str | None = f"cheap model failed: {failures[0]}"
    else:
        outputs = [completion.output for completion in completions]
        responses = [completion.data for completion in completions]
        reason = escalation.escalation_reason(check, outputs, responses)
    if reason is None:
        exchange.model = cheap.model
        return completions[0]
    logger.debug("route/%s: escalating (%s)", plan.task, reason)
    exchange.escalated = True
    return None


async def _chain(
    exchange: Exchange, plan: Plan, call: Callable[[Target], Awaitable[T]]
) -> T:
    """The first model of the chain that answers, after its retries."""
    failures: list[str] = []
    statuses: list[int | None] = []
    for target in plan.chain:
        if target.endpoint.missing_key:
            failures.append(f"{target.model}: set {target.endpoint.key_env}")
            statuses.append(503)
            continue
        try:
            result = await call(target)
        except UpstreamError as error:
            if not error.retryable:
                raise _client_error(error, target) from None
            logger.warning("%s failed: %s", target.model, error)
            failures.append(f"{target.model}: {error}")
            statuses.append(error.status)
            continue
        exchange.model = target.model
        return result
    raise _exhausted(exchange, failures, statuses)


def _client_error(error: UpstreamError, target: Target) -> ApiError:
    status = error.status or 502
    if status in (401, 403):
        key = target.endpoint.key_env or "its key"
        return ApiError(
            502,
            f"{target.model}: the upstream refused the router's key; check {key}",
            kind="upstream_error",
            code="upstream_auth",
        )
    if status in (400, 404, 413, 422):
        code = "model_not_found" if status == 404 else "upstream_rejected"
        return ApiError(status, f"{target.model}: {error}", code=code)
    return ApiError(502, f"{target.model}: {error}", kind="upstream_error")


def _exhausted(
    exchange: Exchange, failures: list[str], statuses: list[int | None]
) -> ApiError:
    label = exchange.requested or "the route"
    unavailable = any(status in _UNAVAILABLE for status in statuses)
    return ApiError(
        503 if unavailable else 502,
        f"every model for {label} failed: {'; '.join(failures)}",
        kind="upstream_error",
        code="upstream_unavailable" if unavailable else "upstream_error",
    )


async def _stream(
    app: App, exchange: Exchange, plan: Plan, body: dict[str, Any], send: Send
) -> None:
    client_usage = _wants_usage(body)
    if plan.cheap is not None:
        accepted = await _cheap_stage(app, exchange, plan, body)
        if accepted is not None:
            await _replay(exchange, accepted, client_usage, send)
            return

    async def call(target: Target) -> tuple[Target, aiohttp.ClientResponse]:
        request = upstream_body(body, target, stream=True)
        return target, await app.upstream.stream(target, request)

    started_s = time.perf_counter()
    target, response = await _chain(exchange, plan, call)
    relay = _Relay(client_usage)
    exchange.responded = True
    await start_stream(send, exchange.headers())
    try:
        await relay.run(response, send)
    except (TimeoutError, aiohttp.ClientError) as exc:
        exchange.status, exchange.error = 502, "upstream_stream_broken"
        await stream_chunk(send, _error_event(f"{target.model}: stream broke: {exc}"))
    finally:
        response.release()
    usage = relay.usage or estimate_usage(body, "".join(relay.text))
    busy_ms = (time.perf_counter() - started_s) * 1000
    exchange.spend.add(target, usage, busy_ms, estimated=relay.usage is None)
    ending = b"" if exchange.status != 200 else _DONE
    await stream_chunk(send, _cost_comment(exchange) + ending, more=False)


class _Relay:
    """Passes SSE events on as they come, noting usage and text on the way."""

    def __init__(self, client_usage: bool) -> None:
        self.client_usage = client_usage
        self.usage: Usage | None = None
        self.text: list[str] = []

    async def run(self, response: aiohttp.ClientResponse, send: Send) -> None:
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            if self._keep(payload):
                await stream_chunk(send, b"data: " + payload + b"\n\n")

    def _keep(self, payload: bytes) -> bool:
        try:
            chunk = orjson.loads(payload)
        except ValueError:
            return True
        if not isinstance(chunk, dict):
            return True
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        choices = chunk.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
        # The usage-only chunk has no choices; a client that did not ask for
        # usage may not expect one.
        return bool(choices) or self.client_usage or not isinstance(usage, dict)


async def _replay(
    exchange: Exchange, completion: Completion, client_usage: bool, send: Send
) -> None:
    """Send a whole (cheap) completion as a stream of chunks."""
    data = completion.data
    base = {
        "id": data.get("id"),
        "object": "chat.completion.chunk",
        "created": data.get("created", int(time.time())),
        "model": data.get("model"),
    }
    finish = data["choices"][0].get("finish_reason") or "stop"
    delta = {"role": "assistant", "content": completion.output}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    if client_usage and isinstance(data.get("usage"), dict):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    exchange.responded = True
    await start_stream(send, exchange.headers())
    await stream_chunk(send, events + _cost_comment(exchange) + _DONE, more=False)


def estimate_usage(request: dict[str, Any], output: str) -> Usage:
    """Tokens guessed from text (about 4 characters each) when usage is missing."""
    prompt_chars = sum(len(_text(message)) for message in request["messages"])
    return Usage(
        input_tokens=max(1, math.ceil(prompt_chars / _CHARS_PER_TOKEN)),
        output_tokens=math.ceil(len(output) / _CHARS_PER_TOKEN),
    )


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    return json.dumps(content) if content is not None else ""


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _cost_comment(exchange: Exchange) -> bytes:
    # Headers went out before the cost was known; an SSE comment carries it,
    # and clients skip comments.
    return (
        b": x-costroute-cost-usd "
        + _cost_text(exchange.spend.total_usd).encode()
        + b"\n\n"
    )


def _error_event(message: str) -> bytes:
    error = {"message": message, "type": "upstream_error", "code": "upstream_error"}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


def _cost_text(cost_usd: Decimal | None) -> str:
    return "unknown" if cost_usd is None else f"{cost_usd:f}"


def printable(text: str) -> str:
    """A client's model ref made safe for a log line or a header."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:200])


def _header_value(text: str) -> bytes:
    return printable(text).encode()
