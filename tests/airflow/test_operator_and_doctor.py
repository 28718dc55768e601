"""The worker-side identity check operator and the CLI's explain/doctor, against the sandboxes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from airflow_workload_identity.cli import Exit, main
from airflow_workload_identity.errors import AccessDenied, IdentityMismatch
from airflow_workload_identity.operators import WorkloadIdentityCheckOperator
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks


def test_operator_returns_the_report_and_pins_the_principal(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("reader", role_arn=sc.customer_reader_role_arn)
    ok = WorkloadIdentityCheckOperator(
        task_id="check",
        conn_id=conn,
        expected_principal=f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/*",
    )
    report = ok.execute({})
    assert report["principal"].startswith(f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/")
    assert "verified now" in " ".join(report["notes"])
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    frozen = AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = json.dumps(report)
    assert frozen.secret_key not in text and frozen.token not in text and frozen.access_key not in text
    wrong = WorkloadIdentityCheckOperator(task_id="check2", conn_id=conn, expected_principal="arn:aws:sts::999*")
    with pytest.raises(IdentityMismatch):
        wrong.execute({})


def test_operator_fails_with_the_explanation(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]):
    pod.irsa()
    conn = connection("u", role_arn=aws_sandbox.scenario.customer_untrusting_role_arn)
    with pytest.raises(AccessDenied) as err:
        WorkloadIdentityCheckOperator(task_id="check", conn_id=conn).execute({})
    assert "Add this statement to the trust policy" in str(err.value)


def test_operator_on_gcp(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    conn = gcp_connection("g", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    report = WorkloadIdentityCheckOperator(task_id="c", conn_id=conn, expected_principal=sc.chained_reader_sa).execute(
        {}
    )
    assert report["principal"] == sc.chained_reader_sa


def test_cli_explain_names_the_failing_hop(
    gke: GcpSandbox, gcp_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    sc = gke.scenario
    conn = gcp_connection("bad", impersonation_chain=[sc.hop_sa, sc.no_creator_sa])
    assert main(["explain", conn, "--json"]) == Exit.ACCESS_DENIED
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["error"] == "AccessDenied"
    assert (out["hop"], out["caller"], out["target"]) == (2, sc.hop_sa, sc.no_creator_sa)
    assert "add-iam-policy-binding" in out["fix"]
    good = gcp_connection("good", impersonation_chain=[sc.reader_sa])
    assert main(["explain", good]) == 0
    assert "OK: all 2 hop(s) work now" in capsys.readouterr().out


def test_cli_doctor_reports_identities_claims_and_connections(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    token = pod.irsa()
    connection("good", role_arn=aws_sandbox.scenario.customer_reader_role_arn)
    connection("broken", role_arn="arn:aws:iam::1:role/x")
    assert main(["doctor", "--json"]) == 1  # one connection is invalid
    out = json.loads(capsys.readouterr().out)
    irsa = next(i for i in out["identities"] if i["name"].startswith("AWS IRSA"))
    assert irsa["present"] and irsa["token"]["sub"] == "system:serviceaccount:airflow:airflow-worker"
    assert token.read_text() not in json.dumps(out)
    by_id = {c["conn_id"]: c for c in out["connections"]}
    assert by_id["good"]["valid"] and not by_id["broken"]["valid"]
    assert "role_arn" in by_id["broken"]["error"]


def test_operator_and_cli_on_azure(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    sc = azure_sandbox.scenario
    aks.workload_identity()
    conn = azure_connection("blob", scopes=["https://storage.azure.com/.default"])
    report = WorkloadIdentityCheckOperator(
        task_id="c", conn_id=conn, expected_principal=f"object {sc.workload_object_id} in tenant *"
    ).execute({})
    assert report["principal"] == f"object {sc.workload_object_id} in tenant {sc.tenant_id}"
    assert main(["policy", conn]) == 0
    assert f"--subject {sc.service_account_subject}" in capsys.readouterr().out
    aks.workload_identity(sub=sc.wrong_subject)
    wrong = azure_connection("wrong", scopes=["https://management.azure.com/.default"])
    assert main(["explain", wrong, "--json"]) == Exit.ACCESS_DENIED
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "AccessDenied" and "az identity federated-credential create" in out["fix"]


def test_cli_whoami_and_explain_on_each_cloud(
    pod: Pod,
    aws_sandbox: AwsSandbox,
    connection: Callable[..., str],
    gke: GcpSandbox,
    gcp_connection: Callable[..., str],
    aks: Aks,
    azure_sandbox: AzureSandbox,
    azure_connection: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pod.irsa()
    aks.workload_identity()
    good = {
        "aws": connection("a_ok", role_arn=aws_sandbox.scenario.customer_reader_role_arn),
        "gcp": gcp_connection("g_ok", impersonation_chain=[gke.scenario.reader_sa]),
        "azure": azure_connection("z_ok", scopes=["https://storage.azure.com/.default"]),
    }
    bad = {
        "aws": connection("a_bad", role_arn=aws_sandbox.scenario.customer_untrusting_role_arn),
        "gcp": gcp_connection("g_bad", impersonation_chain=[gke.scenario.no_creator_sa]),
        "azure": azure_connection("z_bad", client_id="99999999-9999-9999-9999-999999999999"),
    }
    for cloud, conn in good.items():
        assert main(["whoami", conn, "--json"]) == 0, cloud
        assert json.loads(capsys.readouterr().out)["cloud"] == cloud
        assert main(["explain", conn]) == 0, cloud
        assert "OK: all" in capsys.readouterr().out
    for cloud, conn in bad.items():
        # refused by the cloud: a hop denied, or (Azure) the client id the connection names is unknown
        assert main(["explain", conn, "--json"]) in (Exit.ACCESS_DENIED, Exit.BAD_INPUT), cloud
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["fix"], (cloud, out)


def test_cli_doctor_sees_gke_and_aks_identities(
    gke: GcpSandbox, aks: Aks, azure_sandbox: AzureSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    token = aks.workload_identity()
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    found = {i["name"]: i for i in out["identities"]}
    metadata = found["GKE metadata server"]
    assert metadata["present"] and metadata["reachable"] and metadata["endpoint"] == gke.metadata_host
    wi = found["Azure AKS workload identity"]
    assert wi["present"] and wi["token"]["sub"] == azure_sandbox.scenario.service_account_subject
    assert wi["token"]["aud"] == ["api://AzureADTokenExchange"] or wi["token"]["aud"] == "api://AzureADTokenExchange"
    imds = found["Azure IMDS (managed identity)"]
    assert imds["present"] and imds["reachable"]
    assert token.read_text() not in json.dumps(out)
