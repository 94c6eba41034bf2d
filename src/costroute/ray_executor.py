"""Distributed measurement: the runner's provider calls made by Ray actors.

Only the calls leave the driver (the `costroute run` process). It still loads
the items, reserves the budget before each call, holds the concurrency limit
(`-j` calls in flight per candidate, across the whole cluster), writes every
call to the store before scoring it, and scores; so resume, the cache, budgets
and `decide` work as with the local executor.

Calls go to async actors, never one Ray task per call: a task holds a worker
process for the whole call, so a few CPUs allow only a few calls in flight.
The calls that the runner starts in one turn of the event loop go to the
actors in one batch, spread least busy first, and each actor sends back what
has finished every few milliseconds. That costs the driver ~0.08 ms per call,
against ~0.5 ms for one actor method call per provider call.

Where the actors live:

- a hosted API model: a pool of `workers` actors spread over the cluster;
- an endpoint on loopback (127.0.0.1, localhost): a pool on the driver's node,
  where the task file's loopback address points;
- a `local/…` model: one actor per GGUF file, which loads it once, with one
  CPU and the candidate's `gpus` as GPUs;
- a model whose name is a custom resource of some nodes (`ray start
  --resources '{"model:local/smollm2": 1}'`): its actors only on those nodes.

Workers resolve each candidate from the task themselves, with the API keys and
base URLs that the driver forwards in the actors' runtime env; no key is sent
in a call, logged or stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import orjson

from costroute.addresses import is_loopback_url
from costroute.errors import CostrouteError, UsageError
from costroute.executors import (
    Completion,
    ExecutorFailed,
    RetryPolicy,
    complete_with_retries,
)
from costroute.providers import PRESETS, ChatRequest, ResolvedCandidate
from costroute.providers import resolve_candidate as resolve
from costroute.providers.base import Provider
from costroute.providers.local import LocalProvider
from costroute.task import CandidateConfig, Task

try:
    import ray
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:
    raise UsageError(
        "--executor ray needs Ray; install it: pip install 'costroute[ray]'"
    ) from None

logger = logging.getLogger(__name__)

# An actor sends back what has finished, then waits this long for more.
RESULT_WINDOW_S = 0.005
# How long a new actor may take to start before the run gives up on it.
START_TIMEOUT_S = 300.0
MAX_DEFAULT_WORKERS = 64

# A call on the wire: its tag in the batch, the candidate's key, the request.
_Call = tuple[int, int, ChatRequest]
_Queued = tuple[int, ChatRequest, asyncio.Future[Completion]]


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and how many API actors each pool has.

    Without `address` a local Ray instance with this machine's CPUs is started
    for the run.
    """

    address: str | None = None
    workers: int | None = None


class CallWorker:
    """The body of each actor: makes the calls of the candidates registered."""

    def __init__(self, task: Task, concurrency: int, policy: RetryPolicy) -> None:
        self.task = task
        self.concurrency = concurrency
        self.policy = policy
        self.candidates: dict[int, ResolvedCandidate] = {}
        self.models: dict[str, Provider] = {}

    def register(self, key: int, config: CandidateConfig) -> None:
        candidate = resolve(self.task, config, self.concurrency)
        # Candidates on one GGUF file share its llama.cpp server: one load.
        if isinstance(candidate.provider, LocalProvider):
            where = str(candidate.provider.gguf)
            provider = self.models.setdefault(where, candidate.provider)
            candidate = replace(candidate, provider=provider)
        self.candidates[key] = candidate

    async def complete_many(
        self, calls: list[_Call]
    ) -> AsyncIterator[list[tuple[int, Completion]]]:
        """Make the calls at once; yield what has finished, a few at a time."""
        pending = {asyncio.ensure_future(self._one(*call)) for call in calls}
        while pending:
            done, pending = await asyncio.wait(
                pending, return_when=asyncio.FIRST_COMPLETED
            )
            if pending:
                more, pending = await asyncio.wait(pending, timeout=RESULT_WINDOW_S)
                done |= more
            yield [task.result() for task in done]

    async def _one(
        self, tag: int, key: int, request: ChatRequest
    ) -> tuple[int, Completion]:
        candidate = self.candidates[key]
        done = await complete_with_retries(
            candidate.model, candidate.provider, request, self.policy
        )
        return tag, _compact(done)


