"""The task file: what to measure, on which data, against which floor."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from costroute.errors import UsageError

ScorerKind = Literal[
    "exact", "label", "regex", "number", "json", "findings", "python", "code", "judge"
]
Metric = Literal["accuracy", "f1", "precision", "recall"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    path: str
    target: str
    id: str | None = None
    format: Literal["jsonl", "csv"] | None = None


class PromptConfig(_Strict):
    system: str | None = None
    user: str


class ScorerConfig(BaseModel):
    """The scorer's kind; its own options are checked by the scorer itself."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: ScorerKind

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class FloorConfig(_Strict):
    metric: Metric = "accuracy"
    min: float = Field(default=0.0, ge=0.0, le=1.0)


class DialsConfig(_Strict):
    volume_per_month: int = Field(default=1000, ge=0)
    error_cost_usd: Decimal = Field(default=Decimal("0"), ge=0)
    recoverable: bool = True
    catch_cost_usd: Decimal = Field(default=Decimal("0"), ge=0)
    on_prem_only: bool = False


class PriceOverride(_Strict):
    """USD per million tokens, as the provider bills them."""

    input_mtok: Decimal = Field(ge=0)
    output_mtok: Decimal = Field(ge=0)
    cache_read_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_mtok: Decimal | None = Field(default=None, ge=0)


class ComputeConfig(_Strict):
    """Hardware time pricing for models on the team's own machines."""

    hourly_usd: Decimal | None = Field(default=None, ge=0)
    gpus: int = Field(default=1, ge=1)


class CandidateConfig(_Strict):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = 0.0
    price: PriceOverride | None = None
    hourly_usd: Decimal | None = Field(default=None, ge=0)
    gpus: int | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _has_provider(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError(
                f"model ref {value!r} needs a provider prefix, e.g. 'openai/{value}'"
            )
        return value

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def model_name(self) -> str:
        return self.model.split("/", 1)[1]


class ProviderConfig(_Strict):
    kind: Literal["openai", "anthropic", "local"] = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    hourly_usd: Decimal | None = Field(default=None, ge=0)
    gpus: int = Field(default=1, ge=1)
    self_hosted: bool | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class Task(_Strict):
    name: str
    category: str = "classification"
    description: str | None = None
    dataset: DatasetConfig
    prompt: PromptConfig
    scorer: ScorerConfig
    floor: FloorConfig = FloorConfig()
    dials: DialsConfig = DialsConfig()
    candidates: list[CandidateConfig] = Field(default_factory=list)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    path: Path = Field(default=Path("task.toml"), exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def dataset_path(self) -> Path:
        return self.base_dir / self.dataset.path

    def candidate(self, model: str) -> CandidateConfig:
        for candidate in self.candidates:
            if candidate.model == model:
                return candidate
        return CandidateConfig(model=model)

    def with_models(self, models: list[str]) -> Task:
        """The same task measured on `models` instead of its own candidates."""
        chosen = [self.candidate(model) for model in models]
        return self.model_copy(update={"candidates": chosen})


def load_task(path: Path, *, require_candidates: bool = True) -> Task:
    """Read and validate a task file, raising `UsageError` with the place to fix.

    An import names its own models, so it passes `require_candidates=False`.
    """
    data = _read_toml(path)
    try:
        task = Task.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise UsageError(_describe(path, exc)) from None
    if require_candidates and not task.candidates:
        raise UsageError(
            f"{path}: no [[candidates]]; add one, e.g. [[candidates]] "
            'model = "local/smollm2", or pass --model'
        )
    return task


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such task file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def _describe(path: Path, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = _location(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against the README"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{where}: {message}")
    return f"{path}: " + "; ".join(problems)


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"
