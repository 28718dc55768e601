"""Chains, external ids, refused hops and web identity failures, with the remediation each one prints."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable

import pytest

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.errors import AccessDenied, ConfigError, TransientError
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod


def statement_in(text: str) -> dict:
    """The first JSON object printed in a remediation text."""
    match = re.search(r"^\{\n.*?^\}", text, re.S | re.M)
    assert match, text
    return json.loads(match.group(0))


@pytest.mark.smoke
def test_two_hop_chain_reads_bucket_a(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection(
        "chain",
        role_chain=[sc.customer_hop_role_arn],
        role_arn=sc.customer_reader_chained_role_arn,
        source_identity="{conn_id}",
        session_tags={"team": "data"},
        transitive_tag_keys=["team"],
    )
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    body = hook.get_client("s3").get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)["Body"].read()
    assert body == sc.bucket_a_body
    report = hook.whoami()
    assert [h.index for h in report.hops] == [0, 1, 2]
    assert ":assumed-role/customer-hop/" in report.hops[1].principal
    assert ":assumed-role/customer-reader-chained/" in report.hops[2].principal
    assert ("source identity", "chain") in report.hops[1].details
    assert aws_sandbox.calls("AssumeRole") == 2


def test_skipping_the_intermediate_role_is_denied_at_hop_1(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("c", role_arn=sc.customer_reader_chained_role_arn))
    with pytest.raises(AccessDenied) as err:
        hook.get_credentials().get_frozen_credentials()
    assert (err.value.hop, err.value.hops) == (1, 1)
    assert err.value.caller and err.value.caller.startswith(
        f"arn:aws:sts::{sc.platform_account}:assumed-role/pod-base/"
    )


def test_missing_trust_at_hop_2_names_hop_2_and_its_caller(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("c", role_chain=[sc.customer_hop_role_arn], role_arn=sc.customer_untrusting_role_arn)
    with pytest.raises(AccessDenied) as err:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    assert (err.value.hop, err.value.hops) == (2, 2)
    assert ":assumed-role/customer-hop/" in (err.value.caller or "")
    assert statement_in(err.value.remediation)["Principal"] == {"AWS": sc.customer_hop_role_arn}
    assert "hop 2 of 2" in str(err.value)


@pytest.mark.smoke
def test_untrusting_role_prints_the_trust_statement_to_paste(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("u", role_arn=sc.customer_untrusting_role_arn))
    ok, message = hook.test_connection()
    assert not ok
    assert "AccessDenied" in message and "hop 1 of 1" in message
    assert sc.customer_untrusting_role_arn in message
    statement = statement_in(message)
    assert statement == {
        "Effect": "Allow",
        "Principal": {"AWS": sc.pod_base_role_arn},
        "Action": ["sts:AssumeRole"],
    }
    # Cross-account: the caller's own identity policy is printed too.
    assert '"Resource": "' + sc.customer_untrusting_role_arn in message


def test_external_id_right_wrong_and_missing(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    right = AwsWorkloadIdentityHook(
        aws_conn_id=connection("right", role_arn=sc.customer_external_role_arn, external_id=sc.external_id)
    )
    assert right.get_client("s3").get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)["Body"].read()
    assert ("external id", "sent") in right.whoami().final.details

    wrong = AwsWorkloadIdentityHook(
        aws_conn_id=connection("wrong", role_arn=sc.customer_external_role_arn, external_id="ext-wrong")
    )
    with pytest.raises(AccessDenied) as err:
        wrong.get_credentials().get_frozen_credentials()
    assert statement_in(err.value.remediation)["Condition"] == {"StringEquals": {"sts:ExternalId": "ext-wrong"}}
    assert "ExternalId=(set)" in err.value.remediation
    assert "ext-wrong" not in str(err.value).split("Add this statement")[0]

    missing = AwsWorkloadIdentityHook(aws_conn_id=connection("missing", role_arn=sc.customer_external_role_arn))
    with pytest.raises(AccessDenied):
        missing.get_credentials().get_frozen_credentials()


def test_session_tags_need_tag_session_in_the_trust_policy(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection(
        "t", role_arn=sc.customer_external_role_arn, external_id=sc.external_id, session_tags={"team": "data"}
    )
    with pytest.raises(AccessDenied) as err:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    assert statement_in(err.value.remediation)["Action"] == ["sts:AssumeRole", "sts:TagSession"]


def test_tags_and_source_identity_reach_sts(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection(
        "tagged",
        role_arn=sc.customer_reader_role_arn,
        source_identity="{conn_id}-src",
        session_tags={"team": "data", "conn": "{conn_id}"},
        role_session_name="wi.{conn_id}",
    )
    report = AwsWorkloadIdentityHook(aws_conn_id=conn).whoami()
    assert report.final.principal.endswith(":assumed-role/customer-reader/wi.tagged")
    details = dict(report.final.details)
    assert details["source identity"] == "tagged-src"
    assert details["session tags"] == "team=data, conn=tagged"


@pytest.mark.parametrize(
    ("mint", "code", "hint"),
    [
        ({"exp": time.time() - 60, "iat": time.time() - 4000}, "ExpiredTokenException", "has expired"),
        ({"aud": "not-sts"}, "InvalidIdentityToken", "add-client-id-to-open-id-connect-provider"),
        ({"sub": "system:serviceaccount:other:intruder"}, "AccessDenied", "system:serviceaccount:other:intruder"),
    ],
    ids=["expired", "wrong-audience", "wrong-subject"],
)
def test_web_identity_rejections_are_explained(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], mint: dict, code: str, hint: str
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa(**mint)
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    with pytest.raises(AccessDenied) as err:
        hook.get_credentials().get_frozen_credentials()
    assert err.value.hop == 0
    assert err.value.cloud_code == code
    assert err.value.permission == "sts:AssumeRoleWithWebIdentity"
    issuer_path = sc.issuer_url.removeprefix("https://")
    assert hint.replace("<issuer>", issuer_path) in err.value.remediation
    assert aws_sandbox.calls("AssumeRole") == 0


def test_foreign_signed_token_points_at_the_oidc_provider(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    assert pod.token_file is not None
    pod.token_file.write_text(aws_sandbox.foreign_issuer.mint())
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    with pytest.raises(AccessDenied) as err:
        hook.get_credentials().get_frozen_credentials()
    assert err.value.cloud_code == "InvalidIdentityToken"
    assert "aws iam create-open-id-connect-provider" in err.value.remediation
    token = pod.token_file.read_text()
    assert token not in str(err.value)


def test_transient_sts_errors_are_retried_then_reported(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    aws_sandbox.inject_sts_fault("AssumeRole", status=503, code="ServiceUnavailable", times=2)
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    hook.get_credentials().get_frozen_credentials()
    assert aws_sandbox.calls("AssumeRole") == 3

    aws_sandbox.inject_sts_fault("AssumeRole", status=503, code="ServiceUnavailable", times=10)
    other = AwsWorkloadIdentityHook(aws_conn_id=connection("r2", role_arn=sc.customer_reader_role_arn))
    with pytest.raises(TransientError) as err:
        other.get_credentials().get_frozen_credentials()
    assert err.value.attempts == 3
    assert "sts:AssumeRole" in err.value.operation and "hop 1 of 1" in err.value.operation


def test_role_max_session_duration_refusal_names_the_field(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    iam = aws_sandbox.admin_client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": sc.platform_user_arn}, "Action": "sts:AssumeRole"}],
    }
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="short-max", AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=3600)
    pod.default_chain()
    role = f"arn:aws:iam::{sc.customer_account}:role/short-max"
    with pytest.raises(ConfigError) as err:
        AwsWorkloadIdentityHook(
            aws_conn_id=connection("r", role_arn=role, duration_seconds=7200)
        ).get_credentials().get_frozen_credentials()
    assert err.value.field == "duration_seconds"
    assert "MaxSessionDuration" in str(err.value)
    # Without a chained hop, a long session on a role that allows it is fine.
    long = AwsWorkloadIdentityHook(
        aws_conn_id=connection("l", role_arn=sc.customer_reader_role_arn, duration_seconds=43200)
    )
    assert long.get_credentials().get_frozen_credentials().token