class _Pool:
    """Actors of one placement; each batch of calls goes to the least busy."""

    def __init__(self, name: str, actors: list[Any]) -> None:
        self.name = name
        self.actors = actors
        self.in_flight = [0] * len(actors)
        self.registered: dict[int, asyncio.Future[None]] = {}
        self.queue: list[_Queued] = []
        self.sending: set[asyncio.Task[None]] = set()

    async def register(self, key: int, candidate: ResolvedCandidate) -> None:
        future = self.registered.get(key)
        if future is None:
            future = asyncio.ensure_future(self._register(key, candidate))
            self.registered[key] = future
        await future

    async def _register(self, key: int, candidate: ResolvedCandidate) -> None:
        calls = [actor.register.remote(key, candidate.config) for actor in self.actors]
        try:
            await asyncio.wait_for(asyncio.gather(*calls), START_TIMEOUT_S)
        except TimeoutError:
            raise UsageError(
                f"{candidate.model}: no Ray node started a worker for it within "
                f"{START_TIMEOUT_S:.0f} s; the cluster has {_cluster_resources()}"
            ) from None
        except RayError as exc:
            raise _worker_error(exc, candidate.model) from None

    def submit(self, key: int, request: ChatRequest) -> asyncio.Future[Completion]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        if not self.queue:
            loop.call_soon(self._flush)
        self.queue.append((key, request, future))
        return future

    def _flush(self) -> None:
        queued, self.queue = self.queue, []
        batches: dict[int, list[_Queued]] = {}
        for call in queued:
            index = min(range(len(self.actors)), key=self.in_flight.__getitem__)
            self.in_flight[index] += 1
            batches.setdefault(index, []).append(call)
        for index, calls in batches.items():
            sending = asyncio.ensure_future(self._send(index, calls))
            self.sending.add(sending)
            sending.add_done_callback(self.sending.discard)

    async def _send(self, index: int, calls: list[_Queued]) -> None:
        futures = {tag: future for tag, (_, _, future) in enumerate(calls)}
        wire = [(tag, key, request) for tag, (key, request, _) in enumerate(calls)]
        method = self.actors[index].complete_many.options(num_returns="streaming")
        try:
            async for ref in method.remote(wire):
                for tag, completion in await ref:
                    self.in_flight[index] -= 1
                    _resolve(futures.pop(tag), completion)
        except RayError as exc:
            self.in_flight[index] -= len(futures)
            error = _worker_error(exc, self.name)
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)


class RayExecutor:
    """Sends each call to the actors of its candidate's placement."""

    def __init__(
        self, task: Task, concurrency: int, policy: RetryPolicy, workers: int
    ) -> None:
        self.task = task.model_copy(update={"path": task.path.resolve()})
        self.concurrency = concurrency
        self.policy = policy
        self.workers = workers
        self.env = forwarded_env(task)
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.resources = _cluster_resources()
        self.pools: dict[str, _Pool] = {}
        self.keys: dict[str, int] = {}
        self.routes: dict[int, tuple[ResolvedCandidate, _Pool, int]] = {}

    async def complete(
        self, candidate: ResolvedCandidate, request: ChatRequest
    ) -> Completion:
        pool, key = self._route(candidate)
        await pool.register(key, candidate)
        return await pool.submit(key, request)

    def _route(self, candidate: ResolvedCandidate) -> tuple[_Pool, int]:
        """The candidate's pool and its key there, looked up once per candidate."""
        known = self.routes.get(id(candidate))
        if known is not None and known[0] is candidate:
            return known[1], known[2]
        key = self.keys.setdefault(candidate.config.model_dump_json(), len(self.keys))
        pool = self._pool(candidate)
        self.routes[id(candidate)] = (candidate, pool, key)
        return pool, key

    def _pool(self, candidate: ResolvedCandidate) -> _Pool:
        name, options, count = self._placement(candidate)
        pool = self.pools.get(name)
        if pool is None:
            actor_class = ray.remote(CallWorker).options(**self._common(), **options)
            actors = [
                actor_class.remote(self.task, self.concurrency, self.policy)
                for _ in range(count)
            ]
            pool = self.pools[name] = _Pool(name, actors)
            logger.info("started %d Ray actor(s) for %s", count, name)
        return pool

    def _placement(
        self, candidate: ResolvedCandidate
    ) -> tuple[str, dict[str, Any], int]:
        """The pool's name, its actors' options and how many actors it has."""
        resource = f"model:{candidate.model}"
        provider = candidate.provider
        if isinstance(provider, LocalProvider):
            where = self._where(resource, "SPREAD")
            options = {"num_cpus": 1, "num_gpus": self._gpus(candidate), **where}
            return f"local:{provider.gguf}", options, 1
        if resource in self.resources:
            where = self._where(resource, "")
        elif is_loopback_url(getattr(provider, "base_url", "")):
            driver = NodeAffinitySchedulingStrategy(self.driver_node, soft=False)
            resource, where = "driver-node", {"scheduling_strategy": driver}
        else:
            resource, where = "cluster", {"scheduling_strategy": "SPREAD"}
        return resource, {"num_cpus": 0, **where}, self.workers

    def _where(self, resource: str, otherwise: str) -> dict[str, Any]:
        if resource in self.resources:
            return {"resources": {resource: 0.001}}
        return {"scheduling_strategy": otherwise} if otherwise else {}

    def _gpus(self, candidate: ResolvedCandidate) -> int:
        gpus = candidate.config.gpus or 0
        have = self.resources.get("GPU", 0)
        if gpus > have:
            raise UsageError(
                f"{candidate.model} asks for gpus = {gpus} and the Ray cluster has "
                f"{have:g}; add GPU nodes, or remove gpus from the candidate"
            )
        return gpus

    def _common(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_restarts": 0}
        if self.env:
            options["runtime_env"] = {"env_vars": self.env}
        return options

    def close(self) -> None:
        for pool in self.pools.values():
            for actor in pool.actors:
                ray.kill(actor)
        self.pools, self.routes = {}, {}


@contextmanager
def ray_executor(
    task: Task, concurrency: int, policy: RetryPolicy, options: RayOptions
) -> Iterator[RayExecutor]:
    """A Ray executor for one run, on a cluster joined or started for it.

    A Ray instance already running in this process is used as it is and left
    running; one started here is shut down at the end.
    """
    started = not ray.is_initialized()
    if started:
        _connect(options.address)
    try:
        workers = options.workers or default_workers()
        executor = RayExecutor(task, concurrency, policy, workers)
        try:
            yield executor
        finally:
            executor.close()
    finally:
        if started:
            ray.shutdown()


def _connect(address: str | None) -> None:
    quiet = logging.WARNING
    if address is None:
        cpus = os.cpu_count() or 1
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=quiet)
        return
    try:
        _check_reachable(address)
        ray.init(address=address, logging_level=quiet)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"cannot join the Ray cluster at {address}: {exc}; start it with "
            "`ray start --head` or check --ray-address"
        ) from None


