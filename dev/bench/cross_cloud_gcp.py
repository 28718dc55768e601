"""Benchmark: token requests per task for AWS -> GCP and Azure -> GCP, N task processes on one host.

Each task is a separate Python interpreter (as Airflow 3 runs tasks), configured only through its environment
(the pod's identity on the source cloud, an ``AIRFLOW_CONN_*`` connection), released at the same moment,
reading one GCS object as ``reader@customer-proj`` (impersonated by the federated identity). The sandboxes count
the requests server side:

* AWS -> GCP: STS ``AssumeRoleWithWebIdentity`` (the pod's IRSA role), Google STS token exchanges, IAM
  Credentials ``generateAccessToken``;
* Azure -> GCP: Entra token requests (the pod's Entra token for the app id URI), Google STS, ``generateAccessToken``.

Compared, per direction:

* ``ours, host cache``: a ``gcp_workload_identity`` connection with ``source`` aws / azure, a
  ``workload_identity_provider`` and ``impersonation_chain``, and the host credential cache (the default);
* ``ours, process only``: the same connection with ``credential_cache: process``;
* AWS, ``hand-written, per task``: the fastest alternative without this package on EKS: google-auth's
  ``aws.Credentials`` with a boto3-backed ``AwsSecurityCredentialsSupplier`` (IRSA through botocore) and
  ``service_account_impersonation_url`` (google-auth's own external account file would read the EC2 metadata
  server, which an EKS pod with IRSA must not use);
* Azure, ``hand-written, external-account JSON + token file``: a sidecar writes the pod's Entra token to a file
  once (one token request, counted) and each task loads a Google external-account JSON file whose
  ``credential_source`` is that file (google-auth's ``identity_pool``), with ``service_account_impersonation_url``.

    uv run python dev/bench/cross_cloud_gcp.py [--tasks 20]

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

from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox  # noqa: E402

POOL_PROJECT = "200000000002"
AWS_PROVIDER = f"projects/{POOL_PROJECT}/locations/global/workloadIdentityPools/aws-pool/providers/aws-prov"
AZURE_PROVIDER = f"projects/{POOL_PROJECT}/locations/global/workloadIdentityPools/azure-pool/providers/entra"
POOLS = f"iam.googleapis.com/projects/{POOL_PROJECT}/locations/global/workloadIdentityPools"
ENTRA_APP = "api://gcp-federation"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

WORKER = """
import json, os, sys, time
from pathlib import Path

variant, go, out = sys.argv[1:4]
import airflow  # a task process has Airflow loaded before its code runs: not part of the measured time
from google.cloud import storage

Path(out + ".ready").write_text("ready")
given_up = time.monotonic() + 1800  # a worker whose benchmark died must not wait for ever
while not Path(go).exists():
    if time.monotonic() > given_up or os.getppid() == 1:
        sys.exit("the benchmark that started this worker is gone")
    time.sleep(0.005)

bucket, key, endpoint = os.environ["AWI_BUCKET"], os.environ["AWI_KEY"], os.environ["AWI_STORAGE"]
target = os.environ["AWI_TARGET"]
impersonate = os.environ["AWI_IAM"] + "/v1/projects/-/serviceAccounts/" + target + ":generateAccessToken"
scopes = ["https://www.googleapis.com/auth/cloud-platform"]
if variant == "ours":
    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    hook = GcpWorkloadIdentityHook(gcp_conn_id="shared")
    credentials, project = hook.get_credentials(), hook.project_id
