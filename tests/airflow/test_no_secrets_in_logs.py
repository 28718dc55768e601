"""No credential material in any log, at any level (issue 8, section 1).

Per cloud, a real Airflow task (``airflow dags test`` in a subprocess, Airflow on SQLite) uses the
package's hook and the official hook through interop with ``logging_level = DEBUG`` and every SDK logger
at DEBUG, fails one call on purpose (so an exception is logged with its traceback), and the CLI runs
``whoami`` / ``explain`` / ``policy`` at DEBUG. Then every secret the sandbox issued or read during the
run (projected tokens, every hop's keys and tokens, metadata tokens, ID tokens, Entra and IMDS tokens,
collected from the sandbox's state and the token files) is searched for in the task log files, the
stdout/stderr of every process and the exception texts: any hit fails the test.

The same scenario with ``AIRFLOW_WORKLOAD_IDENTITY_REDACTION=off`` must find hits: that proves the
search can fail and that the package's redaction (not luck) keeps the logs clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks

ROOT = Path(__file__).resolve().parents[2]

SDK_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "aiobotocore",
    "s3transfer",
    "google.auth",
    "google.auth.transport",
    "google.cloud",
    "google.api_core",
    "azure",
    "azure.identity",
    "azure.core.pipeline.policies.http_logging_policy",
    "aiohttp",
    "requests",
    "msal",
    "http.client",
)

#: Prologue of every generated DAG file: every SDK logger at DEBUG, http.client's wire dump into logging.
PROLOGUE = f"""
from __future__ import annotations

import http.client
import logging

import pendulum
from airflow.sdk import dag, task

for _name in {SDK_LOGGERS!r}:
    logging.getLogger(_name).setLevel(logging.DEBUG)
http.client.HTTPConnection.debuglevel = 1
http.client.print = lambda *a: logging.getLogger("http.client").debug(" ".join(str(x) for x in a))
log = logging.getLogger("airflow.task.secrets_probe")
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def token_in_a_url_fails(name, value):
    # What the official Google provider's tokeninfo check does: a credential in a URL. The connection is
    # refused (nothing listens on port 9), and the exception text carries the URL: logged with its traceback.
    import requests

    try:
        requests.get("http://127.0.0.1:9/tokeninfo", params={{name: value}}, timeout=2)
    except requests.RequestException:
        log.exception("token check failed")
"""


@dataclass
class Run:
    """Everything a scenario wrote: process outputs, log files, exception texts the tasks printed."""

    outputs: dict[str, str] = field(default_factory=dict)

    def add_files(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in {".log", ".json", ".txt", ""}:
                self.outputs[f"file {path.relative_to(folder)}"] = path.read_text(errors="replace")

    def hits(self, secrets: Iterable[str]) -> list[str]:
        """(where, which secret) for every secret or 24-character piece of one found anywhere."""
        found = []
        for secret in {s for s in secrets if s and len(s) >= 16}:
            pieces = {secret, secret[:24], secret[-24:], secret[len(secret) // 2 - 12 : len(secret) // 2 + 12]}
            for where, text in self.outputs.items():
                if any(piece in text for piece in pieces):
                    found.append(f"{where}: {secret[:6]}...{secret[-4:]} ({len(secret)} chars)")
        return sorted(found)


def _airflow_env(home: Path, dags: Path, *, redaction: bool, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS": " ".join(f"{name}=DEBUG" for name in SDK_LOGGERS),
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
            "AZURE_LOG_LEVEL": "debug",
            **extra,
        }
    )
    if not redaction:
        env["AIRFLOW_WORKLOAD_IDENTITY_REDACTION"] = "off"
    else:
        env.pop("AIRFLOW_WORKLOAD_IDENTITY_REDACTION", None)
    return env


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``airflow db migrate`` for the module; each scenario starts from a copy."""
    home = tmp_path_factory.mktemp("migrated")
    env = _airflow_env(home, home, redaction=True, extra={})
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    return home / "airflow.db"


