"""The GCP sandbox behaves like Google where the provider depends on it: proven with the real SDKs
(google-auth compute_engine + impersonated credentials, google-cloud-storage) and plain requests.

Expected bodies are written out literally (REFERENCE 3.3), not taken from the sandbox's own helpers.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.auth
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from google.api_core import exceptions as api_exceptions
from google.auth import compute_engine, exceptions, impersonated_credentials
from google.auth.transport.requests import Request
from google.cloud import storage

from dev.sandbox.gcp import (
    AMBIENT_GCP_VARIABLES,
    CLOUD_PLATFORM_SCOPE,
    DEVSTORAGE_READ_ONLY_SCOPE,
    IAM_SCOPE,
    USERINFO_EMAIL_SCOPE,
    GcpSandbox,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MD = {"Metadata-Flavor": "Google"}
AUTH_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


@pytest.fixture(scope="module")
def sb() -> Iterator[GcpSandbox]:
    with GcpSandbox.start() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def pod(sb: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A GKE pod's environment, with google-auth (already imported) pointed at the fakes."""
    for name in AMBIENT_GCP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    for module, attribute, value in sb.google_auth_patches():
        monkeypatch.setattr(importlib.import_module(module), attribute, value)
    sb.reset()
    yield
    sb.reset()


def impersonate(sb: GcpSandbox, target: str, *, delegates=None, lifetime=3600, scopes=(CLOUD_PLATFORM_SCOPE,)):
    return impersonated_credentials.Credentials(
        source_credentials=compute_engine.Credentials(),
        target_principal=target,
        target_scopes=list(scopes),
        delegates=delegates,
        lifetime=lifetime,
        iam_endpoint_override=sb.iam_url(target),
    )


def gcs(sb: GcpSandbox, credentials) -> storage.Client:
    return storage.Client(
        project=sb.scenario.customer_project, credentials=credentials, client_options={"api_endpoint": sb.storage_host}
    )


def refresh_error_body(excinfo: pytest.ExceptionInfo[exceptions.RefreshError]) -> dict:
    assert excinfo.value.args[0] == "Unable to acquire impersonated credentials"
    return json.loads(excinfo.value.args[1])


def iam_post(sb: GcpSandbox, target: str, method: str, body: dict, token: str | None, project: str = "-"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{sb.iam_endpoint}/v1/projects/{project}/serviceAccounts/{target}:{method}"
    return requests.post(url, json=body, headers=headers, timeout=5)


def permission_denied(permission: str) -> dict:
    return {
        "error": {
            "code": 403,
            "message": f"Permission '{permission}' denied on resource (or it may not exist).",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": permission},
                }
            ],
        }
    }


def wait_for_background_requests() -> None:
    """google-cloud-storage 3.17 fires a background get_bucket that outlives the call (REFERENCE 3.4)."""
    background = ("_fetch_background", "_verify_existence_background")  # BucketMetadataCache's thread targets
    deadline = time.monotonic() + 5
    time.sleep(0.01)
    while time.monotonic() < deadline and any(
        t.is_alive() and any(name in t.name for name in background) for t in threading.enumerate()
    ):
        time.sleep(0.01)


# --- metadata server --------------------------------------------------------------------------------------


