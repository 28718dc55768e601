"""Cross-cloud to Azure: a pod on GKE or EKS reads Azure Blob storage with no secret.

The target is an ``azure_workload_identity`` connection with ``source: gcp`` or ``source: aws``: the pod's
Google ID token / AWS ``GetWebIdentityToken`` JWT is the client assertion (azure-identity's
``ClientAssertionCredential``) for the user-assigned identity's federated credential. The Entra fake checks
issuer, subject and audience exactly and verifies the signature with keys it fetches from the source
sandbox's JWKS over loopback; the blob front checks the Entra token and RBAC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from airflow_workload_identity.azure import AzureWorkloadIdentityHook
from airflow_workload_identity.errors import AccessDenied, ConfigError, IdentityUnavailable
from airflow_workload_identity.federation.gcp import GOOGLE_ISSUER
from dev.sandbox import _fed_aws_outbound as outbound
from tests.fixtures_aws import Pod
from tests.fixtures_azure import Aks

if TYPE_CHECKING:
    from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox

AUDIENCE = "api://AzureADTokenExchange"
STORAGE = "https://storage.azure.com/.default"


def blobs(hook: AzureWorkloadIdentityHook, sb: AzureSandbox) -> BlobServiceClient:
    return BlobServiceClient(sb.blob_account_url, credential=hook.get_credential(), retry_total=0)


def read_a(hook: AzureWorkloadIdentityHook, sb: AzureSandbox) -> bytes:
    sc = sb.scenario
    return bytes(blobs(hook, sb).get_blob_client(sc.container_a, sc.blob_a_name).download_blob().readall())


# -- GCP -> Azure ----------------------------------------------------------------------------------------------


class GkeToAzure:
    """A GKE pod (the GCP sandbox's metadata server) whose Google service account Entra trusts."""

    def __init__(self, gke: GcpSandbox, azure: AzureSandbox, define: Callable[..., str]) -> None:
        self.gke = gke
        self.azure = azure
        self._define = define
        self.account = gke.scenario.source_sa
        self.subject = gke.unique_id(self.account)
        self.client_id = azure.scenario.workload_client_id
        self.fics: list[str] = []

    def trust(self, *, subject: str | None = None, audience: str = AUDIENCE, issuer: str = GOOGLE_ISSUER) -> None:
        """``az identity federated-credential create`` on the workload identity for the Google account."""
        name = f"gke-{len(self.fics)}"
        self.azure.add_federated_credential(
            self.client_id, subject or self.subject, issuer=issuer, audience=audience, name=name
        )
        self.fics.append(name)

    def connection(self, conn_id: str = "gcp_to_azure", **extra: Any) -> str:
        extra = {
            "source": "gcp",
            "client_id": self.client_id,
            "tenant_id": self.azure.scenario.tenant_id,
            "authority_host": self.azure.authority_host,
            "scopes": [STORAGE],
            "identity_name": self.azure.scenario.workload_identity_name,
            "resource_group": self.azure.scenario.resource_group,
            **extra,
        }
        return self._define(conn_id, **extra)

    def cleanup(self) -> None:
        for name in self.fics:
            self.azure.remove_federated_credential(self.client_id, name)
        self.azure.remote_issuers.distrust(GOOGLE_ISSUER)


@pytest.fixture
def gke_to_azure(
    gke: GcpSandbox, aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> Iterator[GkeToAzure]:
    # Entra trusts Google's issuer: its keys come from the GCP sandbox's JWKS over loopback
    azure_sandbox.trust_issuer(GOOGLE_ISSUER, gke.google_jwks_url)
    setup = GkeToAzure(gke, azure_sandbox, azure_connection)
    try:
        yield setup
    finally:
        setup.cleanup()


@pytest.mark.smoke
def test_gcp_to_azure_reads_blob_with_one_token_request_per_side(gke_to_azure: GkeToAzure) -> None:
    setup, sb = gke_to_azure, gke_to_azure.azure
    setup.trust()
    conn = setup.connection()
    for _ in range(3):  # three hooks in one process share one credential
        assert read_a(AzureWorkloadIdentityHook(azure_conn_id=conn), sb) == sb.scenario.blob_a_body
    assert sb.calls("entra") == 1
    assert setup.gke.calls("metadata_identity") == 1
    assert sb.remote_issuers.fetches[GOOGLE_ISSUER] == 1  # Entra fetched Google's keys once
    entra = sb.call_log("entra")[-1]
    assert entra["client_id"] == setup.client_id and entra["status"] == 200
    # the identity's RBAC still applies: container B is not granted
    hook = AzureWorkloadIdentityHook(azure_conn_id=conn)
    with pytest.raises(HttpResponseError) as denied:
        blobs(hook, sb).get_blob_client(sb.scenario.container_b, sb.scenario.blob_b_name).download_blob()
    assert denied.value.status_code == 403
    # the async path reads what the sync path cached
    info = asyncio.run(hook.get_async_credential().get_token_info(STORAGE))
    assert info.token == hook.get_token(STORAGE)
    assert sb.calls("entra") == 1


def test_gcp_to_azure_through_the_official_wasbhook(gke_to_azure: GkeToAzure) -> None:
    pytest.importorskip("airflow.providers.microsoft.azure", reason="the official Azure provider is not installed")
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from airflow_workload_identity.azure.interop import install, uninstall

    setup, sc = gke_to_azure, gke_to_azure.azure.scenario
    setup.trust()
    conn = setup.connection()
    install()
    try:
        for _ in range(2):
            assert WasbHook(wasb_conn_id=conn).read_file(sc.container_a, sc.blob_a_name) == sc.blob_a_body.decode()
    finally:
        uninstall()
    assert setup.azure.calls("entra") == 1
    assert setup.gke.calls("metadata_identity") == 1


def test_gcp_to_azure_whoami_shows_both_clouds_and_policy_prints_the_federated_credential(
    gke_to_azure: GkeToAzure,
) -> None:
    setup, sc = gke_to_azure, gke_to_azure.azure.scenario
    setup.trust()
    hook = AzureWorkloadIdentityHook(azure_conn_id=setup.connection())
    report = hook.whoami()
    source, target = report.hops
    assert source.index == 0 and source.principal == setup.account
    details = dict(source.details)
    assert details["token iss"] == GOOGLE_ISSUER
    assert details["token sub"] == setup.subject
    assert details["token aud"] == AUDIENCE
    assert target.index == 1 and target.principal == f"object {sc.workload_object_id} in tenant {sc.tenant_id}"
    matched = dict(target.details)["federated credential matched"]
    assert matched == f"issuer {GOOGLE_ISSUER}, subject {setup.subject}, audience {AUDIENCE}"
    ok, line = hook.test_connection()
    assert ok and setup.account in line and sc.workload_object_id in line
    text = hook.policy()
    assert (
        f"az identity federated-credential create --name {setup.subject} --identity-name {sc.workload_identity_name} "
        f"--resource-group {sc.resource_group} --issuer {GOOGLE_ISSUER} --subject {setup.subject} "
        f"--audience {AUDIENCE}"
    ) in text
    assert f"az ad app federated-credential create --id {setup.client_id}" in text
    assert f"iss={GOOGLE_ISSUER} sub={setup.subject} aud={AUDIENCE}" in text
    assert setup.azure.calls("entra") == 1  # policy reads the live source token; it asks Entra nothing


def _refused(hook: AzureWorkloadIdentityHook) -> AccessDenied:
    with pytest.raises(AccessDenied) as refused:
        hook.get_token(STORAGE)
    return refused.value


def test_gcp_to_azure_wrong_audience_prints_the_fix_on_the_azure_side(gke_to_azure: GkeToAzure) -> None:
    setup = gke_to_azure
    setup.trust()  # the federated credential's audience is api://AzureADTokenExchange
    hook = AzureWorkloadIdentityHook(azure_conn_id=setup.connection(assertion_audience="api://airflow-gke"))
    error = _refused(hook)
    assert error.cloud_code == "AADSTS70021"
    assert "the Azure side" in str(error) and error.caller and setup.subject in error.caller
    assert f"--issuer {GOOGLE_ISSUER} --subject {setup.subject} --audience api://airflow-gke" in error.remediation
    assert "assertion_audience" in error.remediation
    assert setup.gke.verify_id_token(setup.gke.issued_secrets()[-1], "api://airflow-gke")["sub"] == setup.subject


def test_gcp_to_azure_wrong_subject_prints_the_federated_credential_for_this_account(
    gke_to_azure: GkeToAzure,
) -> None:
    setup = gke_to_azure
    other = setup.gke.add_service_account("someone-else@airflow-platform.iam.gserviceaccount.com")
    setup.trust(subject=setup.gke.unique_id("someone-else@airflow-platform.iam.gserviceaccount.com"))
    assert other
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection()))
    assert error.cloud_code == "AADSTS70021"
    assert f"Assertion Subject: '{setup.subject}'" in error.cloud_message
    assert f"--subject {setup.subject} --audience {AUDIENCE}" in error.remediation
    assert setup.azure.calls("entra") == 1  # refused once: not retried


