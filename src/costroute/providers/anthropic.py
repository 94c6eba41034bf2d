"""Anthropic's Messages API, with cache-write and cache-read tokens as billed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import aiohttp

from costroute.pricing import Usage
from costroute.providers.base import ChatRequest, ChatResponse, ProviderError
from costroute.providers.openai import RETRYABLE_STATUS, retry_after_s

logger = logging.getLogger(__name__)

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; this stands in when the task sets none.
DEFAULT_MAX_TOKENS = 1024


class AnthropicProvider:
    """POST /v1/messages with one pooled session per provider."""

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
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.self_hosted = False
        self.headers = {"anthropic-version": API_VERSION, **(headers or {})}
        if api_key:
            self.headers["x-api-key"] = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10.0)
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self.timeout, connector=connector
            )
        return self._session

    async def complete(self, request: ChatRequest) -> ChatResponse:
        url = f"{self.base_url}/v1/messages"
        started_s = time.perf_counter()
        try:
            async with self._client().post(url, json=request_body(request)) as reply:
                text = await reply.text()
                status = reply.status
                retry_after = reply.headers.get("retry-after")
        except TimeoutError:
            raise ProviderError("timed out", retryable=True) from None
        except aiohttp.ClientError as exc:
            message = f"connection failed: {type(exc).__name__}: {exc}"
            raise ProviderError(message, retryable=True) from None
        busy_ms = (time.perf_counter() - started_s) * 1000

        if status != 200:
            raise ProviderError(
                f"HTTP {status}: {text[:200]}",
                retryable=status in RETRYABLE_STATUS,
                status=status,
                retry_after_s=retry_after_s(retry_after),
            )
        return _parse(text, status, busy_ms)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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


def _parse(text: str, status: int, busy_ms: float) -> ChatResponse:
    try:
        data = json.loads(text)
        blocks = data["content"]
        output = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ProviderError(
            f"malformed response body ({type(exc).__name__}): {text[:120]!r}",
            retryable=True,
            status=status,
        ) from None
    return ChatResponse(
        output=output,
        usage=parse_usage(data.get("usage") or {}),
        raw=data,
        busy_ms=busy_ms,
    )