def test_metadata_server_wire_shapes(sb: GcpSandbox) -> None:
    sc = sb.scenario
    base = f"{sb.metadata_url}/computeMetadata/v1"
    assert requests.get(sb.metadata_url + "/", timeout=5).status_code == 403  # no Metadata-Flavor
    ping = requests.get(sb.metadata_url + "/", headers=MD, timeout=5)
    assert ping.status_code == 200
    assert ping.headers["Metadata-Flavor"] == "Google"

    project = requests.get(f"{base}/project/project-id", headers=MD, timeout=5)
    assert (project.status_code, project.text) == (200, "platform-proj")
    assert not project.headers["Content-Type"].startswith("application/json")
    assert requests.get(f"{base}/universe/universe-domain", headers=MD, timeout=5).text == "googleapis.com"
    assert requests.get(f"{base}/instance/service-accounts/default/email", headers=MD, timeout=5).text == sc.source_sa

    info = requests.get(f"{base}/instance/service-accounts/default/?recursive=true", headers=MD, timeout=5)
    assert info.headers["Content-Type"] == "application/json"
    assert info.json() == {
        "aliases": ["default"],
        "email": "airflow-gke@platform-proj.iam.gserviceaccount.com",
        "scopes": [CLOUD_PLATFORM_SCOPE, USERINFO_EMAIL_SCOPE],
    }
    # google-auth asks by e-mail once it knows it
    by_email = requests.get(f"{base}/instance/service-accounts/{sc.source_sa}/?recursive=true", headers=MD, timeout=5)
    assert by_email.json()["email"] == sc.source_sa

    token = requests.get(
        f"{base}/instance/service-accounts/default/token",
        params={"scopes": f"{IAM_SCOPE},{DEVSTORAGE_READ_ONLY_SCOPE}"},
        headers=MD,
        timeout=5,
    ).json()
    assert set(token) == {"access_token", "expires_in", "token_type"}
    assert token["token_type"] == "Bearer"
    assert token["access_token"].startswith("ya29.sandbox-")
    assert 3500 < token["expires_in"] <= 3599
    info = sb.token_info(token["access_token"])
    assert info["principal"] == sc.source_sa
    assert info["scopes"] == sorted([IAM_SCOPE, DEVSTORAGE_READ_ONLY_SCOPE])

    identity = f"{base}/instance/service-accounts/default/identity"
    assert requests.get(identity, headers=MD, timeout=5).status_code == 400  # no audience
    id_token = requests.get(identity, params={"audience": "https://aud", "format": "full"}, headers=MD, timeout=5)
    claims = sb.verify_id_token(id_token.text, "https://aud")
    assert claims["email"] == sc.source_sa
    assert claims["sub"] == sb.unique_id(sc.source_sa)


def test_google_auth_default_finds_the_fake_metadata_server(sb: GcpSandbox) -> None:
    credentials, project = google.auth.default()
    assert isinstance(credentials, compute_engine.Credentials)
    assert project == "platform-proj"
    credentials.refresh(Request())
    assert credentials.service_account_email == sb.scenario.source_sa
    assert sb.token_info(credentials.token)["principal"] == sb.scenario.source_sa
    assert credentials.expiry - datetime.now(UTC).replace(tzinfo=None) > timedelta(minutes=55)


def test_env_set_before_import_needs_no_patching(sb: GcpSandbox) -> None:
    """GCE_METADATA_HOST is read at import of google.auth.compute_engine._metadata: set first, it just works."""
    code = (
        "import google.auth, google.auth.transport.requests as r\n"
        "c, p = google.auth.default()\n"
        "c.refresh(r.Request())\n"
        "print(p, c.service_account_email, c.token)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT_GCP_VARIABLES}
    env.update(sb.env())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    project, email, token = out.stdout.split()
    assert (project, email) == ("platform-proj", sb.scenario.source_sa)
    assert sb.token_info(token)["principal"] == sb.scenario.source_sa


# --- impersonation + GCS ----------------------------------------------------------------------------------


def test_impersonated_reader_reads_bucket_a_and_is_denied_bucket_b(sb: GcpSandbox) -> None:
    sc = sb.scenario
    credentials = impersonate(sb, sc.reader_sa)
    client = gcs(sb, credentials)
    assert client.bucket(sc.bucket_a).blob(sc.bucket_a_key).download_as_bytes() == b"hello from bucket A\n"
    assert sb.token_info(credentials.token)["principal"] == sc.reader_sa

    with pytest.raises(api_exceptions.Forbidden) as excinfo:
        client.bucket(sc.bucket_b).blob(sc.bucket_b_key).download_as_bytes()
    message = (
        "reader@customer-proj.iam.gserviceaccount.com does not have storage.objects.get access to the Google Cloud "
        "Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist)."
    )
    assert excinfo.value.response.json() == {
        "error": {
            "code": 403,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "forbidden"}],
        }
    }
    wait_for_background_requests()


