"""Providers: one module per API family, resolved from `provider/model` refs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

from costroute import pricing
from costroute.errors import UsageError
from costroute.pricing import Price
from costroute.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_BASE_URL
from costroute.providers.anthropic import AnthropicProvider
from costroute.providers.base import ChatRequest, ChatResponse, Provider, ProviderError
from costroute.providers.local import LocalProvider, resolve_gguf
from costroute.providers.openai import OpenAIProvider
from costroute.task import CandidateConfig, ProviderConfig, Task

__all__ = [
    "PRESETS",
    "ChatRequest",
    "ChatResponse",
    "Endpoint",
    "Preset",
    "Provider",
    "ProviderError",
    "ResolvedCandidate",
    "openai_endpoint",
    "resolve_candidate",
]


@dataclass(frozen=True)
class Preset:
    """A named OpenAI-compatible endpoint: where it lives and which key it takes."""

    base_url: str
    key_env: str | None
    self_hosted: bool = False


PRESETS: dict[str, Preset] = {
    "openai": Preset("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "gemini": Preset(
        "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"
    ),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "fireworks": Preset("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "deepseek": Preset("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "zhipu": Preset("https://open.bigmodel.cn/api/paas/v4", "ZHIPU_API_KEY"),
    "ollama": Preset("http://127.0.0.1:11434/v1", None, self_hosted=True),
    "vllm": Preset("http://127.0.0.1:8000/v1", "VLLM_API_KEY", self_hosted=True),
}


@dataclass(frozen=True)
class ResolvedCandidate:
    """A candidate ready to call: its provider, its model name there, its price."""

    model: str
    config: CandidateConfig
    provider: Provider
    price: Price

    @property
    def self_hosted(self) -> bool:
        return self.provider.self_hosted

    def request(self, messages: list[dict[str, str]]) -> ChatRequest:
        return ChatRequest(
            model=self.config.model_name,
            messages=messages,
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            params=self.config.params,
        )


def resolve_candidate(
    task: Task, candidate: CandidateConfig, concurrency: int
) -> ResolvedCandidate:
    """Build the provider for a candidate and find the price it will be charged."""
    provider_config = task.providers.get(candidate.provider)
    provider = _make_provider(task, candidate, provider_config, concurrency)
    price = _price(candidate, provider_config, provider)
    return ResolvedCandidate(candidate.model, candidate, provider, price)


def _make_provider(
    task: Task,
    candidate: CandidateConfig,
    config: ProviderConfig | None,
    concurrency: int,
) -> Provider:
    name = candidate.provider
    if name == "local" or (config is not None and config.kind == "local"):
        gguf = resolve_gguf(candidate.model_name, task.base_dir)
        return LocalProvider(name, gguf, parallel=min(concurrency, 4))
    if name == "anthropic" or (config is not None and config.kind == "anthropic"):
        return _anthropic_provider(name, config, concurrency)
    return _openai_provider(name, config, concurrency)


def _anthropic_provider(
    name: str, config: ProviderConfig | None, concurrency: int
) -> AnthropicProvider:
    key_env = config.api_key_env if config and config.api_key_env else None
    key_env = key_env or "ANTHROPIC_API_KEY"
    api_key = os.environ.get(key_env)
    if not api_key:
        raise UsageError(f"{name}/… needs an API key; set {key_env}")
    base_url = (config.base_url if config else None) or os.environ.get(
        "ANTHROPIC_BASE_URL", ANTHROPIC_BASE_URL
    )
    return AnthropicProvider(
        name,
        base_url,
        api_key,
        timeout_s=config.timeout_s if config is not None else 120.0,
        max_connections=max(concurrency, 1),
        headers=config.headers if config is not None else {},
    )


def _openai_provider(
    name: str, config: ProviderConfig | None, concurrency: int
) -> OpenAIProvider:
    preset = PRESETS.get(name)
    if config is None and preset is None:
        known = ", ".join(sorted([*PRESETS, "local"]))
        raise UsageError(
            f"unknown provider {name!r}; use one of {known}, or add a "
            f"[providers.{name}] section with kind and base_url"
        )
    base_url = _base_url(name, config, preset)
    key_env = config.api_key_env if config is not None else None
    if key_env is None and preset is not None and config is None:
        key_env = preset.key_env
    api_key = os.environ.get(key_env) if key_env else None
    self_hosted = _self_hosted(config, preset)
    if key_env and not api_key and not self_hosted:
        raise UsageError(f"{name}/… needs an API key; set {key_env}")
    headers = config.headers if config is not None else {}
    return OpenAIProvider(
        name,
        base_url,
        api_key,
        self_hosted=self_hosted,
        timeout_s=config.timeout_s if config is not None else 120.0,
        max_connections=max(concurrency, 1),
        headers=headers,
    )


def _base_url(name: str, config: ProviderConfig | None, preset: Preset | None) -> str:
    if config is not None and config.base_url:
        return config.base_url
    from_env = os.environ.get(f"{name.upper()}_BASE_URL")
    if from_env:
        return from_env
    assert preset is not None
    return preset.base_url


def _self_hosted(config: ProviderConfig | None, preset: Preset | None) -> bool:
    if config is not None and config.self_hosted is not None:
        return config.self_hosted
    if config is not None and config.hourly_usd is not None:
        return True
    return preset.self_hosted if preset is not None else False


def _price(
    candidate: CandidateConfig,
    config: ProviderConfig | None,
    provider: Provider,
) -> Price:
    if candidate.price is not None:
        override = candidate.price
        return pricing.override_price(
            candidate.model,
            override.input_mtok,
            override.output_mtok,
            override.cache_read_mtok,
            override.cache_write_mtok,
        )
    hourly_usd = _hourly_usd(candidate, config, provider)
    if hourly_usd is not None:
        gpus = candidate.gpus or (config.gpus if config is not None else 1)
        return pricing.compute_price(candidate.model, hourly_usd, gpus)
    if provider.self_hosted:
        return pricing.unpriced(candidate.model)
    return pricing.catalog_price(candidate.model) or pricing.unpriced(candidate.model)


def _hourly_usd(
    candidate: CandidateConfig, config: ProviderConfig | None, provider: Provider
) -> Decimal | None:
    if candidate.hourly_usd is not None:
        return candidate.hourly_usd
    if config is not None and config.hourly_usd is not None:
        return config.hourly_usd
    if isinstance(provider, LocalProvider):
        return pricing.DEFAULT_LOCAL_HOURLY_USD
    return None


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint as the router calls it, resolved like a task's.

    `key_env` names the variable the key comes from, so an error can say what to
    set; the key itself is never logged.
    """

    provider: str
    base_url: str
    api_key: str | None
    key_env: str | None
    self_hosted: bool
    timeout_s: float
    headers: dict[str, str]

    @property
    def missing_key(self) -> bool:
        return bool(self.key_env) and not self.api_key and not self.self_hosted


def openai_endpoint(name: str, config: ProviderConfig | None) -> Endpoint | None:
    """Where `name/…` models answer over the OpenAI API; None if nothing does."""
    preset = PRESETS.get(name)
    if config is None and preset is None:
        return None
    if config is not None and config.kind != "openai":
        return None
    key_env = config.api_key_env if config is not None else None
    if key_env is None and preset is not None and config is None:
        key_env = preset.key_env
    return Endpoint(
        provider=name,
        base_url=_base_url(name, config, preset).rstrip("/"),
        api_key=os.environ.get(key_env) if key_env else None,
        key_env=key_env,
        self_hosted=_self_hosted(config, preset),
        timeout_s=config.timeout_s if config is not None else 120.0,
        headers=dict(config.headers) if config is not None else {},
    )
