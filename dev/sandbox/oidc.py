"""A local OIDC issuer: an RSA key pair held in memory that mints RS256 JWTs.

Nothing is served: the issuer URL is only a string, and whoever checks the tokens (the AWS sandbox's STS
patch, later an Azure or GCP fake) is handed the issuer's public key directly. Cloud-neutral: the
audience is a parameter (``sts.amazonaws.com`` for AWS, ``api://AzureADTokenExchange`` for Azure).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_ISSUER_URL = "https://oidc.eks.local-sandbox.example/id/SANDBOX"
DEFAULT_SUBJECT = "system:serviceaccount:airflow:airflow-worker"
DEFAULT_AUDIENCE = "sts.amazonaws.com"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _epoch(value: int | float | datetime) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


class OidcIssuer:
    """An OIDC issuer with its own RSA key (2048 bits, generated in memory)."""

    def __init__(self, issuer_url: str = DEFAULT_ISSUER_URL, *, kid: str | None = None) -> None:
        if not issuer_url.startswith("https://"):
            raise ValueError(f"an OIDC issuer URL must be https: {issuer_url!r}")
        self.issuer_url = issuer_url.rstrip("/")
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._private_key.public_key()
        numbers = self.public_key.public_numbers()
        self._jwk_core = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
        self.kid = kid or self.thumbprint()

    def __repr__(self) -> str:
        return f"OidcIssuer({self.issuer_url!r}, kid={self.kid!r})"

    @property
    def host_path(self) -> str:
        """The issuer without its scheme, as IAM names the provider and its condition keys."""
        return self.issuer_url.removeprefix("https://")

    def thumbprint(self) -> str:
        """RFC 7638 JWK thumbprint (SHA-256, base64url), used as the default ``kid``."""
        canonical = json.dumps(self._jwk_core, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()

    def jwk(self) -> dict[str, str]:
        return {**self._jwk_core, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def mint(
        self,
        sub: str = DEFAULT_SUBJECT,
        aud: str | list[str] = DEFAULT_AUDIENCE,
        ttl: int = 3600,
        exp: int | float | datetime | None = None,
        iat: int | float | datetime | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """An RS256 JWT signed by this issuer; ``extra_claims`` may override any standard claim."""
        issued = _epoch(iat) if iat is not None else int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer_url,
            "sub": sub,
            "aud": aud,
            "iat": issued,
            "nbf": issued,
            "exp": _epoch(exp) if exp is not None else issued + int(ttl),
            "jti": str(uuid.uuid4()),
        }
        claims.update(extra_claims or {})
        return jwt.encode(claims, self._private_key, algorithm="RS256", headers={"kid": self.kid})

    def verify(self, token: str, audience: str | list[str] | None = None, leeway: int = 0) -> dict[str, Any]:
        """Check a token against this issuer's key (signature, ``iss``, ``exp``/``nbf``, optional ``aud``)."""
        return jwt.decode(
            token,
            self.public_key,
            algorithms=["RS256"],
            issuer=self.issuer_url,
            audience=audience,
            leeway=leeway,
            options={"verify_aud": audience is not None},
        )


def foreign_issuer_for(issuer: OidcIssuer) -> OidcIssuer:
    """An issuer claiming the same URL with a different key: tokens it mints must be refused."""
    return OidcIssuer(issuer.issuer_url)
