"""``whoami --secrets-backend`` and ``doctor`` report the configured ``[secrets] backend``'s identity
(``AIRFLOW__SECRETS__BACKEND`` / ``_KWARGS`` as a deployment sets them), against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_workload_identity.cli import Exit, main
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

AWS_SM = "airflow_workload_identity.aws.secrets.SecretsManagerBackend"
GCP_SM = "airflow_workload_identity.gcp.secrets.SecretManagerBackend"


@pytest.fixture(autouse=True)
def _forget_airflow_backends():
    """Airflow memoises the configured secrets backends per process: a backend built for one of these
    tests must not answer later tests' connection lookups."""

    def clear() -> None:
        try:
            from airflow.sdk.configuration import clear_secrets_backends_cache
        except ImportError:  # older Airflow: nothing memoised
            return
        clear_secrets_backends_cache()

    clear()
    yield
    clear()


def _configure(monkeypatch: pytest.MonkeyPatch, backend: str, kwargs: dict[str, object]) -> None:
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", backend)
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps(kwargs))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_aws_backend_identity_in_whoami_and_doctor(
    pod: Pod, aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    _configure(monkeypatch, AWS_SM, {"role_arn": sc.customer_reader_role_arn, "region_name": sc.region})

    status, out, _ = _run(capsys, "doctor", "--json")
    backend = json.loads(out)["secrets_backend"]
    assert backend["backend"] == AWS_SM and backend["valid"] is True
    assert backend["reads_as"] == f"the pod's own identity -> {sc.customer_reader_role_arn}"
    assert backend["connections_prefix"] == "airflow/connections"
    assert aws_sandbox.calls() == 0  # doctor requests no token

    status, out, _ = _run(capsys, "doctor")
    assert f"{AWS_SM}: valid, reads as the pod's own identity -> {sc.customer_reader_role_arn}" in out

    status, out, _ = _run(capsys, "whoami", "--secrets-backend", "--json")
    assert status == Exit.OK
    report = json.loads(out)
    assert report["conn_id"] == "[secrets] backend SecretsManagerBackend"
    assert report["principal"].startswith(f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/")
    assert aws_sandbox.calls("AssumeRole") == 1


def test_aws_backend_on_the_pods_own_identity(
    pod: Pod, aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    _configure(monkeypatch, AWS_SM, {"region_name": sc.region})
    status, out, _ = _run(capsys, "whoami", "--secrets-backend")
    assert status == Exit.OK
    assert f"arn:aws:sts::{sc.platform_account}:assumed-role/{sc.pod_base_role_name}/" in out
    assert "no role assumed" in out
    assert aws_sandbox.calls("AssumeRole") == 0


def test_invalid_backend_kwargs_make_doctor_fail_naming_the_key(
    pod: Pod, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(monkeypatch, AWS_SM, {"role_arn": "arn:aws:iam::1:role/x"})
    status, out, _ = _run(capsys, "doctor")
    assert status == 1
    assert "INVALID" in out and "'role_arn'" in out
    status, _, err = _run(capsys, "whoami", "--secrets-backend")
    assert status == Exit.BAD_INPUT and "'role_arn'" in err


def test_whoami_secrets_backend_without_one_of_ours(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW__SECRETS__BACKEND", raising=False)
    status, _, err = _run(capsys, "whoami", "--secrets-backend")
    assert status == Exit.BAD_INPUT and "[secrets] backend" in err
    status, _, err = _run(capsys, "whoami")
    assert status == Exit.BAD_INPUT and "--secrets-backend" in err


def test_gcp_backend_identity_in_whoami_and_doctor(
    gke: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], gcp_connection: Callable[..., str]
) -> None:
    sc = gke.scenario  # type: ignore[attr-defined]
    kwargs = {
        "impersonation_chain": sc.reader_sa,
        "iam_endpoint_url": gke.iam_endpoint,  # type: ignore[attr-defined]
        "secret_manager_endpoint_url": gke.secret_manager_endpoint,  # type: ignore[attr-defined]
    }
    _configure(monkeypatch, GCP_SM, kwargs)
    status, out, _ = _run(capsys, "doctor", "--json")
    backend = json.loads(out)["secrets_backend"]
    assert backend["reads_as"] == f"the pod's own service account -> {sc.reader_sa}"
    assert backend["connections_prefix"] == "airflow-connections"
    assert gke.calls("metadata_token") == 0  # type: ignore[attr-defined]

    conn = gcp_connection("direct", project_id="customer-proj")
    status, out, _ = _run(capsys, "whoami", conn, "--secrets-backend", "--json")
    assert status == Exit.OK
    first, second = (json.loads(part) for part in _split_json(out))
    assert first["principal"] == sc.reader_sa  # the backend's identity
    assert second["principal"] == sc.source_sa  # then the (direct) connection's
    assert gke.calls("metadata_token") == 1  # type: ignore[attr-defined]  # one pod token for both


def _split_json(text: str) -> list[str]:
    """Two pretty-printed JSON documents one after the other."""
    decoder = json.JSONDecoder()
    parts, index = [], 0
    while index < len(text.strip()):
        value, end = decoder.raw_decode(text, index)
        parts.append(json.dumps(value))
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return parts
