"""Reads allowed and denied through each ambient source: IRSA, EKS Pod Identity, the default chain."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.errors import ConfigError, IdentityUnavailable
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod


def read_a(hook: AwsWorkloadIdentityHook, sandbox: AwsSandbox) -> bytes:
    sc = sandbox.scenario
    return hook.get_client("s3").get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)["Body"].read()


def assert_b_denied(hook: AwsWorkloadIdentityHook, sandbox: AwsSandbox) -> None:
    sc = sandbox.scenario
    with pytest.raises(ClientError) as err:
        hook.get_client("s3").get_object(Bucket=sc.bucket_b, Key=sc.bucket_b_key)
    assert err.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.smoke
def test_irsa_reads_bucket_a_and_is_denied_bucket_b(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("reader", role_arn=sc.customer_reader_role_arn))
    assert read_a(hook, aws_sandbox) == sc.bucket_a_body
    assert_b_denied(hook, aws_sandbox)

    report = hook.whoami()
    source, target = report.hops
    assert source.principal.startswith(f"arn:aws:sts::{sc.platform_account}:assumed-role/pod-base/")
    assert "IRSA" in source.method
    assert target.principal == f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/airflow.reader"
    assert target.endpoint == aws_sandbox.endpoint_url
    assert target.expiry is not None
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert aws_sandbox.calls("AssumeRole") == 1


@pytest.mark.smoke
def test_pod_identity_reads_bucket_a(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]) -> None:
    sc = aws_sandbox.scenario
    pod.pod_identity()
    hook = AwsWorkloadIdentityHook(
        aws_conn_id=connection("reader", role_arn=sc.customer_reader_role_arn, source="pod_identity")
    )
    assert read_a(hook, aws_sandbox) == sc.bucket_a_body
    assert_b_denied(hook, aws_sandbox)
    report = hook.whoami()
    assert report.hops[0].principal.startswith(f"arn:aws:sts::{sc.platform_account}:assumed-role/pod-base/")
    assert "Pod Identity" in report.hops[0].method
    assert aws_sandbox.pod_identity_calls == 1
    assert aws_sandbox.calls("AssumeRole") == 1


def test_default_chain_with_user_keys_is_not_chained(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.default_chain()
    conn = connection("reader", role_arn=sc.customer_reader_role_arn, duration_seconds=7200)
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    assert read_a(hook, aws_sandbox) == sc.bucket_a_body
    report = hook.whoami()
    assert report.hops[0].principal == sc.platform_user_arn
    assert report.hops[0].method.startswith("botocore default chain (env)")
    lifetime = report.final.expiry.timestamp() - __import__("time").time()  # type: ignore[union-attr]
    assert 7000 < lifetime <= 7200


def test_chained_duration_over_an_hour_is_refused_before_any_sts_call(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    pod.irsa()
    conn = connection("reader", role_arn=aws_sandbox.scenario.customer_reader_role_arn, duration_seconds=7200)
    with pytest.raises(ConfigError) as err:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_client("s3")
    assert err.value.field == "duration_seconds"
    assert "IRSA" in str(err.value)
    assert aws_sandbox.calls() == 0


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("web_identity", ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"]),
        ("pod_identity", ["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]),
    ],
)
def test_a_named_source_that_is_absent_never_falls_back(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], source: str, variables: list[str]
) -> None:
    pod.default_chain()  # another identity IS available: it must not be used silently
    conn = connection("reader", role_arn=aws_sandbox.scenario.customer_reader_role_arn, source=source)
    with pytest.raises(IdentityUnavailable) as err:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials()
    for variable in variables:
        assert variable in str(err.value)
    assert err.value.source == source
    assert aws_sandbox.calls() == 0


def test_no_identity_at_all_names_every_place_looked(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    conn = connection("reader", role_arn=aws_sandbox.scenario.customer_reader_role_arn)
    ok, message = AwsWorkloadIdentityHook(aws_conn_id=conn).test_connection()
    assert not ok
    assert "IdentityUnavailable" in message
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in message
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in message


def test_missing_token_file_is_reported_as_unavailable(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    token = pod.irsa()
    token.unlink()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=aws_sandbox.scenario.customer_reader_role_arn))
    with pytest.raises(IdentityUnavailable, match="does not exist"):
        read_a(hook, aws_sandbox)


def test_sts_endpoint_override_is_used_for_every_sts_call(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only S3 is routed to the sandbox by the environment; STS goes there only through the connection.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_sandbox.endpoint_url)
    pod.irsa()
    sc = aws_sandbox.scenario
    conn = connection("r", role_arn=sc.customer_reader_role_arn, sts_endpoint_url=aws_sandbox.endpoint_url)
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    assert read_a(hook, aws_sandbox) == sc.bucket_a_body
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert aws_sandbox.calls("AssumeRole") == 1


def test_aws_endpoint_url_sts_is_honoured(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_sandbox.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws_sandbox.endpoint_url)
    pod.irsa()
    sc = aws_sandbox.scenario
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    assert read_a(hook, aws_sandbox) == sc.bucket_a_body
    assert hook.whoami().final.endpoint == aws_sandbox.endpoint_url


def test_an_endpoint_override_to_an_unlisted_host_is_refused_before_any_call(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS")
    pod.irsa()
    conn = connection(
        "r", role_arn=aws_sandbox.scenario.customer_reader_role_arn, sts_endpoint_url=aws_sandbox.endpoint_url
    )
    with pytest.raises(ConfigError) as err:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials()
    assert err.value.field == "sts_endpoint_url"
    assert "allowed_endpoint_hosts" in str(err.value)
    assert aws_sandbox.calls() == 0
    # The deployment's own environment is trusted: AWS_ENDPOINT_URL (set by the pod) still routes STS.
    plain = AwsWorkloadIdentityHook(aws_conn_id=connection("p", role_arn=aws_sandbox.scenario.customer_reader_role_arn))
    assert plain.get_credentials().get_frozen_credentials().token
