"""Benchmark: this package against the official Azure provider's ``WasbHook`` on the same local Azure sandbox.

Everything runs in this process, against the same sandbox (fake Microsoft Entra token endpoint and fake IMDS,
Azurite behind an RBAC proxy on 127.0.0.1), from the same AKS pod identity (projected service-account token,
``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` / ``AZURE_FEDERATED_TOKEN_FILE`` / ``AZURE_AUTHORITY_HOST`` as the
workload-identity webhook injects them), reading the same blob. Three ways to get there are compared:

* (a) ``AzureWorkloadIdentityHook(...).get_credential()`` (``get_async_credential()`` for async) on an
  ``azure_workload_identity`` connection, with a ``BlobServiceClient`` on the connection's account URL, as a
  DAG author would;
* (b) the official ``WasbHook`` / ``WasbAsyncHook`` on the same ``azure_workload_identity`` connection, with
  ``airflow_workload_identity.azure.interop.install()`` (active for this column only);
* the official ``WasbHook`` / ``WasbAsyncHook`` on a ``wasb`` connection (host = account URL, extras
  ``managed_identity_client_id`` + ``workload_identity_tenant_id``): the provider builds a
  ``DefaultAzureCredential`` per hook, whose ``WorkloadIdentityCredential`` reads the AKS variables.

Entra token requests, IMDS requests and storage requests are counted by the sandbox. Results are printed as
Markdown.

    uv run python dev/bench/azure_bench.py [--repeat 5] [--hooks 5] [--fail-timeout 150]

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
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

_home = isolate_airflow()

from dev.sandbox.azure import AMBIENT_AZURE_VARIABLES, AzureSandbox  # noqa: E402

for _name in AMBIENT_AZURE_VARIABLES:
    os.environ.pop(_name, None)

SIDES = ("ours", "interop", "official")
HEADERS = {
    "ours": "(a) AzureWorkloadIdentityHook + BlobServiceClient",
    "interop": "(b) official WasbHook + `interop.install()`",
    "official": "official WasbHook, `wasb` connection (DefaultAzureCredential)",
}


class _UnclosedSessions(logging.Filter):
    """Counts (and silences) asyncio's "Unclosed client session" reports: aiohttp sessions left open."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unclosed client session"):
            type(self).count += 1
        return not message.startswith(("Unclosed client session", "Unclosed connector"))


logging.getLogger("asyncio").addFilter(_UnclosedSessions())


def define(conn_id: str, conn_type: str, host: str, extra: dict[str, Any]) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": conn_type, "host": host, "extra": extra})


@dataclass
class Result:
    entra: list[int] = field(default_factory=list)
    imds: list[int] = field(default_factory=list)
    storage: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unclosed: list[int] = field(default_factory=list)
    note: str = ""

    @staticmethod
    def _span(values: list[int]) -> str:
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}-{high}"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    def cell(self) -> str:
        ms = self.median_ms
        when = f"{ms / 1000:.1f} s" if ms >= 10_000 else f"{ms:.1f} ms"
        text = f"{self._span(self.entra)} / {self._span(self.imds)} / {self._span(self.storage)} · {when}"
        if self.errors:
            text += f" ({', '.join(sorted(set(self.errors)))})"
        if self.unclosed and max(self.unclosed):
            text += f"; {self._span(self.unclosed)} aiohttp sessions left unclosed"
        if self.note:
            text += f" {self.note}"
        return text


