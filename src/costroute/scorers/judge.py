"""The judge: a model grades each output against a rubric and the reference.

Grading needs a provider call, so the runner drives it (`Runner._judge`): this
module holds the judge's settings, its prompt and how its verdict is read. The
judge's calls are priced and stored like any other, as `purpose = 'judge'`,
and reported apart from the candidates' cost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal

from costroute.dataset import Item
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.verdict import verdict
from costroute.task import CandidateConfig, PriceOverride

DEFAULT_RUBRIC = "The answer is correct and agrees with the reference answer."

SYSTEM = (
    "You grade answers. Compare the answer with the reference answer and the "
    "rubric. Reply with one line: SCORE: <a number from 0 to 1>, where 1 means "
    "the answer fully meets the rubric and 0 means it does not."
)

_SCORE = re.compile(r"score\s*[:=]\s*([01](?:\.\d+)?|\.\d+)", re.IGNORECASE)
_WORD = re.compile(r"\b(pass|correct|fail|incorrect)\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeScorer:
    """The judge's settings; `score` is not used, the runner grades instead."""

    model: str
    rubric: str
    threshold: float
    max_tokens: int
    price: PriceOverride | None

    @classmethod
    def from_options(cls, options: Options) -> JudgeScorer:
        options.allow("model", "rubric", "threshold", "max_tokens", "price")
        model = options.required_string(
            "model", '"openai/gpt-4o-mini"', "the model that grades the outputs"
        )
        if "/" not in model:
            raise options.error(f"needs model as provider/model, not {model!r}")
        return cls(
            model=model,
            rubric=options.string_or("rubric", '"…"', DEFAULT_RUBRIC),
            threshold=options.positive("threshold", 0.5),
            max_tokens=options.count("max_tokens", 64),
            price=_price(options),
        )

    def candidate(self) -> CandidateConfig:
        """The judge as a model to call, with its own price when one is given."""
        return CandidateConfig(
            model=self.model, max_tokens=self.max_tokens, price=self.price
        )

    def messages(self, question: str, output: str, item: Item) -> list[dict[str, str]]:
        """The grading request: rubric, the question asked, reference, answer."""
        reference = (
            item.target
            if isinstance(item.target, str)
            else json.dumps(item.target, ensure_ascii=False)
        )
        user = (
            f"Rubric: {self.rubric}\n\nQuestion:\n{question}\n\n"
            f"Reference answer:\n{reference}\n\nAnswer to grade:\n{output}"
        )
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
        ]

    def read(self, reply: str) -> Score:
        grade = parse_grade(reply)
        if grade is None:
            return verdict(False, None, detail=f"judge gave no grade: {reply[:80]!r}")
        return verdict(
            grade >= self.threshold,
            f"{grade:g}",
            results=grade,
            detail=f"judge grade {grade:g}",
        )

    def score(self, output: str, item: Item) -> Score:
        raise NotImplementedError("the runner grades with the judge model")


def parse_grade(reply: str) -> float | None:
    """The grade in a judge's reply: `SCORE: 0.8`, or a pass/fail word."""
    match = _SCORE.search(reply)
    if match:
        return min(max(float(match.group(1)), 0.0), 1.0)
    word = _WORD.search(reply)
    if word is None:
        return None
    return 1.0 if word.group(1).lower() in {"pass", "correct"} else 0.0


def _price(options: Options) -> PriceOverride | None:
    raw = options.raw("price")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise options.error("needs price = { input_mtok = …, output_mtok = … }")
    try:
        return PriceOverride(**{k: Decimal(str(v)) for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise options.error(f"has a bad price: {exc}") from None
