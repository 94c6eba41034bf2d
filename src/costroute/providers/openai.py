"""The OpenAI chat completions API and every server that speaks it."""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from costroute.pricing import Usage
from costroute.providers.base import ChatRequest, ChatResponse
from costroute.providers.http import HttpProvider, malformed

logger = logging.getLogger(__name__)


class OpenAIProvider(HttpProvider):
    """POST /chat/completions with a bearer key, when there is one."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        *,
        self_hosted: bool = False,
        timeout_s: float = 120.0,
        max_connections: int = 64,
        headers: dict[str, str] | None = None,
    ) -> None:
        request_headers = dict(headers or {})
        if api_key:
            request_headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(
            name,
            base_url,
            request_headers,
            self_hosted=self_hosted,
            timeout_s=timeout_s,
            max_connections=max_connections,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        reply = await self.post(
            "/chat/completions", orjson.dumps(request_body(request))
        )
        return _parse(reply.body, reply.busy_ms)


def request_body(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    body.update(request.params)
    return body


def _parse(body: bytes, busy_ms: float) -> ChatResponse:
    try:
        data = orjson.loads(body)
        output = data["choices"][0]["message"]["content"] or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise malformed(body, exc) from None
    usage = data.get("usage") or {}
    return ChatResponse(
        output=str(output),
        usage=parse_usage(usage),
        raw=data,
        raw_json=body.decode("utf-8", errors="replace"),
        busy_ms=busy_ms,
        provider_cost_usd=_reported_cost(usage),
    )


def parse_usage(usage: dict[str, Any]) -> Usage:
    """Read OpenAI-style usage, including cached input and reasoning tokens."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt_details.get("cached_tokens") or 0),
        cache_write_tokens=int(prompt_details.get("cache_write_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _reported_cost(usage: dict[str, Any]) -> Decimal | None:
    # OpenRouter reports what it charged in usage.cost.
    cost = usage.get("cost")
    if cost is None:
        return None
    try:
        return Decimal(str(cost))
    except InvalidOperation:
        return None
