"""The fake OpenAI server answers, streams, fails and counts as scripted."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakeserver import FakeServer, RecordedRequest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each httpx client loads the CA bundle (~40 ms) unless handed a context; the
# server speaks plain HTTP, so one shared context keeps the tests fast.
TLS = ssl.create_default_context()


def _chat(content: str = "What is two plus two?", **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": content},
        ],
        **extra,
    }


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(models=["fake-model", "other-model"]) as fake:
        yield fake


@pytest.fixture
def client(server: FakeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5.0, verify=TLS) as http:
        yield http


def test_plain_completion(server: FakeServer, client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=_chat(max_tokens=10))

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # Seven words across both messages, one word in the answer.
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 1,
        "total_tokens": 8,
    }


def test_base_url_is_loopback_v1(server: FakeServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_answers_table_picks_first_key_in_last_user_message(
    server: FakeServer, client: httpx.Client
) -> None:
    server.answers = {"capital": "Paris", "plus": "four"}

    def content(text: str) -> str:
        body = client.post("/chat/completions", json=_chat(text)).json()
        return str(body["choices"][0]["message"]["content"])

    assert content("two plus two?") == "four"
    assert content("the capital of France, plus nothing") == "Paris"
    assert content("something else") == "ok"


def test_answer_callable_and_model_overrides(
    server: FakeServer, client: httpx.Client
) -> None:
    server.answer = lambda request: f"{len(request['messages'])} messages"
    server.model_answers = {"other-model": {"two": "4"}}

    def content(model: str) -> str:
        body = client.post("/chat/completions", json=_chat("two?", model=model))
        return str(body.json()["choices"][0]["message"]["content"])

    assert content("fake-model") == "2 messages"
    assert content("other-model") == "4"


def test_max_tokens_truncates_with_length_finish(
    server: FakeServer, client: httpx.Client
) -> None:
    server.default_answer = "one two three four"

    body = client.post("/chat/completions", json=_chat(max_tokens=2)).json()

    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_fixed_usage_with_cached_tokens(
    server: FakeServer, client: httpx.Client
) -> None:
    server.prompt_tokens, server.completion_tokens = 1000, 50
    server.cached_tokens = 800

    usage = client.post("/chat/completions", json=_chat()).json()["usage"]

    assert usage == {
        "prompt_tokens": 1000,
        "completion_tokens": 50,
        "total_tokens": 1050,
        "prompt_tokens_details": {"cached_tokens": 800},
    }


def _stream_events(client: httpx.Client, request: dict[str, Any]) -> list[str]:
    with client.stream("POST", "/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


def test_stream_with_usage(server: FakeServer, client: httpx.Client) -> None:
    server.default_answer = "four, of course"
    request = _chat(stream=True, stream_options={"include_usage": True})

    events = _stream_events(client, request)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(
        chunk["choices"][0]["delta"].get("content", "")
        for chunk in chunks
        if chunk["choices"]
    )
    assert text == "four, of course"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert server.completed == 1


def test_stream_without_usage_has_no_usage_chunk(
    server: FakeServer, client: httpx.Client
) -> None:
    events = _stream_events(client, _chat(stream=True))

    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)


def test_429_sends_retry_after_then_recovers(
    server: FakeServer, client: httpx.Client
) -> None:
    server.fail_next("429", retry_after=2)

    refused = client.post("/chat/completions", json=_chat())
    answered = client.post("/chat/completions", json=_chat())

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert answered.status_code == 200
    assert (server.calls, server.completed) == (2, 1)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_use_openai_error_shape(
    server: FakeServer, client: httpx.Client, status: int
) -> None:
    server.fail_next("500" if status == 500 else "503")

    response = client.post("/chat/completions", json=_chat())

    assert response.status_code == status
    assert set(response.json()["error"]) >= {"message", "type", "code"}
    assert "retry-after" not in response.headers


def test_malformed_body_is_not_json(server: FakeServer, client: httpx.Client) -> None:
    server.fail_next("malformed")

    response = client.post("/chat/completions", json=_chat())

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert server.completed == 0


def test_bad_shape_has_no_choices(server: FakeServer, client: httpx.Client) -> None:
    server.fail_next("bad_shape")

    response = client.post("/chat/completions", json=_chat())

    assert response.status_code == 200
    assert "choices" not in response.json()


def test_drop_closes_without_response(server: FakeServer, client: httpx.Client) -> None:
    server.fail_next("drop")

    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=_chat())
    assert client.post("/chat/completions", json=_chat()).status_code == 200


def test_timeout_hangs_past_client_timeout_without_blocking_close() -> None:
    server = FakeServer()
    with (
        server,
        httpx.Client(base_url=server.base_url, timeout=0.2, verify=TLS) as client,
    ):
        server.fail_next("timeout")
        with pytest.raises(httpx.ReadTimeout):
            client.post("/chat/completions", json=_chat())
        closing = time.monotonic()
    assert time.monotonic() - closing < 1.0


def test_close_ends_a_request_hanging_in_flight() -> None:
    server = FakeServer()
    with (
        server,
        httpx.Client(base_url=server.base_url, timeout=5.0, verify=TLS) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        server.fail_next("timeout")
        hanging = pool.submit(client.post, "/chat/completions", json=_chat())
        while server.calls == 0:
            time.sleep(0.01)

        closing = time.monotonic()
        server.close()
        with pytest.raises(httpx.TransportError):
            hanging.result(timeout=1.0)
    assert time.monotonic() - closing < 1.0


def test_faults_are_consumed_in_order_per_model(
    server: FakeServer, client: httpx.Client
) -> None:
    server.fail_next("500", count=2, model="other-model")
    server.fail_next("429")

    def status(model: str) -> int:
        return client.post("/chat/completions", json=_chat(model=model)).status_code

    assert status("fake-model") == 429
    assert status("fake-model") == 200
    assert [status("other-model") for _ in range(3)] == [500, 500, 200]
    assert server.pending_faults == 0


def test_fail_next_rejects_unknown_kind(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        server.fail_next("404")  # type: ignore[arg-type]


def test_counts_and_reset(server: FakeServer, client: httpx.Client) -> None:
    server.fail_next("500")
    for model in ["fake-model", "other-model", "fake-model"]:
        client.post("/chat/completions", json=_chat("hi", model=model))

    assert server.calls == 3
    assert server.calls_by_model == {"fake-model": 2, "other-model": 1}
    assert server.completed == 2
    assert server.requests[1] == RecordedRequest("other-model", _chat("hi")["messages"])
    assert server.last_request_json == _chat("hi")

    server.reset_counts()
    assert (server.calls, server.completed, server.requests) == (0, 0, [])
    assert server.calls_by_model == {}


def test_require_key_refuses_missing_or_wrong_key() -> None:
    with (
        FakeServer(require_key="sk-test") as server,
        httpx.Client(verify=TLS) as client,
    ):
        url = f"{server.base_url}/chat/completions"
        missing = client.post(url, json=_chat())
        wrong = client.post(url, json=_chat(), headers={"Authorization": "Bearer x"})
        right = client.post(
            url, json=_chat(), headers={"Authorization": "Bearer sk-test"}
        )

    assert (missing.status_code, wrong.status_code, right.status_code) == (
        401,
        401,
        200,
    )
    assert missing.json()["error"] == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_models_lists_configured_models(client: httpx.Client) -> None:
    body = client.get("/models").json()

    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["fake-model", "other-model"]


def test_bad_requests_get_openai_errors(client: httpx.Client) -> None:
    not_json = client.post("/chat/completions", content=b"{", headers={})
    unknown = client.post("/embeddings", json={})

    assert not_json.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"


def test_latency_delays_each_answer(server: FakeServer, client: httpx.Client) -> None:
    server.latency_ms = 100

    started = time.monotonic()
    client.post("/chat/completions", json=_chat())

    assert time.monotonic() - started >= 0.1


def test_cli_prints_ready_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "tests.fakeserver", "--port", "0"]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        try:
            assert ready[0] == "READY"
            response = httpx.post(
                f"{ready[1]}/chat/completions", json=_chat(), verify=TLS
            )
            assert response.json()["choices"][0]["message"]["content"] == "ok"
        finally:
            process.terminate()
            assert process.wait(timeout=5) == 0