def _check_reachable(address: str) -> None:
    """Fail at once on a HOST:PORT that takes no connection.

    Ray itself retries an unreachable address for minutes.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5.0):
        pass


def default_workers() -> int:
    """One API actor per CPU of the cluster: each holds many calls in flight."""
    cpus = int(_cluster_resources().get("CPU", 1))
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def _cluster_resources() -> dict[str, float]:
    cluster_resources = ray.cluster_resources
    resources: dict[str, float] = cluster_resources()  # type: ignore[no-untyped-call]
    return resources


def forwarded_env(task: Task) -> dict[str, str]:
    """The keys and base URLs that the task's providers read, as set here."""
    names: set[str] = set()
    for ref in _model_refs(task):
        names |= _env_names(task, ref.split("/", 1)[0])
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


def _model_refs(task: Task) -> list[str]:
    refs = [candidate.model for candidate in task.candidates]
    judge = task.scorer.options().get("model") if task.scorer.kind == "judge" else None
    return [*refs, judge] if isinstance(judge, str) else refs


def _env_names(task: Task, provider: str) -> set[str]:
    config = task.providers.get(provider)
    preset = PRESETS.get(provider)
    names = {f"{provider.upper()}_BASE_URL"}
    if config is not None and config.api_key_env:
        names.add(config.api_key_env)
    elif preset is not None and preset.key_env:
        names.add(preset.key_env)
    if provider == "anthropic" or (config is not None and config.kind == "anthropic"):
        names |= {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    return names


def _compact(done: Completion) -> Completion:
    """The completion as it travels: the raw response once, as JSON text."""
    response = done.response
    if response is None:
        return done
    raw_json = response.raw_json or orjson.dumps(response.raw).decode()
    return replace(done, response=replace(response, raw={}, raw_json=raw_json))


def _resolve(future: asyncio.Future[Completion], completion: Completion) -> None:
    # A run that was interrupted has cancelled the futures it no longer awaits.
    if not future.done():
        future.set_result(completion)


def _worker_error(exc: RayError, where: str) -> CostrouteError:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, CostrouteError):
        return UsageError(f"on a Ray worker for {where}: {cause}")
    # Ray's message has a line per detail; the unindented lines say what happened.
    lines = str(cause or exc).splitlines()
    what = " ".join(line for line in lines if line and not line[0].isspace())
    return ExecutorFailed(f"a Ray worker ({where}) failed: {what}")
