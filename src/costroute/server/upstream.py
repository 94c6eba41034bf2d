"""Calls to upstream models: one pooled HTTP client, retries, error kinds.

A call is retried on 429, 5xx, timeouts and dropped connections with short
jittered backoff. A `Retry-After` longer than `max_wait_s` is not waited out:
the next model of the route is quicker than a rate-limited one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson

from costroute.pricing import Usage
from costroute.providers.http import RETRYABLE_STATUS, retry_after_s
from costroute.providers.openai import parse_usage
from costroute.server.routing import Target

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UpstreamError(Exception):
    """A failed upstream call; `retryable` failures may go to another model."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body


@dataclass(frozen=True)
class Completion:
    """A whole chat completion: its bytes as sent, parsed, and its usage."""

    body: bytes
    data: dict[str, Any]
    output: str
    usage: Usage | None
    busy_ms: float


class Upstream:
    """One connection pool for every upstream, with retries per model."""

    def __init__(
        self, retries: int = 2, backoff_s: float = 0.05, max_wait_s: float = 2.0
    ) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, raise_for_status=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not awaited"
        return self._session

    async def complete(self, target: Target, body: dict[str, Any]) -> Completion:
        return await self._with_retries(target, lambda: self._complete(target, body))

    async def stream(
        self, target: Target, body: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """An upstream stream that answered 200; the caller reads and releases it."""
        return await self._with_retries(target, lambda: self._open(target, body))

    async def _complete(self, target: Target, body: dict[str, Any]) -> Completion:
        started_s = time.perf_counter()
        response = await self._open(target, body)
        try:
            raw = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _connection_error(exc) from None
        finally:
            response.release()
        busy_ms = (time.perf_counter() - started_s) * 1000
        return _parse(raw, busy_ms)

    async def _open(
        self, target: Target, body: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        stream = bool(body.get("stream"))
        try:
            response = await self.session.post(
                target.url,
                data=orjson.dumps(body),
                headers=target.headers(),
                timeout=target.timeout(stream),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _connection_error(exc) from None
        if response.status == 200:
            return response
        try:
            text = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            text = b""
        finally:
            response.release()
        raise _status_error(response.status, text, response.headers.get("retry-after"))

    async def _with_retries(
        self, target: Target, call: Callable[[], Awaitable[T]]
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except UpstreamError as error:
                delay_s = self._delay_s(error, attempt)
                if delay_s is None:
                    raise
                logger.info("%s: %s; retry in %.2fs", target.model, error, delay_s)
                await asyncio.sleep(delay_s)

    def _delay_s(self, error: UpstreamError, attempt: int) -> float | None:
        """How long to wait before trying again, or None to stop trying."""
        if not error.retryable or attempt > self.retries:
            return None
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_wait_s:
                return None
            return error.retry_after_s
        return random.uniform(0, self.backoff_s * 2 ** (attempt - 1))


def _parse(raw: bytes, busy_ms: float) -> Completion:
    try:
        data = orjson.loads(raw)
        output = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UpstreamError(
            f"malformed response ({type(exc).__name__})", retryable=True
        ) from None
    usage = data.get("usage")
    return Completion(
        body=raw,
        data=data,
        output=str(output),
        usage=parse_usage(usage) if isinstance(usage, dict) else None,
        busy_ms=busy_ms,
    )


def _connection_error(exc: BaseException) -> UpstreamError:
    if isinstance(exc, TimeoutError):
        return UpstreamError("timed out", retryable=True)
    return UpstreamError(f"connection failed: {type(exc).__name__}", retryable=True)


def _status_error(status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    return UpstreamError(
        f"HTTP {status}: {_message(body)}",
        retryable=status in RETRYABLE_STATUS,
        status=status,
        retry_after_s=retry_after_s(retry_after),
        body=body,
    )


def _message(body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(error, dict):
        return str(error.get("message", error))[:200]
    return str(error)[:200]
