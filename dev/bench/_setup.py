"""Shared set-up of the benchmarks: an isolated Airflow home on SQLite and quiet warnings.

Imported by each ``dev/bench/*_bench.py`` before Airflow or a cloud SDK is imported.
"""

from __future__ import annotations

import os
import tempfile
import warnings


def isolate_airflow(**extra_env: str) -> str:
    """Point Airflow at a fresh temporary home with SQLite; returns the home's path."""
    home = tempfile.mkdtemp(prefix="awi-bench-")
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            **extra_env,
        }
    )
    warnings.simplefilter("ignore")
    return home
