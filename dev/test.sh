#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs uv if absent, syncs the locked environment, then
# ruff (lint + format), mypy, pytest on Airflow 3.3 (locked; with the e2e tests if Debian's chromium is
# installed, which this script does when run as root), and the smoke tests on Airflow 3.1 and 2.11.
# SKIP_MATRIX=1 skips the older-Airflow legs (local iteration only; CI runs them).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# Bytecode compiled once at install (pip does this too; uv does not by default): the tests start hundreds of
# Python processes (Airflow CLI, task runners, the scheduler run), and where PYTHONDONTWRITEBYTECODE is set
# each would otherwise compile Airflow from source (about 5 s of CPU per process against 2.5 s).
uv sync --locked --compile-bytecode --quiet
# The e2e tests (tests/e2e) drive Debian's Chromium; without /usr/bin/chromium they skip.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's chromium (e2e tests)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
      echo "warning: could not install chromium; the e2e tests will skip" >&2
  else
    echo "note: /usr/bin/chromium is missing, so the e2e tests will skip. Install it with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2
  fi
fi
echo "== ruff"
uv run ruff check .
uv run ruff format --check .
echo "== mypy"
uv run mypy
# Azurite (npm ci on first use) installed once here, not by whichever parallel test part starts first.
uv run python -c 'from dev.sandbox._azure_azurite import ensure_installed; ensure_installed()'
airflow_version=$(uv run python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')
if [ "$#" -gt 0 ]; then  # a chosen subset: one pytest, as asked
  echo "== pytest (Airflow $airflow_version)"
  uv run pytest "$@"
  exit 0
fi

# The whole suite: independent test directories run as parallel pytest processes (each with its own
# sandboxes, Airflow home and credential-cache directory), and the older-Airflow smoke legs alongside.
# Each part's output is printed whole when all are done; any failing part fails the run.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
declare -A parts=(
  [airflow-logs-and-scheduler]="tests/airflow/test_no_secrets_in_logs.py tests/airflow/test_scheduler_run.py"
  [airflow]="tests/airflow --ignore=tests/airflow/test_no_secrets_in_logs.py --ignore=tests/airflow/test_scheduler_run.py"
  # the fault tests mostly wait (hangs, backoff, token lifetimes): three parts wait side by side
  [faults-persistent]="tests/integration/test_faults.py"
  [faults-hang-and-refresh]="tests/integration/test_faults.py"
  [faults-rest-and-processes]="tests/integration/test_faults.py tests/integration/test_host_cache_hooks.py"
  [integration]="tests/integration --ignore=tests/integration/test_faults.py --ignore=tests/integration/test_host_cache_hooks.py"
  [unit-sandbox-e2e]="tests/unit tests/sandbox tests/e2e"
)
# a part that runs only some of its files' tests: its -k expression
declare -A selects=(
  [faults-persistent]="persistent"
  [faults-hang-and-refresh]="hanging or refresh_failing or single_flight"
  [faults-rest-and-processes]="not persistent and not hanging and not refresh_failing and not single_flight"
)
declare -A pids=()
for name in "${!parts[@]}"; do
  # shellcheck disable=SC2086  # the part's arguments are words
  uv run pytest -p no:cacheprovider ${parts[$name]} ${selects[$name]:+-k "${selects[$name]}"} >"$logs/$name.log" 2>&1 &
  pids[$name]=$!
done
if [ "${SKIP_MATRIX:-0}" != "1" ]; then
  { for version in 3.1 2.11; do
      echo "== smoke tests on Airflow $version"
      bash dev/matrix.sh "$version" || exit 1
    done; } >"$logs/matrix.log" 2>&1 &
  pids[matrix]=$!
fi
status=0
for name in $(printf '%s\n' "${!pids[@]}" | sort); do
  if wait "${pids[$name]}"; then result=ok; else result=FAILED; status=1; fi
  echo "== pytest part '$name' (Airflow $airflow_version unless it says otherwise): $result"
  cat "$logs/$name.log"
done
exit "$status"
