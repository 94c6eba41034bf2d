"""The routes file: one reviewed, committed section per task saying where it goes.

`costroute decide -o routes.toml` writes it; `costroute serve` and
`costroute recheck` read it. Deciding again for a task replaces that task's
section and keeps the others.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costroute.errors import UsageError
from costroute.task import DialsConfig, ProviderConfig

HEADER = (
    "Routes decided by costroute from measured runs. Review and commit this file;\n"
    "`costroute decide … -o` replaces one task's section and keeps the others."
)

# A `[table]` or `[[array]]` header, and the key of a `key = value` line.
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^({_PART}(?:\s*\.\s*{_PART})*)\s*=")
# A dot between the parts of a dotted key, outside quotes.
_DOT = re.compile(r"""\.(?=(?:[^"']|"[^"]*"|'[^']*')*$)""")

CheckKind = Literal["labels", "regex", "json", "logprob", "agreement"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationCheck(_Model):
    """When a cascade sends an item on from the cheap model to the strong one.

    - `labels`: escalate unless the output contains one of `labels`;
    - `regex`: escalate unless the output matches `pattern`;
    - `json`: escalate unless the output holds a JSON object (with `fields`);
    - `logprob`: escalate when the mean token log-probability is below
      `threshold`;
    - `agreement`: escalate when two cheap samples disagree.
    """

    check: CheckKind
    labels: list[str] = Field(default_factory=list)
    pattern: str | None = None
    fields: list[str] = Field(default_factory=list)
    threshold: float | None = None
    samples: int = 2


class Route(_Model):
    kind: Literal["single", "cascade"]
    model: str | None = None
    cheap: str | None = None
    strong: str | None = None
    escalate_when: EscalationCheck | None = None

    def models(self) -> list[str]:
        if self.kind == "single":
            return [self.model] if self.model else []
        return [m for m in (self.cheap, self.strong) if m]


class Evidence(_Model):
    run_id: str | None = None
    metric: str | None = None
    floor: float | None = None
    quality: float | None = None
    quality_ci: list[float] = Field(default_factory=list)
    cost_per_result_usd: Decimal | None = None
    cost_per_result_ci: list[Decimal | None] = Field(default_factory=list)
    expected_cost_per_result_usd: Decimal | None = None
    monthly_cost_usd: Decimal | None = None
    escalation_rate: float | None = None
    confidence: float | None = None
    probability_best: float | None = None


class ModelPrice(_Model):
    source: str
    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    hourly_usd: Decimal | None = None
    gpus: int = 1


class PriceSnapshot(_Model):
    catalog_version: str
    taken_at: str
    models: dict[str, ModelPrice] = Field(default_factory=dict)


class CandidateSettings(_Model):
    """What serving a model needs from the task: request settings and hosting."""

    max_tokens: int | None = None
    temperature: float | None = None
    self_hosted: bool = False


class TaskRoute(_Model):
    """One task's decision, with what it rests on."""

    status: Literal["settled", "unsettled", "no_candidate", "unmeasured"]
    decided_at: str
    reason: str
    route: Route | None = None
    fallbacks: list[str] = Field(default_factory=list)
    dials: DialsConfig = DialsConfig()
    evidence: Evidence = Evidence()
    prices: PriceSnapshot | None = None
    candidates: dict[str, CandidateSettings] = Field(default_factory=dict)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    task_path: str | None = None


class RoutesFile(_Model):
    routes: dict[str, TaskRoute] = Field(default_factory=dict)


def load_routes(path: Path) -> RoutesFile:
    """Read and check a routes file; raises `UsageError` naming what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no routes file; write one with `costroute decide RUN -o {path}`"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    try:
        return RoutesFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        line = line_of(text, first["loc"])
        at = f"line {line}: " if line is not None else ""
        raise UsageError(
            f"{path}: {at}{where}: {first['msg']}; fix it by hand or decide the "
            f"task again with `costroute decide RUN -o {path}`"
        ) from None


def line_of(text: str, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the key at `loc` in a TOML text, or of its table.

    A simple scan of `[table]` headers and `key =` lines, enough for the files
    `save_route` writes and hand edits of them; None when nothing matches.
    """
    keys = [str(part) for part in loc if isinstance(part, str)]
    table: list[str] = []
    best: tuple[int, int] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            table = _dotted(header.group(1))
            depth = len(table) if keys[: len(table)] == table else -1
        else:
            key = _KEY.match(line)
            if key is None or keys[: len(table)] != table:
                continue
            path = [*table, *_dotted(key.group(1))]
            depth = len(path) if keys[: len(path)] == path else -1
        if depth > 0 and (best is None or depth > best[0]):
            best = (depth, number)
    return best[1] if best else None


def _dotted(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in _DOT.split(key.strip())]


def save_route(path: Path, task: str, route: TaskRoute) -> None:
    """Write `task`'s section, keeping every other task's section as it was."""
    if path.exists():
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    else:
        document = tomlkit.document()
        for line in HEADER.splitlines():
            document.add(tomlkit.comment(line))
    routes = document.get("routes")
    if routes is None:
        routes = tomlkit.table(is_super_table=True)
        document["routes"] = routes
    routes[task] = _to_toml(route.model_dump(mode="json", exclude_none=True))
    path.write_text(tomlkit.dumps(document), encoding="utf-8")


def _to_toml(data: dict[str, Any]) -> Any:
    table = tomlkit.table()
    for key, value in data.items():
        if isinstance(value, dict):
            table[key] = _to_toml(value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            array = tomlkit.aot()
            for entry in value:
                array.append(_to_toml(entry))
            table[key] = array
        else:
            table[key] = value
    return table
