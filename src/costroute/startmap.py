"""The starting map: a default route by task category, before any measurement.

It encodes the usual shape of the answer: high-volume scanning, bulk
classification and extraction and first drafts go to a cheap open-weight model;
work whose data must stay on our machines goes to open weights only; the hard
tail of reasoning, final review and customer-facing answers that cannot be taken
back go to a frontier model. It is a guess, always labelled unmeasured, and the
first `costroute run` replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from costroute.task import DialsConfig

Tier = Literal["open", "frontier"]

# SmolLM2-135M-Instruct runs inside costroute with llama.cpp, so the default
# open route needs no server and no key.
OPEN_MODEL = "local/smollm2"
# A frontier model in the genai-prices catalog, so its price is known.
FRONTIER_MODEL = "openai/gpt-4.1"

CATEGORY_TIERS: dict[str, Tier] = {
    "scanning": "open",
    "classification": "open",
    "extraction": "open",
    "drafting": "open",
    "first-draft": "open",
    "on-prem": "open",
    "hard-reasoning": "frontier",
    "reasoning": "frontier",
    "final-review": "frontier",
    "review": "frontier",
    "customer-facing": "frontier",
}

_WHY = {
    "open": "a cheap open-weight model handles this kind of high-volume work",
    "frontier": "this kind of work needs a frontier model",
}


@dataclass(frozen=True)
class StartingRoute:
    """The default for a category: the model, its tier, and why in plain words."""

    model: str
    tier: Tier
    why: str


def starting_route(category: str, dials: DialsConfig) -> StartingRoute:
    """The starting map's model for `category`, after the hard constraints.

    Data that must stay on-prem goes to open weights whatever the category. An
    unknown category follows the error dials: an unrecoverable error that costs
    something goes to the frontier, anything else to the open model.
    """
    key = _category_key(category)
    if dials.on_prem_only:
        why = "the data must stay on our own hardware, so only open weights qualify"
        return StartingRoute(OPEN_MODEL, "open", why)

    tier = CATEGORY_TIERS.get(key)
    if tier is not None:
        return _route(tier, f"category {category!r}: {_WHY[tier]}")

    if not dials.recoverable and dials.error_cost_usd > 0:
        why = (
            f"category {category!r} is not on the map and its errors are unrecoverable"
        )
        return _route("frontier", why)
    return _route("open", f"category {category!r} is not on the map; {_WHY['open']}")


def _route(tier: Tier, why: str) -> StartingRoute:
    model = OPEN_MODEL if tier == "open" else FRONTIER_MODEL
    return StartingRoute(model, tier, why)


def _category_key(category: str) -> str:
    return "-".join(category.strip().lower().replace("_", " ").split())
