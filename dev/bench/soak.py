"""Soak: one process, 10 identities over the three clouds, tokens that live 60 s, data calls from threads.

The local AWS, Google Cloud and Azure sandboxes run in this process and issue every token with a short
lifetime (``--ttl``, 60 s by default), so a few minutes cover many token lifetimes: with 60 s tokens,
5 minutes are 5 lifetimes of every identity, the refresh traffic of 5 hours of one-hour tokens. Several
threads (``--threads``) make data calls as tasks would (S3 ``HeadObject``, a GCS download, a blob
download), each through a hook's SDK client, on identities picked at random:

* AWS (IRSA and EKS Pod Identity sources): IRSA -> customer-reader; IRSA -> customer-hop ->
  customer-reader-chained; IRSA -> customer-external (external id); Pod Identity -> customer-reader;
* Google Cloud (GKE metadata source): -> reader; -> hop -> chained-reader; -> reader with
  ``devstorage.read_only``;
* Azure: AKS workload identity (the workload's client id and a multi-tenant app's), the node's managed
  identity (IMDS).

Reported as Markdown tables: token requests per identity per lifetime (distinct credentials each identity
handed out) and per token endpoint (the sandbox's counters, which see every request), failed data calls,
and the process at start (after each identity's first call), after one lifetime (steady state) and at
the end: RSS, threads, open fds, Airflow's secrets masker (patterns held, their total length, the cost of
masking one log line) and the package's redaction state (``redaction.state()``, where it exists).

    uv run python dev/bench/soak.py [--minutes 5] [--ttl 60] [--threads 6] [--interval 0.05] [--json PATH]

A measurement, not a test: nothing here asserts anything. RSS includes the sandboxes (they keep every
token they issued), so its growth is an upper bound for the package's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow  # noqa: E402

_home = isolate_airflow(AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS="127.0.0.1")
# the default host credential cache, in this run's own directory (no token from an earlier run)
os.environ["AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR"] = str(Path(_home) / "credential-cache")

from dev.sandbox.aws import AMBIENT_AWS_VARIABLES, AwsSandbox  # noqa: E402
from dev.sandbox.azure import AMBIENT_AZURE_VARIABLES, AzureSandbox  # noqa: E402
from dev.sandbox.gcp import AMBIENT_GCP_VARIABLES, GcpSandbox  # noqa: E402

for _name in (*AMBIENT_AWS_VARIABLES, *AMBIENT_GCP_VARIABLES, *AMBIENT_AZURE_VARIABLES):
    os.environ.pop(_name, None)

STORAGE = "https://storage.azure.com/.default"
LOG_LINE = (
    "INFO - Task instance run: reading s3://customer-bucket-a/reports/hello.txt as "
    "arn:aws:sts::222222222222:assumed-role/customer-reader/airflow-wi-worker (attempt 1 of 3, 2026-12-02)"
)


@dataclass
class Identity:
    name: str
    cloud: str
    call: Callable[[], object]  # one data call
    credential: Callable[[], str]  # the credential the hook hands out now (to count distinct ones)
    seen: set[str] = field(default_factory=set)
    calls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run_once(self) -> None:
        try:
            self.call()
            fingerprint = self.credential()
        except Exception as exc:
            with self.lock:
                self.calls += 1
                self.failures[type(exc).__name__] += 1
            return
        with self.lock:
            self.calls += 1
            self.seen.add(fingerprint)


def define(conn_id: str, conn_type: str, extra: dict[str, Any], host: str | None = None) -> str:
    body: dict[str, Any] = {"conn_type": conn_type, "extra": extra}
    if host:
        body["host"] = host
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(body)
    return conn_id


def _short(value: str) -> str:
    """A fingerprint that is not the secret (only used to count distinct credentials)."""
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:16]


def aws_identities(sb: AwsSandbox) -> list[Identity]:
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    sc = sb.scenario
    token = sb.write_web_identity_token()
    os.environ.update({**sb.env_isolation(), **sb.env_irsa(token), **sb.env_pod_identity()})
    specs: dict[str, dict[str, Any]] = {
        "aws: IRSA -> customer-reader": {"source": "web_identity", "role_arn": sc.customer_reader_role_arn},
        "aws: IRSA -> customer-hop -> customer-reader-chained": {
            "source": "web_identity",
            "role_chain": [sc.customer_hop_role_arn],
            "role_arn": sc.customer_reader_chained_role_arn,
        },
        "aws: IRSA -> customer-external (external id)": {
            "source": "web_identity",
            "role_arn": sc.customer_external_role_arn,
            "external_id": sc.external_id,
        },
        "aws: Pod Identity -> customer-reader": {"source": "pod_identity", "role_arn": sc.customer_reader_role_arn},
    }
    out = []
    for i, (name, extra) in enumerate(specs.items()):
        hook = AwsWorkloadIdentityHook(aws_conn_id=define(f"soak_aws_{i}", "aws_workload_identity", extra))
        s3 = hook.get_client("s3")

        def call(s3: Any = s3) -> object:
            return s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)

        def credential(hook: Any = hook) -> str:
            return _short(hook.get_credentials().get_frozen_credentials().access_key)

        out.append(Identity(name, "aws", call, credential))
    return out


def gcp_identities(sb: GcpSandbox) -> list[Identity]:
    from google.cloud import storage

    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    sc = sb.scenario
    os.environ.update(sb.env())
    for module, attribute, value in sb.google_auth_patches():
        setattr(importlib.import_module(module), attribute, value)
    specs: dict[str, dict[str, Any]] = {
        "gcp: GKE -> reader": {"impersonation_chain": [sc.reader_sa]},
        "gcp: GKE -> hop -> chained-reader": {"impersonation_chain": [sc.hop_sa, sc.chained_reader_sa]},
        "gcp: GKE -> reader (devstorage.read_only)": {
            "impersonation_chain": [sc.reader_sa],
            "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"],
        },
    }
    out = []
    for i, (name, extra) in enumerate(specs.items()):
        extra = {**extra, "iam_endpoint_url": sb.iam_endpoint}
        hook = GcpWorkloadIdentityHook(gcp_conn_id=define(f"soak_gcp_{i}", "gcp_workload_identity", extra))
        client = storage.Client(
            credentials=hook.get_credentials(),
            project=hook.project_id,
            client_options={"api_endpoint": sb.storage_host},
        )
        blob = client.bucket(sc.bucket_a).blob(sc.bucket_a_key)

        def credential(hook: Any = hook) -> str:
            return _short(hook.get_access_token())

        out.append(Identity(name, "gcp", blob.download_as_bytes, credential))
    return out


def azure_identities(sb: AzureSandbox) -> list[Identity]:
    from azure.storage.blob import BlobServiceClient

    from airflow_workload_identity.azure import AzureWorkloadIdentityHook

    sc = sb.scenario
    token_file = sb.write_sa_token()
    os.environ.update({**sb.env_isolation(), **sb.env_imds(), **sb.env_workload_identity(token_file)})
    sb.trust_ca_in_aiohttp()
    sb.grant(sc.multitenant_object_id, container=sc.container_a)
    specs: dict[str, dict[str, Any]] = {
        "azure: AKS workload identity": {"scopes": [STORAGE]},
        "azure: AKS workload identity, multi-tenant app": {"scopes": [STORAGE], "client_id": sc.multitenant_client_id},
        "azure: node managed identity (IMDS)": {
            "scopes": [STORAGE],
            "mode": "managed_identity",
            "client_id": sc.node_client_id,
        },
    }
    out = []
    for i, (name, extra) in enumerate(specs.items()):
        conn = define(f"soak_azure_{i}", "azure_workload_identity", extra, host=sb.blob_account_url)
        hook = AzureWorkloadIdentityHook(azure_conn_id=conn)
        blob = BlobServiceClient(sb.blob_account_url, credential=hook.get_credential(), retry_total=0).get_blob_client(
            sc.container_a, sc.blob_a_name
        )

        def call(blob: Any = blob) -> object:
            return blob.download_blob().readall()

        def credential(hook: Any = hook) -> str:
            return _short(hook.get_token(STORAGE))

        out.append(Identity(name, "azure", call, credential))
    return out


# --- the process's state ----------------------------------------------------------------------------------


def masker_state() -> dict[str, float]:
    """Airflow's secrets masker: patterns held, their total length, and the cost of masking one log line."""
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker
    except ImportError:
        try:
            from airflow.utils.log.secrets_masker import _secrets_masker  # type: ignore[no-redef]
        except ImportError:
            return {}
    masker = _secrets_masker()
    patterns = list(getattr(masker, "patterns", ()))
    replacer = getattr(masker, "replacer", None)
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(200):
            masker.redact(LOG_LINE)
        samples.append((time.perf_counter() - started) / 200 * 1e6)
    return {
        "masker patterns": len(patterns),
        "masker pattern chars": sum(len(str(p)) for p in patterns),
        "masker regex chars": len(replacer.pattern) if replacer is not None else 0,
        "masking one log line (us)": round(statistics.median(samples), 1),
    }


