"""Local model throughput: `local/smollm2` through costroute against llama.cpp
called directly, on the same prompts, in the same run.

Measured in output tokens per second over the whole batch. The direct baseline is
llama-cpp-python's `Llama.create_chat_completion`, one prompt after another, and
xllamacpp's server called directly; costroute runs at `-j 1` (the same work as
the baselines) and at `-j 4` (parallel slots, as `costroute run` does by
default). Goal: costroute at least 0.95 of direct.

    python bench/local_throughput.py [--prompts 40] [--max-tokens 32]

llama-cpp-python is not a dependency of costroute; the script skips that
baseline when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from costroute.providers.local import default_threads, resolve_gguf
from costroute.runner import Runner, RunOptions, run_sync
from costroute.store import Store
from costroute.task import load_task

ROOT = Path(__file__).resolve().parent.parent

SYSTEM = "Answer in one short sentence."
WORDS = [
    "river",
    "mountain",
    "violin",
    "orbit",
    "harvest",
    "lantern",
    "glacier",
    "compass",
    "meadow",
    "thunder",
]

TASK = """
name = "local-throughput"
[dataset]
path = "items.jsonl"
target = "label"
[prompt]
system = "{system}"
user = "{{{{text}}}}"
[scorer]
kind = "exact"
[[candidates]]
model = "local/smollm2"
max_tokens = {max_tokens}
"""


def prompts(count: int) -> list[str]:
    return [f"Describe a {WORDS[n % 10]} in the year {1900 + n}." for n in range(count)]


def direct_llama_cpp(
    gguf: Path, texts: list[str], max_tokens: int
) -> tuple[float, int]:
    from llama_cpp import Llama

    model = Llama(
        model_path=str(gguf), n_ctx=2048, n_threads=default_threads(), verbose=False
    )
    started_s, tokens = time.perf_counter(), 0
    for text in texts:
        reply = model.create_chat_completion(
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": text},
            ],
            max_tokens=max_tokens,
            temperature=0.0,
        )
        tokens += reply["usage"]["completion_tokens"]
    return time.perf_counter() - started_s, tokens


def direct_xllamacpp(
    gguf: Path, texts: list[str], max_tokens: int
) -> tuple[float, int]:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = 2048
    params.cpuparams.n_threads = default_threads()
    params.cpuparams_batch.n_threads = default_threads()
    params.verbosity = -1
    server = xllamacpp.Server(params)
    started_s, tokens = time.perf_counter(), 0
    for text in texts:
        reply = server.handle_chat_completions(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                ],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
        )
        tokens += reply["usage"]["completion_tokens"]
    return time.perf_counter() - started_s, tokens


def through_costroute(
    texts: list[str], max_tokens: int, jobs: int
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        rows = [json.dumps({"text": text, "label": "-"}) for text in texts]
        (folder / "items.jsonl").write_text("\n".join(rows) + "\n")
        (folder / "task.toml").write_text(
            TASK.format(system=SYSTEM, max_tokens=max_tokens)
        )
        task = load_task(folder / "task.toml")
        with Store(folder / "db.sqlite") as store:
            runner = Runner(task, store, RunOptions(concurrency=jobs))
            started_s = time.perf_counter()
            run_id = run_sync(runner.start())
            elapsed_s = time.perf_counter() - started_s
            tokens = sum(call.output_tokens for call in store.calls(run_id))
    return elapsed_s, tokens


MEASURES = {
    "llama-cpp-python direct": lambda texts, tokens: direct_llama_cpp(
        resolve_gguf("smollm2", ROOT), texts, tokens
    ),
    "xllamacpp direct": lambda texts, tokens: direct_xllamacpp(
        resolve_gguf("smollm2", ROOT), texts, tokens
    ),
    "costroute -j 1": lambda texts, tokens: through_costroute(texts, tokens, 1),
    "costroute -j 4": lambda texts, tokens: through_costroute(texts, tokens, 4),
}


def measure_apart(name: str, count: int, max_tokens: int) -> tuple[float, int]:
    """Each measurement in a process of its own: two llama.cpp builds (the two
    bindings) cannot share one process, and each starts from a cold cache."""
    command = [sys.executable, __file__, "_one", name, str(count), str(max_tokens)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed_s, tokens = json.loads(done.stdout.strip().splitlines()[-1])
    return float(elapsed_s), int(tokens)


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit status {returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    names = list(MEASURES)
    if importlib.util.find_spec("llama_cpp") is None:
        names.remove("llama-cpp-python direct")
    results: dict[str, tuple[float, int]] = {}
    for name in names:
        try:
            results[name] = measure_apart(name, args.prompts, args.max_tokens)
        except subprocess.CalledProcessError as exc:
            print(f"{name}: failed ({_signal_name(exc.returncode)}); left out")

    baseline = next(iter(results))
    base_tps = results[baseline][1] / results[baseline][0]
    print(
        f"{args.prompts} prompts, max_tokens {args.max_tokens}, "
        f"{default_threads()} llama.cpp threads; baseline: {baseline}"
    )
    for name, (elapsed_s, tokens) in results.items():
        tps = tokens / elapsed_s
        print(
            f"{name:26} {tokens:5d} tokens {elapsed_s:7.2f} s {tps:7.1f} tok/s "
            f"{tps / base_tps:5.2f}× baseline"
        )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_one":
        texts = prompts(int(sys.argv[3]))
        print(json.dumps(MEASURES[sys.argv[2]](texts, int(sys.argv[4]))))
    else:
        main()
