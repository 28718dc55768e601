"""Cross-cloud to Google Cloud: AWS -> GCP and Azure -> GCP, end to end over loopback.

The AWS source (``federation/aws.py``): JWTs from STS ``GetWebIdentityToken`` signed by the account's
outbound issuer (JWKS served by the AWS sandbox), and google-auth's AWS supplier on the shared credentials.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import jwt
import pytest

from airflow_workload_identity.errors import AccessDenied
from airflow_workload_identity.federation.aws import aws_credentials_supplier, aws_web_identity_token_source
from dev.sandbox import AwsSandbox
from dev.sandbox import _fed_aws_outbound as outbound
from tests.fixtures_aws import Pod

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
