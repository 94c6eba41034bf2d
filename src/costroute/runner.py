"""The runner: the only place that sequences provider calls.

It runs every candidate on every item concurrently, retries what can be retried,
stores each paid response before scoring it, serves repeats from the store's
cache, and stops starting calls before the budget could be passed. An executor
(`costroute.executors`) makes each call with its retries: in this process, or
on a Ray cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Collection, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from costroute import pricing
from costroute.dataset import Item, load_items
from costroute.errors import UsageError
from costroute.executors import Executor, LocalExecutor, RetryPolicy
from costroute.pricing import Price
from costroute.prompt import check_fields, render
from costroute.providers import ResolvedCandidate, resolve_candidate
from costroute.providers.base import ChatRequest, ChatResponse
from costroute.scorers import JudgeScorer, Score, Scorer, make_scorer
from costroute.store import CallRecord, Store, iter_chunks
from costroute.task import Task

logger = logging.getLogger(__name__)

T = TypeVar("T")

_Work = tuple[Item, int, ChatRequest, str]

# Scorers that block on a subprocess or user code run off the event loop.
BLOCKING_SCORERS = {"code", "python"}
SCORE_BATCH = 64
PREPARE_CHUNK = 256


@dataclass
class RunOptions:
    concurrency: int = 8
    limit: int | None = None
    repeat: int = 1
    max_cost_usd: Decimal | None = None
    allow_unpriced: bool = False
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0


class Progress(Protocol):
    """Where the runner reports what it has done, per candidate."""

    def start(self, model: str, total: int, done: int) -> None: ...

    def advance(self, model: str, spent_usd: Decimal) -> None: ...

    def close(self) -> None: ...


class Rounds(Protocol):
    """Chooses, round by round, which items and candidates a run measures.

    `run` calls `Runner.measure` once per round; `params` are recorded with the
    run so that a resumed run plays the same rounds.
    """

    def params(self) -> dict[str, Any]: ...

    async def run(self, runner: Runner) -> None: ...


class RunStopped(Exception):
    """The run ended early; `reason` says why and the run can be resumed."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(reason)
        self.run_id = run_id
        self.reason = reason


@dataclass
class Budget:
    """Spend so far plus what calls in flight may cost, against `--max-cost`."""

    limit_usd: Decimal | None
    spent_usd: Decimal = Decimal(0)
    reserved_usd: Decimal = Decimal(0)
    exhausted: bool = False

    def reserve(self, estimate_usd: Decimal) -> bool:
        if self.limit_usd is None:
            return True
        if self.spent_usd + self.reserved_usd + estimate_usd > self.limit_usd:
            self.exhausted = True
            return False
        self.reserved_usd += estimate_usd
        return True

    def settle(self, estimate_usd: Decimal, actual_usd: Decimal) -> None:
        if self.limit_usd is not None:
            self.reserved_usd -= estimate_usd
        self.spent_usd += actual_usd


@dataclass
class _CandidateState:
    resolved: ResolvedCandidate
    cached: dict[str, CallRecord] = field(default_factory=dict)
    paid_calls: int = 0
    paid_usd: Decimal = Decimal(0)

    def estimate_usd(self, messages: list[dict[str, str]]) -> Decimal:
        if self.paid_calls:
            return self.paid_usd / self.paid_calls
        return _first_estimate_usd(self.resolved, messages)

    def paid(self, cost_usd: Decimal) -> None:
        self.paid_calls += 1
        self.paid_usd += cost_usd


