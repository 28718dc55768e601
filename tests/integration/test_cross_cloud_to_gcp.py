"""Cross-cloud to Google Cloud: AWS -> GCP and Azure -> GCP, end to end over loopback (moto, the GCP fakes with
Google's STS, the Entra fake), through ``GcpWorkloadIdentityHook`` and the official ``GCSHook``.

The AWS source (``federation/aws.py``): JWTs from STS ``GetWebIdentityToken`` signed by the account's
outbound issuer (JWKS served by the AWS sandbox), and google-auth's AWS supplier on the shared credentials.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Iterator

import jwt
import pytest
from google.cloud import storage

from airflow_workload_identity.errors import AccessDenied, ConfigError
from airflow_workload_identity.federation.aws import aws_credentials_supplier, aws_web_identity_token_source
from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox
from dev.sandbox import _fed_aws_outbound as outbound
from dev.sandbox.gcp import AMBIENT_GCP_VARIABLES
from tests.fixtures_aws import Pod
from tests.fixtures_azure import Aks

ENTRA = "api://AzureADTokenExchange"


@pytest.fixture
def outbound_allowed(aws_sandbox: AwsSandbox) -> Iterator[dict[str, object]]:
    """pod-base may mint web identity tokens for the Entra audience (at most 900 s)."""
    statement = outbound.allow_web_identity_token(aws_sandbox, audiences=[ENTRA], max_duration=900)
    yield statement
    outbound.allow_web_identity_token(aws_sandbox, audiences=[])


def _verify(sandbox: AwsSandbox, token: str, audience: str) -> dict[str, object]:
    with urllib.request.urlopen(outbound.jwks_url(sandbox), timeout=5) as answer:
        keys = jwt.PyJWKSet.from_dict(json.load(answer))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return dict(
        jwt.decode(
            token, key.key, algorithms=["RS256", "ES384"], audience=audience, issuer=outbound.issuer_url(sandbox)
        )
    )


def test_aws_web_identity_token_is_signed_by_the_accounts_outbound_issuer(
    pod: Pod, aws_sandbox: AwsSandbox, outbound_allowed: dict[str, object]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    source = aws_web_identity_token_source(ENTRA)
    token = source.get()
    claims = _verify(aws_sandbox, token.token, ENTRA)  # signature, iss, aud, exp checked with the served JWKS
    assert claims["sub"] == sc.pod_base_role_arn == token.principal
    assert token.issuer.endswith(".tokens.sts.global.api.aws")
    assert token.token not in repr(token)
    assert source.get() is token  # shared while fresh
    assert aws_source_calls(aws_sandbox) == {"AssumeRoleWithWebIdentity": 1, "GetWebIdentityToken": 1}
    hop = source.describe()
    details = dict(hop.details)
    assert hop.principal == sc.pod_base_role_arn
    assert details["token iss"] == token.issuer
    assert details["token aud"] == ENTRA
    assert details["AWS session"].startswith(f"arn:aws:sts::{sc.platform_account}:assumed-role/pod-base/")


def test_es384_and_lifetime(pod: Pod, aws_sandbox: AwsSandbox, outbound_allowed: dict[str, object]) -> None:
    pod.irsa()
    token = aws_web_identity_token_source(ENTRA, duration_seconds=900, signing_algorithm="ES384").get()
    assert jwt.get_unverified_header(token.token)["alg"] == "ES384"
    _verify(aws_sandbox, token.token, ENTRA)
    assert 880 < token.seconds_left() <= 900


def test_role_without_the_statement_is_refused_naming_the_aws_side(pod: Pod, aws_sandbox: AwsSandbox) -> None:
    outbound.allow_web_identity_token(aws_sandbox, audiences=[])
    pod.irsa()
    with pytest.raises(AccessDenied) as err:
        aws_web_identity_token_source(ENTRA).get()
    text = str(err.value)
    assert err.value.cloud_code == "AccessDenied"
    assert "The AWS side refused" in text
    assert '"sts:IdentityTokenAudience":["api://AzureADTokenExchange"]' in text
    assert "aws iam put-role-policy --role-name pod-base" in text


def test_audience_and_lifetime_outside_the_statement_are_refused(
    pod: Pod, aws_sandbox: AwsSandbox, outbound_allowed: dict[str, object]
) -> None:
    pod.irsa()
    with pytest.raises(AccessDenied, match="sts:GetWebIdentityToken"):
        aws_web_identity_token_source("api://someone-else").get()
    with pytest.raises(AccessDenied, match='"sts:DurationSeconds": "1800"'):
        aws_web_identity_token_source(ENTRA, duration_seconds=1800).get()


def test_supplier_hands_google_auth_the_shared_aws_credentials(pod: Pod, aws_sandbox: AwsSandbox) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    supplier = aws_credentials_supplier()
    first = supplier.get_aws_security_credentials(None, None)
    again = supplier.get_aws_security_credentials(None, None)
    assert first == again and first.session_token
    assert supplier.get_aws_region(None, None) == sc.region
    assert (supplier.principal() or "").startswith(f"arn:aws:sts::{sc.platform_account}:assumed-role/pod-base/")
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert first.secret_access_key not in repr(supplier)


def aws_source_calls(sandbox: AwsSandbox) -> dict[str, int]:
    return {k: v for k, v in sandbox.calls_by_action().items() if v}


# -- AWS -> GCP and Azure -> GCP through the hook ------------------------------------------------------------

POOL_PROJECT = "200000000002"  # the customer project's number (GcpScenario.customer_project_number)
AWS_PROVIDER = f"projects/{POOL_PROJECT}/locations/global/workloadIdentityPools/aws-pool/providers/aws-prov"
OIDC_PROVIDER = f"projects/{POOL_PROJECT}/locations/global/workloadIdentityPools/oidc-pool/providers/aws-jwt"
AZURE_PROVIDER = f"projects/{POOL_PROJECT}/locations/global/workloadIdentityPools/azure-pool/providers/entra"
POOLS = "principalSet://iam.googleapis.com/projects/" + POOL_PROJECT + "/locations/global/workloadIdentityPools"
ENTRA_APP = "api://gcp-federation"


@pytest.fixture
def google(gcp_sandbox: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcpSandbox]:
    """Google Cloud as seen from a pod on another cloud: no GKE metadata server, only the GCS front's address."""
    gcp_sandbox.reset()
    gcp_sandbox.reset_calls()
    for name in AMBIENT_GCP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in gcp_sandbox.env_isolation().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_sandbox.storage_host)
    yield gcp_sandbox
    gcp_sandbox.reset()


