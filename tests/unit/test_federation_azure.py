"""The shared cross-cloud interface and the Entra source's input checks (no network).

The Entra source end to end (a real token from the sandbox's Entra, shared, refreshed, presented to STS)
is in ``tests/integration/test_cross_cloud_to_aws.py``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from airflow_workload_identity import redaction
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.federation import (
    CODEC,
    SubjectToken,
    SubjectTokenSource,
    claim_details,
    source_hop,
    subject_token,
)
from airflow_workload_identity.federation.azure import EntraTokenSource, entra_token_source, v1_issuer, v2_issuer
from airflow_workload_identity.registry import Registry

TENANT = "11111111-1111-1111-1111-111111111111"
CLIENT = "a1f0e7d2-0c1b-4a5e-9f3d-1b2c3d4e5f60"


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJlLW5vdC1zaG93bg"


CLAIMS = {
    "iss": v1_issuer(TENANT),
    "sub": "b2e1f8c3-1d2c-4b6f-8e4a-2c3d4e5f6071",
    "aud": "api://airflow-federation",
    "tid": TENANT,
    "oid": "b2e1f8c3-1d2c-4b6f-8e4a-2c3d4e5f6071",
    "exp": int(time.time()) + 3600,
}


def test_subject_token_repr_shows_claims_never_the_token() -> None:
    token = _jwt(CLAIMS)
    made = subject_token(token, source_cloud="azure", principal="Entra object x")
    for shown in (repr(made), str(made), repr(source_hop(made, method="m")), str(claim_details(made.claims))):
        assert token not in shown
        assert "c2lnbmF0dXJl" not in shown
    assert made.issuer == v1_issuer(TENANT)
    assert made.audience == "api://airflow-federation"
    assert made.expires_at == CLAIMS["exp"]
    assert "api://airflow-federation" in repr(made) and CLAIMS["sub"] in repr(made)


def test_subject_token_is_redacted_from_text() -> None:
    token = _jwt({**CLAIMS, "uti": "x" * 40})
    subject_token(token, source_cloud="azure", principal="p")
    assert redaction.enabled()
    redacted = redaction.redact(f"the answer was {token} and {token}")
    assert token not in redacted and redacted.count("***") == 2


def test_audience_list_and_codec_round_trip() -> None:
    made = subject_token(_jwt({**CLAIMS, "aud": ["a", "b"]}), source_cloud="gcp", principal="sa@p")
    assert made.audience == "a,b"
    back = CODEC.from_payload(CODEC.to_payload(made))
    assert back.token == made.token and back.principal == "sa@p" and back.source_cloud == "gcp"
    assert back.claims == made.claims
    with pytest.raises(ValueError, match="unknown source cloud"):
        CODEC.from_payload({**CODEC.to_payload(made), "source_cloud": "oracle"})


def test_source_hop_lists_the_trust_claims_first() -> None:
    made = subject_token(_jwt(CLAIMS), source_cloud="azure", principal="p")
    hop = source_hop(made, method="Entra token", endpoint="https://login")
    names = [name for name, _ in hop.details]
    assert names[:4] == ["source cloud", "token iss", "token sub", "token aud"]
    assert hop.index == 0 and hop.expiry is not None


def test_issuers() -> None:
    assert v1_issuer(TENANT) == f"https://sts.windows.net/{TENANT}/"
    assert v2_issuer(TENANT) == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert v2_issuer(TENANT, "https://login.microsoftonline.us/") == f"https://login.microsoftonline.us/{TENANT}/v2.0"


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"audience": "api://x/.default"}, "audience", "/.default"),
        ({"audience": "sts.amazonaws.com"}, "audience", "app id URI"),
        ({"audience": "api://has space"}, "audience", "app id URI"),
        ({"audience": "api://x\n"}, "audience", "app id URI"),
        ({"audience": "api://x", "mode": "secret"}, "mode", "not one of"),
        ({"audience": "api://x", "tenant_id": "not a tenant!"}, "tenant_id", "tenant"),
        ({"audience": "api://x", "client_id": "abc"}, "client_id", "GUID"),
        ({"audience": "api://x", "cloud": "mars"}, "cloud", "not one of"),
        ({"audience": "api://x", "authority_host": "http://login"}, "authority_host", "https"),
        ({"audience": "api://x", "client_assertion_file": "relative/tok"}, "client_assertion_file", "absolute"),
        ({"audience": "api://x", "cache": "disk"}, "credential_cache", "host, process, off"),
        ({"audience": "api://x", "mode": "imds", "client_assertion_file": "/tok"}, "client_assertion_file", "IMDS"),
    ],
)
def test_bad_input_is_a_config_error_naming_the_field(kwargs: dict[str, Any], field: str, words: str) -> None:
    audience = kwargs.pop("audience")
    with pytest.raises(ConfigError) as caught:
        entra_token_source(audience, env={}, registry=Registry(), **kwargs)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert caught.value.fix


def test_field_names_map_to_the_callers_connection_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        entra_token_source("nope", env={}, registry=Registry(), field_names={"audience": "web_identity_audience"})
    assert caught.value.field == "web_identity_audience"


def test_workload_identity_without_its_variables_is_identity_unavailable() -> None:
    from airflow_workload_identity.errors import IdentityUnavailable

    with pytest.raises(IdentityUnavailable) as caught:
        entra_token_source("api://x", mode="workload_identity", env={}, registry=Registry(), cache="off")
    assert "AZURE_TENANT_ID" in str(caught.value)


def test_sources_are_shared_per_identity_and_audience_without_a_request(tmp_path: Any) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("unused: no request is made while building")
    env = {
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": "https://127.0.0.1:9",
    }
    registry = Registry()
    one = entra_token_source("api://a", env=env, registry=registry, cache="process")
    assert entra_token_source("api://a", env=env, registry=registry, cache="process") is one
    other = entra_token_source("api://b", env=env, registry=registry, cache="process")
    assert other is not one and other.shared is one.shared  # one Azure identity, one token per audience
    assert isinstance(one, EntraTokenSource) and isinstance(one, SubjectTokenSource)
    assert one.key() != other.key() and "api://a" in one.key()
    assert one.identity.mode == "workload_identity" and one.scope == "api://a/.default"
    imds = entra_token_source("api://a", mode="imds", tenant_id=TENANT, env={}, registry=registry, cache="off")
    assert imds.identity.mode == "managed_identity"
    assert imds.identity.spec.expected_tenant_id == TENANT  # the tenant pins the token's tid


def test_subject_token_needs_no_exp() -> None:
    before = time.time()
    made: SubjectToken = subject_token(_jwt({"iss": "i"}), source_cloud="aws", principal="p")
    assert made.expires_at >= before
