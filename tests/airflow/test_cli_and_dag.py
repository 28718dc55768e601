"""The CLI and the example DAG, through a real Airflow (SQLite) against the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.cli import main
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import GcpSandbox

ROOT = Path(__file__).resolve().parents[2]


def test_cli_whoami_and_policy(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("chain", role_chain=[sc.customer_hop_role_arn], role_arn=sc.customer_reader_chained_role_arn)
    assert main(["whoami", conn, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["principal"].startswith(f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader-chained/")
    assert [hop["index"] for hop in report["hops"]] == [0, 1, 2]

    assert main(["policy", conn]) == 0
    text = capsys.readouterr().out
    assert "# Hop 1 of 2: arn:aws:iam::111111111111:role/pod-base -> " + sc.customer_hop_role_arn in text
    issuer = sc.issuer_url.removeprefix("https://")
    assert f'"{issuer}:sub": "system:serviceaccount:airflow:airflow-worker"' in text
    assert f'"Federated": "arn:aws:iam::111111111111:oidc-provider/{issuer}"' in text
    assert f"# Hop 2 of 2: {sc.customer_hop_role_arn} -> {sc.customer_reader_chained_role_arn}" in text

    assert main(["policy", conn, "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(s["hop"], s["kind"]) for s in plan["steps"]] == [
        (0, "trust_statement"),
        (1, "trust_statement"),
        (1, "identity_statement"),
        (2, "trust_statement"),
        (2, "identity_statement"),
    ]
    assert plan["steps"][3]["content"]["Principal"] == {"AWS": sc.customer_hop_role_arn}
    assert main(["policy", conn, "--format", "shell"]) == 0
    shell = capsys.readouterr().out
    assert "cat > step2-trust-customer-hop.json <<'JSON'" in shell


def test_cli_reports_errors_without_a_traceback(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pod.irsa()
    conn = connection("bad", role_arn="arn:aws:iam::1:role/x")
    assert main(["whoami", conn]) == 2
    err = capsys.readouterr().err
    assert err.startswith("airflow-workload-identity: ConfigError: aws_workload_identity connection field 'role_arn'")
    assert "Traceback" not in err


def test_test_connection_verifies_with_a_live_call(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    hook.get_credentials().get_frozen_credentials()
    aws_sandbox.reset_calls()
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith(f"Connected as arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/")
    assert "verified now: sts:GetCallerIdentity" in message
    assert aws_sandbox.calls("GetCallerIdentity") == 1
    assert aws_sandbox.calls("AssumeRole") == 0


def test_example_dag_runs_green_with_airflow_dags_test(pod: Pod, aws_sandbox: AwsSandbox, tmp_path: Path) -> None:
    sc = aws_sandbox.scenario
    token = pod.irsa()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dev" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__AWS__SESSION_FACTORY": "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        }
    )
    for conn_id, extra in {
        "customer_reader": {"role_arn": sc.customer_reader_role_arn},
        "customer_chain": {"role_chain": [sc.customer_hop_role_arn], "role_arn": sc.customer_reader_chained_role_arn},
        "customer_untrusting": {"role_arn": sc.customer_untrusting_role_arn},
    }.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "aws_workload_identity", "extra": extra})
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run(
        [*airflow, "dags", "test", "wi_aws_demo"], env=env, capture_output=True, text=True, timeout=300
    )
    assert "hook read s3://customer-bucket-a/reports/hello.txt: 'hello from bucket A\\n'" in out.stdout, out.stderr[
        -3000:
    ]
    assert "official S3Hook read s3://customer-bucket-a/reports/hello.txt" in out.stdout
    assert "may not s3:GetObject on arn:aws:s3:::customer-bucket-b/secret.txt" in out.stdout
    runs = subprocess.run(
        [*airflow, "dags", "list-runs", "wi_aws_demo", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    run_id = json.loads(runs.stdout.strip().splitlines()[-1])[0]["run_id"]
    states = subprocess.run(
        [*airflow, "tasks", "states-for-dag-run", "wi_aws_demo", run_id, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = json.loads(states.stdout.strip().splitlines()[-1])
    assert len(rows) == 7
    assert {row["state"] for row in rows} == {"success"}, rows


def test_gcp_example_dag_runs_green_with_airflow_dags_test(gke: GcpSandbox, tmp_path: Path) -> None:
    sc = gke.scenario
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "airflow_local_settings.py").write_text(
        "from airflow_workload_identity.gcp.interop import install\n\ninstall()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dev" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
        }
    )
    for conn_id, chain in {
        "customer_gcs": [sc.reader_sa],
        "customer_gcs_chain": [sc.hop_sa, sc.chained_reader_sa],
        "customer_gcs_no_creator": [sc.no_creator_sa],
    }.items():
        extra = {"impersonation_chain": chain, "iam_endpoint_url": gke.iam_endpoint}
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "gcp_workload_identity", "extra": extra})
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run(
        [*airflow, "dags", "test", "wi_gcp_demo"], env=env, capture_output=True, text=True, timeout=300
    )
    assert "official GCSHook read gs://customer-bucket-a/reports/hello.txt" in out.stdout, out.stderr[-3000:]
    assert "hook read gs://customer-bucket-a/reports/hello.txt: 'hello from bucket A\\n'" in out.stdout
    assert "gcloud storage buckets add-iam-policy-binding gs://customer-bucket-b" in out.stdout
    assert "--role=roles/iam.serviceAccountTokenCreator" in out.stdout
