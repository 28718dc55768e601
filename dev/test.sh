#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs uv if absent, syncs the locked environment, then
# ruff (lint + format), mypy, pytest on Airflow 3.3 (locked), and the smoke tests on Airflow 3.1 and 2.11.
# SKIP_MATRIX=1 skips the older-Airflow legs (local iteration only; CI runs them).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

uv sync --locked
echo "== ruff"
uv run ruff check .
uv run ruff format --check .
echo "== mypy"
uv run mypy
echo "== pytest (Airflow $(uv run python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'))"
uv run pytest "$@"
if [ "${SKIP_MATRIX:-0}" != "1" ]; then
  for version in 3.1 2.11; do
    echo "== smoke tests on Airflow $version"
    bash dev/matrix.sh "$version"
  done
fi
