"""Prices agree with genai-prices; overrides and compute time are exact."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest

from costroute.pricing import (
    Usage,
    catalog_price,
    compute_cost_usd,
    compute_price,
    override_price,
    token_cost_usd,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model_ref", "catalog_model", "provider_id"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini", "openai"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic"),
        ("gemini/gemini-2.5-flash", "gemini-2.5-flash", "google"),
    ],
)
def test_catalog_cost_matches_genai_prices(
    model_ref: str, catalog_model: str, provider_id: str
) -> None:
    usage = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000)

    price = catalog_price(model_ref)

    assert price is not None and price.source == "catalog"
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000
        ),
        catalog_model,
        provider_id=provider_id,
        genai_request_timestamp=NOW,
    ).total_price
    assert token_cost_usd(price, usage, NOW) == expected
    assert isinstance(expected, Decimal) and expected > 0


def test_unknown_model_has_no_catalog_price() -> None:
    assert catalog_price("openai/not-a-model-at-all") is None
    assert catalog_price("myvllm/llama") is None


def test_override_prices_cached_input_at_its_own_rate() -> None:
    price = override_price(
        "x/y", Decimal("2.5"), Decimal("10"), cache_read_mtok=Decimal("1.25")
    )
    usage = Usage(
        input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=400_000
    )

    cost = token_cost_usd(price, usage, NOW)

    # 600k uncached × 2.5 + 400k cached × 1.25 + 100k out × 10, per million.
    assert cost == Decimal("1.5") + Decimal("0.5") + Decimal("1")


def test_reasoning_tokens_are_billed_as_output() -> None:
    price = override_price("x/y", Decimal("1"), Decimal("4"))
    usage = Usage(input_tokens=0, output_tokens=1000, reasoning_tokens=800)

    assert token_cost_usd(price, usage, NOW) == Decimal("0.004")


def test_compute_time_cost_is_exact() -> None:
    price = compute_price("local/smollm2", Decimal("0.0893"), gpus=1)

    assert compute_cost_usd(price, 3_600_000.0) == Decimal("0.0893")
    assert compute_cost_usd(price, 1500.0) == Decimal("1.5") * Decimal("0.0893") / 3600
