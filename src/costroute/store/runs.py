"""Measured runs in the store: runs, their items and prices, calls and scores."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.pricing import Price
from costroute.scorers import Score
from costroute.store.connection import Tables
from costroute.store.records import (
    CALL_COLUMNS,
    CallRecord,
    RunInfo,
    ScoredCall,
    call_record,
    call_values,
    iter_chunks,
    new_run_id,
    now_iso,
    price,
    run_info,
    score,
)

_INSERT_CALL = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}, created_at) "
    f"VALUES ({', '.join('?' for _ in CALL_COLUMNS)}, ?) RETURNING id"
)


class RunTables(Tables):
    """The tables `costroute run` and `costroute import` write."""

    # Runs

    def create_run(
        self,
        task_name: str,
        task_path: str,
        task_json: str,
        params: dict[str, Any],
        source: str = "live",
    ) -> str:
        run_id = new_run_id()
        self.db.execute(
            "INSERT INTO runs (id, task_name, task_path, task_json, source, "
            "params_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                task_name,
                task_path,
                task_json,
                source,
                json.dumps(params),
                now_iso(),
            ),
        )
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        self.db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
            (status, now_iso(), run_id),
        )

    def mark_running(self, run_id: str) -> None:
        """A resumed run runs again."""
        self.db.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run_id,))

    def update_run_params(self, run_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the run's params, e.g. how an adaptive run went."""
        params = {**self.run(run_id).params, **changes}
        self.db.execute(
            "UPDATE runs SET params_json = ? WHERE id = ?",
            (json.dumps(params), run_id),
        )

    def run(self, run_id: str) -> RunInfo:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(
                f"no run {run_id!r} in {self.path}; `costroute runs` lists them"
            )
        return run_info(row)

    def runs(self) -> list[RunInfo]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created_at DESC")
        return [run_info(row) for row in rows]

    def delete_run(self, run_id: str) -> None:
        with self.transaction():
            self.db.execute(
                "DELETE FROM scores WHERE call_id IN "
                "(SELECT id FROM calls WHERE run_id = ?)",
                (run_id,),
            )
            for table in ("calls", "prices", "items"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self.db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # Items and prices

    def save_items(self, run_id: str, items: Iterable[Item]) -> None:
        rows = [
            (
                run_id,
                item.id,
                position,
                item.line,
                json.dumps(item.fields),
                json.dumps(item.target),
            )
            for position, item in enumerate(items)
        ]
        with self.transaction():
            self.db.executemany(
                "INSERT INTO items (run_id, item_id, position, line, fields_json, "
                "target_json) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )

    def items(self, run_id: str) -> list[Item]:
        rows = self.db.execute(
            "SELECT * FROM items WHERE run_id = ? ORDER BY position", (run_id,)
        )
        return [
            Item(
                id=row["item_id"],
                line=row["line"],
                fields=json.loads(row["fields_json"]),
                target=json.loads(row["target_json"]),
            )
            for row in rows
        ]

    def save_price(self, run_id: str, price: Price) -> None:
        self.db.execute(
            "INSERT INTO prices (run_id, model, source, catalog_version, "
            "price_json, recorded_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, model) DO UPDATE SET source = excluded.source, "
            "catalog_version = excluded.catalog_version, "
            "price_json = excluded.price_json, recorded_at = excluded.recorded_at",
            (
                run_id,
                price.model,
                price.source,
                price.catalog_version,
                json.dumps(asdict(price), default=str),
                now_iso(),
            ),
        )

    def prices(self, run_id: str) -> dict[str, Price]:
        rows = self.db.execute("SELECT * FROM prices WHERE run_id = ?", (run_id,))
        return {row["model"]: price(json.loads(row["price_json"])) for row in rows}

    # Calls and scores

    def record_calls(self, calls: list[CallRecord]) -> None:
        """Store several calls in one transaction, setting each one's id."""
        with self.transaction():
            for call in calls:
                self.record_call(call)

    def record_call(self, call: CallRecord) -> int:
        row = self.db.execute(_INSERT_CALL, [*call_values(call), now_iso()]).fetchone()
        call_id: int = row[0]
        call.id = call_id
        return call_id

    def record_scores(self, scores: list[tuple[int, Score]]) -> None:
        rows = [
            (call_id, s.results, int(s.correct), s.tp, s.fp, s.fn, s.answer, s.detail)
            for call_id, s in scores
        ]
        with self.transaction():
            self.db.executemany(
                "INSERT INTO scores (call_id, results, correct, tp, fp, fn, answer, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO "
                "UPDATE SET results = excluded.results, correct = excluded.correct, "
                "tp = excluded.tp, fp = excluded.fp, fn = excluded.fn, "
                "answer = excluded.answer, detail = excluded.detail",
                rows,
            )

    def set_costs(self, costs: dict[int, Decimal]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE calls SET cost_usd = ?, spent_usd = CASE WHEN cached_from "
                "IS NULL THEN ? ELSE '0' END WHERE id = ?",
                [(str(cost), str(cost), call_id) for call_id, cost in costs.items()],
            )

    def cached_calls(self, request_hashes: list[str]) -> dict[str, CallRecord]:
        """The first successful stored call for each of these request hashes."""
        found: dict[str, CallRecord] = {}
        for chunk in iter_chunks(sorted(set(request_hashes)), 500):
            marks = ", ".join("?" for _ in chunk)
            rows = self.db.execute(
                f"SELECT * FROM calls WHERE request_hash IN ({marks}) AND "
                "status = 'ok' AND cost_usd IS NOT NULL ORDER BY id",
                chunk,
            )
            for row in rows:
                found.setdefault(row["request_hash"], call_record(row))
        return found

    def done_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        rows = self.db.execute(
            "SELECT item_id, model, repeat FROM calls WHERE run_id = ? "
            "AND purpose = 'candidate'",
            (run_id,),
        )
        return {(row[0], row[1], row[2]) for row in rows}

    def calls(
        self, run_id: str, model: str | None = None, purpose: str = "candidate"
    ) -> list[CallRecord]:
        sql = "SELECT * FROM calls WHERE run_id = ? AND purpose = ?"
        args: tuple[str, ...] = (run_id, purpose)
        if model is not None:
            sql += " AND model = ?"
            args = (run_id, purpose, model)
        return [call_record(row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def scored_calls(self, run_id: str) -> list[ScoredCall]:
        rows = self.db.execute(
            "SELECT calls.*, scores.results AS s_results, scores.correct AS "
            "s_correct, scores.tp AS s_tp, scores.fp AS s_fp, scores.fn AS s_fn, "
            "scores.answer AS s_answer, scores.detail AS s_detail FROM calls "
            "LEFT JOIN scores ON scores.call_id = calls.id WHERE calls.run_id = ? "
            "AND calls.purpose = 'candidate' "
            "ORDER BY calls.id",
            (run_id,),
        )
        return [ScoredCall(call=call_record(row), score=score(row)) for row in rows]

    def unscored_calls(self, run_id: str) -> list[CallRecord]:
        rows = self.db.execute(
            "SELECT calls.* FROM calls LEFT JOIN scores ON scores.call_id = "
            "calls.id WHERE calls.run_id = ? AND calls.purpose = 'candidate' AND "
            "scores.call_id IS NULL ORDER BY calls.id",
            (run_id,),
        )
        return [call_record(row) for row in rows]
