"""Shared set-up of the benchmarks: an isolated Airflow home on SQLite and quiet warnings.

Imported by each ``dev/bench/*_bench.py`` before Airflow or a cloud SDK is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path


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


ROOT = Path(__file__).resolve().parents[2]


def run_task_processes(workdir: Path, worker: str, variant: str, env: dict[str, str], tasks: int, tag: str) -> float:
    """Start ``tasks`` Python processes running ``worker`` (argv: variant, go file, out file), wait until each
    has imported what a task has loaded and written ``<out>.ready``, release them together by creating the go
    file; seconds from the release to the last one done. The ambient cloud variables of this process are
    not passed on: ``env`` is the pod the tasks run in."""
    script = workdir / "worker.py"
    script.write_text(worker)
    go = workdir / f"go-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GCE_", "GOOGLE_"))}
    full = {**base, **env, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), variant, str(go), str(workdir / f"out-{tag}-{i}")],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(tasks)
    ]
    deadline = time.monotonic() + 1200  # 20 interpreters importing Airflow on a loaded 2-core machine
    while not all((workdir / f"out-{tag}-{i}.ready").exists() for i in range(tasks)):  # all at the start line
        failed = [p for p in procs if p.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
            output = failed[0].communicate()[0].decode(errors="replace")[-3000:] if failed else "(timed out)"
            raise SystemExit(f"{variant}: a task process did not reach the start line:\n{output}")
        time.sleep(0.05)
    started = time.monotonic()
    go.touch()
    for i, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=900)
        if proc.returncode != 0 or not (workdir / f"out-{tag}-{i}").exists():
            raise SystemExit(f"{variant} task {i} failed:\n{output.decode(errors='replace')[-3000:]}")
    return time.monotonic() - started
