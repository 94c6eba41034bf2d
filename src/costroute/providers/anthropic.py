"""Anthropic's Messages API, with cache-write and cache-read tokens as billed."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from costroute.pricing import Usage
from costroute.providers.base import ChatRequest, ChatResponse
from costroute.providers.http import HttpProvider, malformed

logger = logging.getLogger(__name__)

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; this stands in when the task sets none.
DEFAULT_MAX_TOKENS = 1024


class AnthropicProvider(HttpProvider):
    """POST /v1/messages with the key and API version headers."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 120.0,
        max_connections: int = 64,
        headers: dict[str, str] | None = None,
    ) -> None:
        request_headers = {"anthropic-version": API_VERSION, **(headers or {})}
        if api_key:
            request_headers["x-api-key"] = api_key
        super().__init__(
            name,
            base_url,
            request_headers,
            timeout_s=timeout_s,
            max_connections=max_connections,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        reply = await self.post("/v1/messages", orjson.dumps(request_body(request)))
        return _parse(reply.body, reply.busy_ms)


def request_body(request: ChatRequest) -> dict[str, Any]:
    """OpenAI-style messages as a Messages API body: the system prompt apart."""
    system = [m["content"] for m in request.messages if m["role"] == "system"]
    turns = [m for m in request.messages if m["role"] != "system"]
    body: dict[str, Any] = {
        "model": request.model,
        "messages": turns,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    body.update(request.params)
    return body


def parse_usage(usage: dict[str, Any]) -> Usage:
    """Anthropic counts cached input apart from `input_tokens`; add it back in."""
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0) + cache_write + cache_read,
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _parse(body: bytes, busy_ms: float) -> ChatResponse:
    try:
        data = orjson.loads(body)
        blocks = data["content"]
        output = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise malformed(body, exc) from None
    return ChatResponse(
        output=output,
        usage=parse_usage(data.get("usage") or {}),
        raw=data,
        busy_ms=busy_ms,
    )