def redaction_state() -> dict[str, float]:
    try:
        from airflow_workload_identity import redaction
    except ImportError:
        return {}
    state = getattr(redaction, "state", None)
    if state is None:
        return {}
    out: dict[str, float] = {f"redaction {k.replace('_', ' ')}": v for k, v in state().items()}
    redact = getattr(redaction, "redact", None)
    if redact is not None:
        started = time.perf_counter()
        for _ in range(1000):
            redact(LOG_LINE)
        out["redacting one log line (us)"] = round((time.perf_counter() - started) / 1000 * 1e6, 1)
    return out


def process_state() -> dict[str, float]:
    gc.collect()
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {
        "RSS (MiB)": round(rss / 2**20, 1),
        "threads": threading.active_count(),
        "open fds": len(os.listdir("/proc/self/fd")),
        **masker_state(),
        **redaction_state(),
    }


# --- the run ---------------------------------------------------------------------------------------------


def endpoint_counts(aws: AwsSandbox, gcp: GcpSandbox, azure: AzureSandbox) -> dict[str, int]:
    return {
        "STS AssumeRoleWithWebIdentity": aws.calls("AssumeRoleWithWebIdentity"),
        "STS AssumeRole": aws.calls("AssumeRole"),
        "EKS Pod Identity agent": aws.pod_identity_calls,
        "GKE metadata token": gcp.calls("metadata_token"),
        "IAM Credentials generateAccessToken": gcp.calls("generateAccessToken"),
        "Entra token": azure.calls("entra"),
        "IMDS token": azure.calls("imds"),
    }


