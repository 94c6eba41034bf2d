"""A cascade's check on live cheap outputs: whether to ask the strong model.

The checks mean what they mean when `costroute decide` simulates them on a
measured run (see `costroute.cascade`), so the live escalation rate can be
compared with the measured one.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from costroute.errors import UsageError
from costroute.routes import EscalationCheck
from costroute.scorers.structured import find_json, is_object
from costroute.scorers.text import first_label
from costroute.scorers.verdict import normalise


def validate(check: EscalationCheck, where: str) -> None:
    """Refuse a check that could never run, naming the key to fix."""
    if check.check == "labels" and not check.labels:
        raise UsageError(f"{where}: a labels check needs labels = [...]")
    if check.check == "regex":
        if not check.pattern:
            raise UsageError(f"{where}: a regex check needs pattern")
        try:
            _compiled(check.pattern)
        except re.error as exc:
            raise UsageError(f"{where}: pattern is not a valid regex: {exc}") from None
    if check.check == "logprob" and check.threshold is None:
        raise UsageError(f"{where}: a logprob check needs threshold")
    if check.check == "agreement" and check.samples < 2:
        raise UsageError(f"{where}: an agreement check needs samples >= 2")


def samples(check: EscalationCheck) -> int:
    """How many cheap answers the check needs."""
    return check.samples if check.check == "agreement" else 1


def wants_logprobs(check: EscalationCheck) -> bool:
    return check.check == "logprob"


def escalation_reason(
    check: EscalationCheck, outputs: list[str], responses: list[dict[str, Any]]
) -> str | None:
    """Why the cheap answer is not good enough, or None when it passes."""
    output = outputs[0]
    if check.check == "labels":
        if first_label(output, tuple(check.labels)) is None:
            return "no label"
    elif check.check == "regex":
        assert check.pattern is not None
        if _compiled(check.pattern).search(output) is None:
            return "no regex match"
    elif check.check == "json":
        found = find_json(output, is_object)
        if found is None or not all(name in found for name in check.fields):
            return "no JSON object"
    elif check.check == "logprob":
        return _logprob_reason(check, responses[0])
    elif len({normalise(text) for text in outputs}) > 1:
        return "samples disagree"
    return None


def _logprob_reason(check: EscalationCheck, response: dict[str, Any]) -> str | None:
    # A response without logprobs cannot show confidence, so it escalates.
    mean = mean_logprob(response)
    assert check.threshold is not None
    if mean is None:
        return "no logprobs"
    return "low logprob" if mean < check.threshold else None


def mean_logprob(response: dict[str, Any]) -> float | None:
    """Mean token log-probability of a chat completion, None when absent."""
    try:
        tokens = response["choices"][0]["logprobs"]["content"]
        values = [float(token["logprob"]) for token in tokens]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return sum(values) / len(values) if values else None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
