"""Scorers turn a model output and an item's target into a `Score`."""

from __future__ import annotations

from pathlib import Path

from costroute.scorers.base import Score, Scorer
from costroute.scorers.code import CodeScorer
from costroute.scorers.findings import FindingsMatch, FindingsScorer, match_findings
from costroute.scorers.judge import JudgeScorer
from costroute.scorers.options import Options
from costroute.scorers.python import PythonScorer
from costroute.scorers.structured import JsonScorer
from costroute.scorers.text import ExactScorer, LabelScorer, NumberScorer, RegexScorer
from costroute.task import ScorerConfig

__all__ = [
    "FindingsMatch",
    "JudgeScorer",
    "Score",
    "Scorer",
    "make_scorer",
    "match_findings",
]


def make_scorer(config: ScorerConfig, base_dir: Path) -> Scorer:
    """Build the scorer the task's [scorer] table asks for, checking its options.

    `base_dir` is the task file's folder, where a python scorer's module lives.
    """
    options = Options(config.kind, config.options())
    match config.kind:
        case "exact":
            return ExactScorer.from_options(options)
        case "label":
            return LabelScorer.from_options(options)
        case "regex":
            return RegexScorer.from_options(options)
        case "number":
            return NumberScorer.from_options(options)
        case "json":
            return JsonScorer.from_options(options)
        case "findings":
            return FindingsScorer.from_options(options)
        case "python":
            return PythonScorer.from_options(options, base_dir)
        case "code":
            return CodeScorer.from_options(options)
        case "judge":
            return JudgeScorer.from_options(options)
