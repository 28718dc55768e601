#!/usr/bin/env bash
# The demo on a fresh machine: installs uv if absent, syncs the locked environment, runs dev/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --locked --compile-bytecode --quiet
exec uv run --locked python dev/demo.py "$@"
