"""Benchmark: what Airflow pays, in every process it starts, to read a provider's ``get_provider_info()``.

Airflow's providers manager imports each provider's ``apache_airflow_provider`` entry point and calls
it, in nearly every CLI command, scheduler, worker and api-server (``import airflow`` alone loads them
all). Each sample is a fresh interpreter timing, with ``time.perf_counter()``, one of:

* ``module``: loading the entry point's file by path (compile or bytecode, execute) and calling it
  once: the same work for every provider, without importing the official providers' parent package
  ``airflow`` (whose import already loads every provider's info). Ours imports its package
  ``__init__`` (the version), which is included.
* ``import``: this package's entry point as Airflow imports it (``airflow_workload_identity`` and
  ``airflow_workload_identity.get_provider_info``), and one call.

Both with a bytecode cache (as installed from a wheel; a private ``PYTHONPYCACHEPREFIX``, warmed once)
and without one (``PYTHONDONTWRITEBYTECODE=1``, every import compiles the source). Last row: wall clock
of ``python -c "<import + call>"`` minus a bare ``python -c pass`` (medians, interleaved; start-up noise
is a few milliseconds, larger than what is measured).

    uv run python dev/bench/registration_bench.py [--runs 31]

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = "airflow_workload_identity.get_provider_info"


def _file_of(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)  # a top-level package: found, not imported
    assert spec is not None and spec.submodule_search_locations is not None, package
    return str(Path(next(iter(spec.submodule_search_locations)), *parts))


TARGETS = {
    "airflow-workload-identity": _file_of("airflow_workload_identity", "get_provider_info.py"),
    "apache-airflow-providers-amazon": _file_of("airflow", "providers", "amazon", "get_provider_info.py"),
    "apache-airflow-providers-google": _file_of("airflow", "providers", "google", "get_provider_info.py"),
    "apache-airflow-providers-microsoft-azure": _file_of(
        "airflow", "providers", "microsoft", "azure", "get_provider_info.py"
    ),
}

BY_PATH = """\
import importlib.util, sys, time
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("provider_info_under_test", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
info = module.get_provider_info()
sys.stdout.write(repr((time.perf_counter() - t0) * 1000.0))
"""

BY_IMPORT = f"""\
import sys, time
t0 = time.perf_counter()
info = __import__({OURS!r}, fromlist=["get_provider_info"]).get_provider_info()
sys.stdout.write(repr((time.perf_counter() - t0) * 1000.0))
"""


def _env(bytecode: bool, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = prefix
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(code: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300, env=env)
    return float(out.stdout)


def timed(code: str, env: dict[str, str], runs: int) -> list[float]:
    _run(code, env)  # warm-up: writes the bytecode cache when it is on
    return [_run(code, env) for _ in range(runs)]


def wall_clock_ms(env: dict[str, str], runs: int) -> tuple[float, float]:
    code = f"from {OURS} import get_provider_info; get_provider_info()"
    bare: list[float] = []
    loaded: list[float] = []
    for _ in range(runs):
        for target, snippet in ((bare, "pass"), (loaded, code)):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", snippet], check=True, timeout=300, env=env)
            target.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(bare), statistics.median(loaded)


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31, help="fresh interpreters per cell")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cached, tempfile.TemporaryDirectory() as empty:
        envs = {"bytecode cache": _env(True, cached), "no bytecode cache": _env(False, empty)}
        rows: list[tuple[str, dict[str, list[float]]]] = []
        for name, path in TARGETS.items():
            rows.append(
                (f"{name} (module)", {k: timed(BY_PATH.format(path=path), env, args.runs) for k, env in envs.items()})
            )
        rows.insert(
            1, ("airflow-workload-identity (import)", {k: timed(BY_IMPORT, env, args.runs) for k, env in envs.items()})
        )
        bare, loaded = wall_clock_ms(envs["bytecode cache"], args.runs)

    print(f"Registration cost: {args.runs} fresh interpreters per cell, Python {sys.version.split()[0]}\n")
    print(
        "| entry point: load + one call, fresh interpreter "
        "| bytecode cache: median / p90 ms | no bytecode cache: median / p90 ms |"
    )
    print("|---|---|---|")
    for name, cells in rows:
        text = [f"{statistics.median(v):.2f} / {p90(v):.2f}" for v in cells.values()]
        print(f"| {name} | {' | '.join(text)} |")
    print(
        f"| airflow-workload-identity, wall clock minus a bare interpreter (bytecode cache) | "
        f"{loaded - bare:.1f} ({loaded:.1f} - {bare:.1f}) |  |"
    )


if __name__ == "__main__":
    main()
