"""Pieces every single-answer scorer shares: normalising and the verdict."""

from __future__ import annotations

import unicodedata
from typing import Any

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.scorers.base import Score


def normalise(value: Any) -> str:
    """Fold case, drop punctuation and collapse whitespace, for lenient equality."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    kept = "".join(
        char for char in text if not unicodedata.category(char).startswith("P")
    )
    return " ".join(kept.split())


def verdict(
    correct: bool,
    answer: str | None,
    *,
    answered: bool | None = None,
    results: float | None = None,
    detail: str = "",
) -> Score:
    """Score one answer, counting a wrong answer as a false positive.

    Precision then reads as correct over answered and recall as correct over
    items, so a model that abstains loses recall but keeps its precision.
    """
    if answered is None:
        answered = answer is not None
    if results is None:
        results = 1.0 if correct else 0.0

    return Score(
        results=results,
        correct=correct,
        tp=int(correct),
        fp=int(answered and not correct),
        fn=int(not correct),
        answer=answer,
        detail=detail,
    )


def item_problem(item: Item, message: str) -> UsageError:
    """A problem with the dataset row itself, named so the user can find it."""
    return UsageError(f"item {item.id!r} (line {item.line}): {message}")