@pytest.fixture
def aws_pod(pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox) -> Pod:
    """An EKS pod (IRSA as pod-base) whose Google side has an AWS provider trusting the platform account."""
    google.federation.trust_aws(aws_sandbox.endpoint_url)
    google.federation.add_aws_provider(AWS_PROVIDER, account_id=aws_sandbox.scenario.platform_account)
    pod.irsa()
    return pod


def role_set(aws_sandbox: AwsSandbox) -> str:
    """Every session of pod-base: the AWS provider's default ``attribute.aws_role`` member."""
    account = aws_sandbox.scenario.platform_account
    return f"{POOLS}/aws-pool/attribute.aws_role/arn:aws:sts::{account}:assumed-role/pod-base"


def aws_provider_command(verb: str, aws_sandbox: AwsSandbox) -> str:
    account = aws_sandbox.scenario.platform_account
    return f"{verb}-aws aws-prov --location=global --workload-identity-pool=aws-pool --account-id={account}"


def federated(gcp_connection: Callable[..., str], google: GcpSandbox, name: str, **extra: object) -> str:
    extra.setdefault("sts_endpoint_url", google.sts_endpoint)
    extra.setdefault("project_id", google.scenario.customer_project)
    return gcp_connection(name, **extra)


def client(hook: GcpWorkloadIdentityHook, sb: GcpSandbox) -> storage.Client:
    return storage.Client(
        credentials=hook.get_credentials(), project=hook.project_id, client_options={"api_endpoint": sb.storage_host}
    )


def read(hook: GcpWorkloadIdentityHook, sb: GcpSandbox, bucket: str, name: str) -> bytes:
    return bytes(client(hook, sb).bucket(bucket).blob(name).download_as_bytes())


