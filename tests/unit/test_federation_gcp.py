"""``federation/gcp.py``: the pod's Google ID token as a cross-cloud subject token.

Bad input is refused before any request; the token comes from the GKE metadata server (the sandbox's, over
loopback), is Google-signed for the audience, shared per (source, audience), and shared across processes
through the host cache."""

from __future__ import annotations

import asyncio
import os

import pytest

from airflow_workload_identity.errors import ConfigError, IdentityUnavailable
from airflow_workload_identity.federation import SubjectTokenSource
from airflow_workload_identity.federation.gcp import GOOGLE_ISSUER, google_id_token_source
from airflow_workload_identity.registry import Registry

AZURE_AUDIENCE = "api://AzureADTokenExchange"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"audience": ""}, "audience"),
        ({"audience": "api://Azure AD"}, "audience"),
        ({"audience": "x" * 513}, "audience"),
        ({"audience": None}, "audience"),
        ({"audience": AZURE_AUDIENCE, "source": "keyfile"}, "source"),
        ({"audience": AZURE_AUDIENCE, "cache": "disk"}, "credential_cache"),
    ],
)
def test_bad_input_is_refused_before_any_request(kwargs, field, monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # nothing listens: a request would fail differently
    audience = kwargs.pop("audience")
    with pytest.raises(ConfigError) as info:
        google_id_token_source(audience, registry=Registry(), **kwargs)
    assert info.value.field == field
    assert "Fix:" in str(info.value)


def test_adc_without_a_credentials_file_is_unavailable_naming_the_variable(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(IdentityUnavailable) as info:
        google_id_token_source(AZURE_AUDIENCE, source="adc", registry=Registry())
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value)


def test_metadata_id_token_is_google_signed_for_the_audience(gke):
    source = google_id_token_source(AZURE_AUDIENCE, registry=Registry())
    assert isinstance(source, SubjectTokenSource)
    assert gke.calls() == 0, gke.calls_by_kind()  # nothing until asked
    token = source.get()
    claims = gke.verify_id_token(token.token, AZURE_AUDIENCE)  # signature, iss, aud, exp
    account = gke.scenario.source_sa
    assert claims["iss"] == GOOGLE_ISSUER == token.issuer
    assert claims["sub"] == gke.unique_id(account) == token.subject
    assert claims["email"] == account == token.principal
    assert token.audience == AZURE_AUDIENCE
    assert token.source_cloud == "gcp"
    assert token.expires_at == claims["exp"]
    assert gke.calls("metadata_identity") == 1
    assert token.token not in repr(token) and token.token not in repr(source)


def test_one_token_per_audience_shared_in_the_process(gke):
    registry = Registry()
    first = google_id_token_source(AZURE_AUDIENCE, registry=registry)
    assert google_id_token_source(AZURE_AUDIENCE, registry=registry) is first
    tokens = {first.get().token for _ in range(5)}
    assert len(tokens) == 1
    assert asyncio.run(first.aget()).token in tokens
    assert gke.calls("metadata_identity") == 1
    other = google_id_token_source("sts.amazonaws.com", registry=registry)
    assert other is not first and other.key() != first.key()
    assert other.get().audience == "sts.amazonaws.com"
    assert gke.calls("metadata_identity") == 2


def test_describe_shows_the_claims_the_target_checks(gke):
    hop = google_id_token_source(AZURE_AUDIENCE, registry=Registry()).describe()
    details = dict(hop.details)
    assert hop.index == 0
    assert hop.principal == gke.scenario.source_sa
    assert details["token iss"] == GOOGLE_ISSUER
    assert details["token sub"] == gke.unique_id(gke.scenario.source_sa)
    assert details["token aud"] == AZURE_AUDIENCE
    assert hop.endpoint and hop.endpoint.startswith(f"http://{gke.metadata_host}/")


def test_host_cache_shares_the_token_between_processes(gke, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE", "host")
    monkeypatch.setenv("AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR", str(tmp_path / "cache"))
    # two registries = two task processes on one host (same user, same metadata server)
    one = google_id_token_source(AZURE_AUDIENCE, registry=Registry()).get()
    two = google_id_token_source(AZURE_AUDIENCE, registry=Registry()).get()
    assert one.token == two.token
    assert gke.calls("metadata_identity") == 1
    assert os.listdir(tmp_path / "cache")
    # a connection that opts out asks the metadata server itself
    three = google_id_token_source(AZURE_AUDIENCE, cache="process", registry=Registry()).get()
    assert three.subject == one.subject
    assert gke.calls("metadata_identity") == 2


def test_no_metadata_server_is_identity_unavailable(gke, monkeypatch):
    import google.auth.compute_engine._metadata as metadata

    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setattr(metadata, "_GCE_METADATA_HOST", "127.0.0.1:9", raising=False)
    with pytest.raises(IdentityUnavailable) as info:
        google_id_token_source(AZURE_AUDIENCE, source="metadata", registry=Registry()).get()
    assert "GCE_METADATA_HOST" in str(info.value)
