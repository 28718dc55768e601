"""The AWS sandbox behaves like AWS where the provider depends on it (plain boto3 clients only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dev.sandbox.aws import AMBIENT_AWS_VARIABLES, AwsSandbox
from dev.sandbox.oidc import OidcIssuer

REPO_ROOT = Path(__file__).resolve().parents[2]
# botocore's "max_attempts" counts retries (1 = two requests); "total_max_attempts" counts requests.
ONE_SHOT = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)
NO_CLIENT_VALIDATION = Config(parameter_validation=False, retries={"total_max_attempts": 1}, connect_timeout=5)
UNSIGNED = Config(
    signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5
)


@pytest.fixture(scope="module")
def sb() -> Iterator[AwsSandbox]:
    with AwsSandbox.start() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def _clean(sb: AwsSandbox) -> Iterator[None]:
    sb.clear_faults()
    sb.set_sts_latency(0)
    sb.force_credential_ttl(None)
    yield
    sb.clear_faults()
    sb.set_sts_latency(0)
    sb.force_credential_ttl(None)


def client(sb: AwsSandbox, service: str, creds: dict | None = None, config: Config = ONE_SHOT):
    creds = creds or {}
    return boto3.client(
        service,
        endpoint_url=sb.endpoint_url,
        region_name=sb.region,
        aws_access_key_id=creds.get("AccessKeyId", "AKIAUNKNOWN000000000"),
        aws_secret_access_key=creds.get("SecretAccessKey", "unknown"),
        aws_session_token=creds.get("SessionToken") or creds.get("Token"),
        config=config,
    )


def user_creds(sb: AwsSandbox) -> dict:
    return {"AccessKeyId": sb.user_access_key_id, "SecretAccessKey": sb.user_secret_access_key}


def web_identity(sb: AwsSandbox, token: str, role_arn: str | None = None, **kwargs):
    sts = boto3.client("sts", endpoint_url=sb.endpoint_url, region_name=sb.region, config=UNSIGNED)
    return sts.assume_role_with_web_identity(
        RoleArn=role_arn or sb.scenario.pod_base_role_arn,
        RoleSessionName=kwargs.pop("RoleSessionName", "irsa-test"),
        WebIdentityToken=token,
        **kwargs,
    )


def pod_base_creds(sb: AwsSandbox, session: str = "pod") -> dict:
    return web_identity(sb, sb.issuer.mint(), RoleSessionName=session)["Credentials"]


def assume(sb: AwsSandbox, creds: dict, role_arn: str, session: str = "hop", config: Config = ONE_SHOT, **kw):
    return client(sb, "sts", creds, config).assume_role(RoleArn=role_arn, RoleSessionName=session, **kw)


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


# --- enforcement --------------------------------------------------------------------------------------------


def test_enforcement_is_on_and_scoped_to_the_sandbox(sb: AwsSandbox) -> None:
    from moto import settings

    assert sb.enforcement_on
    # the sandbox's reset-auth does not flip moto's process-wide switch (mock_aws tests stay unenforced)
    assert math.isinf(settings.INITIAL_NO_AUTH_ACTION_COUNT)
    with pytest.raises(ClientError) as exc:
        client(sb, "sts").get_caller_identity()
    assert error_of(exc)[0] == "InvalidClientTokenId"
    with pytest.raises(ClientError) as exc:
        client(sb, "s3").list_buckets()
    assert error_of(exc)[0] == "InvalidAccessKeyId"
    # authentication comes before input validation
    with pytest.raises(ClientError) as exc:
        client(sb, "sts", config=NO_CLIENT_VALIDATION).assume_role(
            RoleArn="arn:aws:iam::1:role/x", RoleSessionName="a/b"
        )
    assert error_of(exc)[0] == "InvalidClientTokenId"
    unsigned = boto3.client("sts", endpoint_url=sb.endpoint_url, region_name=sb.region, config=UNSIGNED)
    with pytest.raises(ClientError) as exc:
        unsigned.get_caller_identity()
    assert error_of(exc)[:2] == ("MissingAuthenticationToken", "Request is missing Authentication Token")


def test_s3_follows_identity_policies(sb: AwsSandbox) -> None:
    # platform-user may only assume roles: no S3 at all
    with pytest.raises(ClientError) as exc:
        client(sb, "s3", user_creds(sb)).get_object(Bucket=sb.scenario.bucket_a, Key=sb.scenario.bucket_a_key)
    assert error_of(exc)[0] == "AccessDenied"


def test_admin_client_can_inspect(sb: AwsSandbox) -> None:
    s3 = sb.admin_client("s3")
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {sb.scenario.bucket_a, sb.scenario.bucket_b} <= names
    iam = sb.admin_client("iam", account=sb.scenario.platform_account)
    assert iam.get_role(RoleName="pod-base")["Role"]["Arn"] == sb.scenario.pod_base_role_arn
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert [p["Arn"] for p in providers] == [sb.scenario.oidc_provider_arn]


# --- web identity (IRSA) ------------------------------------------------------------------------------------


def test_web_identity_good_token(sb: AwsSandbox) -> None:
    response = web_identity(sb, sb.issuer.mint(), RoleSessionName="irsa-good")
    session_arn = "arn:aws:sts::111111111111:assumed-role/pod-base/irsa-good"
    assert response["AssumedRoleUser"]["Arn"] == session_arn
    assert response["AssumedRoleUser"]["AssumedRoleId"].endswith(":irsa-good")
    assert response["SubjectFromWebIdentityToken"] == sb.scenario.service_account_sub
    assert response["Audience"] == "sts.amazonaws.com"
    identity = client(sb, "sts", response["Credentials"]).get_caller_identity()
    assert identity["Arn"] == session_arn
    assert identity["Account"] == sb.scenario.platform_account


def test_web_identity_through_botocore_env_provider(sb: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AMBIENT_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    token_file = sb.write_web_identity_token()
    for name, value in {**sb.env_isolation(), **sb.env_irsa(token_file, session_name="from-env")}.items():
        monkeypatch.setenv(name, value)
    identity = boto3.session.Session().client("sts", config=ONE_SHOT).get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::111111111111:assumed-role/pod-base/from-env"


@pytest.mark.parametrize(
    ("mint", "code", "message"),
    [
        pytest.param(
            lambda sb: sb.issuer.mint(exp=time.time() - 60), "ExpiredTokenException", "Token is expired", id="expired"
        ),
        pytest.param(
            lambda sb: sb.foreign_issuer.mint(),
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider,  please reference "
            "AssumeRoleWithWebIdentity documentation for requirements",
            id="foreign-key",
        ),
        pytest.param(
            lambda sb: OidcIssuer("https://oidc.eks.elsewhere.example/id/OTHER").mint(),
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://oidc.eks.elsewhere.example/id/OTHER",
            id="unknown-issuer",
        ),
        pytest.param(
            lambda sb: sb.issuer.mint(aud="api://AzureADTokenExchange"),
            "InvalidIdentityToken",
            "Incorrect token audience",
            id="wrong-aud",
        ),
        pytest.param(
            lambda sb: sb.issuer.mint(sub="system:serviceaccount:default:intruder"),
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            id="wrong-sub",
        ),
    ],
)
def test_web_identity_bad_tokens(sb: AwsSandbox, mint, code: str, message: str) -> None:
    with pytest.raises(ClientError) as exc:
        web_identity(sb, mint(sb))
    assert error_of(exc)[:2] == (code, message)


def test_web_identity_tampered_signature(sb: AwsSandbox) -> None:
    header, _payload, signature = sb.issuer.mint().split(".")
    forged_payload = OidcIssuer(sb.issuer.issuer_url).mint(sub="system:serviceaccount:airflow:x").split(".")[1]
    with pytest.raises(ClientError) as exc:
        web_identity(sb, f"{header}.{forged_payload}.{signature}")
    assert error_of(exc)[0] == "InvalidIdentityToken"


def test_web_identity_provider_is_per_account(sb: AwsSandbox) -> None:
    # the OIDC provider lives in the platform account, so a customer role cannot federate with it
    with pytest.raises(ClientError) as exc:
        web_identity(sb, sb.issuer.mint(), role_arn=sb.scenario.customer_reader_role_arn)
    assert error_of(exc)[:2] == (
        "InvalidIdentityToken",
        f"No OpenIDConnect provider found in your account for {sb.scenario.issuer_url}",
    )


def test_web_identity_role_must_trust_the_provider(sb: AwsSandbox) -> None:
    iam = sb.admin_client("iam", account=sb.scenario.platform_account)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": sb.scenario.platform_user_arn}, "Action": "sts:AssumeRole"}
        ],
    }
    role_arn = iam.create_role(RoleName="test-no-federation", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    with pytest.raises(ClientError) as exc:
        web_identity(sb, sb.issuer.mint(), role_arn=role_arn)
    assert error_of(exc)[:2] == ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")


def test_web_identity_audience_condition(sb: AwsSandbox) -> None:
    # the provider accepts the token's audience, the trust policy's :aud condition does not
    sc = sb.scenario
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": sc.oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{sc.oidc_provider_id}:aud": "api://other"}},
            }
        ],
    }
    iam = sb.admin_client("iam", account=sc.platform_account)
    role_arn = iam.create_role(RoleName="test-aud", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    with pytest.raises(ClientError) as exc:
        web_identity(sb, sb.issuer.mint(), role_arn=role_arn)
    assert error_of(exc)[:2] == ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")


def test_web_identity_duration_above_role_maximum(sb: AwsSandbox) -> None:
    with pytest.raises(ClientError) as exc:
        web_identity(sb, sb.issuer.mint(), DurationSeconds=7200)
    assert error_of(exc)[:2] == (
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )


# --- pod identity agent ---------------------------------------------------------------------------------------


def agent_get(sb: AwsSandbox, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(sb.pod_identity_url)
    if token is not None:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_pod_identity_agent_returns_working_credentials(sb: AwsSandbox) -> None:
    before = sb.pod_identity_calls
    status, body = agent_get(sb, Path(sb.pod_identity_token_file).read_text())
    assert status == 200
    creds = json.loads(body)
    assert set(creds) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"}
    assert creds["AccountId"] == sb.scenario.platform_account
    identity = client(sb, "sts", creds).get_caller_identity()
    assert identity["Arn"] == sb.scenario.session_arn(
        sb.scenario.pod_base_role_arn, sb.scenario.pod_identity_session_name
    )
    assert sb.pod_identity_calls == before + 1


def test_pod_identity_agent_refuses_wrong_tokens(sb: AwsSandbox) -> None:
    assert agent_get(sb, None) == (400, "Service account token cannot be empty\n")
    status, body = agent_get(sb, "not-a-jwt")
    assert status == 400
    assert body.startswith("Service account token cannot be parsed")
    status, body = agent_get(sb, sb.issuer.mint(aud="pods.eks.amazonaws.com"))
    assert status == 400
    assert "(InvalidTokenException)" in body


def test_pod_identity_token_rotation(sb: AwsSandbox) -> None:
    old = Path(sb.pod_identity_token_file).read_text()
    new = sb.rotate_pod_identity_token()
    assert Path(sb.pod_identity_token_file).read_text() == new != old
    assert agent_get(sb, old)[0] == 400
    assert agent_get(sb, new)[0] == 200


def test_pod_identity_through_botocore_container_provider(sb: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AMBIENT_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**sb.env_isolation(), **sb.env_pod_identity()}.items():
        monkeypatch.setenv(name, value)
    sb.reset_calls()
    identity = boto3.session.Session().client("sts", config=ONE_SHOT).get_caller_identity()
    assert identity["Arn"].startswith("arn:aws:sts::111111111111:assumed-role/pod-base/eks-sandbox-")
    assert sb.pod_identity_calls == 1
    # the agent's own AssumeRole is not a client call
    assert sb.calls_by_action() == {"GetCallerIdentity": 1}


def test_pod_identity_fault(sb: AwsSandbox) -> None:
    sb.inject_pod_identity_fault(status=500, times=1)
    assert agent_get(sb, Path(sb.pod_identity_token_file).read_text())[0] == 500
    assert agent_get(sb, Path(sb.pod_identity_token_file).read_text())[0] == 200


# --- default chain (static user keys) -----------------------------------------------------------------------


def test_default_chain_user(sb: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AMBIENT_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**sb.env_isolation(), **sb.env_default_chain()}.items():
        monkeypatch.setenv(name, value)
    session = boto3.session.Session()
    assert session.client("sts", config=ONE_SHOT).get_caller_identity()["Arn"] == sb.scenario.platform_user_arn
    creds = session.client("sts", config=ONE_SHOT).assume_role(
        RoleArn=sb.scenario.customer_reader_role_arn, RoleSessionName="from-user", DurationSeconds=43200
    )["Credentials"]
    body = client(sb, "s3", creds).get_object(Bucket=sb.scenario.bucket_a, Key=sb.scenario.bucket_a_key)["Body"]
    assert body.read() == b"hello from bucket A\n"


# --- AssumeRole trust ----------------------------------------------------------------------------------------


def test_customer_reader_reads_bucket_a_only(sb: AwsSandbox) -> None:
    response = assume(sb, pod_base_creds(sb), sb.scenario.customer_reader_role_arn, session="reader")
    assert response["AssumedRoleUser"]["Arn"] == "arn:aws:sts::222222222222:assumed-role/customer-reader/reader"
    s3 = client(sb, "s3", response["Credentials"])
    assert s3.get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")["Body"].read() == b"hello from bucket A\n"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="customer-bucket-a")["Contents"]] == ["reports/hello.txt"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="customer-bucket-b", Key="secret.txt")
    assert error_of(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket="customer-bucket-b")
    assert error_of(exc)[0] == "AccessDenied"


def test_untrusting_role_refused_with_real_message(sb: AwsSandbox) -> None:
    with pytest.raises(ClientError) as exc:
        assume(sb, pod_base_creds(sb, "pod-x"), sb.scenario.customer_untrusting_role_arn)
    assert error_of(exc) == (
        "AccessDenied",
        "User: arn:aws:sts::111111111111:assumed-role/pod-base/pod-x is not authorized to perform: "
        "sts:AssumeRole on resource: arn:aws:iam::222222222222:role/customer-untrusting",
        403,
    )


def test_missing_role_refused(sb: AwsSandbox) -> None:
    with pytest.raises(ClientError) as exc:
        assume(sb, user_creds(sb), "arn:aws:iam::222222222222:role/does-not-exist")
    assert error_of(exc)[:2] == (
        "AccessDenied",
        "User: arn:aws:iam::111111111111:user/platform-user is not authorized to perform: sts:AssumeRole "
        "on resource: arn:aws:iam::222222222222:role/does-not-exist",
    )


def test_account_root_principal(sb: AwsSandbox) -> None:
    iam = sb.admin_client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    role_arn = iam.create_role(RoleName="test-root-trust", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    assume(sb, pod_base_creds(sb), role_arn)
    assume(sb, user_creds(sb), role_arn)
    # a session of the customer account is not the platform account
    reader = assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn)["Credentials"]
    with pytest.raises(ClientError) as exc:
        assume(sb, reader, role_arn)
    assert error_of(exc)[0] == "AccessDenied"


def test_chain_two_hops(sb: AwsSandbox) -> None:
    hop = assume(sb, pod_base_creds(sb), sb.scenario.customer_hop_role_arn, session="hop1")["Credentials"]
    final = assume(sb, hop, sb.scenario.customer_reader_chained_role_arn, session="hop2")
    assert final["AssumedRoleUser"]["Arn"] == "arn:aws:sts::222222222222:assumed-role/customer-reader-chained/hop2"
    s3 = client(sb, "s3", final["Credentials"])
    assert s3.get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")["Body"].read() == b"hello from bucket A\n"
    # customer-reader-chained trusts only customer-hop
    with pytest.raises(ClientError) as exc:
        assume(sb, pod_base_creds(sb), sb.scenario.customer_reader_chained_role_arn)
    assert error_of(exc)[0] == "AccessDenied"


def test_chained_hop_limited_to_one_hour(sb: AwsSandbox) -> None:
    hop = assume(sb, pod_base_creds(sb), sb.scenario.customer_hop_role_arn)["Credentials"]
    with pytest.raises(ClientError) as exc:
        assume(sb, hop, sb.scenario.customer_reader_chained_role_arn, DurationSeconds=7200)
    assert error_of(exc)[:2] == (
        "ValidationError",
        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
    )
    # first hop from a role session is chained too; from a user it is not
    with pytest.raises(ClientError):
        assume(sb, pod_base_creds(sb), sb.scenario.customer_reader_role_arn, DurationSeconds=7200)
    assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn, DurationSeconds=7200)


@pytest.mark.parametrize(
    ("kwargs", "allowed"),
    [({"ExternalId": "ext-7f3a9c"}, True), ({"ExternalId": "ext-wrong"}, False), ({}, False)],
    ids=["right", "wrong", "missing"],
)
def test_external_id(sb: AwsSandbox, kwargs: dict, allowed: bool) -> None:
    creds = pod_base_creds(sb)
    if allowed:
        response = assume(sb, creds, sb.scenario.customer_external_role_arn, **kwargs)
        s3 = client(sb, "s3", response["Credentials"])
        assert s3.get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")["Body"].read()
    else:
        with pytest.raises(ClientError) as exc:
            assume(sb, creds, sb.scenario.customer_external_role_arn, **kwargs)
        assert error_of(exc)[0] == "AccessDenied"
        assert error_of(exc)[1].endswith("on resource: arn:aws:iam::222222222222:role/customer-external")


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"RoleSessionName": "a/b"},
            "1 validation error detected: Value 'a/b' at 'roleSessionName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        ),
        (
            {"RoleSessionName": "x" * 65},
            f"1 validation error detected: Value '{'x' * 65}' at 'roleSessionName' failed to satisfy constraint: "
            "Member must have length less than or equal to 64",
        ),
        (
            {"RoleSessionName": "a"},
            "1 validation error detected: Value 'a' at 'roleSessionName' failed to satisfy constraint: "
            "Member must have length greater than or equal to 2",
        ),
        (
            {"DurationSeconds": 100},
            "1 validation error detected: Value '100' at 'durationSeconds' failed to satisfy constraint: "
            "Member must have value greater than or equal to 900",
        ),
        (
            {"DurationSeconds": 50000, "RoleSessionName": "a b"},
            "2 validation errors detected: Value 'a b' at 'roleSessionName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@-]*; Value '50000' at 'durationSeconds' "
            "failed to satisfy constraint: Member must have value less than or equal to 43200",
        ),
        (
            {"SourceIdentity": "aws:admin"},
            "1 validation error detected: Value 'aws:admin' at 'sourceIdentity' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        ),
        (
            {"ExternalId": "bad id!"},
            "1 validation error detected: Value 'bad id!' at 'externalId' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@:/-]*",
        ),
    ],
    ids=["session-pattern", "session-long", "session-short", "duration-low", "two-errors", "source-identity", "ext-id"],
)
def test_validation_errors(sb: AwsSandbox, kwargs: dict, message: str) -> None:
    params = {"RoleArn": sb.scenario.customer_reader_role_arn, "RoleSessionName": "ok", **kwargs}
    with pytest.raises(ClientError) as exc:
        client(sb, "sts", user_creds(sb), NO_CLIENT_VALIDATION).assume_role(**params)
    assert error_of(exc) == ("ValidationError", message, 400)


def test_web_identity_bad_session_name(sb: AwsSandbox) -> None:
    with pytest.raises(ClientError) as exc:
        web_identity(sb, sb.issuer.mint(), RoleSessionName="bad name")
    assert error_of(exc)[0] == "ValidationError"
    assert "at 'roleSessionName'" in error_of(exc)[1]


# --- tags and source identity ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_role(sb: AwsSandbox) -> str:
    """A role that trusts pod-base for sts:AssumeRole only (no TagSession, no SetSourceIdentity)."""
    iam = sb.admin_client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": sb.scenario.pod_base_role_arn}, "Action": "sts:AssumeRole"}
        ],
    }
    return iam.create_role(RoleName="test-bare", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_tag_session_and_source_identity_need_trust(sb: AwsSandbox, bare_role: str) -> None:
    creds = pod_base_creds(sb, "pod-tags")
    assume(sb, creds, bare_role)
    with pytest.raises(ClientError) as exc:
        assume(sb, creds, bare_role, Tags=[{"Key": "team", "Value": "data"}])
    assert error_of(exc)[1].endswith("perform: sts:TagSession on resource: " + bare_role)
    with pytest.raises(ClientError) as exc:
        assume(sb, creds, bare_role, SourceIdentity="alice")
    assert error_of(exc)[1].endswith("perform: sts:SetSourceIdentity on resource: " + bare_role)
    response = assume(
        sb, creds, sb.scenario.customer_reader_role_arn, Tags=[{"Key": "team", "Value": "data"}], SourceIdentity="alice"
    )
    assert response["SourceIdentity"] == "alice"


def test_source_identity_carries_to_next_hop(sb: AwsSandbox, bare_role: str) -> None:
    iam = sb.admin_client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": sb.scenario.customer_hop_role_arn}, "Action": "sts:AssumeRole"}
        ],
    }
    iam.update_assume_role_policy(RoleName="test-bare", PolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=sb.scenario.customer_hop_role_name,
        PolicyName="test-bare",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": bare_role}],
            }
        ),
    )
    try:
        plain_hop = assume(sb, pod_base_creds(sb), sb.scenario.customer_hop_role_arn)["Credentials"]
        assume(sb, plain_hop, bare_role)
        marked_hop = assume(sb, pod_base_creds(sb), sb.scenario.customer_hop_role_arn, SourceIdentity="alice")
        with pytest.raises(ClientError) as exc:
            assume(sb, marked_hop["Credentials"], bare_role)
        assert "sts:SetSourceIdentity" in error_of(exc)[1]
    finally:
        iam.delete_role_policy(RoleName=sb.scenario.customer_hop_role_name, PolicyName="test-bare")
        trust["Statement"][0]["Principal"]["AWS"] = sb.scenario.pod_base_role_arn
        iam.update_assume_role_policy(RoleName="test-bare", PolicyDocument=json.dumps(trust))


# --- counters, faults, latency, lifetimes -------------------------------------------------------------------


def test_call_counters(sb: AwsSandbox) -> None:
    sb.reset_calls()
    creds = pod_base_creds(sb)
    assume(sb, creds, sb.scenario.customer_reader_role_arn)
    client(sb, "sts", creds).get_caller_identity()
    client(sb, "s3", creds)  # no call
    assert sb.calls("AssumeRoleWithWebIdentity") == 1
    assert sb.calls("AssumeRole") == 1
    assert sb.calls("GetCallerIdentity") == 1
    assert sb.calls() == 3
    sb.reset_calls()
    assert sb.calls() == 0


def test_sts_fault_injection(sb: AwsSandbox) -> None:
    sb.reset_calls()
    sb.inject_sts_fault(action="AssumeRole", status=503, code="ServiceUnavailable", times=2)
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn)
        assert error_of(exc)[0] == "ServiceUnavailable"
        assert error_of(exc)[2] == 503
    assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn)
    assert sb.calls("AssumeRole") == 3
    # botocore's standard retries ride over it
    sb.reset_calls()
    sb.inject_sts_fault(action="*", status=400, code="Throttling", times=2)
    retrying = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5)
    assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn, config=retrying)
    assert sb.calls("AssumeRole") == 3


def test_sts_latency(sb: AwsSandbox) -> None:
    sts = client(sb, "sts", user_creds(sb))
    sts.get_caller_identity()
    sb.set_sts_latency(0.4)
    started = time.monotonic()
    sts.get_caller_identity()
    assert time.monotonic() - started >= 0.4
    sb.set_sts_latency(0)
    started = time.monotonic()
    sts.get_caller_identity()
    assert time.monotonic() - started < 0.4


def test_forced_credential_ttl(sb: AwsSandbox) -> None:
    sb.force_credential_ttl(120)
    now = datetime.now(UTC)
    creds = pod_base_creds(sb)
    assert 100 <= (creds["Expiration"] - now).total_seconds() <= 130
    hop = assume(sb, creds, sb.scenario.customer_reader_role_arn)["Credentials"]
    assert 100 <= (hop["Expiration"] - now).total_seconds() <= 130
    status, body = agent_get(sb, Path(sb.pod_identity_token_file).read_text())
    expiration = datetime.fromisoformat(json.loads(body)["Expiration"].replace("Z", "+00:00"))
    assert status == 200
    assert 100 <= (expiration - now).total_seconds() <= 130
    assert client(sb, "s3", hop).get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")["Body"].read()


# --- isolation of the process-wide moto state ------------------------------------------------------------------


def test_second_sandbox_in_same_process(sb: AwsSandbox) -> None:
    with AwsSandbox.start() as other:
        assert other.endpoint_url != sb.endpoint_url
        # each sandbox trusts its own issuer key only
        web_identity(other, other.issuer.mint())
        with pytest.raises(ClientError) as exc:
            web_identity(other, sb.issuer.mint())
        assert error_of(exc)[0] == "InvalidIdentityToken"
        assert other.calls("AssumeRoleWithWebIdentity") == 2
    web_identity(sb, sb.issuer.mint())


def test_reseed_after_moto_reset(sb: AwsSandbox) -> None:
    from moto.core.base_backend import BackendDict

    BackendDict.reset()  # what a mock_aws() start/stop elsewhere in the process does
    assert sb.ensure_seeded() is True
    assert sb.ensure_seeded() is False
    response = assume(sb, user_creds(sb), sb.scenario.customer_reader_role_arn)
    assert client(sb, "s3", response["Credentials"]).get_object(Bucket="customer-bucket-a", Key="reports/hello.txt")
    # and without being asked: reading the sandbox's endpoint or keys re-seeds
    BackendDict.reset()
    assert client(sb, "sts", user_creds(sb)).get_caller_identity()["Arn"] == sb.scenario.platform_user_arn
    web_identity(sb, sb.issuer.mint())


# --- the command line ------------------------------------------------------------------------------------------


def test_cli_start_status_stop(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    cli = [sys.executable, "-m", "dev.sandbox"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args, "--state-file", str(state_file)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    started = run("start")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads(started.stdout)
        assert json.loads(state_file.read_text())["pid"] == state["pid"]
        assert state["scenario"]["customer_reader_role_arn"] == "arn:aws:iam::222222222222:role/customer-reader"
        assert Path(state["pod_identity_token_file"]).is_file()
        assert Path(state["web_identity_token_file"]).is_file()
        assert run("status").returncode == 0
        sts = boto3.client(
            "sts",
            endpoint_url=state["endpoint_url"],
            region_name=state["region"],
            aws_access_key_id=state["user_access_key_id"],
            aws_secret_access_key=state["user_secret_access_key"],
            config=ONE_SHOT,
        )
        assert sts.get_caller_identity()["Arn"] == "arn:aws:iam::111111111111:user/platform-user"
        assert run("start").returncode == 1  # already running
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not state_file.exists()
    assert not Path(state["tmp_dir"]).exists()
    assert run("status").returncode == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(state["endpoint_url"], timeout=2)
