"""Prices: the only place where token usage and busy time turn into money.

Hosted models are priced from the `genai-prices` catalog at the call's timestamp,
unless the task overrides the price. Models on the team's own hardware have no
per-token bill; they are priced from measured busy time at an hourly rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

import genai_prices
from genai_prices import calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices

logger = logging.getLogger(__name__)

MTOK = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)

# AWS c7i.large on demand in us-east-1 (2 vCPU, 4 GiB), the kind of small cloud
# CPU machine that serves a 135M-parameter model; stated in the README.
DEFAULT_LOCAL_HOURLY_USD = Decimal("0.0893")

CostKind = Literal["metered", "provider", "compute", "unpriced"]
PriceSource = Literal["catalog", "override", "compute", "reported", "none"]

# costroute provider names that differ from the catalog's provider ids.
CATALOG_PROVIDER = {
    "gemini": "google",
    "zhipu": "zhipuai",
    "xai": "x-ai",
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call as the provider reported them.

    `input_tokens` includes cached input; `cache_read_tokens` and
    `cache_write_tokens` say how much of it was billed at the cache rates.
    `output_tokens` includes reasoning tokens, which are billed as output.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class Price:
    """The price a candidate is charged at, as recorded with every call."""

    model: str
    source: PriceSource
    catalog_version: str
    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    hourly_usd: Decimal | None = None
    gpus: int = 1
    catalog_model: str | None = None
    catalog_provider: str | None = None

    @property
    def cost_kind(self) -> CostKind:
        if self.source == "compute":
            return "compute"
        if self.source == "none":
            return "unpriced"
        if self.source == "reported":
            return "provider"
        return "metered"

    @property
    def priced(self) -> bool:
        return self.source != "none"


def catalog_version() -> str:
    return f"genai-prices {genai_prices.__version__}"


def catalog_price(model_ref: str) -> Price | None:
    """The catalog's current price for `provider/model`, or None if it has none."""
    provider, model = model_ref.split("/", 1)
    provider_id = CATALOG_PROVIDER.get(provider, provider)
    try:
        found_provider, info = get_snapshot().find_provider_model(
            model, None, provider_id, None
        )
    except LookupError:
        return None

    prices = info.get_prices(datetime.now())
    return Price(
        model=model_ref,
        source="catalog",
        catalog_version=catalog_version(),
        input_mtok=_base(getattr(prices, "input_mtok", None)),
        output_mtok=_base(getattr(prices, "output_mtok", None)),
        cache_read_mtok=_base(getattr(prices, "cache_read_mtok", None)),
        cache_write_mtok=_base(getattr(prices, "cache_write_mtok", None)),
        catalog_model=info.id,
        catalog_provider=found_provider.id,
    )


def override_price(
    model_ref: str,
    input_mtok: Decimal,
    output_mtok: Decimal,
    cache_read_mtok: Decimal | None = None,
    cache_write_mtok: Decimal | None = None,
) -> Price:
    return Price(
        model=model_ref,
        source="override",
        catalog_version=catalog_version(),
        input_mtok=input_mtok,
        output_mtok=output_mtok,
        cache_read_mtok=cache_read_mtok,
        cache_write_mtok=cache_write_mtok,
    )


def compute_price(model_ref: str, hourly_usd: Decimal, gpus: int) -> Price:
    return Price(
        model=model_ref,
        source="compute",
        catalog_version=catalog_version(),
        hourly_usd=hourly_usd,
        gpus=gpus,
    )


def reported_price(model_ref: str) -> Price:
    """Costs taken as recorded elsewhere (an import), not computed here."""
    return Price(model=model_ref, source="reported", catalog_version=catalog_version())


def unpriced(model_ref: str) -> Price:
    return Price(model=model_ref, source="none", catalog_version=catalog_version())


def token_cost_usd(price: Price, usage: Usage, at: datetime) -> Decimal | None:
    """What a call with `usage` costs at `price`; None when it cannot be priced."""
    if price.source == "catalog":
        return _catalog_cost_usd(price, usage, at)
    if price.source != "override":
        return None
    assert price.input_mtok is not None and price.output_mtok is not None

    cache_read_mtok = price.cache_read_mtok
    if cache_read_mtok is None:
        cache_read_mtok = price.input_mtok
    cache_write_mtok = price.cache_write_mtok
    if cache_write_mtok is None:
        cache_write_mtok = price.input_mtok
    uncached = max(usage.input_tokens - usage.cache_read_tokens, 0)
    uncached = max(uncached - usage.cache_write_tokens, 0)

    total = (
        uncached * price.input_mtok
        + usage.cache_read_tokens * cache_read_mtok
        + usage.cache_write_tokens * cache_write_mtok
        + usage.output_tokens * price.output_mtok
    )
    return total / MTOK


def compute_cost_usd(price: Price, busy_ms: float) -> Decimal:
    """Hardware time: busy milliseconds × hourly rate × GPUs."""
    assert price.hourly_usd is not None
    busy_s = Decimal(str(round(busy_ms, 3))) / Decimal(1000)
    return busy_s * price.hourly_usd * price.gpus / SECONDS_PER_HOUR


def _catalog_cost_usd(price: Price, usage: Usage, at: datetime) -> Decimal:
    assert price.catalog_model is not None
    calculation = calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        ),
        price.catalog_model,
        provider_id=price.catalog_provider,
        genai_request_timestamp=at,
    )
    return calculation.total_price


def _base(value: object) -> Decimal | None:
    if isinstance(value, TieredPrices):
        return value.base
    if isinstance(value, Decimal):
        return value
    return None
