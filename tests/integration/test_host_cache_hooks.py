"""One token per identity per host: 20 task-like processes on the same connection, through the real hooks.

Each worker is a separate Python interpreter configured only through its environment (the pod's identity
and an ``AIRFLOW_CONN_*`` connection), as a task process is. They wait at a start line (a file appearing)
so that all of them ask at once, then build the package's hook and make one data call against the
sandbox. The sandbox counts the token requests server side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 20

WORKER = """
import os, sys, time
from pathlib import Path

cloud, go, out = sys.argv[1:4]
while not Path(go).exists():
    time.sleep(0.005)
if cloud == "aws":
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    s3 = AwsWorkloadIdentityHook(aws_conn_id="shared").get_client("s3")
    s3.list_objects_v2(Bucket=os.environ["AWI_BUCKET"])
elif cloud == "aws-async":
    import asyncio

    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    async def main():
        hook = AwsWorkloadIdentityHook(aws_conn_id="shared")
        credentials = await hook.get_async_credentials().get_frozen_credentials()
        assert credentials.token

    asyncio.run(main())
elif cloud == "gcp":
    from google.cloud import storage

    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    hook = GcpWorkloadIdentityHook(gcp_conn_id="shared")
    client = storage.Client(project="customer-proj", credentials=hook.get_credentials())
    list(client.list_blobs(os.environ["AWI_BUCKET"], max_results=1))
elif cloud == "azure":
    from azure.storage.blob import BlobServiceClient

    from airflow_workload_identity.azure import AzureWorkloadIdentityHook

    hook = AzureWorkloadIdentityHook(azure_conn_id="shared")
    service = BlobServiceClient(os.environ["AWI_ACCOUNT_URL"], credential=hook.get_credential())
    service.get_container_client(os.environ["AWI_CONTAINER"]).get_container_properties()
Path(out).write_text("ok")
"""


def _run_together(
    tmp_path: Path, cloud: str, env: dict[str, str], processes: int = PROCESSES, tag: str = "run"
) -> None:
    """Start ``processes`` workers, release them at once, and require each to have made its data call."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / f"go-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GCE_", "GOOGLE_"))}
    full_env = {**base, **env, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), cloud, str(go), str(tmp_path / f"out-{tag}-{i}")],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]
    time.sleep(3.0)  # every interpreter has imported what it needs and waits at the start line
    go.touch()
    failures = []
    for i, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=240)
        if proc.returncode != 0 or not (tmp_path / f"out-{tag}-{i}").exists():
            failures.append(output.decode(errors="replace")[-2000:])
    assert not failures, failures[0]


def _host(tmp_path: Path, mode: str) -> dict[str, str]:
    return {
        "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": mode,
        "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR": str(tmp_path / "cache"),
        "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
    }


def _conn(conn_type: str, extra: dict[str, Any], host: str | None = None) -> dict[str, str]:
    definition: dict[str, Any] = {"conn_type": conn_type, "extra": extra}
    if host:
        definition["host"] = host
    return {"AIRFLOW_CONN_SHARED": json.dumps(definition)}


# -- AWS ------------------------------------------------------------------------------------------------------


def _aws_env(aws_sandbox: Any, tmp_path: Path, mode: str, **extra: Any) -> dict[str, str]:
    token = aws_sandbox.write_web_identity_token(tmp_path / "irsa-token")
    sc = aws_sandbox.scenario
    return {
        **aws_sandbox.env_isolation(),
        **aws_sandbox.env_irsa(token),
        **_host(tmp_path, mode),
        **_conn("aws_workload_identity", {"role_arn": sc.customer_reader_role_arn, **extra}),
        "AWI_BUCKET": sc.bucket_a,
    }


@pytest.mark.parametrize(("mode", "each"), [("host", 1), ("process", PROCESSES), ("off", PROCESSES)])
def test_aws_twenty_processes_make_one_request_per_hop(aws_sandbox, tmp_path, mode, each):
    env = _aws_env(aws_sandbox, tmp_path, mode, role_session_name="airflow.{conn_id}")
    aws_sandbox.reset_calls()
    _run_together(tmp_path, "aws", env)
    calls = aws_sandbox.calls_by_action()
    assert calls.get("AssumeRoleWithWebIdentity", 0) == each
    assert calls.get("AssumeRole", 0) == each