@pytest.mark.smoke
def test_aws_to_gcp_reads_gcs_by_impersonation_and_shares_every_token(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = google.scenario
    google.federation.allow_impersonation(role_set(aws_sandbox), sc.reader_sa)
    conn = federated(
        gcp_connection,
        google,
        "aws_to_gcp",
        source="aws",
        workload_identity_provider=AWS_PROVIDER,
        impersonation_chain=[sc.reader_sa],
    )
    for _ in range(2):
        assert read(GcpWorkloadIdentityHook(gcp_conn_id=conn), google, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    assert google.federation.calls["token"] == 1
    assert google.calls("generateAccessToken") == 1
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1

    report = GcpWorkloadIdentityHook(gcp_conn_id=conn).whoami()
    aws_hop, federated_hop, target = report.hops
    assert aws_hop.principal.startswith(f"arn:aws:sts::{aws_sandbox.scenario.platform_account}:assumed-role/pod-base/")
    assert (
        federated_hop.principal == f"{POOLS.replace('principalSet', 'principal')}/aws-pool/subject/{aws_hop.principal}"
    )
    details = dict(federated_hop.details)
    assert details["provider"] == AWS_PROVIDER
    assert details["attribute.aws_role"].endswith(":assumed-role/pod-base")
    assert (target.index, target.principal) == (2, sc.reader_sa)
    assert google.federation.calls["token"] == 1  # whoami reused the shared tokens


def test_aws_to_gcp_direct_federated_access_and_the_denied_bucket(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    from google.api_core.exceptions import Forbidden

    sc = google.scenario
    google.grant_storage(role_set(aws_sandbox), sc.bucket_a, "roles/storage.objectViewer", "storage.buckets.get")
    conn = federated(gcp_connection, google, "aws_direct", source="aws", workload_identity_provider=AWS_PROVIDER)
    hook = GcpWorkloadIdentityHook(gcp_conn_id=conn)
    assert read(hook, google, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    with pytest.raises(Forbidden) as err:
        read(hook, google, sc.bucket_b, sc.bucket_b_key)
    fix = hook.explain_access_denied(err.value, bucket=sc.bucket_b)
    assert f'--member="{POOLS.replace("principalSet", "principal")}/aws-pool/subject/arn:aws:sts::' in fix
    assert google.calls("generateAccessToken") == 0  # no impersonation: the federated token itself
    # a trigger's path: the shared federated token without a thread while fresh, no second exchange
    assert asyncio.run(hook.get_access_token_async()) == hook.get_access_token()
    assert google.federation.calls["token"] == 1
    ok, message = hook.test_connection()
    assert ok and "Google STS issued a federated token" in message, message


def test_aws_to_gcp_provider_for_another_account_is_the_google_side_refusing(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    google.federation.add_aws_provider(AWS_PROVIDER, account_id=aws_sandbox.scenario.other_account)
    conn = federated(gcp_connection, google, "aws_wrong", source="aws", workload_identity_provider=AWS_PROVIDER)
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    text = str(err.value)
    assert err.value.cloud_code == "invalid_grant" and err.value.hop == 1
    assert "The Google Cloud side (workload identity pool provider) refused" in text
    assert aws_provider_command("update", aws_sandbox) in text


def test_aws_to_gcp_missing_provider_prints_the_one_to_create(
    pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    google.federation.trust_aws(aws_sandbox.endpoint_url)  # no provider: the pool does not trust AWS at all
    pod.irsa()
    conn = federated(gcp_connection, google, "aws_untrusted", source="aws", workload_identity_provider=AWS_PROVIDER)
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "invalid_target"
    assert aws_provider_command("create", aws_sandbox) in str(err.value)


def test_aws_to_gcp_condition_rejecting_the_role_shows_its_subject(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    account = aws_sandbox.scenario.platform_account
    google.federation.add_aws_provider(
        AWS_PROVIDER, account_id=account, condition=f"attribute.aws_role == 'arn:aws:sts::{account}:assumed-role/other'"
    )
    conn = federated(gcp_connection, google, "aws_cond", source="aws", workload_identity_provider=AWS_PROVIDER)
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "unauthorized_client"
    assert f"google.subject == 'arn:aws:sts::{account}:assumed-role/pod-base/" in str(err.value)


def test_aws_to_gcp_impersonation_not_granted_prints_the_workload_identity_user_binding(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = google.scenario
    conn = federated(
        gcp_connection,
        google,
        "aws_no_wiu",
        source="aws",
        workload_identity_provider=AWS_PROVIDER,
        impersonation_chain=[sc.reader_sa],
    )
    hook = GcpWorkloadIdentityHook(gcp_conn_id=conn)
    with pytest.raises(AccessDenied) as err:
        hook.get_access_token()
    text = str(err.value)
    assert err.value.hop == 2 and "The Google Cloud side refused" in text
    assert (
        f"gcloud iam service-accounts add-iam-policy-binding {sc.reader_sa} --role=roles/iam.workloadIdentityUser "
        f'--member="{role_set(aws_sandbox)}"'
    ) in text
    plan = hook.policy()  # the same binding, and the provider, from the live caller
    assert f'--member="{role_set(aws_sandbox)}"' in plan
    assert aws_provider_command("create", aws_sandbox) in plan


def test_aws_to_gcp_with_gcshook(
    aws_pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    pytest.importorskip("airflow.providers.google", reason="the official Google provider is not installed")
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from airflow_workload_identity.gcp.interop import install, uninstall

    sc = google.scenario
    google.federation.allow_impersonation(role_set(aws_sandbox), sc.reader_sa)
    conn = federated(
        gcp_connection,
        google,
        "aws_gcshook",
        source="aws",
        workload_identity_provider=AWS_PROVIDER,
        impersonation_chain=[sc.reader_sa],
    )
    install()
    try:
        assert GCSHook(gcp_conn_id=conn).download(sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    finally:
        uninstall()
    assert google.federation.calls["token"] == 1


@pytest.fixture
def outbound_oidc(google: GcpSandbox, aws_sandbox: AwsSandbox) -> Iterator[str]:
    """An OIDC provider trusting the platform account's outbound issuer (JWKS over loopback); pod-base may
    mint tokens for Google's default audience. Yields that audience."""
    audience = f"https://iam.googleapis.com/{OIDC_PROVIDER}"
    google.federation.add_oidc_provider(
        OIDC_PROVIDER, issuer_uri=outbound.issuer_url(aws_sandbox), jwks_uri=outbound.jwks_url(aws_sandbox)
    )
    outbound.allow_web_identity_token(aws_sandbox, audiences=[audience, "api://not-google"], max_duration=300)
    yield audience
    outbound.allow_web_identity_token(aws_sandbox, audiences=[])


def test_aws_web_identity_token_to_gcp_and_its_claims_in_whoami(
    pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, outbound_oidc: str, gcp_connection: Callable[..., str]
) -> None:
    sc = google.scenario
    pod.irsa()
    member = f"{POOLS.replace('principalSet', 'principal')}/oidc-pool/subject/{aws_sandbox.scenario.pod_base_role_arn}"
    google.grant_storage(member, sc.bucket_a, "roles/storage.objectViewer", "storage.buckets.get")
    conn = federated(
        gcp_connection,
        google,
        "aws_jwt",
        source="aws",
        workload_identity_provider=OIDC_PROVIDER,
        aws_proof="web_identity_token",
    )
    hook = GcpWorkloadIdentityHook(gcp_conn_id=conn)
    assert read(hook, google, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    aws_hop, federated_hop = hook.whoami().hops
    details = dict(aws_hop.details)
    assert details["token iss"] == outbound.issuer_url(aws_sandbox)
    assert details["token sub"] == aws_sandbox.scenario.pod_base_role_arn
    assert details["token aud"] == outbound_oidc
    assert federated_hop.principal == member
    assert aws_sandbox.calls("GetWebIdentityToken") == 1


def test_aws_web_identity_token_with_an_audience_the_provider_does_not_allow(
    pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, outbound_oidc: str, gcp_connection: Callable[..., str]
) -> None:
    pod.irsa()
    conn = federated(
        gcp_connection,
        google,
        "aws_jwt_aud",
        source="aws",
        workload_identity_provider=OIDC_PROVIDER,
        aws_proof="web_identity_token",
        source_audience="api://not-google",
    )
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "invalid_grant" and "audience" in err.value.cloud_message
    assert '--allowed-audiences="api://not-google"' in str(err.value)


def test_aws_web_identity_token_from_an_untrusted_issuer(
    pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, outbound_oidc: str, gcp_connection: Callable[..., str]
) -> None:
    google.federation.add_oidc_provider(
        OIDC_PROVIDER,
        issuer_uri="https://someone-else.tokens.sts.global.api.aws",
        jwks_uri=outbound.jwks_url(aws_sandbox),
    )
    pod.irsa()
    conn = federated(
        gcp_connection,
        google,
        "aws_jwt_iss",
        source="aws",
        workload_identity_provider=OIDC_PROVIDER,
        aws_proof="web_identity_token",
    )
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "invalid_grant" and "issuer" in err.value.cloud_message
    assert f'--issuer-uri="{outbound.issuer_url(aws_sandbox)}"' in str(err.value)


def test_a_google_sts_override_not_allowed_is_refused_before_any_request(
    pod: Pod, google: GcpSandbox, aws_sandbox: AwsSandbox, gcp_connection: Callable[..., str]
) -> None:
    pod.irsa()
    conn = federated(
        gcp_connection,
        google,
        "aws_sts_host",
        source="aws",
        workload_identity_provider=AWS_PROVIDER,
        sts_endpoint_url="https://sts.googleapis.com.example.net",
    )
    with pytest.raises(ConfigError) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.field == "sts_endpoint_url"
    assert google.federation.calls["token"] == 0 and aws_sandbox.calls() == 0


# -- Azure -> GCP ---------------------------------------------------------------------------------------------


@pytest.fixture
def azure_pod(aks: Aks, google: GcpSandbox, azure_sandbox: AzureSandbox) -> Aks:
    """An AKS pod (workload identity) whose Google side has an OIDC provider trusting its Entra tenant."""
    tenant = azure_sandbox.scenario.tenant_id
    google.federation.add_oidc_provider(
        AZURE_PROVIDER,
        issuer_uri=f"https://sts.windows.net/{tenant}/",
        jwks_uri=f"{azure_sandbox.authority_host}/{tenant}/discovery/v2.0/keys",
        allowed_audiences=[ENTRA_APP],
        cafile=str(azure_sandbox.ca_bundle),
    )
    aks.workload_identity()
    return aks


def entra_member(azure_sandbox: AzureSandbox) -> str:
    object_id = azure_sandbox.scenario.workload_object_id
    return f"{POOLS.replace('principalSet', 'principal')}/azure-pool/subject/{object_id}"


@pytest.mark.smoke
def test_azure_to_gcp_reads_gcs_by_impersonation(
    azure_pod: Aks, google: GcpSandbox, azure_sandbox: AzureSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = google.scenario
    google.federation.allow_impersonation(entra_member(azure_sandbox), sc.reader_sa)
    conn = federated(
        gcp_connection,
        google,
        "azure_to_gcp",
        source="azure",
        workload_identity_provider=AZURE_PROVIDER,
        source_audience=ENTRA_APP,
        impersonation_chain=[sc.reader_sa],
    )
    for _ in range(2):
        assert read(GcpWorkloadIdentityHook(gcp_conn_id=conn), google, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    assert google.federation.calls["token"] == 1 and google.calls("generateAccessToken") == 1
    azure_hop, federated_hop, target = GcpWorkloadIdentityHook(gcp_conn_id=conn).whoami().hops
    details = dict(azure_hop.details)
    assert details["token iss"] == f"https://sts.windows.net/{azure_sandbox.scenario.tenant_id}/"
    assert details["token sub"] == azure_sandbox.scenario.workload_object_id
    assert details["token aud"] == ENTRA_APP
    assert federated_hop.principal == entra_member(azure_sandbox)
    assert target.principal == sc.reader_sa


def test_azure_to_gcp_direct_access_and_policy(
    azure_pod: Aks, google: GcpSandbox, azure_sandbox: AzureSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = google.scenario
    google.grant_storage(entra_member(azure_sandbox), sc.bucket_a, "roles/storage.objectViewer", "storage.buckets.get")
    conn = federated(
        gcp_connection,
        google,
        "azure_direct",
        source="azure",
        workload_identity_provider=AZURE_PROVIDER,
        source_audience=ENTRA_APP,
    )
    hook = GcpWorkloadIdentityHook(gcp_conn_id=conn)
    assert read(hook, google, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    plan = hook.policy()
    tenant = azure_sandbox.scenario.tenant_id
    assert (
        "create-oidc entra --location=global --workload-identity-pool=azure-pool "
        f'--issuer-uri="https://sts.windows.net/{tenant}/" --allowed-audiences="{ENTRA_APP}"'
    ) in plan
    assert f'--member="{entra_member(azure_sandbox)}"' in plan
    assert f"--identifier-uris {ENTRA_APP}" in plan


def test_azure_to_gcp_wrong_audience(azure_pod: Aks, google: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    conn = federated(
        gcp_connection,
        google,
        "azure_aud",
        source="azure",
        workload_identity_provider=AZURE_PROVIDER,
        source_audience="api://another-app",
    )
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "invalid_grant" and "audience" in err.value.cloud_message
    assert '--allowed-audiences="api://another-app"' in str(err.value)


def test_azure_to_gcp_wrong_subject(
    azure_pod: Aks, google: GcpSandbox, azure_sandbox: AzureSandbox, gcp_connection: Callable[..., str]
) -> None:
    tenant = azure_sandbox.scenario.tenant_id
    google.federation.add_oidc_provider(
        AZURE_PROVIDER,
        issuer_uri=f"https://sts.windows.net/{tenant}/",
        jwks_uri=f"{azure_sandbox.authority_host}/{tenant}/discovery/v2.0/keys",
        allowed_audiences=[ENTRA_APP],
        condition=f"google.subject == '{azure_sandbox.scenario.node_object_id}'",
        cafile=str(azure_sandbox.ca_bundle),
    )
    conn = federated(
        gcp_connection,
        google,
        "azure_sub",
        source="azure",
        workload_identity_provider=AZURE_PROVIDER,
        source_audience=ENTRA_APP,
    )
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "unauthorized_client"
    assert f"google.subject == '{azure_sandbox.scenario.workload_object_id}'" in str(err.value)


def test_azure_to_gcp_untrusted_tenant(
    aks: Aks, google: GcpSandbox, azure_sandbox: AzureSandbox, gcp_connection: Callable[..., str]
) -> None:
    other = azure_sandbox.scenario.other_tenant_id
    google.federation.add_oidc_provider(
        AZURE_PROVIDER,
        issuer_uri=f"https://sts.windows.net/{other}/",
        jwks_uri=f"{azure_sandbox.authority_host}/{other}/discovery/v2.0/keys",
        allowed_audiences=[ENTRA_APP],
        cafile=str(azure_sandbox.ca_bundle),
    )
    aks.workload_identity()
    conn = federated(
        gcp_connection,
        google,
        "azure_iss",
        source="azure",
        workload_identity_provider=AZURE_PROVIDER,
        source_audience=ENTRA_APP,
    )
    with pytest.raises(AccessDenied) as err:
        GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert err.value.cloud_code == "invalid_grant" and "issuer" in err.value.cloud_message
    tenant = azure_sandbox.scenario.tenant_id
    assert f'--issuer-uri="https://sts.windows.net/{tenant}/"' in str(err.value)


def test_the_secrets_backend_checks_the_google_sts_override_too(google: GcpSandbox) -> None:
    from airflow_workload_identity.gcp.secrets import SecretManagerBackend

    with pytest.raises(ConfigError) as err:
        SecretManagerBackend(
            source="aws",
            workload_identity_provider=AWS_PROVIDER,
            sts_endpoint_url="https://sts.googleapis.com.example.net",
            project_id=google.scenario.customer_project,
        )
    assert err.value.field == "sts_endpoint_url"
    assert google.federation.calls["token"] == 0
