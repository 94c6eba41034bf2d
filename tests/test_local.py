"""A real open-weight model in-process: SmolLM2-135M through llama.cpp."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from costroute.pricing import DEFAULT_LOCAL_HOURLY_USD
from tests.conftest import run_json, write_task

ITEMS = [
    {"id": "a", "text": "I love this, it is wonderful", "label": "positive"},
    {"id": "b", "text": "This is terrible and awful", "label": "negative"},
    {"id": "c", "text": "What a great day", "label": "positive"},
]


def test_local_model_is_priced_by_busy_time(tmp_path: Path) -> None:
    candidates = '[[candidates]]\nmodel = "local/smollm2"\nmax_tokens = 4\n'
    task = write_task(
        tmp_path, "http://127.0.0.1:9/v1", items=ITEMS, candidates=candidates
    )
    task.write_text(
        task.read_text()
        .replace('labels = ["spam", "ham"]', 'labels = ["positive", "negative"]')
        .replace("Is this message spam or ham?", "Positive or negative?")
    )

    data = run_json(str(task), "--db", str(tmp_path / "db"), "-j", "2")

    local = data["candidates"][0]
    assert local["model"] == "local/smollm2"
    assert local["cost_kind"] == "compute" and local["priced"] is True
    assert local["calls"] == 3 and local["errors"] == 0
    assert 0 < local["tokens_out"] <= 12 and local["tokens_in"] > 0
    # The busy time is under the wall time of the run, so the cost is under
    # an hour's price and well above zero.
    cost_usd = Decimal(local["cost_usd"])
    assert Decimal(0) < cost_usd < DEFAULT_LOCAL_HOURLY_USD / 60
    assert local["latency_p50_ms"] > 0
