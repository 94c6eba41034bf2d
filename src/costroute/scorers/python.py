"""The python scorer: a function of the task's own decides each output."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Self

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.scorers.base import Score
from costroute.scorers.options import Options
from costroute.scorers.verdict import item_problem, verdict

ScoreFunction = Callable[[str, dict[str, Any], Any], Any]

_SCORE_FIELDS = {field.name for field in fields(Score)}


@dataclass(frozen=True)
class PythonScorer:
    """Calls `fn(output, fields, target)`; it returns a bool, a 0-1 float or a dict."""

    function: ScoreFunction
    name: str

    @classmethod
    def from_options(cls, options: Options, base_dir: Path) -> Self:
        options.allow("function")
        name = options.required_string(
            "function", '"checks:is_correct"', "the module:function that scores"
        )
        return cls(load_function(name, base_dir), name)

    def score(self, output: str, item: Item) -> Score:
        try:
            returned = self.function(output, dict(item.fields), item.target)
        except Exception as exc:
            raise item_problem(
                item, f"scorer function {self.name} raised {type(exc).__name__}: {exc}"
            ) from exc

        return self._to_score(returned, output, item)

    def _to_score(self, returned: Any, output: str, item: Item) -> Score:
        answered = bool(output.strip())
        if isinstance(returned, Score):
            return returned
        if isinstance(returned, bool):
            return verdict(returned, None, answered=answered)
        if isinstance(returned, int | float) and 0 <= returned <= 1:
            return verdict(returned >= 1, None, answered=answered, results=returned)
        if isinstance(returned, dict):
            return self._dict_score(returned, answered, item)

        raise item_problem(
            item,
            f"scorer function {self.name} returned {returned!r}; return a bool, "
            "a number from 0 to 1, or a dict with results and/or correct",
        )

    def _dict_score(
        self, returned: dict[str, Any], answered: bool, item: Item
    ) -> Score:
        unknown = sorted(set(returned) - _SCORE_FIELDS)
        if unknown or not {"results", "correct"} & set(returned):
            raise item_problem(
                item,
                f"scorer function {self.name} returned a dict with keys "
                f"{sorted(returned)}; it needs results and/or correct, and may add "
                f"{', '.join(sorted(_SCORE_FIELDS))}",
            )

        results = returned.get("results")
        if results is not None and not _is_results(results):
            raise item_problem(
                item,
                f"scorer function {self.name} returned results={results!r}; "
                "use a number of 0 or more",
            )

        correct = bool(returned.get("correct", results is not None and results >= 1))
        base = verdict(correct, None, answered=answered, results=results)
        return replace(
            base, **{**returned, "correct": correct, "results": base.results}
        )


def _is_results(value: Any) -> bool:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and value >= 0


def load_function(name: str, base_dir: Path) -> ScoreFunction:
    """Import "module:function", looking first for module.py in the task's folder."""
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise UsageError(
            f"[scorer] function = {name!r} needs the form 'module:function', "
            "e.g. 'checks:is_correct' for is_correct in checks.py next to the task"
        )

    try:
        module = _import(module_name, base_dir)
    except Exception as exc:
        raise UsageError(
            f"[scorer] function = {name!r}: cannot import {module_name!r} "
            f"({type(exc).__name__}: {exc}); put {module_name}.py next to the task file"
        ) from exc

    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(
            f"[scorer] function = {name!r}: {module_name} has no function "
            f"{function_name!r}; check the name after the colon"
        )
    return function  # type: ignore[no-any-return]


def _import(module_name: str, base_dir: Path) -> ModuleType:
    path = base_dir / (module_name.replace(".", "/") + ".py")
    with _on_sys_path(base_dir):
        if not path.is_file():
            return importlib.import_module(module_name)
        return _load_file(path)


def _load_file(path: Path) -> ModuleType:
    # A name unique to the file lets two tasks each keep a checks.py without one
    # replacing the other in sys.modules.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    unique_name = f"costroute_task_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(unique_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")

    module = importlib.util.module_from_spec(spec)
    sys.modules[unique_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique_name]
        raise
    return module


@contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Let the scorer module import its neighbours while it loads."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)
