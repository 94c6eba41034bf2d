"""What every scorer returns, and the shape a scorer has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from costroute.dataset import Item


@dataclass(frozen=True)
class Score:
    """The verdict on one output.

    `results` is what the output contributes to the numerator of cost per result:
    1 or 0 for a single answer, a fraction for partial credit, the number of true
    positives for a findings list. `tp`, `fp` and `fn` feed precision, recall and
    F1; `answer` is what the scorer read from the output, for the report.
    """

    results: float
    correct: bool
    tp: int = 0
    fp: int = 0
    fn: int = 0
    answer: str | None = None
    detail: str = ""


class Scorer(Protocol):
    """Scores one model output against one item's known answer."""

    def score(self, output: str, item: Item) -> Score: ...