def test_gcp_to_azure_untrusted_issuer(gke_to_azure: GkeToAzure) -> None:
    setup = gke_to_azure
    # no federated credential names Google's issuer: only the AKS cluster's exists
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection()))
    assert error.cloud_code == "AADSTS70021"
    assert f"Assertion Issuer: '{GOOGLE_ISSUER}'" in error.cloud_message
    assert f"--issuer {GOOGLE_ISSUER} --subject {setup.subject}" in error.remediation
    # a federated credential exists, but Entra cannot verify Google's signature (it does not trust its keys)
    setup.trust()
    setup.azure.remote_issuers.distrust(GOOGLE_ISSUER)
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection("gcp_to_azure_2")))
    assert error.cloud_code == "AADSTS700027"
    assert "could not verify its signature" in str(error) and GOOGLE_ISSUER in error.remediation


def test_gcp_to_azure_source_side_failure_names_the_metadata_server_and_sends_nothing_to_entra(
    gke_to_azure: GkeToAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    import google.auth.compute_engine._metadata as metadata

    setup = gke_to_azure
    setup.trust()
    monkeypatch.setattr(metadata, "_GCE_METADATA_HOST", "127.0.0.1:9", raising=False)
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    with pytest.raises(IdentityUnavailable) as unavailable:
        AzureWorkloadIdentityHook(azure_conn_id=setup.connection()).get_token(STORAGE)
    assert "GCE_METADATA_HOST" in str(unavailable.value)
    assert setup.azure.calls("entra") == 0


def test_cross_cloud_spec_errors_come_before_any_request(
    gke_to_azure: GkeToAzure, azure_connection: Callable[..., str]
) -> None:
    setup = gke_to_azure
    cases = {
        "client_id": setup.connection("no_client", client_id=None),
        "mode": setup.connection("with_mode", mode="workload_identity"),
        "aws_region": setup.connection("gcp_with_region", aws_region="us-east-1"),
        "assertion_audience": azure_connection("azure_with_audience", assertion_audience=AUDIENCE),
    }
    for field, conn in cases.items():
        with pytest.raises(ConfigError) as error:
            AzureWorkloadIdentityHook(azure_conn_id=conn).get_token(STORAGE)
        assert error.value.field == field
    assert setup.azure.calls("entra") == 0 and setup.gke.calls() == 0


# -- AWS -> Azure ----------------------------------------------------------------------------------------------


class EksToAzure:
    """An EKS pod (IRSA in the AWS sandbox) whose role's outbound web identity tokens Entra trusts."""

    def __init__(self, aws: AwsSandbox, azure: AzureSandbox, define: Callable[..., str]) -> None:
        self.aws = aws
        self.azure = azure
        self._define = define
        self.issuer = outbound.issuer_url(aws)
        self.role_arn = aws.scenario.pod_base_role_arn
        self.client_id = azure.scenario.workload_client_id
        self.fics: list[str] = []

    def trust(self, *, subject: str | None = None, audience: str = AUDIENCE) -> None:
        name = f"eks-{len(self.fics)}"
        self.azure.add_federated_credential(
            self.client_id, subject or self.role_arn, issuer=self.issuer, audience=audience, name=name
        )
        self.fics.append(name)

    def connection(self, conn_id: str = "aws_to_azure", **extra: Any) -> str:
        extra = {
            "source": "aws",
            "client_id": self.client_id,
            "tenant_id": self.azure.scenario.tenant_id,
            "authority_host": self.azure.authority_host,
            "scopes": [STORAGE],
            "identity_name": self.azure.scenario.workload_identity_name,
            "resource_group": self.azure.scenario.resource_group,
            **extra,
        }
        return self._define(conn_id, **extra)

    def cleanup(self) -> None:
        for name in self.fics:
            self.azure.remove_federated_credential(self.client_id, name)
        self.azure.remote_issuers.distrust(self.issuer)
        outbound.allow_web_identity_token(self.aws, audiences=[])


@pytest.fixture
def eks_to_azure(
    pod: Pod, aws_sandbox: AwsSandbox, aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> Iterator[EksToAzure]:
    # the AWS side: pod-base may mint tokens for Entra's audience, living at most 900 s
    outbound.allow_web_identity_token(aws_sandbox, audiences=[AUDIENCE, "api://airflow-eks"], max_duration=900)
    # the Azure side: Entra trusts the account's outbound issuer, keys from its JWKS over loopback
    setup = EksToAzure(aws_sandbox, azure_sandbox, azure_connection)
    azure_sandbox.trust_issuer(setup.issuer, outbound.jwks_url(aws_sandbox))
    pod.irsa()
    try:
        yield setup
    finally:
        setup.cleanup()


def aws_calls(sandbox: AwsSandbox) -> dict[str, int]:
    return {k: v for k, v in sandbox.calls_by_action().items() if v}


@pytest.mark.smoke
def test_aws_to_azure_reads_blob_with_one_token_request_per_side(eks_to_azure: EksToAzure) -> None:
    setup, sb = eks_to_azure, eks_to_azure.azure
    setup.trust()
    conn = setup.connection()
    for _ in range(3):
        assert read_a(AzureWorkloadIdentityHook(azure_conn_id=conn), sb) == sb.scenario.blob_a_body
    assert sb.calls("entra") == 1
    assert aws_calls(setup.aws) == {"AssumeRoleWithWebIdentity": 1, "GetWebIdentityToken": 1}
    assert sb.remote_issuers.fetches[setup.issuer] == 1  # Entra fetched the AWS issuer's keys once
    hook = AzureWorkloadIdentityHook(azure_conn_id=conn)
    with pytest.raises(HttpResponseError) as denied:
        blobs(hook, sb).get_blob_client(sb.scenario.container_b, sb.scenario.blob_b_name).download_blob()
    assert denied.value.status_code == 403


def test_aws_to_azure_es384_through_the_official_wasbhook(eks_to_azure: EksToAzure) -> None:
    pytest.importorskip("airflow.providers.microsoft.azure", reason="the official Azure provider is not installed")
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from airflow_workload_identity.azure.interop import install, uninstall

    setup, sc = eks_to_azure, eks_to_azure.azure.scenario
    setup.trust()
    conn = setup.connection(aws_signing_algorithm="ES384", aws_jwt_duration_seconds=900)
    install()
    try:
        assert WasbHook(wasb_conn_id=conn).read_file(sc.container_a, sc.blob_a_name) == sc.blob_a_body.decode()
    finally:
        uninstall()
    assert aws_calls(setup.aws)["GetWebIdentityToken"] == 1 and setup.azure.calls("entra") == 1


def test_aws_to_azure_whoami_and_policy_show_both_sides(eks_to_azure: EksToAzure) -> None:
    setup, sc = eks_to_azure, eks_to_azure.azure.scenario
    setup.trust()
    hook = AzureWorkloadIdentityHook(azure_conn_id=setup.connection())
    source, target = hook.whoami().hops
    details = dict(source.details)
    assert source.principal == setup.role_arn
    assert (details["token iss"], details["token sub"], details["token aud"]) == (
        setup.issuer,
        setup.role_arn,
        AUDIENCE,
    )
    assert target.principal == f"object {sc.workload_object_id} in tenant {sc.tenant_id}"
    text = hook.policy()
    assert "aws iam enable-outbound-web-identity-federation" in text
    assert '"sts:IdentityTokenAudience": [\n        "api://AzureADTokenExchange"' in text
    assert '"sts:DurationSeconds": "300"' in text
    assert f"--issuer {setup.issuer} --subject {setup.role_arn} --audience {AUDIENCE}" in text
    assert f"Add to the identity policy of {setup.role_arn}:" in text


def test_aws_to_azure_wrong_audience_refused_by_either_side(eks_to_azure: EksToAzure) -> None:
    setup = eks_to_azure
    setup.trust()
    # AWS allows api://airflow-eks, Entra's federated credential does not
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection(assertion_audience="api://airflow-eks")))
    assert error.cloud_code == "AADSTS70021" and "the Azure side" in str(error)
    assert f"--subject {setup.role_arn} --audience api://airflow-eks" in error.remediation
    # AWS does not allow api://someone-else: refused before Entra is asked, naming the AWS side
    entra_before = setup.azure.calls("entra")
    error = _refused(
        AzureWorkloadIdentityHook(
            azure_conn_id=setup.connection("aws_to_other", assertion_audience="api://someone-else")
        )
    )
    assert error.cloud_code == "AccessDenied" and "The AWS side refused" in str(error)
    assert '"sts:IdentityTokenAudience":["api://someone-else"]' in error.remediation
    assert setup.azure.calls("entra") == entra_before


