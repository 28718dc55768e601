"""Benchmark: a real scheduler run, this package (host cache, process only) against the official providers.

Airflow 3 with the LocalExecutor (parallelism 8) on SQLite runs, one after another, a DAG of N tasks per
cloud and side on the same local sandbox; every task is a process of its own. Reports the token requests
the sandbox counted per hop and the per-task time spent getting credentials (median / p90), as Markdown.

    uv run python dev/bench/scheduler_bench.py [--tasks 40] [--clouds aws,gcp,azure] [--sides host,process,official]

A measurement, not a test: nothing here asserts a time (``tests/airflow/test_scheduler_run.py`` asserts
the request counts of the ``host`` side).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.scheduler_run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
