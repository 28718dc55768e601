"""GCP -> AWS and Azure -> AWS: the other cloud's token is the first role's web identity, end to end.

Three sandboxes on loopback: the GCP one mints the pod's Google ID token (GKE metadata) and serves Google's
JWKS; the Azure one issues the pod's Entra token (AKS workload identity) and serves Entra's JWKS over https;
the AWS one (moto) is told where those JWKS are (``trust_issuer``), fetches them and verifies each token's
signature, issuer, audience, expiry and subject against the IAM OIDC provider and the role's trust policy,
as STS does. Reads go to S3 through our hook and through the Amazon provider's ``S3Hook``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("google.auth", reason="the GCP extra is not installed")
pytest.importorskip("azure.identity", reason="the Azure extra is not installed")

import contextlib

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.errors import AccessDenied, ConfigError
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks

GOOGLE_ISSUER = "https://accounts.google.com"
ENTRA_AUDIENCE = "api://airflow-aws"
READ_A = "read-bucket-a"


@dataclass(frozen=True)
class Federation:
    """What the customer set up in its AWS account (customer account of the AWS sandbox)."""

    gcp_role: str
    gcp_wrong_subject_role: str
    azure_role: str
    azure_wrong_subject_role: str
    azure_untrusted_role: str  # in an account with no IAM OIDC provider for the Entra issuer
    target_role: str  # reached through role_chain from the federated roles (ExternalId required)
    google_uid: str
    entra_issuer: str
    entra_object_id: str


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _role(iam: Any, name: str, trust: dict[str, Any], permissions: str) -> str:
    try:
        arn = str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=_policy(trust))["Role"]["Arn"])
    except iam.exceptions.EntityAlreadyExistsException:
        arn = str(iam.get_role(RoleName=name)["Role"]["Arn"])
    iam.put_role_policy(RoleName=name, PolicyName="permissions", PolicyDocument=permissions)
    return arn


@pytest.fixture(scope="module")
def federation(aws_sandbox: AwsSandbox, gcp_sandbox: GcpSandbox, azure_sandbox: AzureSandbox) -> Federation:
    sc, gsc, asc = aws_sandbox.scenario, gcp_sandbox.scenario, azure_sandbox.scenario
    entra_issuer = asc.access_token_issuer  # https://sts.windows.net/<tenant>/
    # Trust over loopback: the AWS sandbox fetches each issuer's JWKS from the sandbox that signs.
    aws_sandbox.trust_issuer(GOOGLE_ISSUER, gcp_sandbox.google_jwks_url)
    aws_sandbox.trust_issuer(
        entra_issuer,
        f"{azure_sandbox.authority_host}/{asc.tenant_id}/discovery/v2.0/keys",
        ca_file=azure_sandbox.ca_bundle,
    )
    uid = gcp_sandbox.add_service_account(gsc.source_sa)
    iam = aws_sandbox.admin_client("iam", account=sc.customer_account)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_open_id_connect_provider(Url=entra_issuer, ClientIDList=[ENTRA_AUDIENCE], ThumbprintList=["0" * 40])
    provider_id = entra_issuer.removeprefix("https://")
    entra_provider = f"arn:aws:iam::{sc.customer_account}:oidc-provider/{provider_id}"
    target = f"arn:aws:iam::{sc.customer_account}:role/fed-target"
    read_a = _policy(
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{sc.bucket_a}"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{sc.bucket_a}/*"},
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": target},
    )

    def google(sub: str) -> dict[str, Any]:
        return {
            "Effect": "Allow",
            "Principal": {"Federated": "accounts.google.com"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    "accounts.google.com:aud": sub,
                    "accounts.google.com:oaud": "sts.amazonaws.com",
                    "accounts.google.com:sub": sub,
                }
            },
        }

    def entra(provider: str, sub: str) -> dict[str, Any]:
        return {
            "Effect": "Allow",
            "Principal": {"Federated": provider},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{provider_id}:aud": ENTRA_AUDIENCE, f"{provider_id}:sub": sub}},
        }

    gcp_role = _role(iam, "fed-gcp-reader", google(uid), read_a)
    azure_role = _role(iam, "fed-azure-reader", entra(entra_provider, asc.workload_object_id), read_a)
    fed = Federation(
        gcp_role=gcp_role,
        gcp_wrong_subject_role=_role(iam, "fed-gcp-other-subject", google("100000000000000000999"), read_a),
        azure_role=azure_role,
        azure_wrong_subject_role=_role(
            iam, "fed-azure-other-subject", entra(entra_provider, asc.node_object_id), read_a
        ),
        azure_untrusted_role=_role(
            aws_sandbox.admin_client("iam", account=sc.platform_account),
            "fed-azure-untrusted",
            entra(f"arn:aws:iam::{sc.platform_account}:oidc-provider/{provider_id}", asc.workload_object_id),
            read_a,
        ),
        target_role=_role(
            iam,
            "fed-target",
            {
                "Effect": "Allow",
                "Principal": {"AWS": [gcp_role, azure_role]},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": sc.external_id}},
            },
            _policy(*json.loads(read_a)["Statement"][:2]),
        ),
        google_uid=uid,
        entra_issuer=entra_issuer,
        entra_object_id=asc.workload_object_id,
    )
    return fed


@pytest.fixture
def on_gke(pod: Pod, gke: GcpSandbox) -> GcpSandbox:
    """The process as a GKE pod (no AWS identity at all: AWS variables only point at the sandbox)."""
    return gke


@pytest.fixture
def on_aks(pod: Pod, aks: Aks) -> Aks:
    aks.workload_identity()
    return aks


def _read_a(hook: AwsWorkloadIdentityHook, sandbox: AwsSandbox) -> bytes:
    sc = sandbox.scenario
    return bytes(hook.get_client("s3").get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)["Body"].read())


# -- GCP -> AWS -------------------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_gcp_to_aws_reads_s3_with_the_google_id_token(
    on_gke: GcpSandbox, aws_sandbox: AwsSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("gcp_to_aws", source="gcp", role_arn=federation.gcp_role))
    assert _read_a(hook, aws_sandbox) == aws_sandbox.scenario.bucket_a_body
    # Many hooks, one token and one web identity call: the chain is shared.
    for _ in range(3):
        _read_a(AwsWorkloadIdentityHook(aws_conn_id="gcp_to_aws"), aws_sandbox)
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert on_gke.calls("metadata_identity") == 1
    report = hook.whoami(verify=True)
    source, first = report.hops[0], report.hops[1]
    details = dict(source.details)
    assert source.principal == on_gke.scenario.source_sa
    assert details["token iss"] == GOOGLE_ISSUER
    assert details["token sub"] == federation.google_uid
    assert details["token aud"] == "sts.amazonaws.com"
    assert first.method == "sts:AssumeRoleWithWebIdentity"
    assert ":assumed-role/fed-gcp-reader/" in first.principal
    assert "verified now" in report.one_line()


def test_gcp_to_aws_official_s3hook_and_a_chained_role(
    on_gke: GcpSandbox,
    aws_sandbox: AwsSandbox,
    federation: Federation,
    connection: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("airflow.providers.amazon")
    from airflow.providers.amazon.aws.hooks import base_aws
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_workload_identity.aws.interop import WorkloadIdentitySessionFactory

    monkeypatch.setattr(base_aws, "SessionFactory", WorkloadIdentitySessionFactory)
    sc = aws_sandbox.scenario
    conn = connection(
        "gcp_chain",
        source="gcp",
        role_chain=[federation.gcp_role],
        role_arn=federation.target_role,
        external_id=sc.external_id,
    )
    assert S3Hook(aws_conn_id=conn).read_key(sc.bucket_a_key, bucket_name=sc.bucket_a) == sc.bucket_a_body.decode()
    report = AwsWorkloadIdentityHook(aws_conn_id=conn).whoami()
    assert [h.method for h in report.hops[1:]] == ["sts:AssumeRoleWithWebIdentity", "sts:AssumeRole"]
    assert ":assumed-role/fed-target/" in report.final.principal
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1 and aws_sandbox.calls("AssumeRole") == 1


def test_gcp_to_aws_wrong_audience_names_aws_and_prints_the_trust_statement(
    on_gke: GcpSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("gcp_wrong_aud", source="gcp", role_arn=federation.gcp_role, source_audience="api://not-aws")
    with pytest.raises(AccessDenied) as caught:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = str(caught.value)
    assert caught.value.hop == 1 and caught.value.permission == "sts:AssumeRoleWithWebIdentity"
    assert "The AWS side (STS" in text and "aud=api://not-aws" in text
    assert '"accounts.google.com:oaud": "api://not-aws"' in text  # the statement matching the live token
    assert "source_audience" in text


def test_gcp_to_aws_wrong_subject_prints_the_statement_with_the_live_subject(
    on_gke: GcpSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("gcp_wrong_sub", source="gcp", role_arn=federation.gcp_wrong_subject_role)
    with pytest.raises(AccessDenied) as caught:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = str(caught.value)
    assert f'"accounts.google.com:sub": "{federation.google_uid}"' in text
    assert "fed-gcp-other-subject" in text and on_gke.scenario.source_sa in text


def test_gcp_to_aws_untrusted_issuer(
    on_gke: GcpSandbox, aws_sandbox: AwsSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    from dev.sandbox import _fed_aws_trust

    conn = connection("gcp_untrusted", source="gcp", role_arn=federation.gcp_role)
    _fed_aws_trust.untrust_issuer(aws_sandbox._state, GOOGLE_ISSUER)
    try:
        with pytest.raises(AccessDenied) as caught:
            AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    finally:
        aws_sandbox.trust_issuer(GOOGLE_ISSUER, on_gke.google_jwks_url)
    assert caught.value.cloud_code == "InvalidIdentityToken"
    assert "STS does not trust the issuer https://accounts.google.com" in str(caught.value)


def test_gcp_to_aws_policy_from_the_live_token(
    on_gke: GcpSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("gcp_policy", source="gcp", role_arn=federation.gcp_role)
    plan = AwsWorkloadIdentityHook(aws_conn_id=conn).policy_plan()
    statement = next(s for s in plan.steps if s.kind == "trust_statement").content
    assert statement["Principal"] == {"Federated": "accounts.google.com"}
    assert statement["Condition"]["StringEquals"] == {
        "accounts.google.com:aud": federation.google_uid,
        "accounts.google.com:oaud": "sts.amazonaws.com",
        "accounts.google.com:sub": federation.google_uid,
    }
    assert not [s for s in plan.steps if s.kind == "command"]  # Google is built in: no OIDC provider to create
    assert on_gke.scenario.source_sa in plan.text()


# -- Azure -> AWS -----------------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_azure_to_aws_reads_s3_with_the_entra_token(
    on_aks: Aks, aws_sandbox: AwsSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("azure_to_aws", source="azure", role_arn=federation.azure_role, source_audience=ENTRA_AUDIENCE)
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    assert _read_a(hook, aws_sandbox) == aws_sandbox.scenario.bucket_a_body
    for _ in range(3):
        _read_a(AwsWorkloadIdentityHook(aws_conn_id=conn), aws_sandbox)
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert on_aks.sandbox.calls("entra") == 1
    report = hook.whoami()
    details = dict(report.hops[0].details)
    assert details["token iss"] == federation.entra_issuer
    assert details["token sub"] == federation.entra_object_id
    assert details["token aud"] == ENTRA_AUDIENCE
    assert "system:serviceaccount:" in details["federated from"]
    assert report.hops[1].method == "sts:AssumeRoleWithWebIdentity"
    assert ":assumed-role/fed-azure-reader/" in report.final.principal


def test_azure_to_aws_official_s3hook(
    on_aks: Aks,
    aws_sandbox: AwsSandbox,
    federation: Federation,
    connection: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("airflow.providers.amazon")
    from airflow.providers.amazon.aws.hooks import base_aws
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_workload_identity.aws.interop import WorkloadIdentitySessionFactory

    monkeypatch.setattr(base_aws, "SessionFactory", WorkloadIdentitySessionFactory)
    sc = aws_sandbox.scenario
    conn = connection("azure_s3hook", source="azure", role_arn=federation.azure_role, source_audience=ENTRA_AUDIENCE)
    assert S3Hook(aws_conn_id=conn).read_key(sc.bucket_a_key, bucket_name=sc.bucket_a) == sc.bucket_a_body.decode()


def test_azure_to_aws_wrong_audience_names_the_provider_client_id(
    on_aks: Aks, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("azure_wrong_aud", source="azure", role_arn=federation.azure_role, source_audience="api://other")
    with pytest.raises(AccessDenied) as caught:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = str(caught.value)
    assert caught.value.cloud_code == "InvalidIdentityToken"
    assert "aws iam add-client-id-to-open-id-connect-provider" in text and "--client-id api://other" in text
    assert "The AWS side (STS" in text


def test_azure_to_aws_wrong_subject(on_aks: Aks, federation: Federation, connection: Callable[..., str]) -> None:
    conn = connection(
        "azure_wrong_sub", source="azure", role_arn=federation.azure_wrong_subject_role, source_audience=ENTRA_AUDIENCE
    )
    with pytest.raises(AccessDenied) as caught:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = str(caught.value)
    prefix = federation.entra_issuer.removeprefix("https://")
    assert f'"{prefix}:sub": "{federation.entra_object_id}"' in text
    assert "fed-azure-other-subject" in text


def test_azure_to_aws_untrusted_issuer_prints_the_provider_command(
    on_aks: Aks, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection(
        "azure_untrusted", source="azure", role_arn=federation.azure_untrusted_role, source_audience=ENTRA_AUDIENCE
    )
    with pytest.raises(AccessDenied) as caught:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials()
    text = str(caught.value)
    assert caught.value.cloud_code == "InvalidIdentityToken"
    assert f"aws iam create-open-id-connect-provider --url {federation.entra_issuer}" in text
    assert f"--client-id-list {ENTRA_AUDIENCE}" in text


def test_azure_to_aws_policy_from_the_live_token(
    on_aks: Aks, federation: Federation, connection: Callable[..., str]
) -> None:
    conn = connection("azure_policy", source="azure", role_arn=federation.azure_role, source_audience=ENTRA_AUDIENCE)
    plan = AwsWorkloadIdentityHook(aws_conn_id=conn).policy_plan()
    command = next(s for s in plan.steps if s.kind == "command").content
    assert f"--url {federation.entra_issuer} --client-id-list {ENTRA_AUDIENCE}" in command
    statement = next(s for s in plan.steps if s.kind == "trust_statement").content
    prefix = federation.entra_issuer.removeprefix("https://")
    assert statement["Condition"]["StringEquals"] == {
        f"{prefix}:aud": ENTRA_AUDIENCE,
        f"{prefix}:sub": federation.entra_object_id,
    }


def test_azure_to_aws_async_credentials_share_the_sync_chain(
    on_aks: Aks, aws_sandbox: AwsSandbox, federation: Federation, connection: Callable[..., str]
) -> None:
    import asyncio

    conn = connection("azure_async", source="azure", role_arn=federation.azure_role, source_audience=ENTRA_AUDIENCE)
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    source = hook.chain.federation
    assert source is not None

    async def both() -> tuple[Any, Any]:
        creds = await hook.get_async_credentials().get_frozen_credentials()
        return creds, await source.aget()

    frozen, token = asyncio.run(both())
    assert frozen.access_key == hook.get_credentials().get_frozen_credentials().access_key
    assert token is source.get() and token.audience == ENTRA_AUDIENCE
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1 and on_aks.sandbox.calls("entra") == 1
    assert token.token not in repr(token) and token.token not in repr(hook.whoami().to_dict())


def test_policy_as_is_refused_for_a_cross_cloud_source(federation: Federation) -> None:
    from airflow_workload_identity.attribution import RunContext
    from airflow_workload_identity.aws.policy import plan_as
    from airflow_workload_identity.aws.spec import AwsIdentitySpec

    spec = AwsIdentitySpec.from_extra({"source": "gcp", "role_arn": federation.gcp_role})
    with pytest.raises(ConfigError) as caught:
        plan_as(spec, "arn:aws:iam::111111111111:role/x", RunContext.current("c"))
    assert caught.value.field == "--as" and "live token" in caught.value.fix


def test_bad_federation_fields_are_refused_before_any_request(
    on_gke: GcpSandbox, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    for extra, field in (
        ({"source": "azure", "role_arn": "arn:aws:iam::123456789012:role/r"}, "source_audience"),
        ({"source": "gcp"}, "role_arn"),
        ({"source": "gcp", "role_arn": "arn:aws:iam::123456789012:role/r", "source_mode": "imds"}, "source_mode"),
        ({"source": "gcp", "role_arn": "arn:aws:iam::123456789012:role/r", "external_id": "abcdef"}, "external_id"),
    ):
        conn = connection("bad_fed", **extra)
        with pytest.raises(ConfigError) as caught:
            AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials()
        assert caught.value.field == field
    assert aws_sandbox.calls() == 0 and on_gke.calls() == 0
