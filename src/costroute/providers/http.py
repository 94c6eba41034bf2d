"""What the HTTP providers share: a pooled client, one POST, errors mapped.

The client is pyreqwest (reqwest, in Rust): it does the HTTP work on its own
thread, which costs the event loop about half the CPU per call that aiohttp
does (`bench/http_clients.py`), and at high concurrency the runner's CPU
per call is what decides how close a batch comes to the provider's latency.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from datetime import timedelta

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import BuilderError, RequestError, RequestTimeoutError

from costroute.addresses import is_loopback_url
from costroute.providers.base import ProviderError

JSON = {"Content-Type": "application/json"}
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}


@dataclass(frozen=True)
class Reply:
    """A successful HTTP reply and how long the provider took to give it."""

    body: bytes
    busy_ms: float


class HttpProvider:
    """One pooled client per provider, made inside the running loop."""

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
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session: Client | None = None

    def _client(self) -> Client:
        if self._session is None:
            builder = (
                ClientBuilder()
                .default_headers(self.headers)
                .max_connections(self.max_connections)
                .timeout(timedelta(seconds=self.timeout_s))
                .connect_timeout(timedelta(seconds=min(self.timeout_s, 10.0)))
            )
            # HTTPS_PROXY and friends apply, as in the providers' own SDKs, but
            # a server on this machine is never reached through a proxy.
            if is_loopback_url(self.base_url):
                builder = builder.no_proxy()
            self._session = builder.build()
        return self._session

    async def post(self, path: str, body: bytes) -> Reply:
        """POST `body`; a non-200 status or a transport failure raises."""
        url = f"{self.base_url}{path}"
        started_s = time.perf_counter()
        try:
            request = self._client().post(url).body_bytes(body).build()
            response = await request.send()
            data = bytes(await response.bytes())
        except RequestTimeoutError:
            raise ProviderError("timed out", retryable=True) from None
        except BuilderError as exc:
            message = f"cannot call {url}: {_reason(exc)}; check base_url"
            raise ProviderError(message, retryable=False) from None
        except RequestError as exc:
            message = f"connection failed: {_reason(exc)}"
            raise ProviderError(message, retryable=True) from None

        if response.status != 200:
            retry_after = response.get_header("retry-after")
            raise status_error(response.status, data, retry_after)
        return Reply(data, (time.perf_counter() - started_s) * 1000)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reason(exc: RequestError | BuilderError) -> str:
    """The error's message with its innermost cause, e.g. 'connection refused'."""
    causes = exc.details.get("causes") or []
    if not causes:
        return exc.message
    return f"{exc.message}: {causes[-1]['message']}"


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
