"""Matching reported findings (vulnerabilities, defects) against known ones."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Self

from costroute.dataset import Item
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.structured import find_json
from costroute.scorers.verdict import item_problem

Finding = Mapping[str, Any]

_PATH_KEYS = {"file", "path", "filename", "file_path", "filepath"}


@dataclass(frozen=True)
class FindingsMatch:
    """How a list of reported findings lines up with the known ones.

    `pairs` holds (report index, truth index) for each true positive; `false_positives`
    the report indices counted as fp, `missed` the truth indices counted as fn.
    """

    tp: int
    fp: int
    fn: int
    duplicates: int
    trap_hits: int
    pairs: tuple[tuple[int, int], ...]
    false_positives: tuple[int, ...]
    missed: tuple[int, ...]


@dataclass(frozen=True)
class MatchRule:
    """When one reported finding is the same as one known finding."""

    keys: tuple[str, ...] = ("file",)
    line_field: str = "line"
    tolerance: int = 0
    alt_keys: Mapping[str, str] | None = None

    def matches(self, report: Finding, truth: Finding) -> bool:
        return all(self._key_matches(key, report, truth) for key in self.keys) and (
            self.line_distance(report, truth) is not None
        )

    def line_distance(self, report: Finding, truth: Finding) -> int | None:
        """Lines between the report and the truth's range; None when too far."""
        window = _line_range(truth, self.line_field)
        if window is None:
            return 0

        line = _as_line(report.get(self.line_field, report.get("line_start")))
        if line is None:
            return None
        distance = max(window[0] - line, line - window[1], 0)
        return distance if distance <= self.tolerance else None

    def _key_matches(self, key: str, report: Finding, truth: Finding) -> bool:
        accepted = self._accepted(key, truth)
        # A truth that does not name a key accepts any value for it, so a trap
        # given only by file and line catches every report there.
        if accepted is None:
            return True

        said = _as_list(report.get(key))
        return any(same_value(key, one, other) for one in said for other in accepted)

    def _accepted(self, key: str, truth: Finding) -> list[Any] | None:
        names = [key, f"{key}s", (self.alt_keys or {}).get(key)]
        present = [name for name in names if name and truth.get(name) is not None]
        if not present:
            return None
        return [value for name in present for value in _as_list(truth[name])]


def match_findings(
    reported: Sequence[Finding],
    truth: Sequence[Finding],
    keys: Sequence[str] = ("file",),
    line_field: str = "line",
    tolerance: int = 0,
    alt_keys: Mapping[str, str] | None = None,
) -> FindingsMatch:
    """Pair reports with known findings, each known vulnerability at most once.

    A report matches a known finding when every key agrees (a list in the truth,
    or a `<key>s` field, lists acceptable values) and its line lies within the
    truth's line range widened by `tolerance`. Truths with `is_vulnerable` false
    are traps: a report that lands on one is a false positive. Pairs are chosen
    to match as many vulnerabilities as possible, nearest lines first. A report
    that matches only vulnerabilities already claimed by other reports is a
    duplicate: it is ignored rather than counted as fp, since it restates a real
    finding. A report that matches a vulnerability and a trap both counts for the
    vulnerability, the kinder reading. File paths compare after normalising, and
    a relative path may be the tail of the other; CWE ids compare by number.
    """
    rule = MatchRule(tuple(keys), line_field, tolerance, alt_keys)
    return _match(rule, reported, truth)


def _match(
    rule: MatchRule, reported: Sequence[Finding], truth: Sequence[Finding]
) -> FindingsMatch:
    vulns = [index for index, known in enumerate(truth) if not is_trap(known)]
    options = [_nearest_first(rule, report, truth, vulns) for report in reported]
    owner = _maximum_matching(options)

    claimed = set(owner.values())
    duplicates = [r for r, found in enumerate(options) if found and r not in claimed]
    false_positives = [r for r, found in enumerate(options) if not found]
    trap_hits = [r for r in false_positives if _hits_trap(rule, reported[r], truth)]
    missed = [index for index in vulns if index not in owner]
    return FindingsMatch(
        tp=len(owner),
        fp=len(false_positives),
        fn=len(missed),
        duplicates=len(duplicates),
        trap_hits=len(trap_hits),
        pairs=tuple(sorted((report, known) for known, report in owner.items())),
        false_positives=tuple(false_positives),
        missed=tuple(missed),
    )


def is_trap(known: Finding) -> bool:
    """A known non-vulnerability, placed to catch reports that guess."""
    flag = known.get("is_vulnerable", True)
    return str(flag).strip().lower() in {"false", "0", "no"}


def _nearest_first(
    rule: MatchRule, report: Finding, truth: Sequence[Finding], vulns: list[int]
) -> list[int]:
    found = [index for index in vulns if rule.matches(report, truth[index])]
    return sorted(
        found, key=lambda index: rule.line_distance(report, truth[index]) or 0
    )


def _hits_trap(rule: MatchRule, report: Finding, truth: Sequence[Finding]) -> bool:
    return any(is_trap(known) and rule.matches(report, known) for known in truth)


