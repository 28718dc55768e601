"""Cross-cloud sources: the pod's identity on one cloud as a token another cloud trusts.

One module per SOURCE cloud (``gcp.py``: a Google ID token; ``azure.py``: an Entra access token;
``aws.py``: a JWT from STS ``GetWebIdentityToken`` and AWS credentials for Google's token exchange).
Each builds a :class:`SubjectTokenSource`; the TARGET cloud's credentials use it as the first hop (the web
identity for ``AssumeRoleWithWebIdentity``, the subject token for Google's STS, the client assertion for
Entra) and then run their existing machinery (role chain, impersonation chain, target identity).

The contract every source keeps:

- ``get()`` / ``aget()`` return a :class:`SubjectToken` shared per :meth:`SubjectTokenSource.key` in the
  process (``registry.REGISTRY``), refreshed ahead of expiry through ``core.RefreshingToken`` (single
  flight, stale served on failure), with the host cache honoured;
- the token never reaches a log, a repr or an exception: :func:`subject_token` registers it with the
  redaction and :class:`SubjectToken`'s repr shows only the claims;
- ``describe()`` is the report hop (index 0) for ``whoami``: the source identity and the claims the
  target's trust checks (``iss``, ``sub``, ``aud``).

Pure Python: no Airflow import, no cloud SDK import (the per-cloud modules import their SDKs).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from airflow_workload_identity import redaction
from airflow_workload_identity.report import Hop
from airflow_workload_identity.tokens import unverified_claims

__all__ = [
    "CLAIM_NAMES",
    "CODEC",
    "SourceCloud",
    "SubjectToken",
    "SubjectTokenCodec",
    "SubjectTokenSource",
    "audience_of",
    "claim_details",
    "source_hop",
    "subject_token",
]

SourceCloud = Literal["aws", "gcp", "azure"]

#: The claims shown in ``whoami`` and errors, in this order, when the token carries them (never a secret:
#: issuer, subject, audience and the ids a trust policy or federated credential is written against).
CLAIM_NAMES: tuple[str, ...] = ("iss", "sub", "aud", "email", "azp", "tid", "oid", "appid", "exp")


@dataclass(frozen=True, repr=False)
class SubjectToken:
    """A source cloud's token, about to be presented to the target cloud.

    ``claims`` are read without verification (the target verifies); ``principal`` names the source
    identity for reports and errors (service-account e-mail, managed identity client id, role ARN)."""

    token: str
    expires_at: float
    claims: Mapping[str, Any]
    source_cloud: SourceCloud
    principal: str

    @property
    def issuer(self) -> str:
        return str(self.claims.get("iss", ""))

    @property
    def subject(self) -> str:
        return str(self.claims.get("sub", ""))

    @property
    def audience(self) -> str:
        return audience_of(self.claims)

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def __repr__(self) -> str:  # never the token
        when = dt.datetime.fromtimestamp(self.expires_at, dt.UTC).isoformat(timespec="seconds")
        return (
            f"SubjectToken(source_cloud={self.source_cloud!r}, principal={self.principal!r}, "
            f"iss={self.issuer!r}, sub={self.subject!r}, aud={self.audience!r}, expires_at={when})"
        )

    __str__ = __repr__


def audience_of(claims: Mapping[str, Any]) -> str:
    """The ``aud`` claim as text (a list of audiences joined by commas, as trust conditions list them)."""
    aud = claims.get("aud", "")
    if isinstance(aud, list | tuple):
        return ",".join(str(a) for a in aud)
    return str(aud)


def subject_token(
    token: str,
    *,
    source_cloud: SourceCloud,
    principal: str,
    expires_at: float | None = None,
    owner: object | None = None,
) -> SubjectToken:
    """A :class:`SubjectToken` from a JWT: claims read (unverified), expiry from ``exp`` unless given.

    The token is registered with the redaction (as a live value of ``owner``, the source object holding
    it, forgotten with it) so it cannot reach a log even if some SDK prints it."""
    claims = unverified_claims(token)
    if expires_at is None:
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else time.time() + 300.0
    redaction.remember(owner if owner is not None else _ORPHANS, token, expires_at=expires_at)
    return SubjectToken(
        token=token,
        expires_at=float(expires_at),
        claims=dict(claims),
        source_cloud=source_cloud,
        principal=principal,
    )


class _Orphans:
    """Owner of tokens made without a source object (their redaction slot lives as long as the module)."""


_ORPHANS = _Orphans()


def claim_details(claims: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Report details for the claims a target's trust checks (``iss``, ``sub``, ``aud`` first)."""
    details: list[tuple[str, str]] = []
    for name in CLAIM_NAMES:
        if name not in claims:
            continue
        if name == "exp":
            value = claims[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                shown = dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")
                details.append(("token exp", shown))
            continue
        shown = audience_of(claims) if name == "aud" else str(claims[name])
        details.append((f"token {name}", shown))
    return tuple(details)


def source_hop(token: SubjectToken, *, method: str, endpoint: str | None = None) -> Hop:
    """The report hop (index 0) for a source token: who the source is and the claims the target checks."""
    return Hop(
        index=0,
        principal=token.principal,
        method=method,
        expiry=dt.datetime.fromtimestamp(token.expires_at, dt.UTC),
        endpoint=endpoint,
        details=(("source cloud", token.source_cloud), *claim_details(token.claims)),
    )


@runtime_checkable
class SubjectTokenSource(Protocol):
    """What a target cloud's credentials need from a cross-cloud source."""

    source_cloud: str

    def key(self) -> tuple[Hashable, ...]:
        """Everything that changes the token (audience, source identity, endpoint, lifetime), never the token:
        part of the target credential's registry and host-cache keys."""
        ...

    def get(self) -> SubjectToken:
        """A usable token, shared per key in the process, refreshed single-flight ahead of expiry."""
        ...

    async def aget(self) -> SubjectToken:
        """The same for the event loop (no thread while the token is fresh)."""
        ...

    def describe(self) -> Hop:
        """The source hop for ``whoami`` (index 0), with the token's ``iss`` / ``sub`` / ``aud``."""
        ...


class SubjectTokenCodec:
    """A :class:`SubjectToken` as a host-cache payload and back (for ``core.RefreshingToken``)."""

    def to_payload(self, value: SubjectToken) -> dict[str, Any]:
        return {
            "token": value.token,
            "expires_at": value.expires_at,
            "source_cloud": value.source_cloud,
            "principal": value.principal,
        }

    def from_payload(self, payload: dict[str, Any]) -> SubjectToken:
        cloud = str(payload["source_cloud"])
        if cloud not in ("aws", "gcp", "azure"):
            raise ValueError(f"unknown source cloud {cloud!r} in a cached subject token")
        return subject_token(
            str(payload["token"]),
            source_cloud=cloud,  # type: ignore[arg-type]
            principal=str(payload["principal"]),
            expires_at=float(payload["expires_at"]),
        )


#: The codec the three sources share.
CODEC = SubjectTokenCodec()
