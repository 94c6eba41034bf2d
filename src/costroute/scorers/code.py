"""The code scorer: generated code passes when the item's tests run clean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from costroute.dataset import Item
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.sandbox import Limits, run_python
from costroute.scorers.structured import fenced_blocks
from costroute.scorers.verdict import item_problem, verdict

_PYTHON_FENCES = {"python", "py", "python3"}


@dataclass(frozen=True)
class CodeScorer:
    """Runs the output's code followed by the item's test code, offline and capped."""

    tests_field: str
    limits: Limits

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("tests_field", "timeout_s", "memory_mb")
        tests_field = options.string_or("tests_field", '"tests"', "tests")
        limits = Limits(
            timeout_s=options.positive("timeout_s", 10.0),
            memory_mb=options.count("memory_mb", 1024),
        )
        if limits.memory_mb < 64:
            raise options.error("needs memory_mb of at least 64 to start Python")
        return cls(tests_field, limits)

    def score(self, output: str, item: Item) -> Score:
        tests = self._tests(item)
        code = extract_code(output)
        result = run_python(f"{code}\n\n\n{tests}\n", self.limits)
        return verdict(
            result.passed,
            code or None,
            detail=result.describe(),
        )

    def _tests(self, item: Item) -> str:
        tests = item.fields.get(self.tests_field)
        if isinstance(tests, list) and all(isinstance(line, str) for line in tests):
            tests = "\n".join(tests)
        if not isinstance(tests, str) or not tests.strip():
            raise item_problem(
                item,
                f"no test code in field {self.tests_field!r}; add Python asserts "
                "there, or set [scorer] tests_field to the field that holds them",
            )
        return tests


def extract_code(output: str) -> str:
    """The first python code block, else the first unlabeled one, else the output."""
    blocks = fenced_blocks(output)
    for wanted in (_PYTHON_FENCES, {""}):
        for language, body in blocks:
            if language in wanted:
                return body.strip("\n")
    return output.strip("\n")
