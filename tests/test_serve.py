"""Chat completions through the router: routes, cascades, streams, fallbacks.

The `openai` client talks to `costroute serve` in a subprocess, which calls a
fake upstream on loopback (see `tests.serving`).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from costroute.routes import EscalationCheck
from costroute.server.escalation import escalation_reason
from tests import fakeserver
from tests.serving import (
    CHEAP_MTOK,
    STRONG_MTOK,
    Setup,
    ask,
    cost_usd,
    header,
    ledger,
    reset,
    running,
    wait_for,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from running(tmp_path_factory.mktemp("serve"))


@pytest.fixture
def env(setup: Setup) -> Setup:
    return reset(setup)


@pytest.fixture
def client(env: Setup) -> Iterator[openai.OpenAI]:
    with env.router.client(env.key) as client:
        yield client


# Routes and cascades


def test_a_cascade_keeps_a_cheap_answer_that_passes_its_check(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.model_answers = {"cheap": lambda request: "spam"}
    raw = ask(client, "route/spam", "win money now")
    completion = raw.parse()

    assert completion.choices[0].message.content == "spam"
    assert header(raw, "x-costroute-model") == "fake/cheap"
    assert header(raw, "x-costroute-escalated") == "false"
    usage = completion.usage
    expected = cost_usd(CHEAP_MTOK, usage.prompt_tokens, usage.completion_tokens)
    assert Decimal(header(raw, "x-costroute-cost-usd")) == expected
    assert env.fake.calls_by_model == {"cheap": 1}
    assert header(raw, "x-costroute-request-id").startswith("cr-")


def test_a_cascade_escalates_when_the_check_fails(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.model_answers = {
        "cheap": lambda request: "not sure",
        "strong": lambda request: "ham",
    }
    raw = ask(client, "route/spam", "lunch at noon")

    assert raw.parse().choices[0].message.content == "ham"
    assert header(raw, "x-costroute-model") == "fake/strong"
    assert header(raw, "x-costroute-escalated") == "true"
    # Both calls are paid: 3 prompt words and 2 + 1 answer words.
    both = cost_usd(CHEAP_MTOK, 3, 2) + cost_usd(STRONG_MTOK, 3, 1)
    assert Decimal(header(raw, "x-costroute-cost-usd")) == both
    assert env.fake.calls_by_model == {"cheap": 1, "strong": 1}


@pytest.mark.parametrize(
    ("task", "passing", "failing"),
    [
        ("extract", '{"label": "spam"}', '{"other": 1}'),
        ("number", "42", "forty-two"),
    ],
)
def test_json_and_regex_checks(
    env: Setup, client: openai.OpenAI, task: str, passing: str, failing: str
) -> None:
    env.fake.model_answers = {"cheap": {"first": passing, "second": failing}}
    kept = ask(client, f"route/{task}", "first")
    escalated = ask(client, f"route/{task}", "second")

    assert header(kept, "x-costroute-escalated") == "false"
    assert kept.parse().choices[0].message.content == passing
    assert header(escalated, "x-costroute-escalated") == "true"
    assert header(escalated, "x-costroute-model") == "fake/strong"


def test_agreement_asks_two_cheap_samples(env: Setup, client: openai.OpenAI) -> None:
    answers = iter(["spam", "spam", "spam", "ham"])
    env.fake.model_answers = {"cheap": lambda request: next(answers)}
    agreed = ask(client, "route/agree")
    disagreed = ask(client, "route/agree")

    assert header(agreed, "x-costroute-escalated") == "false"
    assert header(disagreed, "x-costroute-escalated") == "true"
    assert env.fake.calls_by_model == {"cheap": 4, "strong": 1}


def test_logprob_and_agreement_checks_read_the_answers() -> None:
    check = EscalationCheck(check="logprob", threshold=-0.5)

    def response(*logprobs: float) -> dict[str, Any]:
        tokens = [{"token": "x", "logprob": value} for value in logprobs]
        return {"choices": [{"logprobs": {"content": tokens}}]}

    assert escalation_reason(check, ["a"], [response(-0.1, -0.2)]) is None
    assert escalation_reason(check, ["a"], [response(-2.0, -0.1)]) == "low logprob"
    assert escalation_reason(check, ["a"], [{"choices": [{}]}]) == "no logprobs"
    agreement = EscalationCheck(check="agreement")
    assert escalation_reason(agreement, ["Spam.", "spam"], [{}, {}]) is None


# Streaming


def test_a_stream_passes_chunks_and_accounts_usage(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.default_answer = "it is ham for sure"
    with client.chat.completions.with_streaming_response.create(
        model="route/single",
        messages=[{"role": "user", "content": "lunch at noon"}],
        stream=True,
    ) as response:
        request_id = response.headers["x-costroute-request-id"]
        assert response.headers["x-costroute-model"] == "fake/strong"
        chunks = list(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "it is ham for sure"
    # The client asked for no usage, so it gets no usage-only chunk...
    assert all(chunk.choices for chunk in chunks)
    # ...but the upstream was asked for it, and the ledger has it.
    sent = env.fake.last_request_json
    assert sent is not None and sent["stream_options"] == {"include_usage": True}
    wait_for(lambda: request_id in ledger(env.router.db))
    entry = ledger(env.router.db)[request_id]
    assert entry.stream and not entry.cost_estimated
    assert entry.cost_usd == cost_usd(STRONG_MTOK, 3, 5)


def test_a_stream_with_usage_asked_gets_the_usage_chunk(
    env: Setup, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="route/single",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1


def test_a_stream_without_upstream_usage_is_estimated_never_free(
    env: Setup, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks_of = fakeserver._stream_chunks

    def without_usage(*args: Any) -> list[dict[str, Any]]:
        return chunks_of(*args[:3], False)

    monkeypatch.setattr(fakeserver, "_stream_chunks", without_usage)
    env.fake.default_answer = "a fairly long answer of several words"
    with client.chat.completions.with_streaming_response.create(
        model="route/single",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
    ) as response:
        request_id = response.headers["x-costroute-request-id"]
        list(response.parse())

    wait_for(lambda: request_id in ledger(env.router.db))
    entry = ledger(env.router.db)[request_id]
    assert entry.cost_estimated
    assert entry.cost_usd is not None and entry.cost_usd > 0
    assert entry.output_tokens > 0


def test_a_cascade_stream_replays_an_accepted_cheap_answer(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.model_answers = {"cheap": lambda request: "spam"}
    stream = client.chat.completions.create(
        model="route/spam",
        messages=[{"role": "user", "content": "win money"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "spam"
    assert env.fake.calls_by_model == {"cheap": 1}


def test_a_stream_ends_with_its_cost_as_an_sse_comment(env: Setup) -> None:
    body = {
        "model": "route/single",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    response = httpx.post(
        f"{env.router.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert response.headers["content-type"] == "text/event-stream"
    comment, done = response.text.strip().split("\n\n")[-2:]
    assert Decimal(comment.removeprefix(": x-costroute-cost-usd ")) == cost_usd(
        STRONG_MTOK, 1, 1
    )
    assert done == "data: [DONE]"


def test_a_failed_escalation_still_reports_what_the_cheap_call_cost(
    env: Setup,
) -> None:
    env.fake.model_answers = {"cheap": lambda request: "unsure"}
    env.fake.fail_next("503", count=3, model="strong")
    response = httpx.post(
        f"{env.router.url}/v1/chat/completions",
        json={"model": "route/spam", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert response.status_code == 503
    assert response.headers["x-costroute-escalated"] == "true"
    cost = Decimal(response.headers["x-costroute-cost-usd"])
    assert cost == cost_usd(CHEAP_MTOK, 1, 1)


# Pass-through


def test_other_models_pass_through(env: Setup, client: openai.OpenAI) -> None:
    raw = ask(client, "fake/strong")
    assert header(raw, "x-costroute-model") == "fake/strong"
    # Priced from the route that records this model's price.
    assert Decimal(header(raw, "x-costroute-cost-usd")) == cost_usd(STRONG_MTOK, 3, 1)
    assert env.fake.calls_by_model == {"strong": 1}


def test_a_pass_through_model_nobody_prices_costs_unknown_not_zero(
    env: Setup, client: openai.OpenAI
) -> None:
    raw = ask(client, "fake/unlisted")
    assert header(raw, "x-costroute-cost-usd") == "unknown"


@pytest.mark.parametrize("model", ["route/nope", "nosuch/model", "no-slash"])
def test_unknown_routes_and_models_are_404(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, model)
    assert caught.value.body is not None


# Fallbacks


def test_falls_back_after_retries_on_5xx(env: Setup, client: openai.OpenAI) -> None:
    env.fake.fail_next("503", count=3, model="strong")
    raw = ask(client, "route/single")

    assert header(raw, "x-costroute-model") == "fake/cheap"
    assert env.fake.calls_by_model == {"strong": 3, "cheap": 1}


def test_falls_back_after_timeouts(env: Setup, client: openai.OpenAI) -> None:
    env.fake.hang_s = 2.0
    env.fake.fail_next("timeout", count=3, model="hang")
    raw = ask(client, "route/slow")
    assert header(raw, "x-costroute-model") == "fake/cheap"


def test_on_prem_routes_never_fall_back_to_hosted_models(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.fail_next("500", count=3, model="strong")
    raw = ask(client, "route/onprem")

    assert header(raw, "x-costroute-model") == "onprem/backup"
    assert "cheap" not in env.fake.calls_by_model


def test_upstream_failures_everywhere_are_503(
    env: Setup, client: openai.OpenAI
) -> None:
    env.fake.fail_next("429", count=3, model="strong")
    env.fake.fail_next("503", count=3, model="cheap")
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "route/single")

    assert caught.value.status_code == 503
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_unavailable"
    assert "fake/strong" in error["message"] and "fake/cheap" in error["message"]


# Malformed requests


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "route/single"}', 400, "missing_messages"),
        (b'{"model": "route/single", "messages": []}', 400, "missing_messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_model"),
        (b'{"model": "route/single", "messages": ["x"]}', 400, "invalid_request"),
        (
            b'{"model": "route/single", "stream": "yes", "messages": [{}]}',
            400,
            "invalid_request",
        ),
        (
            b'{"model": "route/x", "messages": [{"content": "x"}]}',
            404,
            "route_not_found",
        ),
    ],
)
def test_malformed_requests_get_4xx_in_openai_shape(
    env: Setup, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(
        f"{env.router.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_unknown_paths_and_methods(env: Setup) -> None:
    url = env.router.url
    assert httpx.get(f"{url}/v1/chat/completions").status_code == 405
    missing = httpx.get(f"{url}/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
