"""AWS secrets backends against the moto sandbox with IAM enforced: the reader role reads only airflow/."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.aws.secrets import SecretsManagerBackend, SystemsManagerParameterStoreBackend
from airflow_workload_identity.errors import AccessDenied, ConfigError
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

URI = "postgresql://scott:tiger-pass-123@db.example.com:5432/sales"


@pytest.fixture
def secrets_seeded(aws_sandbox: AwsSandbox) -> dict[str, str]:
    """Secrets and parameters in the customer account, some under airflow/ (readable), one outside it."""
    account = aws_sandbox.scenario.customer_account
    sm = aws_sandbox.admin_client("secretsmanager", account)
    ssm = aws_sandbox.admin_client("ssm", account)
    values = {
        "airflow/connections/pg_uri": URI,
        "airflow/connections/pg_json": json.dumps(
            {"conn_type": "postgres", "host": "db.example.com", "user": "scott", "pass": "tiger-json-456", "port": 5432}
        ),
        "airflow/variables/greeting": "hello from secrets manager",
        "airflow/config/sql_alchemy_conn": "sqlite:////tmp/x.db",
        "restricted/connections/pg_uri": URI,
        "restricted/variables/greeting": "not for the reader",
    }
    for name, value in values.items():
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)
        ssm.put_parameter(Name="/" + name, Value=value, Type="SecureString", Overwrite=True)
    aws_sandbox.reset_api_calls()
    return values


def _reader(aws_sandbox: AwsSandbox, cls: type[Any] = SecretsManagerBackend, **kwargs: Any) -> Any:
    return cls(role_arn=aws_sandbox.scenario.customer_reader_role_arn, **kwargs)


def test_reads_uri_and_json_connections_variables_and_config(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str]
) -> None:
    pod.irsa()
    backend = _reader(aws_sandbox)
    conn = backend.get_connection("pg_uri")
    assert (conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema) == (
        "postgres",
        "db.example.com",
        "scott",
        "tiger-pass-123",
        5432,
        "sales",
    )
    conn = backend.get_connection("pg_json")  # the official backend's JSON form, aliases included
    assert (conn.login, conn.password, conn.host) == ("scott", "tiger-json-456", "db.example.com")
    assert backend.get_variable("greeting") == "hello from secrets manager"
    assert backend.get_config("sql_alchemy_conn") == "sqlite:////tmp/x.db"
    assert aws_sandbox.api_calls() == {"secretsmanager:GetSecretValue": 4}
    # one identity: the chain was assumed once for four reads
    assert aws_sandbox.calls("AssumeRole") == 1


def test_parameter_store_reads_with_leading_slash(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str]
) -> None:
    pod.irsa()
    backend = _reader(aws_sandbox, SystemsManagerParameterStoreBackend)
    assert backend.get_conn_value("pg_uri") == URI
    assert backend.get_variable("greeting") == "hello from secrets manager"
    assert backend.get_variable("absent") is None
    assert aws_sandbox.api_calls() == {"ssm:GetParameter": 3}


@pytest.mark.parametrize("cls", [SecretsManagerBackend, SystemsManagerParameterStoreBackend])
def test_missing_secret_is_none_after_one_request(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str], cls: type[Any]
) -> None:
    pod.irsa()
    backend = _reader(aws_sandbox, cls)
    assert backend.get_connection("no_such_conn") is None
    assert sum(aws_sandbox.api_calls().values()) == 1


@pytest.mark.parametrize("cls", [SecretsManagerBackend, SystemsManagerParameterStoreBackend])
def test_denied_prefix_raises_access_denied_with_the_statement(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str], cls: type[Any]
) -> None:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    pod.irsa()
    prefix = "/restricted/connections" if cls is SystemsManagerParameterStoreBackend else "restricted/connections"
    backend = _reader(aws_sandbox, cls, connections_prefix=prefix)
    with pytest.raises(AccessDenied) as caught:
        backend.get_connection("pg_uri")
    error = caught.value
    assert isinstance(error, AirflowSecretsBackendAccessDenied)  # Airflow stops on it instead of moving on
    assert error.cloud_code == "AccessDeniedException"
    assert error.caller and aws_sandbox.scenario.customer_reader_role_name in error.caller
    assert "restricted/connections/pg_uri" in error.target
    statement = json.loads(error.remediation.split(":\n", 1)[1])
    action = "ssm:GetParameter" if cls is SystemsManagerParameterStoreBackend else "secretsmanager:GetSecretValue"
    assert statement["Action"] == action
    assert statement["Resource"].endswith("restricted/connections/*")
    assert sum(aws_sandbox.api_calls().values()) == 1
    assert URI not in str(error)


def test_backend_and_hook_share_one_session(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str], connection: Callable[..., str]
) -> None:
    pod.irsa()
    sc = aws_sandbox.scenario
    backend = _reader(aws_sandbox, role_session_name="shared")
    hook = AwsWorkloadIdentityHook(
        aws_conn_id=connection("reader", role_arn=sc.customer_reader_role_arn, role_session_name="shared")
    )
    assert backend.get_variable("greeting")
    hook.get_client("s3").head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    assert aws_sandbox.calls("AssumeRole") == 1
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1


def test_construction_validates_without_network(pod: Pod, aws_sandbox: AwsSandbox) -> None:
    pod.irsa()
    aws_sandbox.reset_calls()
    aws_sandbox.reset_api_calls()
    with pytest.raises(ConfigError) as caught:
        SecretsManagerBackend(role_arn=aws_sandbox.scenario.customer_reader_role_arn, conections_prefix="x")
    assert caught.value.field == "conections_prefix"
    with pytest.raises(ConfigError) as caught:
        SecretsManagerBackend(role_arn="arn:aws:iam::12:role/x")
    assert caught.value.field == "role_arn"
    with pytest.raises(ConfigError) as caught:
        SecretsManagerBackend(
            role_arn=aws_sandbox.scenario.customer_reader_role_arn, sts_endpoint_url="https://evil.example.com"
        )
    assert caught.value.field == "sts_endpoint_url"
    backend = SecretsManagerBackend(role_arn=aws_sandbox.scenario.customer_reader_role_arn, variables_prefix=None)
    assert backend.get_variable("greeting") is None  # kind turned off: no request
    assert aws_sandbox.calls() == 0 and aws_sandbox.api_calls() == {}


def test_returned_values_are_masked(pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str]) -> None:
    from airflow.sdk.log import redact  # type: ignore[attr-defined]

    pod.irsa()
    backend = _reader(aws_sandbox)
    backend.get_connection("pg_uri")
    value = backend.get_variable("greeting")
    assert "tiger-pass-123" not in str(redact("password is tiger-pass-123"))
    assert value is not None and value not in str(redact(f"value: {value}"))


def test_official_backends_read_the_same_sandbox(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str]
) -> None:
    """The official backends, on the reader role's keys, get the same values: the sandbox speaks the wire."""
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend as Official
    from airflow.providers.amazon.aws.secrets.systems_manager import (
        SystemsManagerParameterStoreBackend as OfficialSsm,
    )

    pod.default_chain()  # the platform user's keys; the official backend assumes the role itself
    kwargs = {"role_arn": aws_sandbox.scenario.customer_reader_role_arn, "region_name": aws_sandbox.region}
    official = Official(**kwargs)
    assert official.get_conn_value("pg_uri") == URI
    assert official.get_variable("greeting") == "hello from secrets manager"
    assert official.get_variable("absent") is None
    assert OfficialSsm(**kwargs).get_variable("greeting") == "hello from secrets manager"


