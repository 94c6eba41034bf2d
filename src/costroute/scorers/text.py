"""Scorers that read one short answer out of free text: exact, label, regex, number."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Self

from costroute.dataset import Item
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.verdict import item_problem, normalise, verdict


@dataclass(frozen=True)
class ExactScorer:
    """The whole output must equal the target, up to case, spacing and punctuation."""

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow()
        return cls()

    def score(self, output: str, item: Item) -> Score:
        answer = output.strip() or None
        return verdict(normalise(output) == normalise(item.target), answer)


@dataclass(frozen=True)
class LabelScorer:
    """The answer is whichever allowed label the output mentions first."""

    labels: tuple[str, ...]
    positive: str | None = None

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("labels", "positive")
        labels = options.string_list("labels", '["spam", "ham"]')
        if labels is None:
            raise options.error("needs labels = [...]; add the list of allowed answers")

        positive = options.string("positive", '"spam"')
        if positive is not None and normalise(positive) not in map(normalise, labels):
            raise options.error(
                f"has positive = {positive!r}, which is not one of the labels; "
                "name the positive class exactly as it appears in labels"
            )
        return cls(tuple(labels), positive)

    def score(self, output: str, item: Item) -> Score:
        answer = first_label(output, self.labels)
        correct = answer is not None and normalise(answer) == normalise(item.target)
        if self.positive is None:
            return verdict(correct, answer)

        return self._positive_class_score(correct, answer, item)

    def _positive_class_score(
        self, correct: bool, answer: str | None, item: Item
    ) -> Score:
        # With a named positive class, precision and recall describe that class
        # only, as they do for spam filters and detectors.
        positive = normalise(self.positive)
        said_positive = answer is not None and normalise(answer) == positive
        is_positive = normalise(item.target) == positive
        return Score(
            results=1.0 if correct else 0.0,
            correct=correct,
            tp=int(said_positive and is_positive),
            fp=int(said_positive and not is_positive),
            fn=int(is_positive and not said_positive),
            answer=answer,
        )


def first_label(output: str, labels: tuple[str, ...]) -> str | None:
    """The label found earliest in `output` as whole words; the longest on a tie."""
    found: list[tuple[int, int, str]] = []
    for label in labels:
        match = _label_pattern(label).search(output)
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else None


@functools.lru_cache(maxsize=1024)
def _label_pattern(label: str) -> re.Pattern[str]:
    # Any run of whitespace inside a label matches any other, so "not spam"
    # is found across a line break too.
    words = r"\s+".join(re.escape(word) for word in label.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@dataclass(frozen=True)
class RegexScorer:
    """The answer is the first match of a pattern: its group 1, or the whole match."""

    pattern: re.Pattern[str]

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("pattern", "flags")
        source = options.required_string(
            "pattern", "'Answer: (\\w+)'", "a regular expression that finds the answer"
        )
        flags = _regex_flags(options, options.string("flags", '"i"') or "")
        try:
            return cls(re.compile(source, flags))
        except re.error as exc:
            raise options.error(
                f"has a pattern that does not compile ({exc}); fix the regular "
                "expression, remembering that TOML literal strings ('...') keep "
                "backslashes as they are"
            ) from None

    def score(self, output: str, item: Item) -> Score:
        match = self.pattern.search(output)
        answer = None
        if match:
            answer = match.group(1) if self.pattern.groups else match.group(0)

        correct = answer is not None and normalise(answer) == normalise(item.target)
        return verdict(correct, answer)


def _regex_flags(options: Options, letters: str) -> re.RegexFlag:
    flags = re.RegexFlag(0)
    for letter in letters.lower():
        if letter not in _REGEX_FLAGS:
            raise options.error(
                f"has an unknown flag {letter!r} in flags; use any of i, m, s, x"
            )
        flags |= _REGEX_FLAGS[letter]
    return flags


# A minus sign counts only where it starts a word, so "COVID-19" reads as 19.
# Thousands separators need exactly three digits per group.
_NUMBER = re.compile(
    r"(?:(?<![\w.])[-+])?(?<![\d.])"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)


@dataclass(frozen=True)
class NumberScorer:
    """The first number in the output must equal the target, within tolerance."""

    abs_tol: float | None = None
    rel_tol: float | None = None

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("abs_tol", "rel_tol")
        return cls(options.number("abs_tol"), options.number("rel_tol"))

    def score(self, output: str, item: Item) -> Score:
        expected = _target_number(item)
        match = _NUMBER.search(output)
        if match is None:
            return verdict(False, None, detail="no number in the output")

        answer = match.group(0)
        correct = self._equal(parse_number(answer), expected)
        return verdict(
            correct, answer, detail="" if correct else f"expected {expected}"
        )

    def _equal(self, got: int | float, expected: int | float) -> bool:
        no_tolerance = self.abs_tol is None and self.rel_tol is None
        if no_tolerance and isinstance(got, int) and isinstance(expected, int):
            return got == expected

        rel_tol = 1e-9 if self.rel_tol is None else self.rel_tol
        abs_tol = self.abs_tol or 0.0
        return math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol)


def parse_number(text: str) -> int | float:
    """Read a number as written, keeping integers exact; commas are separators."""
    plain = text.replace(",", "").strip()
    try:
        return int(plain)
    except ValueError:
        return float(plain)


def _target_number(item: Item) -> int | float:
    target = item.target
    if isinstance(target, int | float) and not isinstance(target, bool):
        return target

    if isinstance(target, str) and _NUMBER.fullmatch(target.strip()):
        return parse_number(target)
    raise item_problem(
        item,
        f"target {target!r} is not a number; the number scorer "
        'needs a numeric target such as 42 or "3.5"',
    )
