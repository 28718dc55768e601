"""The sandbox's STS trusts other clouds' issuers for ``AssumeRoleWithWebIdentity``, as real STS does.

Real STS verifies a web identity token against the issuer's published keys: Google's
(``https://www.googleapis.com/oauth2/v3/certs``, for the built-in provider ``accounts.google.com``, which
needs no IAM OIDC provider) or those an IAM OIDC provider's issuer publishes (Entra's
``https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`` for ``https://sts.windows.net/<tenant>/``).

Here the issuing sandbox serves its JWKS on its loopback port and this sandbox is told where
(:func:`trust_issuer`); keys are fetched over HTTP(S) on first use and cached, and fetched again when a
token names a key id the cache lacks (key rotation). ``_patches._verify_web_identity`` asks
:func:`jwks_key` for keys it does not hold itself and :func:`builtin_provider` / :func:`find_provider`
for the provider (the checks of signature, ``iss``, ``aud``, ``exp``, ``sub`` and the trust policy stay
there, one implementation for every issuer).

Condition keys as AWS defines them: for ``accounts.google.com``, ``:aud`` is the token's ``azp`` (the
service account's unique id) when present, ``:oaud`` its ``aud``, ``:sub`` its ``sub``; for an IAM OIDC
provider, ``<provider url>:aud`` / ``:sub``, the provider URL being the issuer without ``https://``
(Entra's v1 issuer keeps its trailing slash).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = [
    "BUILTIN_PROVIDERS",
    "GOOGLE_ISSUER",
    "builtin_provider",
    "find_provider",
    "jwks_fetches",
    "jwks_key",
    "seed_federated_readers",
    "trust_issuer",
    "untrust_issuer",
]

GOOGLE_ISSUER = "https://accounts.google.com"
#: Issuers STS knows without an IAM OIDC provider: issuer -> the ``Federated`` principal and condition prefix.
BUILTIN_PROVIDERS = {GOOGLE_ISSUER: "accounts.google.com"}
#: A JWKS fetch (loopback) never waits longer than this.
FETCH_TIMEOUT = 5.0
#: Keys are fetched again after this long (real verifiers cache JWKS for hours; tests rotate explicitly).
CACHE_SECONDS = 3600.0


@dataclass
class _Trusted:
    jwks_url: str
    ca_file: str | None
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = 0.0
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# ServerState.name -> issuer (no trailing slash) -> where its keys are
_TRUSTED: dict[str, dict[str, _Trusted]] = {}
_LOCK = threading.Lock()


def _norm(issuer: str) -> str:
    return issuer.rstrip("/")


def trust_issuer(state: Any, issuer_url: str, jwks_url: str, *, ca_file: str | None = None) -> None:
    """Let this sandbox's STS verify tokens of ``issuer_url`` with the keys served at ``jwks_url``."""
    if not issuer_url.startswith("https://"):
        raise ValueError(f"issuer {issuer_url!r} is not an https URL")
    with _LOCK:
        _TRUSTED.setdefault(state.name, {})[_norm(issuer_url)] = _Trusted(jwks_url, ca_file)


def untrust_issuer(state: Any, issuer_url: str) -> None:
    with _LOCK:
        _TRUSTED.get(state.name, {}).pop(_norm(issuer_url), None)


def jwks_fetches(state: Any, issuer_url: str) -> int:
    """How many times the issuer's JWKS was fetched (tests: keys are cached, not fetched per token)."""
    with _LOCK:
        trusted = _TRUSTED.get(state.name, {}).get(_norm(issuer_url))
    return trusted.fetches if trusted is not None else 0


def _fetch(trusted: _Trusted) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=trusted.ca_file) if trusted.jwks_url.startswith("https") else None
    request = urllib.request.Request(trusted.jwks_url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT, context=context) as response:
        document = json.loads(response.read().decode("utf-8"))
    keys: dict[str, Any] = {}
    for jwk in document.get("keys", []):
        if jwk.get("kty") == "RSA" and jwk.get("kid"):
            keys[str(jwk["kid"])] = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    return keys


