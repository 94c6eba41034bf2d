"""What the HTTP providers share: a pooled session, one POST, errors mapped."""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass

import aiohttp

from costroute.providers.base import ProviderError

JSON = {"Content-Type": "application/json"}
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}


@dataclass(frozen=True)
class Reply:
    """A successful HTTP reply and how long the provider took to give it."""

    body: bytes
    busy_ms: float


class HttpProvider:
    """One pooled aiohttp session per provider, made inside the running loop."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        self_hosted: bool = False,
        timeout_s: float = 120.0,
        max_connections: int = 64,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.self_hosted = self_hosted
        self.headers = {**JSON, **headers}
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(timeout_s, 10.0)
        )
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self.timeout, connector=connector
            )
        return self._session

    async def post(self, path: str, body: bytes) -> Reply:
        """POST `body`; a non-200 status or a transport failure raises."""
        url = f"{self.base_url}{path}"
        started_s = time.perf_counter()
        try:
            async with self._client().post(url, data=body) as response:
                data = await response.read()
                status = response.status
                retry_after = response.headers.get("retry-after")
        except TimeoutError:
            raise ProviderError("timed out", retryable=True) from None
        except aiohttp.ClientError as exc:
            message = f"connection failed: {type(exc).__name__}: {exc}"
            raise ProviderError(message, retryable=True) from None

        if status != 200:
            raise status_error(status, data, retry_after)
        return Reply(data, (time.perf_counter() - started_s) * 1000)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def status_error(status: int, body: bytes, retry_after: str | None) -> ProviderError:
    text = body.decode("utf-8", errors="replace")
    return ProviderError(
        f"HTTP {status}: {_error_message(text)}",
        retryable=status in RETRYABLE_STATUS,
        status=status,
        retry_after_s=retry_after_s(retry_after),
    )


def malformed(body: bytes, exc: Exception) -> ProviderError:
    return ProviderError(
        f"malformed response body ({type(exc).__name__}): {body[:120]!r}",
        retryable=True,
        status=200,
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
