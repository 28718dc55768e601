"""Benchmark: token requests per task for GCP -> Azure and AWS -> Azure, N task processes on one host.

Each task is a separate Python interpreter (as Airflow 3 runs tasks), configured only through its environment
(the pod's identity on the source cloud, an ``AIRFLOW_CONN_*`` connection), released at the same moment, reading
one blob container's properties from the Azure sandbox. The sandboxes count the requests server side:

* GCP -> Azure: GKE metadata ``identity`` requests (the Google ID token) and Entra token requests;
* AWS -> Azure: STS ``AssumeRoleWithWebIdentity`` (the pod's IRSA role), ``GetWebIdentityToken`` (the JWT) and
  Entra token requests.

Compared, per direction:

* ``ours, host cache``: an ``azure_workload_identity`` connection with ``source`` gcp / aws and the host
  credential cache (``[workload_identity] credential_cache = host``, the default);
* ``ours, process only``: the same connection with ``credential_cache: process``;
* ``hand-written, per task``: azure-identity's ``ClientAssertionCredential`` whose callback is google-auth's
  ``id_token.fetch_id_token`` (GCP) or boto3's ``sts.get_web_identity_token`` on the IRSA credentials (AWS),
  one credential per task process (nothing shares it across processes);
* ``hand-written, sidecar token file``: the fastest alternative without this package: a sidecar writes the
  source token to a file once (its requests counted) and each task reads it with azure-identity's
  ``WorkloadIdentityCredential`` (as on AKS), one Entra request per task.

    uv run python dev/bench/cross_cloud_azure.py [--tasks 20]

A measurement, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow, run_task_processes  # noqa: E402

_home = isolate_airflow()

from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox  # noqa: E402
from dev.sandbox import _fed_aws_outbound as outbound  # noqa: E402

AUDIENCE = "api://AzureADTokenExchange"
GOOGLE_ISSUER = "https://accounts.google.com"
STORAGE = "https://storage.azure.com/.default"

WORKER = """
import os, sys, time
from pathlib import Path

variant, go, out = sys.argv[1:4]
from azure.storage.blob import BlobServiceClient

if variant == "ours":
    from airflow_workload_identity.azure import AzureWorkloadIdentityHook
    from airflow_workload_identity.azure import credentials
    from airflow_workload_identity.federation import aws, gcp

    # what a task process has done before its code runs: Airflow loaded, the connection readable
    AzureWorkloadIdentityHook(azure_conn_id="shared").connection
elif variant == "token-file":
    from azure.identity import WorkloadIdentityCredential
else:
    from azure.identity import ClientAssertionCredential

    if variant.startswith("gcp-"):
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token
    else:
        import boto3
Path(out + ".ready").write_text("ready")  # imports done: wait at the start line
given_up = time.monotonic() + 1800  # a worker whose benchmark died must not wait for ever
while not Path(go).exists():
    if time.monotonic() > given_up or os.getppid() == 1:
        sys.exit("the benchmark that started this worker is gone")
    time.sleep(0.005)

if variant == "ours":
    credential = AzureWorkloadIdentityHook(azure_conn_id="shared").get_credential()
elif variant == "token-file":  # the source token a sidecar wrote, as on AKS
    credential = WorkloadIdentityCredential(
        tenant_id=os.environ["AWI_TENANT"],
        client_id=os.environ["AWI_CLIENT"],
        token_file_path=os.environ["AWI_TOKEN_FILE"],
        authority=os.environ["AWI_AUTHORITY"],
    )
else:
    if variant.startswith("gcp-"):
        request = Request()

        def assertion():
            return id_token.fetch_id_token(request, os.environ["AWI_AUDIENCE"])
    else:
        sts = boto3.client("sts")

        def assertion():
            answer = sts.get_web_identity_token(
                Audience=[os.environ["AWI_AUDIENCE"]], DurationSeconds=3600, SigningAlgorithm="RS256"
            )
            return answer["WebIdentityToken"]

    if variant.endswith("-sidecar"):  # the sidecar: one source token, written where the tasks read it
        Path(os.environ["AWI_TOKEN_FILE"]).write_text(assertion())
        Path(out).write_text("ok")
        sys.exit(0)
    credential = ClientAssertionCredential(
        os.environ["AWI_TENANT"], os.environ["AWI_CLIENT"], assertion, authority=os.environ["AWI_AUTHORITY"]
    )