elif variant == "aws-per-task":  # google-auth's AWS credentials on a boto3 supplier (IRSA via botocore)
    import boto3
    from google.auth import aws

    class Boto3Supplier(aws.AwsSecurityCredentialsSupplier):
        def __init__(self):
            self.session = boto3.Session()

        def get_aws_security_credentials(self, context, request):
            f = self.session.get_credentials().get_frozen_credentials()
            return aws.AwsSecurityCredentials(f.access_key, f.secret_key, f.token)

        def get_aws_region(self, context, request):
            return os.environ["AWS_REGION"]

    credentials = aws.Credentials(
        audience=os.environ["AWI_AUDIENCE"],
        subject_token_type="urn:ietf:params:aws:token-type:aws4_request",
        token_url=os.environ["AWI_STS"] + "/v1/token",
        aws_security_credentials_supplier=Boto3Supplier(),
        service_account_impersonation_url=impersonate,
        scopes=scopes,
    )
    project = "customer-proj"
else:  # an external-account JSON file whose credential source is a token file a sidecar keeps fresh
    from google.auth import identity_pool

    credentials = identity_pool.Credentials.from_file(os.environ["AWI_EXTERNAL_ACCOUNT_FILE"], scopes=scopes)
    project = "customer-proj"
client = storage.Client(credentials=credentials, project=project, client_options={"api_endpoint": endpoint})
client.bucket(bucket).blob(key).download_as_bytes()
time.sleep(0.3)  # google-cloud-storage's background get_bucket mints with the same credentials: let it finish
Path(out).write_text("ok")
"""


def run_tasks(workdir: Path, variant: str, env: dict[str, str], tasks: int, tag: str) -> float:
    return run_task_processes(workdir, WORKER, variant, env, tasks, tag)


def connection(gcp: GcpSandbox, source: str, provider: str, cache: str) -> dict[str, str]:
    extra: dict[str, Any] = {
        "source": source,
        "workload_identity_provider": provider,
        "impersonation_chain": [gcp.scenario.reader_sa],
        "sts_endpoint_url": gcp.sts_endpoint,
        "iam_endpoint_url": gcp.iam_endpoint,
        "project_id": gcp.scenario.customer_project,
        "credential_cache": cache,
    }
    if source == "azure":
        extra["source_audience"] = ENTRA_APP
    return {"AIRFLOW_CONN_SHARED": json.dumps({"conn_type": "gcp_workload_identity", "extra": extra})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="awi-xc-gcp-"))
    aws, gcp, azure = AwsSandbox.start(), GcpSandbox.start(), AzureSandbox.start(azurite=False)
    rows: list[tuple[str, str, dict[str, int], float]] = []
    try:
        sc = gcp.scenario
        account = aws.scenario.platform_account
        tenant = azure.scenario.tenant_id
        fed = gcp.federation
        fed.trust_aws(aws.endpoint_url)
        fed.add_aws_provider(AWS_PROVIDER, account_id=account)
        fed.allow_impersonation(
            f"principalSet://{POOLS}/aws-pool/attribute.aws_role/arn:aws:sts::{account}:assumed-role/pod-base",
            sc.reader_sa,
        )
        fed.add_oidc_provider(
            AZURE_PROVIDER,
            issuer_uri=f"https://sts.windows.net/{tenant}/",
            jwks_uri=f"{azure.authority_host}/{tenant}/discovery/v2.0/keys",
            allowed_audiences=[ENTRA_APP],
            cafile=str(azure.ca_bundle),
        )
        fed.allow_impersonation(
            f"principal://{POOLS}/azure-pool/subject/{azure.scenario.workload_object_id}", sc.reader_sa
        )
        common = {
            **gcp.env_isolation(),
            "AWI_BUCKET": sc.bucket_a,
            "AWI_KEY": sc.bucket_a_key,
            "AWI_STORAGE": gcp.storage_host,
            "AWI_STS": gcp.sts_endpoint,
            "AWI_IAM": gcp.iam_endpoint,
            "AWI_TARGET": sc.reader_sa,
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": "host",
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR": str(workdir / "cache"),
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
        }

        def counts_now(first: str, first_count: int) -> dict[str, int]:
            return {
                first: first_count,
                "Google STS": fed.calls["token"],
                "generateAccessToken": gcp.calls("generateAccessToken"),
            }

        # AWS -> GCP: the pod's IRSA credentials, a signed GetCallerIdentity exchanged at Google's STS
        token_file = aws.write_web_identity_token(workdir / "irsa-token")
        eks = {
            **common,
            **aws.env_isolation(),
            **aws.env_irsa(token_file),
            "AWI_AUDIENCE": f"//iam.googleapis.com/{AWS_PROVIDER}",
        }
        for label, variant, env in (
            ("ours, host cache", "ours", {**eks, **connection(gcp, "aws", AWS_PROVIDER, "host")}),
            ("ours, process only", "ours", {**eks, **connection(gcp, "aws", AWS_PROVIDER, "process")}),
            ("hand-written, per task: google-auth aws.Credentials on a boto3 supplier", "aws-per-task", eks),
        ):
            gcp.reset_calls()
            fed.calls.clear()
            aws.reset_calls()
            seconds = run_tasks(workdir, variant, env, args.tasks, f"aws-{variant}-{len(rows)}")
            rows.append(
                (
                    "AWS -> GCP",
                    label,
                    counts_now("AssumeRoleWithWebIdentity", aws.calls("AssumeRoleWithWebIdentity")),
                    seconds,
                )
            )

        # Azure -> GCP: the pod's Entra token (AKS workload identity, audience the app id URI) as an OIDC token
        sa_token = azure.write_sa_token(workdir / "azure-identity-token")
        aks = {**common, **azure.env_tls(), **azure.env_workload_identity(sa_token)}
        azure.reset_calls()
        entra_file = workdir / "entra-token"
        entra_file.write_text(_sidecar_entra_token(azure, sa_token))
        sidecar_requests = azure.calls("entra")
        external_account = workdir / "external-account.json"
        external_account.write_text(
            json.dumps(
                {
                    "type": "external_account",
                    "audience": f"//iam.googleapis.com/{AZURE_PROVIDER}",
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                    "token_url": f"{gcp.sts_endpoint}/v1/token",
                    "credential_source": {"file": str(entra_file)},
                    "service_account_impersonation_url": (
                        f"{gcp.iam_endpoint}/v1/projects/-/serviceAccounts/{sc.reader_sa}:generateAccessToken"
                    ),
                }
            )
        )
        for label, variant, env, extra_requests in (
            ("ours, host cache", "ours", {**aks, **connection(gcp, "azure", AZURE_PROVIDER, "host")}, 0),
            ("ours, process only", "ours", {**aks, **connection(gcp, "azure", AZURE_PROVIDER, "process")}, 0),
            (
                "hand-written, external-account JSON + token file (sidecar)",
                "external-account-file",
                {**aks, "AWI_EXTERNAL_ACCOUNT_FILE": str(external_account)},
                sidecar_requests,
            ),
        ):
            gcp.reset_calls()
            fed.calls.clear()
            azure.reset_calls()
            seconds = run_tasks(workdir, variant, env, args.tasks, f"azure-{variant}-{len(rows)}")
            rows.append(("Azure -> GCP", label, counts_now("Entra", azure.calls("entra") + extra_requests), seconds))
    finally:
        for sandbox in (aws, gcp, azure):
            sandbox.stop()

    print(
        f"\n{args.tasks} task processes on one host, each reading one GCS object as an impersonated service account "
        "(token requests counted by the sandboxes; a sidecar's one request is included in its row)\n"
    )
    print("| direction | variant | token requests (by endpoint) | total | per task | wall time |")
    print("|---|---|---|---:|---:|---:|")
    for direction, label, counts, seconds in rows:
        total = sum(counts.values())
        detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"| {direction} | {label} | {detail} | {total} | {total / args.tasks:.2f} | {seconds:.1f} s |")


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
        return str(credential.get_token(f"{ENTRA_APP}/.default").token)
    finally:
        credential.close()


if __name__ == "__main__":
    main()