class CallWriter:
    """Writes calls in group commits: one transaction for every call that came
    back in the same turn of the event loop.

    Each `write` returns only once its call is committed, so every paid
    response is still stored before it is scored; the commits are shared.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: list[tuple[CallRecord, asyncio.Future[None]]] = []

    def submit(self, record: CallRecord) -> asyncio.Future[None]:
        """Queue a call for the next commit; the future is done once it is in."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append((record, future))
        return future

    async def write(self, record: CallRecord) -> None:
        await self.submit(record)

    def flush(self) -> None:
        """Commit every queued call now (also when a run is interrupted)."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self.store.record_calls([record for record, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class _NoProgress:
    def start(self, model: str, total: int, done: int) -> None:
        pass

    def advance(self, model: str, spent_usd: Decimal) -> None:
        pass

    def close(self) -> None:
        pass


class Runner:
    """Measures a task's candidates on its items and records everything."""

    def __init__(
        self,
        task: Task,
        store: Store,
        options: RunOptions,
        progress: Progress | None = None,
        rounds: Rounds | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.task = task
        self.store = store
        self.options = options
        self.progress: Progress = progress or _NoProgress()
        self.scorer: Scorer = make_scorer(task.scorer, task.base_dir)
        self.judge: ResolvedCandidate | None = None
        self.run_id = ""
        self.items: list[Item] = []
        self.budget = Budget(options.max_cost_usd)
        self._scores: list[tuple[int, Score]] = []
        self.writer = CallWriter(store)
        self._bookkeeping: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self.rounds = rounds
        self.candidates: list[ResolvedCandidate] = []
        self.executor: Executor = executor or LocalExecutor(retry_policy(options))

    async def start(self) -> str:
        """Run a new batch; returns its run id."""
        self.items = load_items(self.task, self.options.limit)
        dataset_name = self.task.dataset_path.name
        for item in self.items:
            check_fields(self.task.prompt, item, dataset_name)
        candidates = self._resolve()
        self.run_id = self.store.create_run(
            self.task.name,
            str(self.task.path),
            self.task.model_dump_json(),
            {
                "repeat": self.options.repeat,
                "limit": self.options.limit,
                **(self.rounds.params() if self.rounds else {}),
            },
        )
        self.store.save_items(self.run_id, self.items)
        return await self._measure(candidates)

    async def resume(self, run_id: str) -> str:
        """Continue an interrupted run, paying only for calls it never stored."""
        self.run_id = run_id
        self.items = self.store.items(run_id)
        candidates = self._resolve()
        self.budget.spent_usd = sum(
            (call.spent_usd or Decimal(0) for call in self.store.calls(run_id)),
            Decimal(0),
        )
        self._score_leftovers()
        return await self._measure(candidates)

    def _resolve(self) -> list[ResolvedCandidate]:
        resolved = [
            resolve_candidate(self.task, candidate, self.options.concurrency)
            for candidate in self.task.candidates
        ]
        if isinstance(self.scorer, JudgeScorer):
            judge = self.scorer.candidate()
            self.judge = resolve_candidate(self.task, judge, self.options.concurrency)
        everyone = [*resolved, *([self.judge] if self.judge else [])]
        unpriced = [c.model for c in everyone if not c.price.priced]
        if unpriced and not self.options.allow_unpriced:
            raise UsageError(_unpriced_message(unpriced))
        return resolved

    async def measure(self, items: Sequence[Item], models: Collection[str]) -> bool:
        """Measure the candidates named in `models` on `items` within this run.

        Calls already stored in the run are not made again. Returns False when
        the budget stopped it before every call was made.
        """
        chosen = [c for c in self.candidates if c.model in models]
        await asyncio.gather(*(self._run_candidate(c, items) for c in chosen))
        await self._settle_bookkeeping()
        self._flush_scores()
        for candidate in chosen:
            if candidate.price.source == "compute":
                self._share_busy_time(candidate.model, candidate.price)
        return not self.budget.exhausted

    async def _measure(self, candidates: list[ResolvedCandidate]) -> str:
        self.candidates = candidates
        for candidate in candidates:
            self.store.save_price(self.run_id, candidate.price)
        if self.judge is not None:
            judge_price = replace(self.judge.price, model=f"judge:{self.judge.model}")
            self.store.save_price(self.run_id, judge_price)
        self.store.mark_running(self.run_id)
        try:
            if self.rounds is None:
                await self.measure(self.items, {c.model for c in candidates})
            else:
                await self.rounds.run(self)
        finally:
            try:
                self.writer.flush()
                self._flush_scores()
                self._finalize(candidates)
            finally:
                for candidate in [*candidates, *([self.judge] if self.judge else [])]:
                    await candidate.provider.aclose()
                self.progress.close()
        if self.budget.exhausted:
            self.store.finish_run(self.run_id, "budget")
            raise RunStopped(self.run_id, self._budget_message())
        self.store.finish_run(self.run_id, "done")
        return self.run_id

    def _finalize(self, candidates: list[ResolvedCandidate]) -> None:
        for candidate in candidates:
            if candidate.price.source == "compute":
                self._share_busy_time(candidate.model, candidate.price)
        status = "interrupted" if not self.budget.exhausted else "budget"
        self.store.finish_run(self.run_id, status)

    def _share_busy_time(self, model: str, price: Price) -> None:
        calls = [
            c for c in self.store.calls(self.run_id, model) if c.cached_from is None
        ]
        costs = share_busy_time(calls, price)
        self.store.set_costs(costs)

    async def _run_candidate(
        self, candidate: ResolvedCandidate, items: Sequence[Item]
    ) -> None:
        done = self.store.done_keys(self.run_id)
        work = [
            (item, repeat)
            for repeat in range(self.options.repeat)
            for item in items
            if (item.id, candidate.model, repeat) not in done
        ]
        total = len(items) * self.options.repeat
        self.progress.start(candidate.model, total, total - len(work))
        state = _CandidateState(candidate)
        queue = self._prepared(state, work)
        workers = min(self.options.concurrency, len(work))
        await asyncio.gather(*(self._worker(state, queue) for _ in range(workers)))

    def _prepared(
        self, state: _CandidateState, work: list[tuple[Item, int]]
    ) -> Iterator[_Work]:
        """Requests in chunks, each chunk's cache hits looked up in one query.

        Preparing lazily lets the first calls start at once on a large batch.
        """
        for chunk in iter_chunks(work, PREPARE_CHUNK):
            prepared = [self._prepare(state.resolved, *pair) for pair in chunk]
            hashes = [request_hash for *_, request_hash in prepared]
            state.cached.update(self.store.cached_calls(hashes))
            yield from prepared

    def _prepare(self, candidate: ResolvedCandidate, item: Item, repeat: int) -> _Work:
        request = candidate.request(render(self.task.prompt, item))
        return item, repeat, request, _request_hash(candidate, request, repeat)

    async def _worker(self, state: _CandidateState, queue: Iterator[_Work]) -> None:
        for work in queue:
            if self.budget.exhausted:
                return
            await self._one(state, *work)

    async def _one(
        self,
        state: _CandidateState,
        item: Item,
        repeat: int,
        request: ChatRequest,
        request_hash: str,
    ) -> None:
        candidate = state.resolved
        cached = state.cached.get(request_hash)
        if cached is not None:
            record = self._from_cache(cached, item, candidate, repeat)
        else:
            estimate_usd = state.estimate_usd(request.messages)
            if not self.budget.reserve(estimate_usd):
                return
            record = await self._call(candidate, request, item, repeat, request_hash)
            actual_usd = record.spent_usd or Decimal(0)
            self.budget.settle(estimate_usd, actual_usd)
            state.paid(actual_usd)

        # The worker goes on to its next call while this one is stored and
        # scored, so the bookkeeping never holds a call slot.
        stored = self.writer.submit(record)
        if self.judge is None and self.task.scorer.kind not in BLOCKING_SCORERS:
            # A quick scorer runs right after the commit, without a task.
            stored.add_done_callback(lambda done: self._score_now(done, record, item))
            return
        task = asyncio.create_task(self._score_when_stored(stored, record, item))
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)

    def _score_now(
        self, stored: asyncio.Future[None], record: CallRecord, item: Item
    ) -> None:
        if stored.cancelled():
            return
        failure = stored.exception()
        if failure is not None:
            self._failures.append(failure)
            return
        output = record.output if record.status == "ok" else ""
        self._keep_score(record, self.scorer.score(output or "", item))
        self.progress.advance(record.model, self.budget.spent_usd)

    async def _score_when_stored(
        self, stored: asyncio.Future[None], record: CallRecord, item: Item
    ) -> None:
        await stored
        await self._score(record, item)
        self.progress.advance(record.model, self.budget.spent_usd)

    async def _settle_bookkeeping(self) -> None:
        while self._bookkeeping:
            await asyncio.gather(*self._bookkeeping)
        self.writer.flush()
        await asyncio.sleep(0)
        if self._failures:
            raise self._failures[0]

    def _from_cache(
        self,
        cached: CallRecord,
        item: Item,
        candidate: ResolvedCandidate,
        repeat: int,
    ) -> CallRecord:
        price = candidate.price
        record = CallRecord(
            **{**cached.__dict__, "id": None, "run_id": self.run_id},
        )
        record.item_id = item.id
        record.model = candidate.model
        record.repeat = repeat
        record.cached_from = cached.cached_from or cached.id
        record.spent_usd = Decimal(0)
        # A cached answer is what the model would say again, but the price may
        # have moved since: token-priced calls are priced again at today's price.
        if price.source in {"catalog", "override"}:
            record.cost_usd = pricing.token_cost_usd(
                price, record.usage, datetime.now(UTC)
            )
            record.cost_kind = price.cost_kind
        return record

    async def _call(
        self,
        candidate: ResolvedCandidate,
        request: ChatRequest,
        item: Item,
        repeat: int,
        request_hash: str,
        purpose: str = "candidate",
        judged_call_id: int | None = None,
    ) -> CallRecord:
        done = await self.executor.complete(candidate, request)
        response = done.response
        started_s, ended_s = done.started_s, done.ended_s
        record = CallRecord(
            run_id=self.run_id,
            item_id=item.id,
            model=candidate.model,
            repeat=repeat,
            request_hash=request_hash,
            status="ok" if response is not None else "error",
            cost_kind=candidate.price.cost_kind,
            attempts=done.attempts,
            latency_ms=(ended_s - started_s) * 1000,
            started_s=started_s,
            ended_s=ended_s,
            purpose=purpose,
            judged_call_id=judged_call_id,
        )
        if response is not None:
            _fill_response(record, response, candidate.price)
        else:
            record.error = done.error
            record.cost_usd = record.spent_usd = _failed_cost_usd(candidate.price)
        return record

    async def _score(self, record: CallRecord, item: Item) -> None:
        output = record.output if record.status == "ok" else ""
        if self.judge is not None and record.status == "ok":
            score = await self._judge(self.judge, record, item)
        elif self.judge is not None:
            score = Score(results=0.0, correct=False, fn=1)
        elif self.task.scorer.kind in BLOCKING_SCORERS:
            score = await asyncio.to_thread(self.scorer.score, output or "", item)
        else:
            score = self.scorer.score(output or "", item)
        self._keep_score(record, score)

    def _keep_score(self, record: CallRecord, score: Score) -> None:
        if record.status != "ok":
            score = replace(score, detail=f"call failed: {record.error}")
        assert record.id is not None
        # Scores are written in batches: a score lost in a crash is recomputed
        # from its stored call on resume, so nothing paid for is lost.
        self._scores.append((record.id, score))
        if len(self._scores) >= SCORE_BATCH:
            self._flush_scores()

    async def _judge(
        self, judge: ResolvedCandidate, record: CallRecord, item: Item
    ) -> Score:
        """Grade one output with the judge model, storing the judge's own call."""
        assert isinstance(self.scorer, JudgeScorer)
        question = render(self.task.prompt, item)[-1]["content"]
        messages = self.scorer.messages(question, record.output or "", item)
        request = judge.request(messages)
        request_hash = _request_hash(judge, request, record.repeat)
        cached = self.store.cached_calls([request_hash]).get(request_hash)
        if cached is not None and cached.output is not None:
            reply = cached.output
        else:
            call = await self._call(
                judge,
                request,
                item,
                record.repeat,
                request_hash,
                purpose="judge",
                judged_call_id=record.id,
            )
            await self.writer.write(call)
            self.budget.settle(Decimal(0), call.spent_usd or Decimal(0))
            if call.status != "ok":
                return Score(
                    results=0.0,
                    correct=False,
                    fn=1,
                    detail=f"judge call failed: {call.error}",
                )
            reply = call.output or ""
        return self.scorer.read(reply)

    def _flush_scores(self) -> None:
        if self._scores:
            self.store.record_scores(self._scores)
            self._scores = []

    def _score_leftovers(self) -> None:
        items = {item.id: item for item in self.items}
        for record in self.store.unscored_calls(self.run_id):
            output = record.output if record.status == "ok" else ""
            score = self.scorer.score(output or "", items[record.item_id])
            assert record.id is not None
            self._scores.append((record.id, score))
        self._flush_scores()

    def _budget_message(self) -> str:
        return (
            f"stopped before passing --max-cost ${self.options.max_cost_usd} "
            f"(spent ${self.budget.spent_usd:.6f}); continue with "
            f"`costroute run TASK --resume {self.run_id} --max-cost HIGHER`"
        )