def test_storage_emulator_host_still_sends_explicit_credentials(sb: GcpSandbox) -> None:
    """How a client built elsewhere (e.g. by GCSHook, no client_options) reaches the front: env() sets the host."""
    assert os.environ["STORAGE_EMULATOR_HOST"] == sb.storage_host
    sc = sb.scenario
    client = storage.Client(project=sc.customer_project, credentials=impersonate(sb, sc.reader_sa))
    assert client.bucket(sc.bucket_a).blob(sc.bucket_a_key).download_as_bytes() == sc.bucket_a_body
    # without credentials the env var makes the client anonymous: the 401 makes it try to refresh them
    with pytest.raises(exceptions.InvalidOperation, match="Anonymous credentials cannot be refreshed"):
        storage.Client().bucket(sc.bucket_a).blob(sc.bucket_a_key).download_as_bytes()
    wait_for_background_requests()


def test_the_source_identity_itself_reads_nothing(sb: GcpSandbox) -> None:
    """No silent success as the base identity: the pod's GSA has no data access."""
    with pytest.raises(api_exceptions.Forbidden, match="airflow-gke@platform-proj"):
        gcs(sb, compute_engine.Credentials()).bucket(sb.scenario.bucket_a).blob(
            sb.scenario.bucket_a_key
        ).download_as_bytes()
    wait_for_background_requests()


@pytest.mark.parametrize("delegate_form", ["resource", "bare"])
def test_two_hop_chain_reads_bucket_a(sb: GcpSandbox, delegate_form: str) -> None:
    sc = sb.scenario
    delegate = f"projects/-/serviceAccounts/{sc.hop_sa}" if delegate_form == "resource" else sc.hop_sa
    credentials = impersonate(sb, sc.chained_reader_sa, delegates=[delegate])
    assert gcs(sb, credentials).bucket(sc.bucket_a).blob(sc.bucket_a_key).download_as_bytes() == sc.bucket_a_body
    assert sb.token_info(credentials.token)["principal"] == sc.chained_reader_sa
    wait_for_background_requests()


@pytest.mark.parametrize("target", ["chained_reader_sa", "no_creator_sa"])
def test_no_token_creator_is_iam_permission_denied(sb: GcpSandbox, target: str) -> None:
    with pytest.raises(exceptions.RefreshError) as excinfo:
        impersonate(sb, getattr(sb.scenario, target)).refresh(Request())
    assert refresh_error_body(excinfo) == permission_denied("iam.serviceAccounts.getAccessToken")


def test_token_creator_is_checked_on_every_hop(sb: GcpSandbox) -> None:
    sc = sb.scenario
    sb.revoke_token_creator(sc.hop_sa, sc.chained_reader_sa)
    with pytest.raises(exceptions.RefreshError) as excinfo:
        impersonate(sb, sc.chained_reader_sa, delegates=[sc.hop_sa]).refresh(Request())
    assert refresh_error_body(excinfo) == permission_denied("iam.serviceAccounts.getAccessToken")
    sb.grant_token_creator(sc.hop_sa, sc.chained_reader_sa)
    sb.revoke_token_creator(sc.source_sa, sc.hop_sa)
    with pytest.raises(exceptions.RefreshError):
        impersonate(sb, sc.chained_reader_sa, delegates=[sc.hop_sa]).refresh(Request())
    # a direct grant makes the one-hop form work
    sb.grant_token_creator(sc.source_sa, sc.chained_reader_sa)
    impersonate(sb, sc.chained_reader_sa).refresh(Request())


