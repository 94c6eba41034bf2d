"""Reading JSON out of model outputs, and the json scorer that compares fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

from costroute.dataset import Item
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.verdict import item_problem, verdict

# A fence left open counts up to the end, since outputs cut off by max_tokens
# often stop inside their code block.
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

_MISSING = object()


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Each Markdown code block in `text` as (language in lower case, body)."""
    return [(match[1].lower(), match[2]) for match in _FENCE.finditer(text)]


def find_json(text: str, accept: Callable[[Any], bool]) -> Any:
    """The first JSON value in `text` that `accept` takes, or None.

    Fenced json blocks are read first, then other fenced blocks, then the bare
    text; within each, the first object or array that parses and is accepted.
    """
    for place in _json_places(text):
        for value in _json_values(place):
            if accept(value):
                return value
    return None


def _json_places(text: str) -> Iterator[str]:
    blocks = fenced_blocks(text)
    yield from (body for language, body in blocks if language == "json")
    yield from (body for language, body in blocks if language != "json")
    yield text


def _json_values(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        yield value


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


@dataclass(frozen=True)
class JsonScorer:
    """The output's JSON object must agree with the target on the named fields."""

    fields: tuple[str, ...] | None = None

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("fields")
        fields = options.string_list("fields", '["name", "amount"]')
        return cls(tuple(fields) if fields is not None else None)

    def score(self, output: str, item: Item) -> Score:
        expected = _target_object(item)
        found = find_json(output, is_object)
        if found is None:
            return verdict(False, None, detail="no JSON object in the output")

        differing = self._differing(found, expected, item)
        answer = json.dumps(found, sort_keys=True, ensure_ascii=False)
        detail = f"fields differ: {', '.join(differing)}" if differing else ""
        return verdict(not differing, answer, detail=detail)

    def _differing(
        self, found: dict[str, Any], expected: dict[str, Any], item: Item
    ) -> list[str]:
        if self.fields is None:
            names = sorted(set(found) | set(expected))
        else:
            names = list(self.fields)
            absent = [name for name in names if name not in expected]
            if absent:
                raise item_problem(
                    item, f"the target has no field {absent[0]!r} named in fields"
                )

        return [
            name
            for name in names
            if not same_json(found.get(name, _MISSING), expected.get(name, _MISSING))
        ]


def same_json(left: Any, right: Any) -> bool:
    """JSON equality: 1 equals 1.0 but, unlike in Python, true never equals 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            same_json(value, right[key]) for key, value in left.items()
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    return bool(left == right)


def _target_object(item: Item) -> dict[str, Any]:
    target = item.target
    if isinstance(target, str):
        try:
            target = json.loads(target)
        except json.JSONDecodeError as exc:
            raise item_problem(
                item, f"the target is not valid JSON ({exc.msg}); write it as an object"
            ) from None

    if not isinstance(target, dict):
        raise item_problem(
            item,
            f"the json scorer needs a JSON object target, got {type(target).__name__}",
        )
    return target