def retry_policy(options: RunOptions) -> RetryPolicy:
    return RetryPolicy(
        options.max_attempts, options.backoff_base_s, options.backoff_cap_s
    )


def share_busy_time(calls: list[CallRecord], price: Price) -> dict[int, Decimal]:
    """Split the model's busy time over its calls by their share of that time.

    Calls that overlap (parallel slots) share the wall time the model was busy,
    so the candidate pays for hardware time once, not once per slot.
    """
    spans = [(c.started_s, c.ended_s) for c in calls if c.ended_s > c.started_s]
    busy_ms = _union_ms(spans)
    total_ms = sum((end - start) * 1000 for start, end in spans)
    costs: dict[int, Decimal] = {}
    for call in calls:
        assert call.id is not None
        own_ms = max(call.ended_s - call.started_s, 0.0) * 1000
        share = own_ms / total_ms if total_ms else 0.0
        costs[call.id] = pricing.compute_cost_usd(price, busy_ms * share)
    return costs


def _union_ms(spans: list[tuple[float, float]]) -> float:
    total_s = 0.0
    current_start, current_end = None, 0.0
    for start, end in sorted(spans):
        if current_start is None or start > current_end:
            if current_start is not None:
                total_s += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total_s += current_end - current_start
    return total_s * 1000


