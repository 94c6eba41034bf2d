"""What a provider is: something that answers a chat request and reports usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from costroute.pricing import Usage


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request in the provider's own model namespace."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    temperature: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatResponse:
    """The text, usage and any charge the provider reported for one call.

    `busy_ms` is the time the model itself spent on the call, for models priced by
    hardware time; `provider_cost_usd` is a charge the provider reported itself.
    """

    output: str
    usage: Usage
    raw: dict[str, Any]
    busy_ms: float | None = None
    provider_cost_usd: Decimal | None = None
    raw_json: str | None = None


class ProviderError(Exception):
    """A failed call, and whether trying again could help."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class Provider(Protocol):
    """One API family or runtime; `self_hosted` means it runs on our own hardware."""

    name: str
    self_hosted: bool

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...
