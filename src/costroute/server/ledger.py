"""The request ledger, written off the response path in batches.

A request's row goes on an asyncio queue the moment it is answered; a writer
task takes whatever has queued every `interval_s` (or sooner, once `max_rows`
wait) and writes it in one transaction on the database thread, settling the
budget holds of those requests in the same transaction. `close` drains the
queue, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from costroute.store import DbLocation, Hold, LedgerEntry, Store

logger = logging.getLogger(__name__)

T = TypeVar("T")
Queued = tuple[LedgerEntry, Hold | None]

_RETRY_S = 0.5
_CLOSE_TRIES = 5


class Database:
    """The store on one thread of its own, so it never blocks the event loop."""

    def __init__(self, location: DbLocation) -> None:
        self.location = location
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="costroute-db")
        self._store: Store | None = None

    async def run(self, work: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[Store], T]) -> T:
        # SQLite connections belong to the thread that made them.
        if self._store is None:
            self._store = Store(self.location)
        return work(self._store)

    async def close(self) -> None:
        if self._store is not None:
            await self.run(lambda store: store.close())
        self._executor.shutdown(wait=True)


class LedgerWriter:
    """Queues ledger rows and writes them in batches on the database thread."""

    def __init__(
        self,
        db: Database,
        on_written: Callable[[list[LedgerEntry]], None],
        *,
        interval_s: float = 0.05,
        max_rows: int = 512,
    ) -> None:
        self.db = db
        self.on_written = on_written
        self.interval_s = interval_s
        self.max_rows = max_rows
        self._queue: asyncio.Queue[Queued | None] = asyncio.Queue()
        self._submitted = 0
        self._written = 0
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._submitted - self._written

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="costroute-ledger")

    def submit(self, entry: LedgerEntry, hold: Hold | None = None) -> None:
        self._submitted += 1
        self._queue.put_nowait((entry, hold))

    async def flush(self) -> None:
        """Wait until every row submitted so far is written."""
        target = self._submitted
        while self._written < target and self._task is not None:
            self._progress.clear()
            await self._progress.wait()

    async def close(self) -> None:
        """Write everything still queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._queue.qsize() < self.max_rows:
                await asyncio.sleep(self.interval_s)
            batch, closing = self._take(first)
            await self._write(batch, closing)
            if closing:
                return

    def _take(self, first: Queued) -> tuple[list[Queued], bool]:
        batch = [first]
        while len(batch) < self.max_rows and not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry is None:
                return [*batch, *self._drain()], True
            batch.append(entry)
        return batch, False

    def _drain(self) -> list[Queued]:
        rest = []
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry is not None:
                rest.append(entry)
        return rest

    async def _write(self, batch: list[Queued], closing: bool) -> None:
        entries = [entry for entry, _ in batch]
        holds = [hold for _, hold in batch if hold is not None]
        tries = 0
        while True:
            tries += 1
            try:
                await self.db.run(lambda store: store.record_ledger(entries, holds))
                break
            except Exception as exc:  # a locked or full disk must not kill the writer
                if closing and tries >= _CLOSE_TRIES:
                    logger.error("lost %d ledger rows: %s", len(batch), exc)
                    break
                logger.warning("ledger write failed (%s); retrying", exc)
                await asyncio.sleep(_RETRY_S)
        self._written += len(batch)
        self.on_written(entries)
        self._progress.set()