def jwks_key(state: Any, issuer: str, kid: str) -> Any | None:
    """The public key ``kid`` of a trusted ``issuer`` (fetched over loopback, cached), or ``None`` when the
    issuer is not trusted, its keys cannot be fetched or it has no such key."""
    with _LOCK:
        trusted = _TRUSTED.get(state.name, {}).get(_norm(issuer))
    if trusted is None:
        return None
    with trusted.lock:
        stale = time.time() - trusted.fetched_at > CACHE_SECONDS
        if kid not in trusted.keys or stale:
            try:
                trusted.keys = _fetch(trusted)
            except (OSError, ValueError):
                return None  # STS: "Couldn't retrieve verification key from your identity provider"
            finally:
                trusted.fetches += 1
            trusted.fetched_at = time.time()
        return trusted.keys.get(kid)


def builtin_provider(issuer: str) -> str | None:
    """``accounts.google.com`` for Google's issuer (no IAM OIDC provider needed); ``None`` otherwise."""
    return BUILTIN_PROVIDERS.get(_norm(issuer))


def find_provider(backend: Any, partition: str, account: str, issuer: str) -> Any | None:
    """The IAM OIDC provider registered for ``issuer`` in the account (with or without a trailing slash)."""
    base = f"arn:{partition}:iam::{account}:oidc-provider/{issuer.removeprefix('https://')}"
    providers = backend.open_id_providers
    for arn in (base, base.rstrip("/"), base.rstrip("/") + "/"):
        if arn in providers:
            return providers[arn]
    return None


def seed_federated_readers(
    aws: Any, gcp: Any, azure: Any, *, entra_audience: str = "api://airflow-aws"
) -> dict[str, str]:
    """What a customer sets up for GCP -> AWS and Azure -> AWS, done the way the docs say (benchmarks, demo):
    this STS trusts Google's and Entra's keys over loopback; the customer account gets an IAM OIDC provider
    for the Entra issuer (client id ``entra_audience``) and two roles reading bucket A, trusting the GKE pod's
    service account (``accounts.google.com:aud``/``:oaud``/``:sub``) and the AKS workload identity's object id.
    Returns the role ARNs by source cloud (idempotent)."""
    sc, gsc, asc = aws.scenario, gcp.scenario, azure.scenario
    entra_issuer = asc.access_token_issuer
    aws.trust_issuer(GOOGLE_ISSUER, gcp.google_jwks_url)
    aws.trust_issuer(
        entra_issuer, f"{azure.authority_host}/{asc.tenant_id}/discovery/v2.0/keys", ca_file=azure.ca_bundle
    )
    uid = gcp.add_service_account(gsc.source_sa)
    iam = aws.admin_client("iam", account=sc.customer_account)
    try:
        iam.create_open_id_connect_provider(Url=entra_issuer, ClientIDList=[entra_audience], ThumbprintList=["0" * 40])
    except iam.exceptions.EntityAlreadyExistsException:
        iam.add_client_id_to_open_id_connect_provider(
            OpenIDConnectProviderArn=f"arn:aws:iam::{sc.customer_account}:oidc-provider/"
            + entra_issuer.removeprefix("https://"),
            ClientID=entra_audience,
        )
    prefix = entra_issuer.removeprefix("https://")
    read_a = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{sc.bucket_a}"},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{sc.bucket_a}/*"},
            ],
        }
    )
    trusts = {
        "gcp": (
            "xc-gcp-reader",
            {
                "Principal": {"Federated": "accounts.google.com"},
                "Condition": {
                    "StringEquals": {
                        "accounts.google.com:aud": uid,
                        "accounts.google.com:oaud": "sts.amazonaws.com",
                        "accounts.google.com:sub": uid,
                    }
                },
            },
        ),
        "azure": (
            "xc-azure-reader",
            {
                "Principal": {"Federated": f"arn:aws:iam::{sc.customer_account}:oidc-provider/{prefix}"},
                "Condition": {
                    "StringEquals": {f"{prefix}:aud": entra_audience, f"{prefix}:sub": asc.workload_object_id}
                },
            },
        ),
    }
    arns: dict[str, str] = {}
    for cloud, (name, statement) in trusts.items():
        trust = {"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity", **statement}
        document = json.dumps({"Version": "2012-10-17", "Statement": [trust]})
        try:
            arns[cloud] = str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=document)["Role"]["Arn"])
        except iam.exceptions.EntityAlreadyExistsException:
            arns[cloud] = str(iam.get_role(RoleName=name)["Role"]["Arn"])
        iam.put_role_policy(RoleName=name, PolicyName="read-a", PolicyDocument=read_a)
    return arns