service = BlobServiceClient(os.environ["AWI_ACCOUNT_URL"], credential=credential)
service.get_container_client(os.environ["AWI_CONTAINER"]).get_container_properties()
Path(out).write_text("ok")
"""


def run_tasks(workdir: Path, variant: str, env: dict[str, str], tasks: int, tag: str) -> float:
    return run_task_processes(workdir, WORKER, variant, env, tasks, tag)


def azure_env(azure: AzureSandbox, token_file: Path) -> dict[str, str]:
    sc = azure.scenario
    return {
        **azure.env_tls(),
        "AWI_ACCOUNT_URL": azure.blob_account_url,
        "AWI_CONTAINER": sc.container_a,
        "AWI_TENANT": sc.tenant_id,
        "AWI_CLIENT": sc.workload_client_id,
        "AWI_AUTHORITY": azure.authority_host,
        "AWI_AUDIENCE": AUDIENCE,
        "AWI_TOKEN_FILE": str(token_file),
        "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
    }


def connection(azure: AzureSandbox, source: str, cache: str) -> dict[str, str]:
    sc = azure.scenario
    extra: dict[str, Any] = {
        "source": source,
        "client_id": sc.workload_client_id,
        "tenant_id": sc.tenant_id,
        "authority_host": azure.authority_host,
        "scopes": [STORAGE],
        "credential_cache": cache,
    }
    body = {"conn_type": "azure_workload_identity", "host": azure.blob_account_url, "extra": extra}
    return {"AIRFLOW_CONN_SHARED": json.dumps(body)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="awi-xc-azure-"))
    gcp, azure, aws = GcpSandbox.start(), AzureSandbox.start(), AwsSandbox.start()
    rows: list[tuple[str, str, dict[str, int], float]] = []
    try:
        sc = azure.scenario
        cache = {
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": "host",
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR": str(workdir / "cache"),
        }
        # GCP -> Azure: Entra trusts Google's issuer (keys over loopback) for the pod's service account
        azure.trust_issuer(GOOGLE_ISSUER, gcp.google_jwks_url)
        azure.add_federated_credential(
            sc.workload_client_id, gcp.unique_id(gcp.scenario.source_sa), issuer=GOOGLE_ISSUER, name="gke"
        )
        gke = {**gcp.env(storage=False), **azure_env(azure, workdir / "gke-token"), **cache}
        for label, variant, env in (
            ("ours, host cache", "ours", {**gke, **connection(azure, "gcp", "host")}),
            ("ours, process only", "ours", {**gke, **connection(azure, "gcp", "process")}),
            ("hand-written, per task: ClientAssertionCredential + fetch_id_token", "gcp-hand", gke),
            ("hand-written, sidecar token file + WorkloadIdentityCredential", "token-file", gke),
        ):
            gcp.reset_calls()
            azure.reset_calls()
            if variant == "token-file":  # the sidecar's one request is counted
                run_tasks(workdir, "gcp-sidecar", env, 1, f"gcp-sidecar-{len(rows)}")
            seconds = run_tasks(workdir, variant, env, args.tasks, f"gcp-{variant}-{len(rows)}")
            counts = {"metadata identity": gcp.calls("metadata_identity"), "Entra": azure.calls("entra")}
            rows.append(("GCP -> Azure", label, counts, seconds))

        # AWS -> Azure: the pod's IRSA role may mint tokens for Entra; Entra trusts the account's outbound issuer
        outbound.allow_web_identity_token(aws, audiences=[AUDIENCE], max_duration=3600)
        issuer = outbound.issuer_url(aws)
        azure.trust_issuer(issuer, outbound.jwks_url(aws))
        azure.add_federated_credential(sc.workload_client_id, aws.scenario.pod_base_role_arn, issuer=issuer, name="eks")
        token = aws.write_web_identity_token(workdir / "irsa-token")
        eks = {**aws.env_isolation(), **aws.env_irsa(token), **azure_env(azure, workdir / "eks-token"), **cache}
        for label, variant, env in (
            ("ours, host cache", "ours", {**eks, **connection(azure, "aws", "host")}),
            ("ours, process only", "ours", {**eks, **connection(azure, "aws", "process")}),
            ("hand-written, per task: ClientAssertionCredential + boto3 get_web_identity_token", "aws-hand", eks),
            ("hand-written, sidecar token file + WorkloadIdentityCredential", "token-file", eks),
        ):
            aws.reset_calls()
            azure.reset_calls()
            if variant == "token-file":
                run_tasks(workdir, "aws-sidecar", env, 1, f"aws-sidecar-{len(rows)}")
            seconds = run_tasks(workdir, variant, env, args.tasks, f"aws-{variant}-{len(rows)}")
            calls = aws.calls_by_action()
            counts = {
                "AssumeRoleWithWebIdentity": calls.get("AssumeRoleWithWebIdentity", 0),
                "GetWebIdentityToken": calls.get("GetWebIdentityToken", 0),
                "Entra": azure.calls("entra"),
            }
            rows.append(("AWS -> Azure", label, counts, seconds))
    finally:
        for sandbox in (gcp, azure, aws):
            sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\n{args.tasks} task processes on one host, each reading one blob container "
        "(token requests counted by the sandboxes)\n"
    )
    print("| direction | variant | token requests (by endpoint) | total | per task | release to last done |")
    print("|---|---|---|---:|---:|---:|")
    for direction, label, counts, seconds in rows:
        total = sum(counts.values())
        detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"| {direction} | {label} | {detail} | {total} | {total / args.tasks:.2f} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
