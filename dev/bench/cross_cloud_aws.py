"""Benchmark: token requests per task for GCP -> AWS and Azure -> AWS, N task processes on one host.

Each task is a separate Python interpreter (as Airflow 3 runs tasks), configured only through its environment
(the pod's identity on the source cloud, an ``AIRFLOW_CONN_*`` connection), released at the same moment,
reading one S3 object from the AWS sandbox. The sandboxes count the requests server side:

* GCP -> AWS: GKE metadata ``identity`` requests (the Google ID token) and STS ``AssumeRoleWithWebIdentity``;
* Azure -> AWS: Entra token requests (the pod's Entra token for the app id URI) and ``AssumeRoleWithWebIdentity``.

Compared, per direction:

* ``ours, host cache``: an ``aws_workload_identity`` connection with ``source`` gcp / azure and the host
  credential cache (``[workload_identity] credential_cache = host``, the default);
* ``ours, process only``: the same connection with ``credential_cache: process``;
* ``hand-written, token file``: the fastest alternative without this package: a sidecar writes the other
  cloud's token to a file once (one token request, counted), and each task's boto3 reads it through
  ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE`` (botocore's ``AssumeRoleWithWebIdentity`` provider:
  nothing shared across processes, so one STS call per task);
* ``hand-written, per task``: each task fetches the token itself (google-auth ``fetch_id_token`` /
  azure-identity ``WorkloadIdentityCredential``) and calls boto3's ``assume_role_with_web_identity``.

    uv run python dev/bench/cross_cloud_aws.py [--tasks 20] [--all]

A measurement, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow, run_task_processes  # noqa: E402

_home = isolate_airflow()

import airflow  # noqa: E402, F401  (writes the home's config once, before 20 task processes read it)

from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox  # noqa: E402
from dev.sandbox._fed_aws_trust import seed_federated_readers  # noqa: E402

ENTRA_AUDIENCE = "api://airflow-aws"
GCP_AUDIENCE = "sts.amazonaws.com"

WORKER = """
import os, sys, time
from pathlib import Path

variant, go, out = sys.argv[1:4]
# What a task process has loaded before its code runs (Airflow, and the DAG file's imports): not measured.
import airflow
import boto3

if variant == "ours":
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook
elif variant == "gcp-per-task":
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token
elif variant == "azure-per-task":
    from azure.identity import WorkloadIdentityCredential

Path(out + ".ready").write_text("ready")
given_up = time.monotonic() + 1800  # a worker whose benchmark died must not wait for ever
while not Path(go).exists():
    if time.monotonic() > given_up or os.getppid() == 1:
        sys.exit("the benchmark that started this worker is gone")
    time.sleep(0.005)

bucket, key = os.environ["AWI_BUCKET"], os.environ["AWI_KEY"]
if variant == "ours":
    s3 = AwsWorkloadIdentityHook(aws_conn_id="shared").get_client("s3")
elif variant == "token-file":  # AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE: botocore's own provider
    s3 = boto3.client("s3")
else:
    if variant == "gcp-per-task":
        token = id_token.fetch_id_token(Request(), os.environ["AWI_AUDIENCE"])
    else:
        token = WorkloadIdentityCredential().get_token(os.environ["AWI_AUDIENCE"] + "/.default").token
    answer = boto3.client("sts").assume_role_with_web_identity(
        RoleArn=os.environ["AWI_ROLE_ARN"], RoleSessionName="hand-written", WebIdentityToken=token
    )
    c = answer["Credentials"]
    s3 = boto3.client(
        "s3",
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
    )
