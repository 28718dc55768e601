"""The secrets backends in a real Airflow (SQLite), configured by ``[secrets] backend`` / ``backend_kwargs``:
``airflow connections get`` and ``Variable.get`` in subprocesses, and a task (``airflow dags test``) that
uses a connection that lives only in the backend; a denied prefix and a missing secret on each cloud."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks

AIRFLOW = [sys.executable, "-m", "airflow"]
PASSWORD = "tiger-backend-123"

DAG = '''
"""A task that uses connections and a variable that live only in the secrets backend."""
from __future__ import annotations

import os

import pendulum
from airflow.sdk import Variable, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def wi_secrets_backend() -> None:
    @task
    def use_backend_connection() -> None:
        cloud = os.environ["WI_TEST_CLOUD"]
        print(f"variable from the backend: {Variable.get('greeting')}")
        if cloud == "aws":
            from airflow_workload_identity.aws import AwsWorkloadIdentityHook

            s3 = AwsWorkloadIdentityHook(aws_conn_id="customer_reader").get_client("s3")
            body = s3.get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")["Body"].read()
        elif cloud == "gcp":
            from google.cloud import storage

            from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

            hook = GcpWorkloadIdentityHook(gcp_conn_id="customer_reader")
            client = storage.Client(
                credentials=hook.get_credentials(),
                project=hook.project_id,
                client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
            )
            body = client.bucket("customer-bucket-a").blob("reports/hello.txt").download_as_bytes()
        else:
            from azure.storage.blob import BlobServiceClient

            from airflow_workload_identity.azure import AzureWorkloadIdentityHook

            hook = AzureWorkloadIdentityHook(azure_conn_id="customer_reader")
            client = BlobServiceClient(hook.account_url, credential=hook.get_credential(), retry_total=0)
            body = client.get_blob_client("container-a", "reports/hello.txt").download_blob().readall()
        print(f"read through a backend-only connection: {body!r}")

    use_backend_connection()


wi_secrets_backend()
'''


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated metadata database for the module (each test copies it)."""
    home = tmp_path_factory.mktemp("secrets-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    subprocess.run([*AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home / "airflow.db"


class Deployment:
    """An Airflow home with the backend configured, running Airflow commands in subprocesses."""

    def __init__(self, tmp_path: Path, migrated: Path, cloud: str, backend: str, kwargs: dict[str, Any]) -> None:
        home = tmp_path / "home"
        dags = tmp_path / "dags"
        dags.mkdir(parents=True)
        home.mkdir()
        shutil.copy(migrated, home / "airflow.db")
        (dags / "wi_secrets_backend.py").write_text(textwrap.dedent(DAG))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
                "AIRFLOW__SECRETS__BACKEND": backend,
                "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(kwargs),
                "WI_TEST_CLOUD": cloud,
            }
        )

    def run(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AIRFLOW, *args], env={**self.env, **overrides}, capture_output=True, text=True, timeout=300
        )

    def python(self, code: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env={**self.env, **overrides}, capture_output=True, text=True, timeout=300
        )


VARIABLE_GET = "from airflow.models import Variable; print('VALUE=' + Variable.get('greeting'))"


def _check_deployment(
    deployment: Deployment,
    *,
    denied_kwargs: dict[str, Any],
    counter: Callable[[], int],
    reset: Callable[[], None],
) -> None:
    """The flows every cloud must pass (the counters are the sandbox's own)."""
    out = deployment.run("connections", "get", "pg_uri", "-o", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    conn = json.loads(out.stdout.strip().splitlines()[-1])[0]
    assert (conn["conn_type"], conn["host"], conn["login"]) == ("postgres", "db.example.com", "scott")

    out = deployment.python(VARIABLE_GET)
    assert "VALUE=hello from the backend" in out.stdout, out.stderr[-3000:]

    # missing: None from the backend after one request (Airflow then looks in env vars and the metastore)
    reset()
    out = deployment.run("connections", "get", "absent_conn", "-o", "json")
    assert out.returncode != 0
    assert "AccessDenied" not in out.stderr
    assert counter() == 1

    # denied: an authoritative AccessDenied, not "not found", and not the next backend's answer
    reset()
    denied_env = {"AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(denied_kwargs)}
    out = deployment.python(
        "from airflow.models import Connection\n"
        "try:\n"
        "    Connection.get_connection_from_secrets('pg_uri')\n"
        "except Exception as exc:\n"
        "    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied\n"
        "    from airflow_workload_identity.errors import AccessDenied\n"
        "    print('DENIED', isinstance(exc, AccessDenied), isinstance(exc, AirflowSecretsBackendAccessDenied))\n"
        "    print(exc)\n",
        **denied_env,
    )
    assert "DENIED True True" in out.stdout, out.stdout + out.stderr[-3000:]
    assert counter() == 1
    assert PASSWORD not in out.stdout + out.stderr

    out = deployment.run("dags", "test", "wi_secrets_backend")
    assert "variable from the backend: hello from the backend" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert "read through a backend-only connection: b'hello from" in out.stdout, out.stderr[-3000:]


def _conn_uri() -> str:
    return f"postgresql://scott:{PASSWORD}@db.example.com:5432/sales"


def test_aws_secrets_manager_backend_in_airflow(
    pod: Pod, aws_sandbox: AwsSandbox, tmp_path: Path, migrated: Path
) -> None:
    sc = aws_sandbox.scenario
    token = pod.irsa()
    sm = aws_sandbox.admin_client("secretsmanager", sc.customer_account)
    for name, value in {
        "airflow/connections/pg_uri": _conn_uri(),
        "restricted/connections/pg_uri": _conn_uri(),
        "airflow/variables/greeting": "hello from the backend",
        "airflow/connections/customer_reader": json.dumps(
            {"conn_type": "aws_workload_identity", "extra": {"role_arn": sc.customer_reader_role_arn}}
        ),
    }.items():
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)
    kwargs = {"role_arn": sc.customer_reader_role_arn, "region_name": aws_sandbox.region}
    deployment = Deployment(
        tmp_path, migrated, "aws", "airflow_workload_identity.aws.secrets.SecretsManagerBackend", kwargs
    )
    deployment.env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token)

    def reset() -> None:
        aws_sandbox.reset_api_calls()

    _check_deployment(
        deployment,
        denied_kwargs={**kwargs, "connections_prefix": "restricted/connections"},
        counter=lambda: sum(aws_sandbox.api_calls().values()),
        reset=reset,
    )


