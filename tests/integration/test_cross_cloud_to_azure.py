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
from tests.fixtures_azure import Aks

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox

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
    assert sb.remote_issuers.fetches == {GOOGLE_ISSUER: 1}  # Entra fetched Google's keys once
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
