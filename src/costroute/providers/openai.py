"""The OpenAI chat completions API and every server that speaks it."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import orjson

from costroute.pricing import Usage
from costroute.providers.base import ChatRequest, ChatResponse, ProviderError

logger = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json"}
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class OpenAIProvider:
    """Chat completions over HTTP with one pooled connection set per provider."""

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
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.self_hosted = self_hosted
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(timeout_s, 10.0)
        )
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # The session belongs to the running event loop, so it is made lazily.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self.timeout, connector=connector
            )
        return self._session

    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = orjson.dumps(_request_body(request))
        url = f"{self.base_url}/chat/completions"
        started_s = time.perf_counter()
        try:
            async with self._client().post(url, data=body, headers=JSON) as response:
                text = await response.read()
                status = response.status
                retry_after = response.headers.get("retry-after")
        except TimeoutError:
            raise ProviderError("timed out", retryable=True) from None
        except aiohttp.ClientError as exc:
            message = f"connection failed: {type(exc).__name__}: {exc}"
            raise ProviderError(message, retryable=True) from None
        busy_ms = (time.perf_counter() - started_s) * 1000
        if status != 200:
            raise _status_error(status, text, retry_after)
        return _parse(text, status, busy_ms)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _request_body(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    body.update(request.params)
    return body


def _parse(body: bytes, status: int, busy_ms: float) -> ChatResponse:
    try:
        data = orjson.loads(body)
        output = data["choices"][0]["message"]["content"] or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ProviderError(
            f"malformed response body ({type(exc).__name__}): {body[:120]!r}",
            retryable=True,
            status=status,
        ) from None
    return ChatResponse(
        output=str(output),
        usage=parse_usage(data.get("usage") or {}),
        raw=data,
        raw_json=body.decode("utf-8", errors="replace"),
        busy_ms=busy_ms,
        provider_cost_usd=_reported_cost(data.get("usage") or {}),
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


def _status_error(status: int, body: bytes, retry_after: str | None) -> ProviderError:
    text = body.decode("utf-8", errors="replace")
    return ProviderError(
        f"HTTP {status}: {_error_message(text)}",
        retryable=status in RETRYABLE_STATUS,
        status=status,
        retry_after_s=retry_after_s(retry_after),
    )


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (json.JSONDecodeError, AttributeError):
        return text[:200]
    if isinstance(error, dict):
        return str(error.get("message", error))[:200]
    return str(error)[:200]


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