def test_gcp_secret_manager_backend_in_airflow(gke: GcpSandbox, tmp_path: Path, migrated: Path) -> None:
    sc = gke.scenario
    fake = gke.secret_manager
    project = sc.customer_project
    fake.add_secret(project, "airflow-connections-pg_uri", _conn_uri())
    fake.add_secret(project, "restricted-connections-pg_uri", _conn_uri())
    fake.add_secret(project, "airflow-variables-greeting", "hello from the backend")
    fake.add_secret(
        project,
        "airflow-connections-customer_reader",
        json.dumps(
            {
                "conn_type": "gcp_workload_identity",
                "extra": {"impersonation_chain": [sc.reader_sa], "iam_endpoint_url": gke.iam_endpoint},
            }
        ),
    )
    fake.grant(sc.reader_sa, project, "airflow-*")
    kwargs = {
        "impersonation_chain": sc.reader_sa,
        "iam_endpoint_url": gke.iam_endpoint,
        "secret_manager_endpoint_url": gke.secret_manager_endpoint,
    }
    deployment = Deployment(
        tmp_path, migrated, "gcp", "airflow_workload_identity.gcp.secrets.SecretManagerBackend", kwargs
    )
    try:
        _check_deployment(
            deployment,
            denied_kwargs={**kwargs, "connections_prefix": "restricted-connections"},
            counter=fake.calls,
            reset=fake.reset_calls,
        )
    finally:
        fake.revoke_all()


def test_azure_key_vault_backend_in_airflow(
    aks: Aks, azure_sandbox: AzureSandbox, tmp_path: Path, migrated: Path
) -> None:
    sc = azure_sandbox.scenario
    kv = azure_sandbox.key_vault
    aks.workload_identity()
    kv.set_secret("airflow-connections-pg-uri", _conn_uri())
    kv.set_secret("restricted-connections-pg-uri", _conn_uri())
    kv.set_secret("airflow-variables-greeting", "hello from the backend")
    kv.set_secret(
        "airflow-connections-customer-reader",
        json.dumps(
            {
                "conn_type": "azure_workload_identity",
                "host": azure_sandbox.blob_account_url,
                "extra": {"client_id": sc.workload_client_id, "tenant_id": sc.tenant_id},
            }
        ),
    )
    kv.grant(sc.workload_object_id, "airflow-*")
    kwargs = {"vault_url": kv.url, "client_id": sc.workload_client_id, "tenant_id": sc.tenant_id}
    deployment = Deployment(
        tmp_path, migrated, "azure", "airflow_workload_identity.azure.secrets.KeyVaultBackend", kwargs
    )

    def counter() -> int:
        return sum(v for k, v in kv.calls_by_status().items() if k != "401")  # the bearer challenge aside

    try:
        _check_deployment(
            deployment,
            denied_kwargs={**kwargs, "connections_prefix": "restricted-connections"},
            counter=counter,
            reset=kv.reset_calls,
        )
    finally:
        kv.revoke_all()


@pytest.mark.smoke
def test_backends_import_and_build_without_network() -> None:
    """On every Airflow of the matrix: the module imports lazily, kwargs are validated, no request is made."""
    from airflow_workload_identity.aws.secrets import SecretsManagerBackend, SystemsManagerParameterStoreBackend
    from airflow_workload_identity.errors import AccessDenied, ConfigError
    from airflow_workload_identity.secrets_common import SecretsAccessDenied

    role = "arn:aws:iam::222222222222:role/customer-reader"
    backend = SecretsManagerBackend(role_arn=role, connections_prefix="airflow/connections/")
    assert backend.options.connections_prefix == "airflow/connections"
    assert SystemsManagerParameterStoreBackend(role_arn=role)._name("/airflow/connections", "x") == (
        "/airflow/connections/x"
    )
    with pytest.raises(ConfigError) as caught:
        SecretsManagerBackend(role_arn=role, unknown_key=1)
    assert caught.value.field == "unknown_key"
    error = SecretsAccessDenied(hop=1, hops=1, caller="c", target="t", permission="p", remediation="r")
    assert isinstance(error, AccessDenied)
    try:
        from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    except ImportError:  # Airflow 2.x: no such type
        return
    assert isinstance(error, AirflowSecretsBackendAccessDenied)