#: Token-holding objects behind each endpoint for the 10 identities (what one lifetime should cost):
#: IRSA is one shared source; the AWS hops are reader, hop, chained, external, and reader again behind Pod
#: Identity; GKE has one source; IAM Credentials mints one token per GCP identity (a chain is one call).
EXPECTED_PER_LIFETIME = {
    "STS AssumeRoleWithWebIdentity": 1,
    "STS AssumeRole": 5,
    "EKS Pod Identity agent": 1,
    "GKE metadata token": 1,
    "IAM Credentials generateAccessToken": 3,
    "Entra token": 2,
    "IMDS token": 1,
}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the data calls run (default 5)")
    parser.add_argument("--ttl", type=int, default=60, help="lifetime of every token the sandboxes issue (s)")
    parser.add_argument("--threads", type=int, default=6, help="threads making data calls")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between a thread's calls (s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    aws, gcp, azure = AwsSandbox.start(), GcpSandbox.start(), AzureSandbox.start()
    try:
        aws.force_credential_ttl(args.ttl)
        gcp.force_token_ttl(args.ttl)
        azure.force_token_ttl(args.ttl)
        identities = [*aws_identities(aws), *gcp_identities(gcp), *azure_identities(azure)]
        for identity in identities:  # warm-up: every identity's first token, then the "start" snapshot
            identity.run_once()
        start = process_state()
        start_counts = endpoint_counts(aws, gcp, azure)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        rng = random.Random(8)
        rng_lock = threading.Lock()

        def worker() -> None:
            while time.monotonic() < deadline:
                with rng_lock:
                    identity = rng.choice(identities)
                identity.run_once()
                time.sleep(args.interval)

        workers = [threading.Thread(target=worker, name=f"soak-{i}", daemon=True) for i in range(args.threads)]
        for w in workers:
            w.start()
        # a second snapshot once every thread has run a whole lifetime: what the process holds in steady
        # state (each thread's connection pools, the servers' keep-alive handlers), against which the end
        # snapshot shows growth
        time.sleep(min(args.ttl, max(deadline - time.monotonic() - 1, 0)))
        steady = process_state()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - started
        end = process_state()
        end_counts = endpoint_counts(aws, gcp, azure)
    finally:
        for sb in (azure, gcp, aws):
            sb.stop()

    lifetimes = elapsed / args.ttl
    per_identity = [
        [
            i.name,
            i.calls,
            sum(i.failures.values()) or 0,
            len(i.seen),
            f"{(len(i.seen) - 1) / lifetimes:.2f}" if lifetimes else "-",
        ]
        for i in identities
    ]
    per_endpoint = []
    for name, total in end_counts.items():
        during = total - start_counts[name]
        per_endpoint.append(
            [name, total, during, EXPECTED_PER_LIFETIME[name], f"{during / lifetimes:.2f}" if lifetimes else "-"]
        )
    state_rows = [
        [k, start.get(k, "-"), steady.get(k, "-"), end.get(k, "-")] for k in dict.fromkeys([*start, *steady, *end])
    ]
    failures: Counter[str] = Counter()
    for i in identities:
        failures.update(i.failures)

    print(
        f"### Soak ({dt.date.today().isoformat()}): {len(identities)} identities, tokens live {args.ttl} s, "
        f"{elapsed / 60:.1f} min ({lifetimes:.1f} lifetimes), {args.threads} threads, "
        f"{sum(i.calls for i in identities)} data calls, {sum(failures.values())} failed"
        + (f" ({dict(failures)})" if failures else "")
        + "\n"
    )
    print(
        table(
            ["identity", "data calls", "failed", "distinct credentials", "refreshes per lifetime"],
            per_identity,
        )
        + "\n"
    )
    print(
        table(
            [
                "token endpoint",
                "requests (total)",
                "during the soak",
                "expected per lifetime",
                "measured per lifetime",
            ],
            per_endpoint,
        )
        + "\n"
    )
    print(table(["process", "start", f"after {args.ttl} s", "end"], state_rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "ttl": args.ttl,
                    "elapsed": elapsed,
                    "identities": per_identity,
                    "endpoints": per_endpoint,
                    "start": start,
                    "steady": steady,
                    "end": end,
                    "failures": dict(failures),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
