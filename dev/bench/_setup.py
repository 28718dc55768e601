"""Shared set-up of the benchmarks: an isolated Airflow home on SQLite and quiet warnings.

Imported by each ``dev/bench/*_bench.py`` before Airflow or a cloud SDK is imported.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable


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


def masker_restorer() -> Callable[[], None]:
    """Every token this package mints is registered with Airflow's secrets masker, which recompiles one regex
    of all masked values on each addition: the cost grows with the tokens masked so far in the process. A
    benchmark process mints far more distinct tokens than a worker does, so cold runs restore the masker as
    it was after warm-up (a fresh process's first token)."""
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker
    except ImportError:
        return lambda: None
    masker = _secrets_masker()
    patterns, replacer = set(masker.patterns), masker.replacer

    def restore() -> None:
        masker.patterns, masker.replacer = set(patterns), replacer

    return restore