def test_aws_a_connection_can_opt_out_of_the_host_cache(aws_sandbox, tmp_path):
    env = _aws_env(aws_sandbox, tmp_path, "host", role_session_name="airflow.{conn_id}", credential_cache="process")
    aws_sandbox.reset_calls()
    _run_together(tmp_path, "aws", env, processes=5)
    assert aws_sandbox.calls_by_action().get("AssumeRole", 0) == 5


def test_aws_async_path_reads_what_the_sync_path_cached(aws_sandbox, tmp_path):
    """A trigger (aiobotocore, event loop) is served from the entry a task process wrote: no request."""
    env = _aws_env(aws_sandbox, tmp_path, "host", role_session_name="airflow.{conn_id}")
    aws_sandbox.reset_calls()
    _run_together(tmp_path, "aws", env, processes=1, tag="sync")
    _run_together(tmp_path, "aws-async", env, processes=3, tag="async")
    calls = aws_sandbox.calls_by_action()
    assert calls.get("AssumeRoleWithWebIdentity", 0) == 1
    assert calls.get("AssumeRole", 0) == 1


def test_aws_entries_are_never_served_to_another_source_identity(aws_sandbox, tmp_path):
    """Same connection, same host, another ambient identity (another web identity session): its own
    entries, its own requests."""
    env = _aws_env(aws_sandbox, tmp_path, "host", role_session_name="airflow.{conn_id}")
    aws_sandbox.reset_calls()
    _run_together(tmp_path, "aws", env, processes=2, tag="first")
    other = {**env, "AWS_ROLE_SESSION_NAME": "another-pod"}
    _run_together(tmp_path, "aws", other, processes=2, tag="second")
    calls = aws_sandbox.calls_by_action()
    assert calls.get("AssumeRoleWithWebIdentity", 0) == 2
    assert calls.get("AssumeRole", 0) == 2


def test_aws_cache_files_hold_no_secret_in_their_names(aws_sandbox, tmp_path):
    env = _aws_env(aws_sandbox, tmp_path, "host", role_session_name="airflow.{conn_id}")
    _run_together(tmp_path, "aws", env, processes=1)
    names = [p.name for p in (tmp_path / "cache").rglob("*")]
    assert names
    sc = aws_sandbox.scenario
    for name in names:
        assert "customer" not in name and sc.customer_account not in name
    for entry in (tmp_path / "cache").rglob("*"):
        if entry.is_file():
            assert entry.stat().st_mode & 0o077 == 0


# -- GCP ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "each"), [("host", 1), ("off", PROCESSES)])
def test_gcp_twenty_processes_make_one_generate_access_token(gcp_sandbox, tmp_path, mode, each):
    gcp_sandbox.reset()
    sc = gcp_sandbox.scenario
    env = {
        **gcp_sandbox.env(),
        **_host(tmp_path, mode),
        **_conn(
            "gcp_workload_identity",
            {"impersonation_chain": [sc.reader_sa], "iam_endpoint_url": gcp_sandbox.iam_endpoint},
        ),
        "AWI_BUCKET": sc.bucket_a,
    }
    gcp_sandbox.reset_calls()
    _run_together(tmp_path, "gcp", env)
    time.sleep(1)  # google-cloud-storage's background get_bucket lands
    assert gcp_sandbox.calls("generateAccessToken") == each


# -- Azure ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "each"), [("host", 1), ("off", PROCESSES)])
def test_azure_twenty_processes_make_one_entra_request(azure_sandbox, tmp_path, mode, each):
    azure_sandbox.write_sa_token()
    state = azure_sandbox.describe()
    env = {
        **state["env"]["tls"],
        **state["env"]["workload_identity"],
        **_host(tmp_path, mode),
        **_conn("azure_workload_identity", {}, host=azure_sandbox.blob_account_url),
        "AWI_ACCOUNT_URL": azure_sandbox.blob_account_url,
        "AWI_CONTAINER": azure_sandbox.scenario.container_a,
    }
    azure_sandbox.reset_calls()
    _run_together(tmp_path, "azure", env)
    assert azure_sandbox.calls("entra") == each