def _maximum_matching(options: list[list[int]]) -> dict[int, int]:
    """Truth index to report index, pairing as many as possible.

    Kuhn's augmenting paths: a greedy pass in report order could hand a truth to
    a report that had another choice and leave a later report without one.
    """
    owner: dict[int, int] = {}
    for report in range(len(options)):
        _augment(report, options, owner, set())
    return owner


def _augment(
    report: int, options: list[list[int]], owner: dict[int, int], seen: set[int]
) -> bool:
    for known in options[report]:
        if known in seen:
            continue

        seen.add(known)
        if known not in owner or _augment(owner[known], options, owner, seen):
            owner[known] = report
            return True
    return False


def same_value(key: str, one: Any, other: Any) -> bool:
    """Equality for a finding field: paths and CWE ids compare by meaning."""
    name = key.lower()
    if "cwe" in name:
        return cwe_id(one) == cwe_id(other)
    if name in _PATH_KEYS or name.endswith(("file", "path")):
        return same_path(one, other)
    return str(one).strip().casefold() == str(other).strip().casefold()


def cwe_id(value: Any) -> str:
    """The bare CWE number, so "CWE-79", "cwe 79", "79" and 79 all read "79"."""
    text = re.sub(r"^CWE[\s:_-]*", "", str(value).strip().upper())
    return str(int(text)) if text.isdigit() else text


def same_path(one: Any, other: Any) -> bool:
    """Same file, or one relative path is the tail of the other ("src/a.py", "a.py")."""
    one_parts = _path_parts(one)
    other_parts = _path_parts(other)
    shorter, longer = sorted((one_parts, other_parts), key=len)
    if not shorter or shorter[0] == "/":
        return one_parts == other_parts
    return longer[len(longer) - len(shorter) :] == shorter


def _path_parts(value: Any) -> tuple[str, ...]:
    # PurePosixPath drops "./" segments and repeated slashes by itself.
    return PurePosixPath(str(value).strip().replace("\\", "/")).parts


def _line_range(truth: Finding, line_field: str) -> tuple[int, int] | None:
    start = _as_line(truth.get("line_start"))
    if start is None:
        start = _as_line(truth.get(line_field, truth.get("line")))
    if start is None:
        return None

    end = _as_line(truth.get("line_end"))
    end = start if end is None else end
    return min(start, end), max(start, end)


def _as_line(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.match(r"\s*(\d+)", value) if isinstance(value, str) else None
    return int(match[1]) if match else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class FindingsScorer:
    """Scores a list of reported findings: results are the true positives."""

    rule: MatchRule

    @classmethod
    def from_options(cls, options: Options) -> Self:
        options.allow("keys", "line_field", "line_tolerance", "alt_keys")
        keys = options.string_list("keys", '["file", "cwe"]') or ["file"]
        line_field = options.string_or("line_field", '"line"', "line")
        tolerance = options.count("line_tolerance", 0)
        alt_keys = options.string_map(
            "alt_keys", 'alt_keys = {cwe = "acceptable_cwes"}'
        )
        return cls(MatchRule(tuple(keys), line_field, tolerance, alt_keys))

    def score(self, output: str, item: Item) -> Score:
        truth = _known_findings(item)
        reported = read_findings(output)
        match = _match(self.rule, reported or [], truth)
        return Score(
            results=float(match.tp),
            correct=match.fp == 0 and match.fn == 0,
            tp=match.tp,
            fp=match.fp,
            fn=match.fn,
            answer=None if reported is None else f"findings reported: {len(reported)}",
            detail=_describe(match, reported is None),
        )


def read_findings(output: str) -> list[dict[str, Any]] | None:
    """The findings list in an output, bare or under "findings"; None if absent."""
    found = find_json(output, _is_findings)
    if found is None:
        return None

    entries = found["findings"] if isinstance(found, dict) else found
    return [dict(entry) for entry in entries]


def _is_findings(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("findings")
    return isinstance(value, list) and all(isinstance(entry, dict) for entry in value)


def _known_findings(item: Item) -> list[dict[str, Any]]:
    target = item.target
    if isinstance(target, str):
        try:
            target = json.loads(target)
        except json.JSONDecodeError as exc:
            raise item_problem(
                item, f"the target is not valid JSON ({exc.msg})"
            ) from None

    if isinstance(target, dict) and "findings" in target:
        target = target["findings"]
    if not _is_findings(target):
        raise item_problem(
            item, "the findings scorer needs a target that is a list of objects"
        )
    return [dict(entry) for entry in target]


def _describe(match: FindingsMatch, unread: bool) -> str:
    parts = [f"tp {match.tp}", f"fp {match.fp}", f"fn {match.fn}"]
    if match.duplicates:
        parts.append(f"duplicates ignored {match.duplicates}")
    if match.trap_hits:
        parts.append(f"trap hits {match.trap_hits}")
    if unread:
        parts.append("no findings list in the output, read as none")
    return ", ".join(parts)
