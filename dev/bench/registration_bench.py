"""Benchmark: what Airflow pays, in every process it starts, to read a provider's ``get_provider_info()``.

Airflow's providers manager loads each provider's ``apache_airflow_provider`` entry point (importing the
module and its parent packages) and calls it, in nearly every CLI command, scheduler, worker and
api-server. Each sample is a fresh interpreter:

* in-interpreter: ``time.perf_counter()`` around importing the entry point's module (parent packages
  included) and calling it once. For the official providers ``airflow`` itself is imported first,
  untimed: their package ``__init__`` needs it, and every Airflow process has it already.
* wall clock (this package only, whose import needs no Airflow): the median wall time of
  ``python -c "<import + call>"`` minus the median of a bare ``python -c pass``, samples interleaved.

    uv run python dev/bench/registration_bench.py [--runs 21]

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

OURS = "airflow_workload_identity.get_provider_info"
OFFICIAL = {
    "apache-airflow-providers-amazon": "airflow.providers.amazon.get_provider_info",
    "apache-airflow-providers-google": "airflow.providers.google.get_provider_info",
    "apache-airflow-providers-microsoft-azure": "airflow.providers.microsoft.azure.get_provider_info",
}

TIMED = """\
import sys, time
{pre}
t0 = time.perf_counter()
info = __import__({module!r}, fromlist=["get_provider_info"]).get_provider_info()
t1 = time.perf_counter()
sys.stdout.write(repr((t1 - t0) * 1000.0) + " " + str(len(info["connection-types"])))
"""


def in_interpreter_ms(module: str, *, pre: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", TIMED.format(module=module, pre=pre)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        samples.append(float(out.stdout.split()[0]))
    return samples


def wall_clock_ms(code: str, runs: int) -> tuple[list[float], list[float]]:
    bare: list[float] = []
    loaded: list[float] = []
    for _ in range(runs):
        for target, snippet in ((bare, "pass"), (loaded, code)):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", snippet], check=True, timeout=300)
            target.append((time.perf_counter() - start) * 1000.0)
    return bare, loaded


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="fresh interpreters per row")
    args = parser.parse_args()

    rows = [("airflow-workload-identity", in_interpreter_ms(OURS, pre="", runs=args.runs))]
    for dist, module in OFFICIAL.items():
        rows.append((dist, in_interpreter_ms(module, pre="import airflow", runs=args.runs)))
    bare, loaded = wall_clock_ms(f"from {OURS} import get_provider_info; get_provider_info()", args.runs)

    print(f"Registration cost, {args.runs} fresh interpreters per row (Python {sys.version.split()[0]})\n")
    print("| entry point: import + one call, fresh interpreter | median ms | p90 ms |")
    print("|---|---|---|")
    for name, samples in rows:
        print(f"| {name} (in-interpreter) | {statistics.median(samples):.2f} | {p90(samples):.2f} |")
    delta = statistics.median(loaded) - statistics.median(bare)
    print(
        f"| airflow-workload-identity (wall clock minus bare interpreter: "
        f"{statistics.median(loaded):.1f} - {statistics.median(bare):.1f}) | {delta:.2f} |  |"
    )


if __name__ == "__main__":
    main()