def test_aws_to_azure_wrong_subject(eks_to_azure: EksToAzure) -> None:
    setup = eks_to_azure
    setup.trust(subject=f"arn:aws:iam::{setup.aws.scenario.platform_account}:role/someone-else")
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection()))
    assert error.cloud_code == "AADSTS70021"
    assert f"Assertion Subject: '{setup.role_arn}'" in error.cloud_message
    assert f"--issuer {setup.issuer} --subject {setup.role_arn} --audience {AUDIENCE}" in error.remediation


def test_aws_to_azure_untrusted_issuer(eks_to_azure: EksToAzure) -> None:
    setup = eks_to_azure
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection()))
    assert error.cloud_code == "AADSTS70021" and f"Assertion Issuer: '{setup.issuer}'" in error.cloud_message
    setup.trust()
    setup.azure.remote_issuers.distrust(setup.issuer)
    error = _refused(AzureWorkloadIdentityHook(azure_conn_id=setup.connection("aws_to_azure_2")))
    assert error.cloud_code == "AADSTS700027" and setup.issuer in error.remediation


def test_aws_to_azure_needs_a_region_before_any_request(
    eks_to_azure: EksToAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = eks_to_azure
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError) as error:
        AzureWorkloadIdentityHook(azure_conn_id=setup.connection()).get_token(STORAGE)
    assert error.value.field == "aws_region"
    assert aws_calls(setup.aws) == {} and setup.azure.calls("entra") == 0


@pytest.mark.parametrize("source", ["gcp", "aws"])
def test_as_does_not_apply_to_a_cross_cloud_source(source: str) -> None:
    """``policy --as`` / ``whoami --as`` start from an Azure client id; a gcp / aws source starts from the
    other cloud's live token, so they are refused naming ``--as`` (no request of any kind)."""
    from airflow_workload_identity.azure.policy import plan_as, report_as
    from airflow_workload_identity.azure.spec import AzureIdentitySpec

    client = "a1f0e7d2-0c1b-4a5e-9f3d-1b2c3d4e5f60"
    spec = AzureIdentitySpec.from_extra(
        {"source": source, "client_id": client, "tenant_id": "11111111-1111-1111-1111-111111111111"}
    )
    for call in (lambda: plan_as(spec, client), lambda: report_as(spec, client, "conn")):
        with pytest.raises(ConfigError) as refused:
            call()
        assert refused.value.field == "--as" and source in refused.value.problem