def run_scenario(
    tmp_path: Path,
    migrated_db: Path,
    *,
    dag_id: str,
    dag_body: str,
    connections: dict[str, dict[str, object]],
    cli_conn_id: str,
    redaction: bool,
    env: dict[str, str] | None = None,
    local_settings: str = "",
) -> Run:
    """``airflow dags test`` of the generated DAG, then the CLI at DEBUG; everything they wrote."""
    home = tmp_path / ("home-on" if redaction else "home-off")
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / f"{dag_id}.py").write_text(PROLOGUE + textwrap.dedent(dag_body))
    if local_settings:
        (home / "config").mkdir()
        (home / "config" / "airflow_local_settings.py").write_text(textwrap.dedent(local_settings))
    environment = _airflow_env(home, dags, redaction=redaction, extra=env or {})
    for conn_id, conn in connections.items():
        environment[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    airflow = [sys.executable, "-m", "airflow"]
    shutil.copyfile(migrated_db, home / "airflow.db")
    run = Run()
    dags_test = subprocess.run(
        [*airflow, "dags", "test", dag_id], env=environment, capture_output=True, text=True, timeout=300
    )
    run.outputs["dags test stdout"], run.outputs["dags test stderr"] = dags_test.stdout, dags_test.stderr
    assert "SCENARIO DONE" in dags_test.stdout + dags_test.stderr, (dags_test.stdout + dags_test.stderr)[-5000:]
    assert "[debug" in dags_test.stdout + dags_test.stderr  # the run really logged at DEBUG
    cli = [sys.executable, "-m", "airflow_workload_identity"]
    for args in (["whoami", cli_conn_id], ["explain", cli_conn_id], ["policy", cli_conn_id]):
        done = subprocess.run([*cli, *args], env=environment, capture_output=True, text=True, timeout=120)
        run.outputs[f"cli {args[0]} stdout"], run.outputs[f"cli {args[0]} stderr"] = done.stdout, done.stderr
        assert done.returncode in {0, 1}, done.stderr[-3000:]
    run.add_files(home / "logs")
    if dump := os.environ.get("AWI_SECRETS_TEST_DUMP"):  # for a person reading what was checked
        Path(dump, f"{dag_id}-{'on' if redaction else 'off'}.txt").write_text(
            "\n".join(f"===== {where}\n{text}" for where, text in run.outputs.items())
        )
    return run


# -- AWS -----------------------------------------------------------------------------------------------------

AWS_DAG = """
@dag(dag_id="wi_secrets_aws", schedule=None, start_date=START, catchup=False)
def wi_secrets_aws() -> None:
    @task
    def our_hook_through_a_chain() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        hook = AwsWorkloadIdentityHook(aws_conn_id="customer_chain")
        s3 = hook.get_client("s3")
        log.info("listed %s", [o["Key"] for o in s3.list_objects_v2(Bucket="customer-bucket-a").get("Contents", [])])
        log.debug("frozen credentials %r", hook.get_credentials().get_frozen_credentials())
        print(hook.whoami().render())

    @task
    def official_s3hook() -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id="customer_reader")
        log.info("read %r", hook.read_key("reports/hello.txt", bucket_name="customer-bucket-a"))
        log.debug("session credentials %r", hook.get_session().get_credentials().get_frozen_credentials())

    @task
    def denied_call_logs_its_exception() -> None:
        from botocore.exceptions import ClientError

        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        hook = AwsWorkloadIdentityHook(aws_conn_id="customer_reader")
        try:
            hook.get_client("s3").get_object(Bucket="customer-bucket-b", Key="secret.txt")
        except ClientError as error:
            log.exception("denied as expected")
            print("exception text:", str(error), repr(error))
        token_in_a_url_fails("X-Amz-Security-Token", hook.get_credentials().get_frozen_credentials().token)
        ok, message = AwsWorkloadIdentityHook(aws_conn_id="customer_untrusting").test_connection()
        print("untrusting:", ok, message)
        print("SCENARIO DONE")

    our_hook_through_a_chain() >> official_s3hook() >> denied_call_logs_its_exception()


wi_secrets_aws()
"""


def aws_issued_secrets(sandbox: AwsSandbox, token_files: Iterable[Path]) -> set[str]:
    """Every secret key and session token moto issued (all hops, the Pod Identity agent's too) and the
    projected tokens the pod read."""
    from moto.sts.models import sts_backends

    secrets = {path.read_text().strip() for path in token_files if path.exists()}
    for regions in sts_backends.values():
        for backend in regions.values():
            for role in backend.assumed_roles:
                secrets.update((role.secret_access_key, role.session_token))
    return secrets


def _aws_connections(sandbox: AwsSandbox) -> dict[str, dict[str, object]]:
    sc = sandbox.scenario
    return {
        "customer_reader": {"conn_type": "aws_workload_identity", "extra": {"role_arn": sc.customer_reader_role_arn}},
        "customer_chain": {
            "conn_type": "aws_workload_identity",
            "extra": {"role_chain": [sc.customer_hop_role_arn], "role_arn": sc.customer_reader_chained_role_arn},
        },
        "customer_untrusting": {
            "conn_type": "aws_workload_identity",
            "extra": {"role_arn": sc.customer_untrusting_role_arn},
        },
    }


@pytest.mark.parametrize("source", ["irsa", "pod_identity"])
def test_aws_debug_logs_carry_no_secret(
    pod: Pod, aws_sandbox: AwsSandbox, tmp_path: Path, migrated_db: Path, source: str
) -> None:
    if source == "irsa":
        token_files = [pod.irsa()]
    else:
        pod.pod_identity()
        token_files = [aws_sandbox.pod_identity_token_file]
    run = run_scenario(
        tmp_path,
        migrated_db,
        dag_id="wi_secrets_aws",
        dag_body=AWS_DAG,
        connections=_aws_connections(aws_sandbox),
        cli_conn_id="customer_chain",
        redaction=True,
        env={"AIRFLOW__AWS__SESSION_FACTORY": "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory"},
    )
    secrets = aws_issued_secrets(aws_sandbox, token_files)
    assert len(secrets) >= 4
    assert run.hits(secrets) == []


def test_aws_hits_are_found_with_redaction_off(
    pod: Pod, aws_sandbox: AwsSandbox, tmp_path: Path, migrated_db: Path
) -> None:
    token = pod.irsa()
    run = run_scenario(
        tmp_path,
        migrated_db,
        dag_id="wi_secrets_aws",
        dag_body=AWS_DAG,
        connections=_aws_connections(aws_sandbox),
        cli_conn_id="customer_chain",
        redaction=False,
        env={"AIRFLOW__AWS__SESSION_FACTORY": "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory"},
    )
    hits = run.hits(aws_issued_secrets(aws_sandbox, [token]))
    assert any("dags test" in hit for hit in hits), hits


# -- Google Cloud ----------------------------------------------------------------------------------------------

GCP_DAG = """
import os


def _client(hook):
    from google.cloud import storage

    return storage.Client(
        credentials=hook.get_credentials(),
        project=hook.project_id,
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )


@dag(dag_id="wi_secrets_gcp", schedule=None, start_date=START, catchup=False)
def wi_secrets_gcp() -> None:
    @task
    def our_hook_through_a_chain() -> None:
        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        hook = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs_chain")
        log.info("read %r", _client(hook).bucket("customer-bucket-a").blob("reports/hello.txt").download_as_bytes())
        log.debug("access token response token=%s", hook.get_access_token())
        log.debug("id token %s", hook.get_id_token("https://service.example.com"))
        print(hook.whoami(verify=True).render())

    @task
    def official_gcshook() -> None:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        log.info("read %r", GCSHook(gcp_conn_id="customer_gcs").download("customer-bucket-a", "reports/hello.txt"))

    @task
    def denied_call_logs_its_exception() -> None:
        from google.api_core.exceptions import Forbidden

        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        hook = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs")
        try:
            _client(hook).bucket("customer-bucket-b").blob("secret.txt").download_as_bytes()
        except Forbidden as error:
            log.exception("denied as expected")
            print("exception text:", str(error), repr(error))
        token_in_a_url_fails("access_token", hook.get_access_token())
        ok, message = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs_no_creator").test_connection()
        print("no creator:", ok, message)
        print("SCENARIO DONE")

    our_hook_through_a_chain() >> official_gcshook() >> denied_call_logs_its_exception()


wi_secrets_gcp()
"""

GCP_LOCAL_SETTINGS = """
from airflow_workload_identity.gcp.interop import install

install()
"""


def _gcp_connections(sandbox: GcpSandbox) -> dict[str, dict[str, object]]:
    sc = sandbox.scenario
    chains = {
        "customer_gcs": [sc.reader_sa],
        "customer_gcs_chain": [sc.hop_sa, sc.chained_reader_sa],
        "customer_gcs_no_creator": [sc.no_creator_sa],
    }
    return {
        conn_id: {
            "conn_type": "gcp_workload_identity",
            "extra": {"impersonation_chain": chain, "iam_endpoint_url": sandbox.iam_endpoint},
        }
        for conn_id, chain in chains.items()
    }


def _gcp_run(gke: GcpSandbox, tmp_path: Path, migrated_db: Path, *, redaction: bool) -> Run:
    return run_scenario(
        tmp_path,
        migrated_db,
        dag_id="wi_secrets_gcp",
        dag_body=GCP_DAG,
        connections=_gcp_connections(gke),
        cli_conn_id="customer_gcs_chain",
        redaction=redaction,
        local_settings=GCP_LOCAL_SETTINGS,
    )


def test_gcp_debug_logs_carry_no_secret(gke: GcpSandbox, tmp_path: Path, migrated_db: Path) -> None:
    before = set(gke.issued_secrets())
    run = _gcp_run(gke, tmp_path, migrated_db, redaction=True)
    secrets = set(gke.issued_secrets()) - before
    assert len(secrets) >= 4  # metadata token, each hop's access token, the ID tokens
    assert run.hits(secrets) == []


def test_gcp_hits_are_found_with_redaction_off(gke: GcpSandbox, tmp_path: Path, migrated_db: Path) -> None:
    before = set(gke.issued_secrets())
    run = _gcp_run(gke, tmp_path, migrated_db, redaction=False)
    hits = run.hits(set(gke.issued_secrets()) - before)
    assert any("dags test" in hit for hit in hits), hits


# -- Azure -----------------------------------------------------------------------------------------------------

AZURE_DAG = """
@dag(dag_id="wi_secrets_azure", schedule=None, start_date=START, catchup=False)
def wi_secrets_azure() -> None:
    @task
    def our_hook_workload_and_managed_identity() -> None:
        from azure.storage.blob import BlobServiceClient

        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        for conn_id in ("customer_blob", "node_blob"):
            hook = AzureWorkloadIdentityHook(azure_conn_id=conn_id)
            blobs = BlobServiceClient(
                hook.account_url, credential=hook.get_credential(), retry_total=0, logging_enable=True
            )
            log.info("read %r", blobs.get_blob_client("container-a", "reports/hello.txt").download_blob().readall())
            log.debug("token %s", hook.get_token())
            print(hook.whoami().render())

    @task
    def official_wasbhook() -> None:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        log.info("read %r", WasbHook(wasb_conn_id="customer_blob").read_file("container-a", "reports/hello.txt"))

    @task
    def denied_call_logs_its_exception() -> None:
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobServiceClient

        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        hook = AzureWorkloadIdentityHook(azure_conn_id="customer_blob")
        credential = hook.get_credential()
        blobs = BlobServiceClient(hook.account_url, credential=credential, retry_total=0, logging_enable=True)
        try:
            blobs.get_blob_client("container-b", "secret.txt").download_blob().readall()
        except HttpResponseError as error:
            log.exception("denied as expected")
            print("exception text:", str(error), repr(error))
        token_in_a_url_fails("access_token", hook.get_token())
        ok, message = AzureWorkloadIdentityHook(azure_conn_id="customer_blob_wrong_client").test_connection()
        print("wrong client:", ok, message)
        print("SCENARIO DONE")

    our_hook_workload_and_managed_identity() >> official_wasbhook() >> denied_call_logs_its_exception()


wi_secrets_azure()
"""

AZURE_LOCAL_SETTINGS = """
from airflow_workload_identity.azure.interop import install

install()
"""


def _azure_run(aks: Aks, azure_sandbox: AzureSandbox, tmp_path: Path, migrated_db: Path, *, redaction: bool) -> Run:
    sc = azure_sandbox.scenario
    host = azure_sandbox.blob_account_url
    storage = ["https://storage.azure.com/.default"]
    connections: dict[str, dict[str, object]] = {
        "customer_blob": {"conn_type": "azure_workload_identity", "host": host, "extra": {"scopes": storage}},
        "node_blob": {
            "conn_type": "azure_workload_identity",
            "host": host,
            "extra": {"mode": "managed_identity", "client_id": sc.node_client_id, "scopes": storage},
        },
        "customer_blob_wrong_client": {
            "conn_type": "azure_workload_identity",
            "host": host,
            "extra": {"client_id": "99999999-9999-9999-9999-999999999999"},
        },
    }
    return run_scenario(
        tmp_path,
        migrated_db,
        dag_id="wi_secrets_azure",
        dag_body=AZURE_DAG,
        connections=connections,
        cli_conn_id="customer_blob",
        redaction=redaction,
        local_settings=AZURE_LOCAL_SETTINGS,
    )


def test_azure_debug_logs_carry_no_secret(
    aks: Aks, azure_sandbox: AzureSandbox, tmp_path: Path, migrated_db: Path
) -> None:
    token_file = aks.workload_identity()
    before = set(azure_sandbox.issued_secrets())
    run = _azure_run(aks, azure_sandbox, tmp_path, migrated_db, redaction=True)
    secrets = (set(azure_sandbox.issued_secrets()) - before) | {token_file.read_text().strip()}
    assert len(secrets) >= 3  # the projected token (client assertion), Entra's and IMDS's access tokens
    assert run.hits(secrets) == []


def test_azure_hits_are_found_with_redaction_off(
    aks: Aks, azure_sandbox: AzureSandbox, tmp_path: Path, migrated_db: Path
) -> None:
    token_file = aks.workload_identity()
    before = set(azure_sandbox.issued_secrets())
    run = _azure_run(aks, azure_sandbox, tmp_path, migrated_db, redaction=False)
    hits = run.hits((set(azure_sandbox.issued_secrets()) - before) | {token_file.read_text().strip()})
    assert any("dags test" in hit for hit in hits), hits


# -- Airflow 3's task process: the JSON log stream the supervisor writes to the task log file ----------------

TASK_PROCESS = f"""
import logging
import sys

import structlog
from airflow.sdk.log import configure_logging

# As the task runner configures a task process: JSON lines to the supervisor, which writes the task log
# file; no masking processor in this process (the supervisor masks with what it was sent).
configure_logging(json_output=True, output=open(sys.argv[1], "wb"), sending_to_supervisor=True, log_level="DEBUG")
for name in {SDK_LOGGERS!r}:
    logging.getLogger(name).setLevel(logging.DEBUG)

from botocore.exceptions import ClientError

from airflow_workload_identity.aws import AwsWorkloadIdentityHook

log = structlog.get_logger("airflow.task")
hook = AwsWorkloadIdentityHook(aws_conn_id="customer_chain")
s3 = hook.get_client("s3")
s3.list_objects_v2(Bucket="customer-bucket-a")
frozen = hook.get_credentials().get_frozen_credentials()
log.debug("credentials", secret_key=frozen.secret_key, token=frozen.token, frozen=repr(frozen))
try:
    raise ClientError(
        {{"Error": {{"Code": "Probe", "Message": "<SessionToken>" + frozen.token + "</SessionToken>"}}}}, "Probe"
    )
except ClientError:
    log.exception("probe failed")
    logging.getLogger("botocore.probe").exception("probe failed (stdlib)")
try:
    hook.get_client("s3").get_object(Bucket="customer-bucket-b", Key="secret.txt")
except ClientError:
    log.exception("denied as expected")
"""


@pytest.mark.parametrize("redaction", [True, False], ids=["redaction-on", "redaction-off"])
def test_task_process_json_log_carries_no_secret(
    pod: Pod, aws_sandbox: AwsSandbox, tmp_path: Path, redaction: bool
) -> None:
    """The production path of a task on Airflow 3: the task process's structlog/stdlib chain as the task
    runner sets it up (JSON to the supervisor, exceptions rendered as dicts), which is where the package's
    redaction must act, since nothing in that process masks before the line leaves it."""
    token = pod.irsa()
    home = tmp_path / "home"
    home.mkdir()
    env = _airflow_env(home, home, redaction=redaction, extra={})
    for conn_id, conn in _aws_connections(aws_sandbox).items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    script, log_file = tmp_path / "task.py", tmp_path / "task.log"
    script.write_text(TASK_PROCESS)
    done = subprocess.run(
        [sys.executable, str(script), str(log_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(line.get("logger", "").startswith("botocore") and line["level"] == "debug" for line in lines)
    assert any("exception" in line for line in lines)  # tracebacks rendered as dicts, as Airflow 3 does
    run = Run({"task log file": log_file.read_text(), "stdout": done.stdout, "stderr": done.stderr})
    hits = run.hits(aws_issued_secrets(aws_sandbox, [token]))
    if redaction:
        assert hits == []
    else:
        assert any("task log file" in hit for hit in hits), hits
