"""Benchmark: this package's hook against the official ``AwsBaseHook`` on the same local sandbox.

Both run in this process, against the same moto server, from the same IRSA identity (web identity
token file + pod role), assuming the same customer role. STS calls are counted by the sandbox server;
latency is wall-clock per fresh hook up to its first S3 response. Results are printed as Markdown.

    uv run python dev/bench/aws_bench.py [--hooks 20] [--repeat 5]

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow  # noqa: E402

isolate_airflow()
for _name in list(os.environ):
    if _name.startswith("AWS_"):
        del os.environ[_name]

from dev.sandbox import AwsSandbox  # noqa: E402


def define(conn_id: str, conn_type: str, extra: dict[str, Any]) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": conn_type, "extra": extra})


def measure(sandbox: AwsSandbox, fn: Callable[[], Any]) -> tuple[int, float]:
    sandbox.reset_calls()
    start = time.perf_counter()
    fn()
    return sandbox.calls(), (time.perf_counter() - start) * 1000


def timed(fn: Callable[[], Any]) -> float:
    """Milliseconds ``fn`` took."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hooks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with AwsSandbox.start() as sandbox:
        sc = sandbox.scenario
        token = sandbox.write_web_identity_token()
        os.environ.update(sandbox.env_isolation())
        os.environ.update(sandbox.env_irsa(token))
        define("ours", "aws_workload_identity", {"role_arn": sc.customer_reader_role_arn})
        define("ours_900", "aws_workload_identity", {"role_arn": sc.customer_reader_role_arn, "duration_seconds": 900})
        define("official", "aws", {"role_arn": sc.customer_reader_role_arn})
        define(
            "official_900",
            "aws",
            {"role_arn": sc.customer_reader_role_arn, "assume_role_kwargs": {"DurationSeconds": 900}},
        )

        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from airflow_workload_identity.aws import AwsWorkloadIdentityHook
        from airflow_workload_identity.registry import REGISTRY

        bucket, key = sc.bucket_a, sc.bucket_a_key

        def ours_first(conn: str = "ours") -> None:
            AwsWorkloadIdentityHook(aws_conn_id=conn).get_client("s3").head_object(Bucket=bucket, Key=key)

        def official_first(conn: str = "official") -> None:
            S3Hook(aws_conn_id=conn).get_conn().head_object(Bucket=bucket, Key=key)

        # Warm both code paths once (imports, service models) so neither pays one-off import costs below.
        REGISTRY.clear()
        ours_first()
        official_first()

        rows: list[tuple[str, str, str, str]] = []

        def row(name: str, ours: Any, official: Any, ratio: str = "") -> None:
            rows.append((name, str(ours), str(official), ratio))

        # 1. A new hook and its first S3 call, cold (nothing shared yet in the process).
        cold_ours, cold_official = [], []
        calls_ours = calls_official = 0
        for _ in range(args.repeat):
            REGISTRY.clear()
            calls_ours, ms = measure(sandbox, ours_first)
            cold_ours.append(ms)
            calls_official, ms = measure(sandbox, official_first)
            cold_official.append(ms)
        row("STS calls: new hook + first S3 call (cold process)", calls_ours, calls_official)
        mo, mf = statistics.median(cold_ours), statistics.median(cold_official)
        row("first-client latency, cold (median ms)", f"{mo:.1f}", f"{mf:.1f}", f"{mf / mo:.1f}x faster")

        # 2. N fresh hooks in one process (tasks, sensors, operators in a worker).
        REGISTRY.clear()
        ours_ms: list[float] = []
        official_ms: list[float] = []
        calls_ours, _ = measure(sandbox, lambda: [ours_ms.append(timed(ours_first)) for _ in range(args.hooks)])
        calls_official, _ = measure(
            sandbox, lambda: [official_ms.append(timed(official_first)) for _ in range(args.hooks)]
        )
        row(f"STS calls: {args.hooks} fresh hooks, one S3 call each", calls_ours, calls_official)
        for label, pick in (("median", statistics.median), ("p90", lambda v: statistics.quantiles(v, n=10)[-1])):
            po, pf = pick(ours_ms), pick(official_ms)
            row(
                f"latency per fresh hook, {label} of {args.hooks} (ms)",
                f"{po:.1f}",
                f"{pf:.1f}",
                f"{pf / po:.1f}x faster",
            )

        # 3. DurationSeconds=900: ten calls on one hook.
        REGISTRY.clear()

        def ten_ours() -> None:
            s3 = AwsWorkloadIdentityHook(aws_conn_id="ours_900").get_client("s3")
            for _ in range(10):
                s3.head_object(Bucket=bucket, Key=key)

        def ten_official() -> None:
            s3 = S3Hook(aws_conn_id="official_900").get_conn()
            for _ in range(10):
                s3.head_object(Bucket=bucket, Key=key)

        row(
            "STS calls: DurationSeconds=900, 10 S3 calls",
            measure(sandbox, ten_ours)[0],
            measure(sandbox, ten_official)[0],
        )

        # 4. get_session() + get_credentials() + test_connection() on a warm process.
        REGISTRY.clear()
        ours_first()
        official_first()
        hook, base = AwsWorkloadIdentityHook(aws_conn_id="ours"), AwsBaseHook(aws_conn_id="official")
        row("STS calls: get_session()", measure(sandbox, hook.get_session)[0], measure(sandbox, base.get_session)[0])
        row(
            "STS calls: get_credentials()",
            measure(sandbox, hook.get_credentials)[0],
            measure(sandbox, base.get_credentials)[0],
        )
        row(
            "STS calls: test_connection()",
            measure(sandbox, hook.test_connection)[0],
            measure(sandbox, base.test_connection)[0],
        )

    print(
        "| measurement (IRSA + role_arn, moto on 127.0.0.1) "
        "| airflow-workload-identity | official AwsBaseHook/S3Hook | ratio |"
    )
    print("|---|---|---|---|")
    for name, ours, official, ratio in rows:
        print(f"| {name} | {ours} | {official} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
