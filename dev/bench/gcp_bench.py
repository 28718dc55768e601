"""Benchmark: this package against the official Google provider's hooks on the same local GCP sandbox.

Everything runs in this process, against the same sandbox (fake GKE metadata server, fake IAM Credentials,
token-checking GCS front on 127.0.0.1), from the same pod identity, impersonating the same service accounts.
Three ways to get there are compared:

* (a) ``GcpWorkloadIdentityHook`` directly, on a ``gcp_workload_identity`` connection (GCS through a
  ``storage.Client`` built on its credentials, as a DAG author would);
* (b) the official ``GoogleBaseHook`` / ``GCSHook`` / ``GCSAsyncHook`` on the same ``gcp_workload_identity``
  connection, with ``airflow_workload_identity.gcp.interop.install()``;
* the official hooks on a ``google_cloud_platform`` connection with ``impersonation_chain`` (the provider's
  own path: ``google.auth.default()`` from the metadata server, then google-auth impersonation; google-auth's
  IAM endpoint constants are pointed at the sandbox).

generateAccessToken and metadata-server calls are counted by the sandbox; google-cloud-storage's background
bucket-metadata thread (REFERENCE 3.4) is waited for before counters are read. Results are printed as Markdown.

    uv run python dev/bench/gcp_bench.py [--repeat 5] [--hooks 5] [--concurrency 10] [--iam-latency 0.1]

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow, masker_restorer  # noqa: E402

isolate_airflow(
    # the connections' iam_endpoint_url points at the sandbox (endpoint overrides are allow-listed)
    AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS="127.0.0.1",
)

from dev.sandbox.gcp import AMBIENT_GCP_VARIABLES, GcpSandbox  # noqa: E402  (imports no google-auth)

for _name in AMBIENT_GCP_VARIABLES:
    os.environ.pop(_name, None)

SIDES = ("ours", "interop", "official")
_STORAGE_BACKGROUND = frozenset({"_fetch_background", "_verify_existence_background"})


def define(conn_id: str, conn_type: str, extra: dict[str, Any]) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": conn_type, "extra": extra})


def settle(timeout: float = 15.0) -> None:
    """Wait for google-cloud-storage's background bucket-metadata threads: they fetch tokens too."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if getattr(target, "__name__", "") in _STORAGE_BACKGROUND:
            thread.join(max(0.0, deadline - time.monotonic()))


@dataclass
class Result:
    iam: list[int] = field(default_factory=list)
    metadata: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def _span(values: list[int]) -> str:
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}-{high}"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    def cell(self) -> str:
        text = f"{self._span(self.iam)} / {self._span(self.metadata)} · {self.median_ms:.1f} ms"
        if self.errors:
            text += f" ({', '.join(sorted(set(self.errors)))})"
        return text