s3.get_object(Bucket=bucket, Key=key)["Body"].read()
Path(out).write_text("ok")
"""


def run_tasks(workdir: Path, variant: str, env: dict[str, str], tasks: int, tag: str) -> float:
    return run_task_processes(workdir, WORKER, variant, env, tasks, tag)


def connection(source: str, role_arn: str, cache: str) -> dict[str, str]:
    extra: dict[str, Any] = {"source": source, "role_arn": role_arn, "credential_cache": cache}
    if source == "azure":
        extra["source_audience"] = ENTRA_AUDIENCE
    return {"AIRFLOW_CONN_SHARED": json.dumps({"conn_type": "aws_workload_identity", "extra": extra})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument(
        "--all", action="store_true", help="also 'ours, process only' and 'hand-written, per task' (slower)"
    )
    args = parser.parse_args()
    wanted = {"ours, host cache", "hand-written, token file (sidecar) + botocore web identity"}
    workdir = Path(tempfile.mkdtemp(prefix="awi-xc-aws-"))
    aws, gcp, azure = AwsSandbox.start(), GcpSandbox.start(), AzureSandbox.start(azurite=False)
    rows: list[tuple[str, str, dict[str, int], float]] = []
    try:
        roles = seed_federated_readers(aws, gcp, azure, entra_audience=ENTRA_AUDIENCE)
        sc = aws.scenario
        common = {
            **aws.env_isolation(),
            "AWI_BUCKET": sc.bucket_a,
            "AWI_KEY": sc.bucket_a_key,
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": "host",
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR": str(workdir / "cache"),
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
        }

        # GCP -> AWS: the pod's Google ID token (GKE metadata) as the web identity of the reader role
        gke = {**common, **gcp.env(storage=False), "AWI_AUDIENCE": GCP_AUDIENCE, "AWI_ROLE_ARN": roles["gcp"]}
        gcp.reset_calls()
        sidecar_file = workdir / "google-id-token"
        sidecar_file.write_text(_sidecar_google_token(gcp))
        sidecar_requests = gcp.calls("metadata_identity")
        for label, variant, env, extra_requests in (
            ("ours, host cache", "ours", {**gke, **connection("gcp", roles["gcp"], "host")}, 0),
            ("ours, process only", "ours", {**gke, **connection("gcp", roles["gcp"], "process")}, 0),
            (
                "hand-written, token file (sidecar) + botocore web identity",
                "token-file",
                {**gke, "AWS_ROLE_ARN": roles["gcp"], "AWS_WEB_IDENTITY_TOKEN_FILE": str(sidecar_file)},
                sidecar_requests,
            ),
            ("hand-written, per task: fetch_id_token + assume_role_with_web_identity", "gcp-per-task", gke, 0),
        ):
            if not args.all and label not in wanted:
                continue
            gcp.reset_calls()
            aws.reset_calls()
            seconds = run_tasks(workdir, variant, env, args.tasks, f"gcp-{variant}-{len(rows)}")
            counts = {
                "metadata identity": gcp.calls("metadata_identity") + extra_requests,
                "AssumeRoleWithWebIdentity": aws.calls("AssumeRoleWithWebIdentity"),
            }
            rows.append(("GCP -> AWS", label, counts, seconds))

        # Azure -> AWS: the pod's Entra token (AKS workload identity, audience the app id URI)
        sa_token = azure.write_sa_token(workdir / "azure-identity-token")
        aks = {
            **common,
            **azure.env_tls(),
            **azure.env_workload_identity(sa_token),
            "AWI_AUDIENCE": ENTRA_AUDIENCE,
            "AWI_ROLE_ARN": roles["azure"],
        }
        azure.reset_calls()
        entra_file = workdir / "entra-token"
        entra_file.write_text(_sidecar_entra_token(azure, sa_token))
        sidecar_requests = azure.calls("entra")
        for label, variant, env, extra_requests in (
            ("ours, host cache", "ours", {**aks, **connection("azure", roles["azure"], "host")}, 0),
            ("ours, process only", "ours", {**aks, **connection("azure", roles["azure"], "process")}, 0),
            (
                "hand-written, token file (sidecar) + botocore web identity",
                "token-file",
                {**aks, "AWS_ROLE_ARN": roles["azure"], "AWS_WEB_IDENTITY_TOKEN_FILE": str(entra_file)},
                sidecar_requests,
            ),
            (
                "hand-written, per task: WorkloadIdentityCredential + assume_role_with_web_identity",
                "azure-per-task",
                aks,
                0,
            ),
        ):
            if not args.all and label not in wanted:
                continue
            azure.reset_calls()
            aws.reset_calls()
            seconds = run_tasks(workdir, variant, env, args.tasks, f"azure-{variant}-{len(rows)}")
            counts = {
                "Entra": azure.calls("entra") + extra_requests,
                "AssumeRoleWithWebIdentity": aws.calls("AssumeRoleWithWebIdentity"),
            }
            rows.append(("Azure -> AWS", label, counts, seconds))
    finally:
        for sandbox in (aws, gcp, azure):
            sandbox.stop()

    print(
        f"\n{args.tasks} task processes on one host, each reading one S3 object "
        "(token requests counted by the sandboxes; a sidecar's one request is included in its row)\n"
    )
    print("| direction | variant | token requests (by endpoint) | total | per task | wall time |")
    print("|---|---|---|---:|---:|---:|")
    for direction, label, counts, seconds in rows:
        total = sum(counts.values())
        detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"| {direction} | {label} | {detail} | {total} | {total / args.tasks:.2f} | {seconds:.1f} s |")


def _sidecar_google_token(gcp: GcpSandbox) -> str:
    """What a sidecar would write: one Google ID token from the metadata server (through the sandbox's env)."""
    import urllib.request

    host = gcp.env_gke()["GCE_METADATA_HOST"]
    url = (
        f"http://{host}/computeMetadata/v1/instance/service-accounts/default/identity"
        f"?audience={GCP_AUDIENCE}&format=full"
    )
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback sandbox
        return str(response.read().decode())


def _sidecar_entra_token(azure: AzureSandbox, sa_token: Path) -> str:
    """What a sidecar would write: one Entra token for the app id URI (azure-identity, workload identity)."""
    from azure.identity import WorkloadIdentityCredential

    sc = azure.scenario
    os.environ.update(azure.env_tls())
    credential = WorkloadIdentityCredential(
        tenant_id=sc.tenant_id,
        client_id=sc.workload_client_id,
        token_file_path=str(sa_token),
        authority=azure.authority_host,
    )
    try:
        return str(credential.get_token(f"{ENTRA_AUDIENCE}/.default").token)
    finally:
        credential.close()


if __name__ == "__main__":
    main()
