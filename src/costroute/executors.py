"""Executors: where the runner's provider calls are made.

The runner decides what to call, reserves the budget, stores each response and
scores it; an executor only makes one call, with its retries, and says how it
went. `LocalExecutor` calls the provider in this process. The Ray executor
(`costroute.ray_executor`, the `ray` extra) makes the same calls on the workers
of a Ray cluster with the same retry loop, so a run reads alike either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

from costroute.errors import CostrouteError
from costroute.providers import (
    ChatRequest,
    ChatResponse,
    ProviderError,
    ResolvedCandidate,
)
from costroute.providers.base import Provider

logger = logging.getLogger(__name__)


class ExecutorFailed(CostrouteError):
    """The calls in flight were lost, e.g. with a worker machine that died.

    The calls stored before it are kept; resuming the run makes the rest.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How often a call is tried and how long to wait between tries."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s + random.uniform(0, 0.1)
        ceiling_s = self.backoff_base_s * 2 ** (attempt - 1)
        return random.uniform(0, min(self.backoff_cap_s, ceiling_s))


@dataclass(frozen=True)
class Completion:
    """One call after its retries: the response, or the last error's message.

    `started_s` and `ended_s` are wall-clock times taken where the call ran,
    so busy time is measured on the machine that was busy.
    """

    response: ChatResponse | None
    error: str | None
    attempts: int
    started_s: float
    ended_s: float


class Executor(Protocol):
    """Makes one provider call for a candidate, retrying what can be retried."""

    async def complete(
        self, candidate: ResolvedCandidate, request: ChatRequest
    ) -> Completion: ...


class LocalExecutor:
    """Calls the candidate's own provider in this process."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    async def complete(
        self, candidate: ResolvedCandidate, request: ChatRequest
    ) -> Completion:
        return await complete_with_retries(
            candidate.model, candidate.provider, request, self.policy
        )


async def complete_with_retries(
    model: str, provider: Provider, request: ChatRequest, policy: RetryPolicy
) -> Completion:
    """Call `provider`, retrying rate limits, 5xx and dropped connections."""
    started_s = time.time()
    response, error, attempts = await _with_retries(model, provider, request, policy)
    message = None if error is None else str(error)
    return Completion(response, message, attempts, started_s, time.time())


async def _with_retries(
    model: str, provider: Provider, request: ChatRequest, policy: RetryPolicy
) -> tuple[ChatResponse | None, ProviderError | None, int]:
    error: ProviderError | None = None
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return await provider.complete(request), None, attempt
        except ProviderError as exc:
            error = exc
        if not error.retryable or attempt == policy.max_attempts:
            return None, error, attempt
        delay_s = policy.backoff_s(attempt, error.retry_after_s)
        logger.info("%s: %s; retry in %.2fs", model, error, delay_s)
        await asyncio.sleep(delay_s)
    return None, error, policy.max_attempts
