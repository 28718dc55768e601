"""``whoami``/``policy CONN --as IDENTITY`` from a laptop: the deployment's workload identity given on the
command line, the connection read from Airflow, and no request to any cloud (the sandboxes count them,
with the process set up as a pod so that a cloud call would be possible and counted)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_workload_identity.cli import Exit, main
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

ASTRO_ROLE = "arn:aws:iam::111111111111:role/astro-deployment-role"
ASTRO_SA = "astro-deployment@astro-platform.iam.gserviceaccount.com"
ASTRO_CLIENT = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_aws_policy_and_whoami_as_the_deployment_role(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("customer", role_arn=sc.customer_reader_role_arn, external_id="customer-42")

    status, out, _ = _run(capsys, "policy", conn, "--as", ASTRO_ROLE)
    assert status == Exit.OK
    platform, yours = out.split("== What you grant ==")
    assert "What the platform grants" in platform and "cannot edit" in platform
    assert "AssumeRoleWithWebIdentity" in platform  # the platform's IRSA trust: shown, not the customer's
    assert f"Add to the trust policy of {sc.customer_reader_role_arn}" in yours
    assert f'"AWS": "{ASTRO_ROLE}"' in yours and '"sts:ExternalId": "customer-42"' in yours

    status, out, _ = _run(capsys, "policy", conn, "--as", ASTRO_ROLE, "--format", "json")
    steps = json.loads(out)["steps"]
    assert [s["granted_by"] for s in steps] == ["platform", "you", "platform"]
    assert steps[1]["content"]["Principal"] == {"AWS": ASTRO_ROLE}

    status, out, _ = _run(capsys, "policy", conn, "--as", ASTRO_ROLE, "--format", "shell")
    assert status == Exit.OK and out.startswith("#!/usr/bin/env bash")
    assert "step2-trust-customer-reader.json" in out and "step1-" not in out  # hop 0 is commented out

    status, out, _ = _run(capsys, "whoami", conn, "--as", ASTRO_ROLE, "--json")
    report = json.loads(out)
    assert [h["principal"] for h in report["hops"]] == [ASTRO_ROLE, sc.customer_reader_role_arn]
    assert any("no cloud call" in note for note in report["notes"])
    assert aws_sandbox.calls() == 0  # not one STS request


def test_aws_direct_connection_as_the_deployment_role(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pod.irsa()
    conn = connection("direct", expected_account_ids=["111111111111"])
    status, out, _ = _run(capsys, "policy", conn, "--as", ASTRO_ROLE)
    assert status == Exit.OK and "assumes no role" in out
    assert f"Add to the identity policy of {ASTRO_ROLE}" in out.split("== What you grant ==")[1]
    status, out, _ = _run(capsys, "whoami", conn, "--as", ASTRO_ROLE)
    assert status == Exit.OK and "no role assumed" in out
    status, _, err = _run(capsys, "whoami", conn, "--as", "arn:aws:iam::222222222222:role/other")
    assert status == Exit.IDENTITY_MISMATCH and "expected_account_ids" in err
    assert aws_sandbox.calls() == 0


@pytest.mark.parametrize(
    ("conn_type", "extra", "bad"),
    [
        ("aws_workload_identity", {"role_arn": "arn:aws:iam::222222222222:role/r"}, "arn:aws:iam::1:user/bob"),
        ("gcp_workload_identity", {}, "not-an-email@example.com"),
        ("azure_workload_identity", {"mode": "workload_identity"}, "astro-identity"),
    ],
)
def test_as_of_the_wrong_shape_is_bad_input_naming_it(
    conn_type: str,
    extra: dict[str, object],
    bad: str,
    connection: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = connection("shape", conn_type=conn_type, **extra)
    for command in ("policy", "whoami"):
        status, out, err = _run(capsys, command, conn, "--as", bad)
        assert status == Exit.BAD_INPUT and out == ""
        assert "'--as'" in err and "Astro UI" in err and len(err.strip().splitlines()) == 1


def test_gcp_policy_and_whoami_as_the_deployment_service_account(
    gke: object, gcp_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    sc = gke.scenario  # type: ignore[attr-defined]
    chained = gcp_connection("customer", impersonation_chain=[sc.reader_sa])
    status, out, _ = _run(capsys, "policy", chained, "--as", ASTRO_SA.upper())
    assert status == Exit.OK
    platform, yours = out.split("== What you grant ==")
    assert "roles/iam.workloadIdentityUser" in platform
    assert (
        f"gcloud iam service-accounts add-iam-policy-binding {sc.reader_sa} --member=serviceAccount:{ASTRO_SA} "
        "--role=roles/iam.serviceAccountTokenCreator" in yours
    )

    direct = gcp_connection("direct", project_id="customer-proj")
    status, out, _ = _run(capsys, "policy", direct, "--as", ASTRO_SA, "--format", "json")
    steps = json.loads(out)["steps"]
    assert [s["granted_by"] for s in steps] == ["platform", "you"]
    assert steps[1]["content"] == (
        f"gcloud projects add-iam-policy-binding customer-proj --member=serviceAccount:{ASTRO_SA} "
        "--role=roles/storage.objectViewer"
    )
    status, out, _ = _run(capsys, "whoami", direct, "--as", ASTRO_SA)
    assert status == Exit.OK and f"[source] {ASTRO_SA}" in out and "no impersonation" in out

    pinned = gcp_connection("pinned", expected_principal=sc.source_sa)
    status, _, err = _run(capsys, "whoami", pinned, "--as", ASTRO_SA)
    assert status == Exit.IDENTITY_MISMATCH and "expected_principal" in err
    assert gke.calls() == 0  # type: ignore[attr-defined]  # no metadata, IAM or storage request


def test_azure_policy_and_whoami_as_the_deployment_client_id(
    aks: object, azure_sandbox: object, azure_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    aks.workload_identity()  # type: ignore[attr-defined]  # a pod that could call Entra: it must not
    conn = azure_connection("customer", mode="workload_identity", tenant_id="11111111-2222-3333-4444-555555555555")
    status, out, _ = _run(capsys, "policy", conn, "--as", ASTRO_CLIENT)
    assert status == Exit.OK
    platform, yours = out.split("== What you grant ==")
    assert "az identity federated-credential create" in platform
    assert f"az role assignment create --assignee {ASTRO_CLIENT}" in yours
    assert f"client {ASTRO_CLIENT}, tenant 11111111-2222-3333-4444-555555555555" in out
    status, out, _ = _run(capsys, "whoami", conn, "--as", ASTRO_CLIENT.upper(), "--json")
    assert json.loads(out)["principal"] == f"client {ASTRO_CLIENT}"

    other = azure_connection("other", mode="imds", client_id="99999999-9999-9999-9999-999999999999")
    status, _, err = _run(capsys, "policy", other, "--as", ASTRO_CLIENT)
    assert status == Exit.IDENTITY_MISMATCH and "client_id" in err
    assert azure_sandbox.calls() == 0  # type: ignore[attr-defined]  # no Entra, IMDS or storage request