def test_whoami_of_the_configured_backend(pod: Pod, aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workload_identity.secrets_common import configured_backend

    sc = aws_sandbox.scenario
    pod.irsa()
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "airflow_workload_identity.aws.secrets.SecretsManagerBackend")
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"role_arn": sc.customer_reader_role_arn}))
    backend = configured_backend()
    assert isinstance(backend, SecretsManagerBackend)
    report = backend.whoami(verify=True)
    assert report.final.principal.startswith(f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/")
    assert aws_sandbox.calls("GetCallerIdentity") == 1
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"role_arn": "arn:aws:iam::1:role/x"}))
    with pytest.raises(ConfigError):
        configured_backend()
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "airflow.secrets.local_filesystem.LocalFilesystemBackend")
    assert configured_backend() is None


def test_multi_team_names(
    pod: Pod, aws_sandbox: AwsSandbox, secrets_seeded: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the official backends: the team-scoped name first; an id holding the team separator is never read."""
    pod.irsa()
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    backend = _reader(aws_sandbox)
    assert backend.get_conn_value("pg_uri", team_name="team_a") == URI  # team_a--pg_uri absent, then pg_uri
    assert aws_sandbox.api_calls() == {"secretsmanager:GetSecretValue": 2}
    aws_sandbox.reset_api_calls()
    assert backend.get_conn_value("team_b--pg_uri", team_name="team_a") is None
    assert backend.get_variable("x--y") is None
    assert aws_sandbox.api_calls() == {}