def run_once(
    sb: AzureSandbox,
    fn: Callable[[], Any],
    result: Result,
    *,
    timeout: float | None = None,
    collect: bool = False,
) -> None:
    """Run ``fn`` and record the sandbox's counters and the wall time. With ``timeout``, ``fn`` runs in a
    daemon thread and is abandoned (still running) when the timeout passes; the counters are those so far.
    With ``collect``, garbage is collected before and after (untimed), so aiohttp sessions a run leaves
    open are reported against that run."""
    if collect:
        gc.collect()
    sb.reset_calls()
    unclosed = _UnclosedSessions.count
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except Exception as exc:  # an expected failure (misconfigured row) is part of the measurement
            outcome.append(exc)

    start = time.perf_counter()
    if timeout is None:
        target()
    else:
        thread = threading.Thread(target=target, name="bench-bounded", daemon=True)
        thread.start()
        thread.join(timeout)
    result.ms.append((time.perf_counter() - start) * 1000)
    if collect:
        gc.collect()
        result.unclosed.append(_UnclosedSessions.count - unclosed)
    if not outcome:
        result.note = f"(still retrying after {timeout:.0f} s; abandoned)"
    elif outcome[0] is not None:
        result.errors.append(type(outcome[0]).__name__)
    result.entra.append(sb.calls("entra"))
    result.imds.append(sb.calls("imds"))
    result.storage.append(sb.calls("storage"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hooks", type=int, default=5)
    parser.add_argument("--fail-timeout", type=float, default=150.0, help="bound on the misconfigured row")
    args = parser.parse_args()

    with AzureSandbox.start() as sb:
        sc = sb.scenario
        good_token = sb.write_sa_token(Path(_home) / "azure-identity-token")
        bad_token = sb.write_sa_token(Path(_home) / "azure-identity-token-wrong-subject", sub=sc.wrong_subject)
        os.environ.update({**sb.env_isolation(), **sb.env_imds(), **sb.env_workload_identity(good_token)})
        sb.trust_ca_in_aiohttp()

        define("ours", "azure_workload_identity", sb.blob_account_url, {})
        define(
            "official",
            "wasb",
            sb.blob_account_url,
            {"managed_identity_client_id": sc.workload_client_id, "workload_identity_tenant_id": sc.tenant_id},
        )

        from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook, WasbHook
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobServiceClient
        from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

        from airflow_workload_identity.azure import AzureWorkloadIdentityHook
        from airflow_workload_identity.azure.interop import install, uninstall
        from airflow_workload_identity.registry import REGISTRY

        def activate(side: str) -> None:
            """interop.install() for (b) only, so the official path runs the provider's unpatched code."""
            (install if side == "interop" else uninstall)()

        container, blob = sc.container_a, sc.blob_a_name

        def conn(side: str) -> str:
            return "official" if side == "official" else "ours"

        def exists(blob_client: Any) -> bool:
            """What ``WasbHook.check_for_blob`` does with its blob client."""
            try:
                blob_client.get_blob_properties()
            except ResourceNotFoundError:
                return False
            return True

        # --- workloads, one per side; (a) uses our hook, (b) and official use the provider's hooks

        def check_and_read(side: str, *, check: bool = True) -> Callable[[], Any]:
            def ours() -> None:
                hook = AzureWorkloadIdentityHook(azure_conn_id=conn(side))
                client = BlobServiceClient(hook.account_url, credential=hook.get_credential())
                blob_client = client.get_blob_client(container, blob)
                if check:
                    exists(blob_client)
                blob_client.download_blob().content_as_text()

            def official() -> None:
                hook = WasbHook(wasb_conn_id=conn(side))
                if check:
                    hook.check_for_blob(container, blob)
                hook.read_file(container, blob)

            return ours if side == "ours" else official

        def check_only(side: str) -> Callable[[], Any]:
            def ours() -> None:
                hook = AzureWorkloadIdentityHook(azure_conn_id=conn(side))
                client = BlobServiceClient(hook.account_url, credential=hook.get_credential())
                exists(client.get_blob_client(container, blob))

            def official() -> None:
                WasbHook(wasb_conn_id=conn(side)).check_for_blob(container, blob)

            return ours if side == "ours" else official

        def hooks(side: str, n: int) -> Callable[[], Any]:
            one = check_and_read(side)
            return lambda: [one() for _ in range(n)]

        async def async_check(side: str) -> bool:
            if side == "ours":
                hook = AzureWorkloadIdentityHook(azure_conn_id=conn(side))
                async with AsyncBlobServiceClient(hook.account_url, credential=hook.get_async_credential()) as client:
                    try:
                        await client.get_blob_client(container, blob).get_blob_properties()
                    except ResourceNotFoundError:
                        return False
                    return True
            wasb = WasbAsyncHook(wasb_conn_id=conn(side))
            async with await wasb.get_async_conn():  # as a deferred trigger does
                return await wasb.check_for_blob_async(container, blob)

        def async_hooks(side: str, n: int) -> Callable[[], Any]:
            async def sequential() -> None:
                for _ in range(n):
                    await async_check(side)

            return lambda: asyncio.run(sequential())

        def first_read(side: str) -> Callable[[], Any]:
            return check_and_read(side, check=False)

        # Warm every code path once (imports, TLS contexts, connection pools).
        for side in SIDES:
            activate(side)
            REGISTRY.clear()
            check_and_read(side)()
            asyncio.run(async_check(side))

        restore_masker = masker_restorer()
        rows: list[tuple[str, str, dict[str, str], str]] = []

        def compare(
            name: str,
            state: str,
            make: Callable[[str], Callable[[], Any]],
            *,
            cold: bool,
            repeat: int | None = None,
            timeout: float | None = None,
            collect: bool = False,
        ) -> None:
            """``cold``: the process-wide registry is cleared (and the secrets masker restored, see
            :func:`masker_restorer`) before every run (nothing shared yet); else it is primed once with the same
            workload and runs share it. ``timeout``, ``collect``: see :func:`run_once`."""
            results = {side: Result() for side in SIDES}
            if not cold:
                REGISTRY.clear()
                for side in SIDES:
                    activate(side)
                    make(side)()
            for _ in range(repeat or args.repeat):
                for side in SIDES:
                    activate(side)
                    if cold:
                        REGISTRY.clear()
                        restore_masker()
                    run_once(sb, make(side), results[side], timeout=timeout, collect=collect)
            ours_ms, official_ms = results["ours"].median_ms, results["official"].median_ms
            ratio = f"{official_ms / ours_ms:.1f}x" if ours_ms > 0 else ""
            rows.append((name, state, {side: results[side].cell() for side in SIDES}, ratio))

        compare("1 hook: `check_for_blob` + `read_file`", "cold", check_and_read, cold=True)
        compare("1 hook: `check_for_blob` + `read_file`", "warm", check_and_read, cold=False)
        compare(
            f"{args.hooks} fresh hooks, `check_for_blob` + `read_file` each (total)",
            "cold at start",
            lambda side: hooks(side, args.hooks),
            cold=True,
        )
        compare(
            f"{args.hooks} fresh `WasbAsyncHook`s, `check_for_blob_async` each (total)",
            "cold at start",
            lambda side: async_hooks(side, args.hooks),
            cold=True,
            collect=True,
        )
        compare("fresh hook: first `read_file` (latency)", "cold", first_read, cold=True)
        compare("fresh hook: first `read_file` (latency)", "warm", first_read, cold=False)

        # Misconfigured identity: no federated credential matches the token's subject (AADSTS70021). Once,
        # bounded: the official path retries the whole storage request, acquiring a token each time.
        os.environ.update(sb.env_workload_identity(bad_token))
        try:
            compare(
                "misconfigured identity (token `sub` not federated): `check_for_blob`, time to fail",
                "cold",
                check_only,
                cold=True,
                repeat=1,
                timeout=args.fail_timeout,
            )
        finally:
            os.environ.update(sb.env_workload_identity(good_token))
            uninstall()

    print(
        "| measurement (AKS workload identity, sandbox on 127.0.0.1) | state "
        f"| {HEADERS['ours']} | {HEADERS['interop']} | {HEADERS['official']} | official ÷ (a) |"
    )
    print("|---|---|---|---|---|---|")
    for name, state, cells, ratio in rows:
        print(f"| {name} | {state} | {cells['ours']} | {cells['interop']} | {cells['official']} | {ratio} |")
    print()
    print(
        "Cells: Entra token requests / IMDS requests / storage requests · median wall time over runs "
        f"({args.repeat} runs; the misconfigured row once; exception raised, if any). Cold: the process-wide "
        "registry is empty at the start of each run; warm: it already holds the token. The official path "
        "keeps nothing between hooks, so it is the same either way."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