def test_missing_service_account_is_404(sb: GcpSandbox) -> None:
    with pytest.raises(exceptions.RefreshError) as excinfo:
        impersonate(sb, sb.scenario.missing_sa).refresh(Request())
    assert refresh_error_body(excinfo) == {
        "error": {
            "code": 404,
            "message": "Not found; Gaia id not found for email missing@customer-proj.iam.gserviceaccount.com",
            "status": "NOT_FOUND",
        }
    }


def test_lifetime_over_one_hour_needs_the_allowlist(sb: GcpSandbox) -> None:
    sc = sb.scenario
    with pytest.raises(exceptions.RefreshError) as excinfo:
        impersonate(sb, sc.reader_sa, lifetime=7200).refresh(Request())
    assert refresh_error_body(excinfo) == {
        "error": {
            "code": 400,
            "message": "Access tokens for service account reader@customer-proj.iam.gserviceaccount.com can not have "
            "lifetimes of more than 1 hour. Use the Org Policy Constraint "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension to allow up to 12 hours.",
            "status": "INVALID_ARGUMENT",
        }
    }
    long_lived = impersonate(sb, sc.long_lived_sa, lifetime=7200)
    long_lived.refresh(Request())
    remaining = long_lived.expiry - datetime.now(UTC).replace(tzinfo=None)
    assert timedelta(seconds=7190) < remaining <= timedelta(seconds=7200)
    assert 7190 < sb.token_info(long_lived.token)["expires_at"] - time.time() <= 7200
    with pytest.raises(exceptions.RefreshError, match="INVALID_ARGUMENT"):
        impersonate(sb, sc.long_lived_sa, lifetime=43201).refresh(Request())


def test_expire_time_has_no_fractional_seconds(sb: GcpSandbox) -> None:
    source = sb.mint_token(sb.scenario.source_sa, [IAM_SCOPE])
    response = iam_post(sb, sb.scenario.reader_sa, "generateAccessToken", {"scope": [CLOUD_PLATFORM_SCOPE]}, source)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"accessToken", "expireTime"}
    datetime.strptime(body["expireTime"], "%Y-%m-%dT%H:%M:%SZ")  # what google-auth parses


def test_source_without_iam_scope_is_scope_insufficient(sb: GcpSandbox) -> None:
    # a node whose access scopes exclude cloud-platform/iam: ?scopes= is ignored, as on GCE
    sb.set_metadata_scopes([DEVSTORAGE_READ_ONLY_SCOPE])
    with pytest.raises(exceptions.RefreshError) as excinfo:
        impersonate(sb, sb.scenario.reader_sa).refresh(Request())
    assert refresh_error_body(excinfo) == {
        "error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "domain": "googleapis.com",
                }
            ],
        }
    }


def test_minted_token_scopes_are_enforced_by_gcs(sb: GcpSandbox) -> None:
    sc = sb.scenario
    token = sb.mint_token(sc.reader_sa, [IAM_SCOPE])
    url = f"{sb.storage_host}/storage/v1/b/{sc.bucket_a}/o"
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Provided scope(s) are not authorized"
    read_only = sb.mint_token(sc.reader_sa, [DEVSTORAGE_READ_ONLY_SCOPE])
    listing = requests.get(url, headers={"Authorization": f"Bearer {read_only}"}, timeout=5)
    assert [o["name"] for o in listing.json()["items"]] == [sc.bucket_a_key]


