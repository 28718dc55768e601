"""The Azure sandbox behaves like Azure where the provider depends on it (real azure-identity and
azure-storage-blob against the fake IMDS, the fake Entra token endpoint and Azurite behind RBAC)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509

# the Azure SDKs are dev dependencies only (the older-Airflow smoke venvs do not have them)
pytest.importorskip("azure.identity")
pytest.importorskip("azure.storage.blob")

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import (
    CredentialUnavailableError,
    DefaultAzureCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.storage.blob import BlobServiceClient

from dev.sandbox.azure import AMBIENT_AZURE_VARIABLES, AzureSandbox

REPO_ROOT = Path(__file__).resolve().parents[2]
STORAGE_SCOPE = "https://storage.azure.com/.default"


@pytest.fixture(scope="module")
def sb() -> Iterator[AzureSandbox]:
    with AzureSandbox.start() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def _clean(sb: AzureSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in AMBIENT_AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in sb.env_tls().items():
        monkeypatch.setenv(name, value)
    sb.clear_faults()
    sb.force_token_ttl(None)
    sb.reset_calls()
    yield
    sb.clear_faults()
    sb.force_token_ttl(None)


def wi_credential(sb: AzureSandbox, token_file: Path, **kwargs) -> WorkloadIdentityCredential:
    kwargs.setdefault("tenant_id", sb.tenant_id)
    kwargs.setdefault("client_id", sb.scenario.workload_client_id)
    return WorkloadIdentityCredential(token_file_path=str(token_file), authority=sb.authority_host, **kwargs)


def blob_client(sb: AzureSandbox, credential, **kwargs) -> BlobServiceClient:
    kwargs.setdefault("retry_total", 0)  # the storage SDK retries refused requests for ~85 s otherwise
    return BlobServiceClient(sb.blob_account_url, credential=credential, **kwargs)


def read_blob(client: BlobServiceClient, container: str, name: str) -> bytes:
    return client.get_blob_client(container, name).download_blob().readall()


def raw_storage_get(sb: AzureSandbox, path: str, token: str) -> requests.Response:
    return requests.get(
        f"{sb.blob_account_url}/{path}",
        headers={"Authorization": f"Bearer {token}", "x-ms-version": "2025-01-05"},
        verify=str(sb.ca_bundle),
        timeout=10,
    )


# --- TLS and plumbing ---------------------------------------------------------------------------------------


def test_endpoints_are_loopback_and_tls_verifies(sb: AzureSandbox) -> None:
    assert sb.imds_url.startswith("http://127.0.0.1:")
    assert sb.authority_host.startswith("https://127.0.0.1:")
    assert sb.blob_account_url.startswith("https://127.0.0.1:") and sb.blob_account_url.endswith("/devstoreaccount1")
    cert = x509.load_pem_x509_certificate(sb.tls.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ctx = ssl.create_default_context(cafile=str(sb.ca_bundle))
    for url in (sb.authority_host, sb.blob_account_url, sb.azurite_account_url):
        port = int(url.split(":")[2].split("/")[0])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    session = requests.Session()
    session.trust_env = False  # ignore REQUESTS_CA_BUNDLE: certifi alone does not trust the test CA
    with session, pytest.raises(requests.exceptions.SSLError):
        session.get(f"{sb.authority_host}/x", timeout=5)


def test_sa_token_and_env_shapes(sb: AzureSandbox, tmp_path: Path) -> None:
    path = sb.write_sa_token(tmp_path / "token")
    claims = sb.issuer.verify(path.read_text(), audience="api://AzureADTokenExchange")
    assert claims["iss"] == sb.scenario.issuer_url == sb.issuer.issuer_url
    assert claims["sub"] == "system:serviceaccount:airflow:airflow-worker"
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    assert claims["kubernetes.io"]["namespace"] == "airflow"
    env = sb.env_workload_identity(path)
    assert env == {
        "AZURE_CLIENT_ID": sb.scenario.workload_client_id,
        "AZURE_TENANT_ID": "11111111-1111-1111-1111-111111111111",
        "AZURE_FEDERATED_TOKEN_FILE": str(path),
        "AZURE_AUTHORITY_HOST": sb.authority_host,
    }
    assert sb.env_imds() == {"AZURE_POD_IDENTITY_AUTHORITY_HOST": sb.imds_url}
    assert set(sb.env_tls()) == {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"}
    assert sb.scenario.workload_resource_id == (
        "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/airflow-rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/airflow-wi"
    )


# --- workload identity ----------------------------------------------------------------------------------------


def test_workload_identity_reads_container_a_and_is_refused_b(sb: AzureSandbox, tmp_path: Path) -> None:
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token"))
    token = cred.get_token(STORAGE_SCOPE)
    claims = sb.verify_access_token(token.token, audience="https://storage.azure.com")
    sc = sb.scenario
    assert claims["iss"] == f"https://sts.windows.net/{sc.tenant_id}/"
    assert (claims["appid"], claims["oid"], claims["tid"], claims["ver"]) == (
        sc.workload_client_id,
        sc.workload_object_id,
        sc.tenant_id,
        "1.0",
    )
    assert claims["xms_mirid"] == sc.workload_resource_id
    assert {"iat", "nbf", "exp", "sub"} <= set(claims)
    assert 3500 < token.expires_on - time.time() <= 3600

    client = blob_client(sb, cred)
    assert read_blob(client, sc.container_a, sc.blob_a_name) == b"hello from container A\n"
    with pytest.raises(HttpResponseError) as denied:
        read_blob(client, sc.container_b, sc.blob_b_name)
    assert denied.value.status_code == 403
    assert denied.value.error_code == "AuthorizationPermissionMismatch"
    assert "<Code>AuthorizationPermissionMismatch</Code>" in denied.value.response.text()
    assert sb.calls("entra") == 1  # the credential caches its token
    assert [(r["path"], r["status"]) for r in sb.call_log("storage")] == [
        ("/devstoreaccount1/container-a/reports/hello.txt", 206),
        ("/devstoreaccount1/container-b/secret.txt", 403),
    ]


def test_workload_identity_from_environment_and_default_credential(
    sb: AzureSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sb.env_workload_identity(sb.write_sa_token(tmp_path / "token")).items():
        monkeypatch.setenv(name, value)
    assert WorkloadIdentityCredential().get_token(STORAGE_SCOPE).token
    dac = DefaultAzureCredential()
    client = blob_client(sb, dac)
    assert read_blob(client, sb.scenario.container_a, sb.scenario.blob_a_name) == b"hello from container A\n"
    assert sb.calls("entra") == 2
    assert sb.calls("imds") == 0


def test_tenant_domain_is_accepted(sb: AzureSandbox, tmp_path: Path) -> None:
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token"), tenant_id="contoso.onmicrosoft.com")
    claims = sb.verify_access_token(cred.get_token(STORAGE_SCOPE).token)
    assert claims["tid"] == sb.tenant_id


def test_wrong_subject_is_aadsts70021(sb: AzureSandbox, tmp_path: Path) -> None:
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token", sub=sb.scenario.wrong_subject))
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(STORAGE_SCOPE)
    message = str(err.value)
    assert "(invalid_client) AADSTS70021: No matching federated identity record found for presented assertion." in (
        message
    )
    assert f"Assertion Issuer: '{sb.issuer.issuer_url}'." in message
    assert "Assertion Subject: 'system:serviceaccount:other:intruder'." in message
    assert "Assertion Audience: 'api://AzureADTokenExchange'." in message
    assert sb.call_log("entra")[0]["status"] == 400


def test_wrong_audience_and_issuer_are_aadsts70021(sb: AzureSandbox, tmp_path: Path) -> None:
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token", aud="sts.amazonaws.com"))
    with pytest.raises(ClientAuthenticationError, match=r"AADSTS70021.*Assertion Audience: 'sts\.amazonaws\.com'"):
        cred.get_token(STORAGE_SCOPE)
    token_file = tmp_path / "other-issuer"
    token_file.write_text(
        type(sb.issuer)("https://oidc.other-cluster.example/x").mint(aud=["api://AzureADTokenExchange"])
    )
    with pytest.raises(ClientAuthenticationError, match=r"AADSTS70021.*Assertion Issuer: 'https://oidc\.other-cluster"):
        wi_credential(sb, token_file).get_token(STORAGE_SCOPE)


def test_wrong_client_id_is_aadsts700016(sb: AzureSandbox, tmp_path: Path) -> None:
    unknown = "99999999-9999-4999-8999-999999999999"
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token"), client_id=unknown)
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(STORAGE_SCOPE)
    assert f"(unauthorized_client) AADSTS700016: Application with identifier '{unknown}' was not found in the " in str(
        err.value
    )
    assert "directory 'Contoso'" in str(err.value)


def test_identity_of_one_tenant_is_unknown_in_the_other(sb: AzureSandbox, tmp_path: Path) -> None:
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token"), tenant_id=sb.scenario.other_tenant_id)
    with pytest.raises(ClientAuthenticationError, match=r"AADSTS700016.*directory 'Fabrikam'"):
        cred.get_token(STORAGE_SCOPE)


def test_expired_assertion_is_aadsts700024(sb: AzureSandbox, tmp_path: Path) -> None:
    now = int(time.time())
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token", iat=now - 7200, exp=now - 3600))
    with pytest.raises(ClientAuthenticationError) as err:
        cred.get_token(STORAGE_SCOPE)
    assert "(invalid_client) AADSTS700024: Client assertion is not within its valid time range." in str(err.value)


def test_unknown_tenant_malformed_and_forged_assertions(sb: AzureSandbox, tmp_path: Path) -> None:
    token_file = sb.write_sa_token(tmp_path / "token")
    with pytest.raises(ClientAuthenticationError, match="AADSTS90002: Tenant '99999999-9999-9999-9999-999999999999'"):
        wi_credential(sb, token_file, tenant_id="99999999-9999-9999-9999-999999999999").get_token(STORAGE_SCOPE)
    (tmp_path / "garbage").write_text("not-a-jwt")
    with pytest.raises(ClientAuthenticationError, match=r"AADSTS50027: JWT token is invalid or malformed\."):
        wi_credential(sb, tmp_path / "garbage").get_token(STORAGE_SCOPE)
    (tmp_path / "forged").write_text(sb.foreign_issuer.mint(aud=["api://AzureADTokenExchange"]))
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027: Client assertion contains an invalid signature"):
        wi_credential(sb, tmp_path / "forged").get_token(STORAGE_SCOPE)
    assert [r["error"] for r in sb.call_log("entra")] == ["AADSTS90002", "AADSTS50027", "AADSTS700027"]


def test_federated_credentials_can_be_added_up_to_the_limit(sb: AzureSandbox, tmp_path: Path) -> None:
    client_id = sb.scenario.workload_client_id
    subject = "system:serviceaccount:airflow:airflow-scheduler"
    cred = wi_credential(sb, sb.write_sa_token(tmp_path / "token", sub=subject))
    with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
        cred.get_token(STORAGE_SCOPE)
    added = [sb.add_federated_credential(client_id, subject, name="scheduler")]
    try:
        assert wi_credential(sb, tmp_path / "token").get_token(STORAGE_SCOPE).token
        added += [sb.add_federated_credential(client_id, f"system:serviceaccount:ns{i}:sa") for i in range(18)]
        with pytest.raises(ValueError, match="20 federated identity credentials"):
            sb.add_federated_credential(client_id, "system:serviceaccount:one:too-many")
    finally:
        for fic in added:
            sb.remove_federated_credential(client_id, fic.name)
    assert len(sb.principals[client_id].federated_credentials) == 1


def test_multitenant_app_gets_a_token_in_the_other_tenant(sb: AzureSandbox, tmp_path: Path) -> None:
    sc = sb.scenario
    token_file = sb.write_sa_token(tmp_path / "token")
    cred = wi_credential(sb, token_file, client_id=sc.multitenant_client_id, tenant_id=sc.other_tenant_id)
    claims = sb.verify_access_token(cred.get_token(STORAGE_SCOPE).token)
    assert (claims["tid"], claims["oid"], claims["iss"]) == (
        sc.other_tenant_id,
        sc.multitenant_other_object_id,
        f"https://sts.windows.net/{sc.other_tenant_id}/",
    )
    # storage lives in the first tenant: 401 + challenge naming it; the SDK asks for a token there, which
    # azure-identity refuses unless the tenant is additionally allowed
    with pytest.raises(ClientAuthenticationError, match=sc.tenant_id):
        read_blob(blob_client(sb, cred), sc.container_a, sc.blob_a_name)
    assert sb.call_log("storage")[0]["error"] == "InvalidAuthenticationInfo"
    allowed = wi_credential(
        sb,
        token_file,
        client_id=sc.multitenant_client_id,
        tenant_id=sc.other_tenant_id,
        additionally_allowed_tenants=[sc.tenant_id],
    )
    with pytest.raises(HttpResponseError) as denied:  # the app's principal in tenant 1 has no data role
        read_blob(blob_client(sb, allowed), sc.container_a, sc.blob_a_name)
    assert denied.value.error_code == "AuthorizationPermissionMismatch"


def test_entra_faults_and_token_ttl(sb: AzureSandbox, tmp_path: Path) -> None:
    token_file = sb.write_sa_token(tmp_path / "token")
    sb.inject_entra_fault(429, times=1)
    assert wi_credential(sb, token_file).get_token(STORAGE_SCOPE).token
    assert [r["status"] for r in sb.call_log("entra")] == [429, 200]
    sb.reset_calls()
    sb.inject_entra_fault(500, times=1, retry_after=0)
    assert wi_credential(sb, token_file).get_token(STORAGE_SCOPE).token
    assert [r["status"] for r in sb.call_log("entra")] == [500, 200]
    sb.inject_entra_fault(400, times=1, body={"error": "invalid_request", "error_description": "AADSTS1: scripted"})
    with pytest.raises(ClientAuthenticationError, match="AADSTS1: scripted"):
        wi_credential(sb, token_file).get_token(STORAGE_SCOPE)
    sb.force_token_ttl(600)
    token = wi_credential(sb, token_file).get_token(STORAGE_SCOPE)
    assert 590 < token.expires_on - time.time() <= 600
    assert sb.verify_access_token(token.token)["exp"] == token.expires_on


# --- managed identity (IMDS) ----------------------------------------------------------------------------------


@pytest.fixture
def imds_env(sb: AzureSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sb.env_imds().items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("imds_env")
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"client_id": "node"}, "client_id"),
        ({"identity_config": {"object_id": "node"}}, "object_id"),
        ({"identity_config": {"resource_id": "node"}}, "msi_res_id"),
    ],
    ids=["client_id", "object_id", "resource_id"],
)
def test_managed_identity_selects_the_node_identity(sb: AzureSandbox, kwargs: dict, param: str) -> None:
    sc = sb.scenario
    values = {"client_id": sc.node_client_id, "object_id": sc.node_object_id, "resource_id": sc.node_resource_id}
    if "client_id" in kwargs:
        kwargs = {"client_id": values["client_id"]}
    else:
        key = next(iter(kwargs["identity_config"]))
        kwargs = {"identity_config": {key: values[key]}}
    cred = ManagedIdentityCredential(**kwargs)
    token = cred.get_token(STORAGE_SCOPE)
    claims = sb.verify_access_token(token.token, audience="https://storage.azure.com")
    assert (claims["appid"], claims["oid"], claims["xms_mirid"]) == (
        sc.node_client_id,
        sc.node_object_id,
        sc.node_resource_id,
    )
    assert 86000 < token.expires_on - time.time() <= 86400
    (request,) = sb.call_log("imds")
    assert request["params"]["api-version"] == "2018-02-01"
    assert request["params"]["resource"] == "https://storage.azure.com"
    assert param in request["params"]
    client = blob_client(sb, cred)
    assert read_blob(client, sc.container_a, sc.blob_a_name) == b"hello from container A\n"
    with pytest.raises(HttpResponseError, match="AuthorizationPermissionMismatch"):
        read_blob(client, sc.container_b, sc.blob_b_name)


@pytest.mark.usefixtures("imds_env")
def test_unknown_identity_is_identity_not_found(sb: AzureSandbox) -> None:
    for kwargs in (
        {"client_id": "99999999-9999-4999-8999-999999999999"},
        {"client_id": sb.scenario.workload_client_id},  # exists, but is not attached to the node
        {"identity_config": {"object_id": "99999999-9999-4999-8999-999999999999"}},
    ):
        with pytest.raises(CredentialUnavailableError, match=r"\(invalid_request\) Identity not found"):
            ManagedIdentityCredential(**kwargs).get_token(STORAGE_SCOPE)
    assert [r["status"] for r in sb.call_log("imds")] == [400, 400, 400]


@pytest.mark.usefixtures("imds_env")
def test_imds_identity_attachment(sb: AzureSandbox) -> None:
    sc = sb.scenario
    claims = sb.verify_access_token(ManagedIdentityCredential().get_token(STORAGE_SCOPE).token)
    assert claims["oid"] == sc.node_object_id  # the only identity: no selector needed
    sb.attach_imds_identity(sc.workload_client_id)
    try:
        with pytest.raises(CredentialUnavailableError, match="Multiple user assigned identities exist"):
            ManagedIdentityCredential().get_token(STORAGE_SCOPE)
        cred = ManagedIdentityCredential(client_id=sc.workload_client_id)
        assert sb.verify_access_token(cred.get_token(STORAGE_SCOPE).token)["oid"] == sc.workload_object_id
    finally:
        sb.detach_imds_identity(sc.workload_client_id)


def test_imds_wire_shape_and_metadata_header(sb: AzureSandbox) -> None:
    url = f"{sb.imds_url}/metadata/identity/oauth2/token"
    params = {"api-version": "2018-02-01", "resource": "https://storage.azure.com"}
    missing = requests.get(url, params=params, timeout=5)
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_request", "error_description": "Required metadata header not specified"}
    ok = requests.get(url, params=params, headers={"Metadata": "true"}, timeout=5)
    assert ok.status_code == 200
    body = ok.json()
    assert list(body) == [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ]
    assert all(isinstance(v, str) for v in body.values())
    assert body["expires_in"] == "86399" and body["token_type"] == "Bearer"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == "https://storage.azure.com"


@pytest.mark.usefixtures("imds_env")
def test_imds_faults_are_retried(sb: AzureSandbox) -> None:
    sb.inject_imds_fault(500, times=1)
    sb.inject_imds_fault(429, times=1)
    assert ManagedIdentityCredential(client_id=sb.scenario.node_client_id).get_token(STORAGE_SCOPE).token
    assert [r["status"] for r in sb.call_log("imds")] == [500, 429, 200]  # backoff 0 s, then 1.6 s


def test_hung_imds_accepts_and_never_answers(sb: AzureSandbox) -> None:
    sb.hang_imds()
    port = int(sb.imds_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(
            b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com "
            b"HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"
        )
        conn.settimeout(0.5)
        with pytest.raises(TimeoutError):
            conn.recv(1)
        sb.hang_imds(None)  # released: the held request is answered
        conn.settimeout(5)
        assert conn.recv(12) == b"HTTP/1.1 200"
    assert sb.calls("imds") == 1


def test_default_credential_probe_is_kept_when_the_variable_comes_late(
    sb: AzureSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    dac = DefaultAzureCredential(
        managed_identity_client_id=sb.scenario.node_client_id,
        exclude_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
    )
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sb.imds_url)
    assert dac.get_token(STORAGE_SCOPE).token
    assert sb.calls("imds") == 2  # probe (connect timeout 1 s, no retry) + token request
    sb.reset_calls()
    early = DefaultAzureCredential(managed_identity_client_id=sb.scenario.node_client_id, exclude_cli_credential=True)
    assert early.get_token(STORAGE_SCOPE).token
    assert sb.calls("imds") == 1  # the variable was there at construction: no probe


# --- storage front door ---------------------------------------------------------------------------------------


def test_rbac_grants_and_write_permission(sb: AzureSandbox, tmp_path: Path) -> None:
    sc = sb.scenario
    client = blob_client(sb, wi_credential(sb, sb.write_sa_token(tmp_path / "token")))
    sb.grant(sc.workload_object_id, "Storage Blob Data Reader", sc.container_b)
    try:
        assert read_blob(client, sc.container_b, sc.blob_b_name) == sc.blob_b_body
    finally:
        assert sb.revoke(sc.workload_object_id, container=sc.container_b) == 1
    with pytest.raises(HttpResponseError, match="AuthorizationPermissionMismatch"):
        read_blob(client, sc.container_b, sc.blob_b_name)
    with pytest.raises(HttpResponseError, match="AuthorizationPermissionMismatch"):  # Reader cannot write
        client.get_blob_client(sc.container_a, "new.txt").upload_blob(b"x")
    with pytest.raises(HttpResponseError, match="AuthorizationPermissionMismatch"):  # nor list at account scope
        list(client.list_containers())
    sb.grant(sc.workload_object_id, "Storage Blob Data Contributor", sc.container_a)
    try:
        client.get_blob_client(sc.container_a, "new.txt").upload_blob(b"written", overwrite=True)
    finally:
        sb.revoke(sc.workload_object_id, "Storage Blob Data Contributor", sc.container_a)
    with sb.admin_blob_service_client() as admin:
        assert read_blob(admin, sc.container_a, "new.txt") == b"written"
        admin.get_blob_client(sc.container_a, "new.txt").delete_blob()


def test_tokens_azurite_or_the_proxy_refuse(sb: AzureSandbox) -> None:
    sc = sb.scenario
    path = f"{sc.container_a}/{sc.blob_a_name}"
    good, _, _ = sb.mint_access_token(sc.workload_client_id)
    assert raw_storage_get(sb, path, good).content == b"hello from container A\n"
    expired, _, _ = sb.mint_access_token(sc.workload_client_id, ttl=-60)
    v2, _, _ = sb.mint_access_token(
        sc.workload_client_id, extra_claims={"iss": f"https://login.microsoftonline.com/{sc.tenant_id}/v2.0"}
    )
    wrong_aud, _, _ = sb.mint_access_token(sc.workload_client_id, "https://vault.azure.net")
    for token, detail in (
        (expired, "Lifetime validation failed. The token is expired."),
        (v2, "Invalid token issuer."),
        (wrong_aud, "Invalid token audience."),
    ):  # Azurite's own checks, passed through
        response = raw_storage_get(sb, path, token)
        assert (response.status_code, response.headers["x-ms-error-code"]) == (403, "AuthenticationFailed")
        assert detail in response.text
    forged = jwt.encode(
        jwt.decode(good, options={"verify_signature": False}),
        sb.foreign_issuer._private_key,
        algorithm="RS256",
    )
    response = raw_storage_get(sb, path, forged)
    assert (response.status_code, response.headers["x-ms-error-code"]) == (401, "InvalidAuthenticationInfo")
    assert "Signature validation failed" in response.text
    assert response.headers["WWW-Authenticate"].startswith(
        f"Bearer authorization_uri=https://login.microsoftonline.com/{sc.tenant_id}/oauth2/authorize"
    )


# --- async -------------------------------------------------------------------------------------------------


def test_async_credentials_in_process(sb: AzureSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity.aio import ManagedIdentityCredential as AioManagedIdentityCredential
    from azure.identity.aio import WorkloadIdentityCredential as AioWorkloadIdentityCredential
    from azure.storage.blob.aio import BlobServiceClient as AioBlobServiceClient

    assert sb.trust_ca_in_aiohttp()  # aiohttp built its default SSL context at import, before SSL_CERT_FILE
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sb.imds_url)
    sc = sb.scenario
    token_file = sb.write_sa_token(tmp_path / "token")

    async def run() -> tuple[bytes, dict, dict]:
        async with (
            AioWorkloadIdentityCredential(
                tenant_id=sc.tenant_id,
                client_id=sc.workload_client_id,
                token_file_path=str(token_file),
                authority=sb.authority_host,
            ) as wi,
            AioBlobServiceClient(sb.blob_account_url, credential=wi, retry_total=0) as client,
        ):
            data = await (await client.get_blob_client(sc.container_a, sc.blob_a_name).download_blob()).readall()
            with pytest.raises(HttpResponseError, match="AuthorizationPermissionMismatch"):
                await (await client.get_blob_client(sc.container_b, sc.blob_b_name).download_blob()).readall()
        async with AioManagedIdentityCredential(identity_config={"object_id": sc.node_object_id}) as mi:
            mi_claims = sb.verify_access_token((await mi.get_token(STORAGE_SCOPE)).token)
        # azure-identity's aio IMDS path sends identity_config keys verbatim: resource_id= (not msi_res_id=),
        # which IMDS does not read; here the node has a single identity, so IMDS falls back to it
        async with AioManagedIdentityCredential(identity_config={"resource_id": sc.node_resource_id}) as mi:
            res_claims = sb.verify_access_token((await mi.get_token(STORAGE_SCOPE)).token)
        return data, mi_claims, res_claims

    data, mi_claims, res_claims = asyncio.run(run())
    assert data == b"hello from container A\n"
    assert mi_claims["oid"] == res_claims["oid"] == sc.node_object_id
    imds = sb.call_log("imds")
    assert imds[0]["params"]["object_id"] == sc.node_object_id
    assert "resource_id" in imds[1]["params"] and "msi_res_id" not in imds[1]["params"]


def test_async_credential_with_ssl_cert_file_in_a_fresh_process(sb: AzureSandbox, tmp_path: Path) -> None:
    sc = sb.scenario
    script = textwrap.dedent(
        f"""
        import asyncio, json
        from azure.identity.aio import WorkloadIdentityCredential
        from azure.storage.blob.aio import BlobServiceClient

        async def main():
            async with WorkloadIdentityCredential() as cred, BlobServiceClient(
                {sb.blob_account_url!r}, credential=cred, retry_total=0
            ) as client:
                blob = client.get_blob_client({sc.container_a!r}, {sc.blob_a_name!r})
                print(json.dumps((await (await blob.download_blob()).readall()).decode()))

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT_AZURE_VARIABLES}
    env.update(sb.env_tls())
    env.update(sb.env_workload_identity(sb.write_sa_token(tmp_path / "token")))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "hello from container A\n"
    assert sb.calls("entra") == 1


# --- CLI ---------------------------------------------------------------------------------------------------


def test_cli_starts_azure_and_prints_its_env(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT_AZURE_VARIABLES}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dev.sandbox", *args, "--state-file", str(state_file)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    started = cli("start", "--clouds", "azure")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads(started.stdout)
        assert state["clouds"] == ["azure"] and "endpoint_url" not in state
        azure = state["azure"]
        assert azure["blob_account_url"].startswith("https://127.0.0.1:")
        assert Path(azure["token_file"]).exists()
        exports = cli("env", "azure").stdout
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"):
            assert f"export {name}=" in exports
        assert f"export SSL_CERT_FILE={azure['ca_bundle']}" in exports
        assert "AZURE_POD_IDENTITY_AUTHORITY_HOST" in cli("env", "azure-imds").stdout
        response = requests.get(
            f"{azure['imds_url']}/metadata/identity/oauth2/token",
            params={"api-version": "2018-02-01", "resource": "https://storage.azure.com"},
            headers={"Metadata": "true"},
            timeout=5,
        )
        assert response.json()["client_id"] == azure["scenario"]["node_client_id"]
    finally:
        assert cli("stop").returncode == 0
    assert not state_file.exists()
    assert not Path(state["azure"]["tmp_dir"]).exists()