def run_once(sb: GcpSandbox, fn: Callable[[], Any], result: Result) -> None:
    settle()
    sb.reset_calls()
    start = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # an expected failure (403/404 rows) is part of the measurement
        result.errors.append(type(exc).__name__)
    result.ms.append((time.perf_counter() - start) * 1000)
    settle()
    result.iam.append(sb.calls("generateAccessToken"))
    result.metadata.append(sb.calls("metadata"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hooks", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--iam-latency", type=float, default=0.1, help="seconds added to each generateAccessToken")
    args = parser.parse_args()

    with GcpSandbox.start() as sb:
        sc = sb.scenario
        os.environ.update(sb.env())
        for module, attribute, value in sb.google_auth_patches():
            setattr(importlib.import_module(module), attribute, value)
        for account in (sc.reader_sa, sc.chained_reader_sa):  # upload needs storage.objects.create
            sb.grant_storage(account, sc.bucket_a, "roles/storage.objectAdmin")

        chains = {
            "": [sc.reader_sa],
            "_chain": [sc.hop_sa, sc.chained_reader_sa],
            "_403": [sc.no_creator_sa],
            "_404": [sc.missing_sa],
        }
        for suffix, chain in chains.items():
            define(
                f"ours{suffix}",
                "gcp_workload_identity",
                {"impersonation_chain": chain, "iam_endpoint_url": sb.iam_endpoint},
            )
            define(f"official{suffix}", "google_cloud_platform", {"impersonation_chain": ",".join(chain)})

        from airflow.providers.google.cloud.hooks.gcs import GCSAsyncHook, GCSHook
        from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
        from google.cloud import storage

        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
        from airflow_workload_identity.gcp.interop import install, uninstall
        from airflow_workload_identity.registry import REGISTRY

        def activate(side: str) -> None:
            """interop.install() for (b) only, so the official path runs the provider's unpatched code."""
            (install if side == "interop" else uninstall)()

        bucket, key, payload = sc.bucket_a, sc.bucket_a_key, b"benchmark payload\n"

        def conn(side: str, suffix: str = "") -> str:
            return f"{'official' if side == 'official' else 'ours'}{suffix}"

        # --- workloads, one per side; (a) uses our hook, (b) and official use the provider's hooks

        def credentials(side: str) -> Callable[[], Any]:
            if side == "ours":
                return lambda: GcpWorkloadIdentityHook(gcp_conn_id=conn(side)).get_credentials()
            return lambda: GoogleBaseHook(gcp_conn_id=conn(side)).get_credentials()

        def gcs(side: str, suffix: str = "", *, write: bool = True) -> Callable[[], Any]:
            name = f"bench/{side}{suffix}.txt"

            def ours() -> None:
                hook = GcpWorkloadIdentityHook(gcp_conn_id=conn(side, suffix))
                client = storage.Client(credentials=hook.get_credentials(), project=hook.project_id)
                if write:
                    client.bucket(bucket).blob(name).upload_from_string(payload)
                    client.bucket(bucket).blob(name).download_as_bytes()
                    client.bucket(bucket).blob(name).exists()
                else:
                    client.bucket(bucket).blob(key).download_as_bytes()

            def official() -> None:
                hook = GCSHook(gcp_conn_id=conn(side, suffix))
                if write:
                    hook.upload(bucket, name, data=payload)
                    hook.download(bucket, name)
                    hook.exists(bucket, name)
                else:
                    hook.download(bucket, key)

            return ours if side == "ours" else official

        def hooks(side: str, n: int) -> Callable[[], Any]:
            one = gcs(side)
            return lambda: [one() for _ in range(n)]

        def tokens3(side: str) -> Callable[[], Any]:
            if side == "ours":
                hook = GcpWorkloadIdentityHook(gcp_conn_id=conn(side))
                return lambda: [hook.get_access_token() for _ in range(3)]
            base = GoogleBaseHook(gcp_conn_id=conn(side))
            return lambda: [base._get_access_token() for _ in range(3)]

        def first_token(side: str, suffix: str) -> Callable[[], Any]:
            if side == "ours":
                return lambda: GcpWorkloadIdentityHook(gcp_conn_id=conn(side, suffix)).get_access_token()
            return lambda: GoogleBaseHook(gcp_conn_id=conn(side, suffix))._get_access_token()

        async def async_token(side: str) -> str:
            if side == "ours":
                return await GcpWorkloadIdentityHook(gcp_conn_id=conn(side)).get_access_token_async()
            token = await GCSAsyncHook(gcp_conn_id=conn(side)).get_token()
            return str(await token.get())

        def async_tokens3(side: str) -> Callable[[], Any]:
            async def sequential() -> None:
                for _ in range(3):
                    await async_token(side)

            return lambda: asyncio.run(sequential())

        def burst(side: str, n: int) -> Callable[[], Any]:
            async def concurrent() -> None:
                await asyncio.gather(*(async_token(side) for _ in range(n)))

            return lambda: asyncio.run(concurrent())

        # Warm every code path once (imports, discovery documents, connection pools).
        for side in SIDES:
            activate(side)
            REGISTRY.clear()
            gcs(side)()
            asyncio.run(async_token(side))
        settle()

        restore_masker = masker_restorer()
        rows: list[tuple[str, str, dict[str, str], str]] = []

        def compare(
            name: str,
            state: str,
            make: Callable[[str], Callable[[], Any]],
            *,
            cold: bool,
            repeat: int | None = None,
            fresh_per_run: bool = False,
        ) -> None:
            """``cold``: the process-wide registry is cleared (and the secrets masker restored, see
            :func:`masker_restorer`) before every run (nothing shared yet); else it is primed once with the same
            workload and runs share it. ``fresh_per_run``: build the workload (e.g. a hook reused inside it)
            anew for every run."""
            results = {side: Result() for side in SIDES}
            if not cold:
                REGISTRY.clear()
                for side in SIDES:
                    activate(side)
                    make(side)()
                settle()
            workloads = {}
            for side in SIDES:
                activate(side)
                workloads[side] = make(side)
            for _ in range(repeat or args.repeat):
                for side in SIDES:
                    activate(side)
                    if cold:
                        REGISTRY.clear()
                        restore_masker()
                    fn = make(side) if fresh_per_run else workloads[side]
                    run_once(sb, fn, results[side])
            ours_ms, official_ms = results["ours"].median_ms, results["official"].median_ms
            ratio = f"{official_ms / ours_ms:.1f}x" if ours_ms > 0 else ""
            rows.append((name, state, {side: results[side].cell() for side in SIDES}, ratio))

        compare("credentials built (no token yet)", "cold", credentials, cold=True)
        compare("1 hook: upload + download + exists", "cold", gcs, cold=True)
        compare("1 hook: upload + download + exists", "warm", gcs, cold=False)
        compare(
            f"{args.hooks} hooks in a row, upload + download + exists each (total)",
            "cold at start",
            lambda side: hooks(side, args.hooks),
            cold=True,
        )
        compare(
            "2-hop chain (hop → chained-reader): upload + download + exists",
            "cold",
            lambda side: gcs(side, "_chain"),
            cold=True,
        )
        compare(
            "access token x3 on one hook: `get_access_token()` (a) / `_get_access_token()`",
            "cold",
            tokens3,
            cold=True,
            fresh_per_run=True,
        )
        compare(
            "async token x3, new hook each: `get_access_token_async()` (a) / `GCSAsyncHook.get_token()` + `get()`",
            "cold",
            async_tokens3,
            cold=True,
        )
        for suffix, what in (("_403", "403 (no Token Creator on the target)"), ("_404", "404 (no such account)")):
            compare(
                f"{what}: access token, time to fail",
                "cold",
                lambda side, suffix=suffix: first_token(side, suffix),
                cold=True,
            )
            compare(
                f"{what}: GCS download, time to fail",
                "cold",
                lambda side, suffix=suffix: gcs(side, suffix, write=False),
                cold=True,
            )
        sb.set_latency("generateAccessToken", args.iam_latency)
        try:
            for state, cold in (("cold", True), ("warm", False)):
                compare(
                    f"{args.concurrency} concurrent async token requests, IAM latency "
                    f"{args.iam_latency * 1000:.0f} ms (wall)",
                    state,
                    lambda side: burst(side, args.concurrency),
                    cold=cold,
                    repeat=max(1, min(args.repeat, 3)),
                )
        finally:
            sb.set_latency("generateAccessToken", 0)

    print(
        "| measurement (GKE metadata → impersonation, sandbox on 127.0.0.1) | state "
        "| (a) GcpWorkloadIdentityHook | (b) official hooks + `interop.install()` "
        "| official hooks, `impersonation_chain` | official ÷ (a) |"
    )
    print("|---|---|---|---|---|---|")
    for name, state, cells, ratio in rows:
        print(f"| {name} | {state} | {cells['ours']} | {cells['interop']} | {cells['official']} | {ratio} |")
    print()
    print(
        "Cells: generateAccessToken calls / metadata-server calls · median wall time over runs "
        "(exception raised, if any). Cold: the process-wide registry is empty at the start of each run; "
        "warm: it already holds the token. The official path keeps nothing between hooks, so it is the "
        "same either way."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