def test_expired_and_missing_tokens_are_401(sb: GcpSandbox) -> None:
    sc = sb.scenario

    def unauthenticated(reason: str, message: str) -> dict:
        return {
            "error": {
                "code": 401,
                "message": message,
                "status": "UNAUTHENTICATED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
                ],
            }
        }

    body = {"scope": [CLOUD_PLATFORM_SCOPE]}
    missing = iam_post(sb, sc.reader_sa, "generateAccessToken", body, None)
    assert missing.status_code == 401
    assert missing.json() == unauthenticated(
        "CREDENTIALS_MISSING", f"Request is missing required authentication credential. {AUTH_HELP}"
    )

    # through the SDK: the client still thinks the source token is good, the server says it expired
    credentials = impersonate(sb, sc.reader_sa)
    credentials.refresh(Request())  # refreshes its (iam-rescoped) copy of the source first
    sb.expire_token(credentials._source_credentials.token)
    with pytest.raises(exceptions.RefreshError) as excinfo:
        credentials.refresh(Request())
    expired = unauthenticated("ACCESS_TOKEN_EXPIRED", f"Request had invalid authentication credentials. {AUTH_HELP}")
    assert refresh_error_body(excinfo) == expired

    # GCS: expired → Invalid Credentials; none → anonymous caller
    reader = sb.mint_token(sc.reader_sa)
    sb.expire_token(reader)
    url = f"{sb.storage_host}/download/storage/v1/b/{sc.bucket_a}/o/reports%2Fhello.txt?alt=media"
    response = requests.get(url, headers={"Authorization": f"Bearer {reader}"}, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'
    assert response.json() == {
        "error": {
            "code": 401,
            "message": "Invalid Credentials",
            "errors": [
                {
                    "message": "Invalid Credentials",
                    "domain": "global",
                    "reason": "authError",
                    "locationType": "header",
                    "location": "Authorization",
                }
            ],
        }
    }
    anonymous = requests.get(url, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("Anonymous caller does not have storage.objects.get")


# --- faults, counters, latency, TTL ---------------------------------------------------------------------


def test_html_502_reaches_the_client(sb: GcpSandbox) -> None:
    sc = sb.scenario
    sb.inject_fault("generateAccessToken", status=502, html=True)
    credentials = impersonate(sb, sc.reader_sa)
    sb.reset_calls()
    with pytest.raises(exceptions.RefreshError) as excinfo:
        credentials.refresh(Request())
    assert excinfo.value.args[0] == "Unable to acquire impersonated credentials"
    assert excinfo.value.args[1].startswith("<!DOCTYPE html>")
    assert "<title>Error 502 (Server Error)!!1</title>" in excinfo.value.args[1]
    assert sb.calls("generateAccessToken") == 1  # google-auth does not retry generateAccessToken
    credentials.refresh(Request())  # the fault was for one request
    assert sb.calls("generateAccessToken") == 2

    # the ID-token path calls response.json() on the HTML page
    sb.inject_fault("generateIdToken", status=502, html=True)
    id_credentials = impersonated_credentials.IDTokenCredentials(credentials, target_audience="https://aud")
    with pytest.raises(ValueError, match="Expecting value"):
        id_credentials.refresh(Request())


def test_json_faults_on_storage_and_iam(sb: GcpSandbox) -> None:
    sc = sb.scenario
    sb.inject_fault("storage", status=503, html=False)
    token = sb.mint_token(sc.reader_sa)
    url = f"{sb.storage_host}/storage/v1/b/{sc.bucket_a}"
    failed = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert failed.status_code == 503
    assert failed.json()["error"]["errors"][0]["reason"] == "backendError"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200

    sb.inject_fault("iam", status=429, html=False, times=2)
    source = sb.mint_token(sc.source_sa)
    for _ in range(2):
        response = iam_post(sb, sc.reader_sa, "generateAccessToken", {"scope": [CLOUD_PLATFORM_SCOPE]}, source)
        assert response.status_code == 429
        assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert iam_post(sb, sc.reader_sa, "generateAccessToken", {"scope": [CLOUD_PLATFORM_SCOPE]}, source).ok


def test_counters_count_what_google_auth_sends(sb: GcpSandbox) -> None:
    sc = sb.scenario
    sb.reset_calls()
    credentials = impersonate(sb, sc.reader_sa)  # reads the source's universe domain: 1 metadata GET
    credentials.refresh(Request())  # source refresh = recursive info + token, then generateAccessToken
    assert sb.calls_by_kind() == {"metadata_other": 2, "metadata_token": 1, "generateAccessToken": 1}
    assert sb.calls("metadata") == 3
    assert sb.calls("iam") == 1

    gcs(sb, credentials).bucket(sc.bucket_a).blob(sc.bucket_a_key).download_as_bytes()
    wait_for_background_requests()
    assert sb.calls("storage") == 2  # the download and the background get_bucket
    assert sb.calls() == 6
    sb.reset_calls()
    assert sb.calls() == 0


def test_latency_and_forced_ttl(sb: GcpSandbox) -> None:
    sc = sb.scenario
    credentials = impersonate(sb, sc.reader_sa)
    credentials.refresh(Request())
    sb.set_latency("generateAccessToken", 0.2)
    started = time.monotonic()
    credentials.refresh(Request())
    assert time.monotonic() - started >= 0.2
    sb.set_latency("generateAccessToken", 0)

    sb.force_token_ttl(120)
    credentials.refresh(Request())
    remaining = credentials.expiry - datetime.now(UTC).replace(tzinfo=None)
    assert timedelta(seconds=110) < remaining <= timedelta(seconds=120)
    token = requests.get(
        f"{sb.metadata_url}/computeMetadata/v1/instance/service-accounts/default/token", headers=MD, timeout=5
    ).json()
    assert token["expires_in"] <= 120


# --- other IAM Credentials methods and request validation ------------------------------------------------


def test_sign_blob_sign_jwt_and_id_tokens(sb: GcpSandbox) -> None:
    sc = sb.scenario
    credentials = impersonate(sb, sc.reader_sa)
    signature = credentials.sign_bytes(b"payload")  # google.auth.iam._IAM_SIGN_ENDPOINT, patched
    sb.public_key(sc.reader_sa).verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())

    id_credentials = impersonated_credentials.IDTokenCredentials(
        credentials, target_audience="https://service.example", include_email=True
    )
    id_credentials.refresh(Request())
    claims = sb.verify_id_token(id_credentials.token, "https://service.example")
    assert claims["email"] == sc.reader_sa
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["sub"] == sb.unique_id(sc.reader_sa)

    source = sb.mint_token(sc.source_sa)
    payload = {"iss": sc.reader_sa, "aud": "https://x", "exp": int(time.time()) + 600}
    signed = iam_post(sb, sc.reader_sa, "signJwt", {"payload": json.dumps(payload)}, source).json()
    assert set(signed) == {"keyId", "signedJwt"}
    assert jwt.get_unverified_header(signed["signedJwt"])["kid"] == signed["keyId"] == sb.key_id(sc.reader_sa)
    decoded = jwt.decode(signed["signedJwt"], sb.public_key(sc.reader_sa), algorithms=["RS256"], audience="https://x")
    assert decoded == payload

    blob = iam_post(sb, sc.reader_sa, "signBlob", {"payload": base64.b64encode(b"x").decode()}, source).json()
    assert set(blob) == {"keyId", "signedBlob"}
    denied = iam_post(sb, sc.no_creator_sa, "signBlob", {"payload": "eA=="}, source)
    assert denied.json() == permission_denied("iam.serviceAccounts.signBlob")
    denied = iam_post(sb, sc.no_creator_sa, "generateIdToken", {"audience": "https://x"}, source)
    assert denied.json() == permission_denied("iam.serviceAccounts.getOpenIdToken")
    denied = iam_post(sb, sc.no_creator_sa, "signJwt", {"payload": "{}"}, source)
    assert denied.json() == permission_denied("iam.serviceAccounts.signJwt")


def test_sign_bytes_retries_a_502(sb: GcpSandbox) -> None:
    sb.inject_fault("signBlob", status=502)
    sb.reset_calls()
    impersonate(sb, sb.scenario.reader_sa).sign_bytes(b"payload")
    assert sb.calls("signBlob") == 2


def test_iam_request_validation(sb: GcpSandbox) -> None:
    sc = sb.scenario
    source = sb.mint_token(sc.source_sa)
    scope = {"scope": [CLOUD_PLATFORM_SCOPE]}
    response = iam_post(sb, sc.reader_sa, "generateAccessToken", scope, source, project=sc.customer_project)
    assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert iam_post(sb, sc.reader_sa, "generateAccessToken", {}, source).status_code == 400  # no scope
    assert iam_post(sb, sc.reader_sa, "generateIdToken", {}, source).status_code == 400  # no audience
    bad_delegate = {**scope, "delegates": [f"projects/{sc.customer_project}/serviceAccounts/{sc.hop_sa}"]}
    assert iam_post(sb, sc.chained_reader_sa, "generateAccessToken", bad_delegate, source).status_code == 400
    assert iam_post(sb, sc.reader_sa, "generateAccessToken", {**scope, "lifetime": "1h"}, source).status_code == 400
    assert iam_post(sb, sc.reader_sa, "frobnicate", scope, source).status_code == 404
    # the target may be named by unique id; an ID token is not an access token
    assert iam_post(sb, sb.unique_id(sc.reader_sa), "generateAccessToken", scope, source).ok
    id_token = iam_post(sb, sc.reader_sa, "generateIdToken", {"audience": "a"}, source).json()["token"]
    unsupported = iam_post(sb, sc.reader_sa, "generateAccessToken", scope, id_token)
    assert unsupported.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_TYPE_UNSUPPORTED"


def test_storage_grants_and_admin_upload(sb: GcpSandbox) -> None:
    sc = sb.scenario
    sb.admin_upload(sc.bucket_a, "new/object.bin", b"\x00\x01")
    client = gcs(sb, impersonate(sb, sc.reader_sa))
    assert client.bucket(sc.bucket_a).blob("new/object.bin").download_as_bytes() == b"\x00\x01"
    with pytest.raises(api_exceptions.Forbidden, match=r"storage\.objects\.create"):
        client.bucket(sc.bucket_a).blob("upload.txt").upload_from_string(b"up")
    wanted = ["storage.objects.get", "storage.objects.create", "storage.buckets.get"]
    assert client.bucket(sc.bucket_a).test_iam_permissions(wanted) == ["storage.objects.get", "storage.buckets.get"]
    sb.grant_storage(sc.reader_sa, sc.bucket_a, "roles/storage.objectCreator")
    client.bucket(sc.bucket_a).blob("upload.txt").upload_from_string(b"up")
    assert sb.admin_download(sc.bucket_a, "upload.txt") == b"up"
    wait_for_background_requests()


# --- CLI -----------------------------------------------------------------------------------------------


def test_cli_starts_gcp_only(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    base = [sys.executable, "-m", "dev.sandbox"]
    run = {"cwd": REPO_ROOT, "capture_output": True, "text": True, "timeout": 60}
    started = subprocess.run([*base, "start", "--clouds", "gcp", "--state-file", str(state_file)], **run)
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads(state_file.read_text())
        assert state["clouds"] == ["gcp"]
        assert "endpoint_url" not in state  # no AWS
        gcp = state["gcp"]
        ping = requests.get(f"http://{gcp['metadata_host']}/", headers=MD, timeout=5)
        assert ping.headers["Metadata-Flavor"] == "Google"
        exports = subprocess.run([*base, "env", "gcp", "--state-file", str(state_file)], **run).stdout
        assert f"export GCE_METADATA_HOST={gcp['metadata_host']}" in exports
        assert f"export STORAGE_EMULATOR_HOST={gcp['storage_host']}" in exports
        assert subprocess.run([*base, "env", "irsa", "--state-file", str(state_file)], **run).returncode == 1
    finally:
        stopped = subprocess.run([*base, "stop", "--state-file", str(state_file)], **run)
    assert stopped.returncode == 0, stopped.stderr
    assert not state_file.exists()
    assert not Path(gcp["tmp_dir"]).exists()