def _fill_response(record: CallRecord, response: ChatResponse, price: Price) -> None:
    usage = response.usage
    record.output = response.output
    record.response_json = response.raw_json or orjson.dumps(response.raw).decode()
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cache_read_tokens = usage.cache_read_tokens
    record.cache_write_tokens = usage.cache_write_tokens
    record.reasoning_tokens = usage.reasoning_tokens
    record.provider_cost_usd = response.provider_cost_usd
    if price.source == "compute":
        # The final share is set once the candidate is done; until then the
        # call's own busy time stands in for it.
        cost_usd: Decimal | None = pricing.compute_cost_usd(
            price, response.busy_ms or record.latency_ms
        )
    else:
        cost_usd = pricing.token_cost_usd(price, usage, datetime.now(UTC))
    record.cost_usd = record.spent_usd = cost_usd


def _failed_cost_usd(price: Price) -> Decimal | None:
    # An HTTP error carries no bill; an unpriced model's cost stays unknown.
    return None if not price.priced else Decimal(0)


def _request_hash(
    candidate: ResolvedCandidate, request: ChatRequest, repeat: int
) -> str:
    provider = candidate.provider
    where = getattr(provider, "base_url", None) or str(getattr(provider, "gguf", ""))
    key = {
        "model": candidate.model,
        "where": where,
        "request": request.__dict__,
        "repeat": repeat,
    }
    blob = orjson.dumps(key, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()


def _first_estimate_usd(
    candidate: ResolvedCandidate, messages: list[dict[str, str]]
) -> Decimal:
    price = candidate.price
    if price.source == "compute":
        return pricing.compute_cost_usd(price, 1000.0)
    input_tokens = sum(len(m["content"]) for m in messages) // 4 + 8
    output_tokens = candidate.config.max_tokens or 512
    usage = pricing.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    estimate = pricing.token_cost_usd(price, usage, datetime.now(UTC))
    return estimate or Decimal(0)


def _unpriced_message(models: list[str]) -> str:
    names = ", ".join(models)
    return (
        f"no price for {names}; add price = {{ input_mtok = …, output_mtok = … }} "
        "(USD per million tokens) to its [[candidates]] entry, or hourly_usd for "
        "a model on your own hardware, or pass --allow-unpriced to run it unpriced"
    )


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop where it is installed.

    uvloop roughly halves the event loop's own cost per call, which is most of
    the runner's CPU time at high concurrency.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def task_from_run(task_json: str, task_path: str) -> Task:
    """The task exactly as it was when the run started."""
    data = json.loads(task_json)
    return Task.model_validate({**data, "path": Path(task_path)})
