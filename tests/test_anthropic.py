"""The Messages API provider against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from costroute.pricing import catalog_price, token_cost_usd
from costroute.providers.anthropic import parse_usage
from tests.conftest import run_json, write_task


class _Messages(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    headers_seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append(body)
        self.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        spam = "win money" in body["messages"][-1]["content"]
        reply = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "spam" if spam else "ham"}],
            "usage": {
                "input_tokens": 100,
                "output_tokens": 2,
                "cache_creation_input_tokens": 50,
                "cache_read_input_tokens": 1000,
            },
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def messages_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Messages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_messages_api_priced_with_cache_tokens(
    tmp_path: Path, messages_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", messages_api)
    candidates = (
        '[[candidates]]\nmodel = "anthropic/claude-sonnet-4-5"\nmax_tokens = 8\n'
    )
    task = write_task(tmp_path, "http://127.0.0.1:9/v1", candidates=candidates)

    data = run_json(str(task), "--db", str(tmp_path / "db"))

    claude = data["candidates"][0]
    assert claude["results"] == 12 and claude["errors"] == 0
    price = catalog_price("anthropic/claude-sonnet-4-5")
    assert price is not None and price.cache_read_mtok is not None
    per_call = (
        100 * price.input_mtok
        + 50 * price.cache_write_mtok
        + 1000 * price.cache_read_mtok
        + 2 * price.output_mtok
    ) / 1_000_000
    assert Decimal(claude["cost_usd"]) == per_call * 12
    body = _Messages.received[-1]
    assert body["system"] == "Answer with one word." and body["max_tokens"] == 8
    assert all(m["role"] == "user" for m in body["messages"])
    assert _Messages.headers_seen[-1]["x-api-key"] == "sk-ant-test"


def test_usage_adds_cached_input_back() -> None:
    usage = parse_usage(
        {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 7,
        }
    )

    assert usage.input_tokens == 22
    assert (usage.cache_write_tokens, usage.cache_read_tokens) == (5, 7)
    price = catalog_price("anthropic/claude-sonnet-4-5")
    assert price is not None
    assert token_cost_usd(price, usage, datetime.now(UTC)) is not None
