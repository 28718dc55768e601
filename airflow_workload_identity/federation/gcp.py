"""Google Cloud as the SOURCE of a cross-cloud federation: the pod's Google ID token.

A Google-signed OpenID Connect ID token of the pod's service account (``iss`` ``https://accounts.google.com``,
``sub`` the account's unique numeric id, ``email``), for an audience the target cloud trusts: AWS's
``AssumeRoleWithWebIdentity`` (``sts.amazonaws.com``), an Entra federated identity credential
(``api://AzureADTokenExchange``), any OIDC relying party.

Built on google-auth: ``compute_engine.IDTokenCredentials`` on the GKE metadata server's identity endpoint
(``instance/service-accounts/default/identity?audience=X&format=full``), or, with Application Default
Credentials from a key or impersonation file, ``google.oauth2.id_token.fetch_id_token_credentials``. The
token is shared per (source, audience) in the process registry and refreshed by the package's credential
core (:class:`~airflow_workload_identity.gcp.credentials.SharedToken`): one request in flight, ahead of
expiry, the host cache honoured for the metadata server's token (the pod's own identity, the same for every
process on the host).

No Airflow imports.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

import google.auth.exceptions
from google.auth import compute_engine
from google.oauth2 import id_token as google_id_token

from airflow_workload_identity.cache import MODES, host_layer
from airflow_workload_identity.errors import ConfigError, IdentityUnavailable
from airflow_workload_identity.federation import SubjectToken, source_hop, subject_token
from airflow_workload_identity.gcp.credentials import (
    ADC_ENV,
    MAX_ATTEMPTS,
    METADATA_ATTEMPT_SECONDS,
    SharedToken,
    _metadata_host,
    _probe_metadata,
    _short,
    _source_error,
    http_request,
)
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop
from airflow_workload_identity.tokens import unverified_claims

__all__ = ["GOOGLE_ISSUER", "SOURCES", "GoogleIdTokenSource", "google_id_token_source"]

GOOGLE_ISSUER = "https://accounts.google.com"
SOURCES = ("auto", "metadata", "adc")
#: An audience is one token of printable ASCII (an app id URI, a hostname, a URL): what the metadata
#: server's ``audience`` query parameter and every verifier's exact match accept.
_AUDIENCE = re.compile(r"^[!-~]{1,512}$")


def _check(audience: object, source: object, cache: object, names: Mapping[str, str]) -> None:
    if not isinstance(audience, str) or not _AUDIENCE.match(audience):
        raise ConfigError(
            names.get("audience", "audience"),
            "must be a non-empty string of printable ASCII without spaces (at most 512 characters)",
            "use the audience the target trusts, e.g. api://AzureADTokenExchange for Azure or sts.amazonaws.com "
            "for AWS",
        )
    if source not in SOURCES:
        raise ConfigError(
            names.get("source", "source"),
            f"{source!r} is not one of {', '.join(SOURCES)}",
            "use 'metadata' (the GKE metadata server), 'adc' (Application Default Credentials from "
            "GOOGLE_APPLICATION_CREDENTIALS) or 'auto'",
        )
    if cache is not None and cache not in MODES:
        raise ConfigError(
            names.get("credential_cache", "credential_cache"),
            f"{cache!r} is not one of {', '.join(MODES)}",
            "use host, process or off",
        )


def _epoch(expiry: dt.datetime | None, claims: Mapping[str, Any]) -> float:
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    if expiry is not None:
        return expiry.replace(tzinfo=dt.UTC).timestamp()
    return 0.0


class GoogleIdTokenSource:
    """The pod's Google ID token for one audience: a :class:`~airflow_workload_identity.federation.SubjectTokenSource`.

    Obtain it with :func:`google_id_token_source` (shared per key in the process); no network call happens
    until :meth:`get`."""

    source_cloud = "gcp"

    def __init__(
        self,
        kind: str,
        audience: str,
        token: SharedToken,
        key: tuple[Hashable, ...],
        origin: str,
        endpoint: str | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.audience = audience
        self.token = token
        self._key = key
        self.origin = origin
        self._last: SubjectToken | None = None

    def key(self) -> tuple[Hashable, ...]:
        """What changes the token: the source (metadata server or ADC file) and the audience."""
        return self._key

    def add_listener(self, listener: Any) -> None:
        """Call ``listener`` with every new token (``redaction.watch``)."""
        self.token.add_listener(listener)

    def _subject(self, token: str) -> SubjectToken:
        last = self._last
        if last is not None and last.token == token:
            return last
        claims = unverified_claims(token)
        principal = str(claims.get("email") or claims.get("sub") or "(unknown Google account)")
        expires_at = _epoch(self.token.expiry, claims)
        subject = subject_token(token, source_cloud="gcp", principal=principal, expires_at=expires_at, owner=self)
        self._last = subject
        return subject

    def get(self) -> SubjectToken:
        """A current ID token (the shared one while fresh; one refresh in flight otherwise)."""
        return self._subject(self.token.ensure())

    async def aget(self) -> SubjectToken:
        """:meth:`get` for the event loop: no thread while fresh; a refresh runs off the loop."""
        return self._subject(await self.token.aensure())

    def describe(self) -> Hop:
        """The source hop for ``whoami``: the service account and the claims a target checks (a live token)."""
        return source_hop(self.get(), method=f"Google ID token from {self.origin}", endpoint=self.endpoint)

    def __repr__(self) -> str:  # never the token
        return f"<GoogleIdTokenSource {self.origin} audience={self.audience!r}>"


def _metadata_source(audience: str, cache: str | None, registry: Registry) -> GoogleIdTokenSource:
    host = _metadata_host()
    key: tuple[Hashable, ...] = ("fed-gcp-id-token", "metadata", host, audience)
    endpoint = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/identity"

    def build() -> GoogleIdTokenSource:
        # No request here (no metadata call until the first token: the e-mail is in the token); no certificate
        # binding (the target cloud cannot check an Agent Identity certificate).
        inner = compute_engine.IDTokenCredentials(  # type: ignore[no-untyped-call]
            None, audience, use_metadata_identity_endpoint=True, bind_id_token=False
        )
        # The pod's own identity is the same for every process of the host: its token may be shared there.
        store, store_key = host_layer(key, cache)
        token = SharedToken(
            inner,
            describe=f"Google ID token for {audience} (GKE metadata server {host})",
            explain=_source_error("metadata"),
            attempts=MAX_ATTEMPTS,
            attempt_timeout=METADATA_ATTEMPT_SECONDS,
            precheck=_probe_metadata,
            endpoint=endpoint,
            store=store,
            store_key=store_key,
        )
        return GoogleIdTokenSource("metadata", audience, token, key, f"the GKE metadata server ({host})", endpoint)

    return registry.get_or_create(key, build)


def _adc_source(audience: str, env: Mapping[str, str], registry: Registry) -> GoogleIdTokenSource:
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS") or ""
    if not path:
        raise IdentityUnavailable(
            "adc",
            ADC_ENV,
            "a Google ID token from Application Default Credentials needs a service-account key or "
            "impersonated-service-account file in GOOGLE_APPLICATION_CREDENTIALS (gcloud user credentials cannot "
            "mint ID tokens for an audience); on GKE use source 'metadata'",
        )
    key: tuple[Hashable, ...] = ("fed-gcp-id-token", "adc", path, audience)

    def build() -> GoogleIdTokenSource:
        try:
            inner = google_id_token.fetch_id_token_credentials(audience, request=http_request())  # type: ignore[no-untyped-call]
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise IdentityUnavailable("adc", ADC_ENV, _short(exc)) from None
        token = SharedToken(
            inner,
            describe=f"Google ID token for {audience} (Application Default Credentials {path})",
            explain=_source_error("adc"),
            attempts=1,
        )
        return GoogleIdTokenSource("adc", audience, token, key, f"Application Default Credentials ({path})")

    return registry.get_or_create(key, build)


def google_id_token_source(
    audience: str,
    *,
    source: str = "auto",
    cache: str | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    field_names: Mapping[str, str] | None = None,
) -> GoogleIdTokenSource:
    """The shared source of the pod's Google ID tokens for ``audience``. No network call happens here.

    :param audience: the ``aud`` the target trusts (``api://AzureADTokenExchange``, ``sts.amazonaws.com``).
    :param source: ``metadata`` (GKE metadata server), ``adc`` (a key or impersonation file in
        ``GOOGLE_APPLICATION_CREDENTIALS``) or ``auto`` (``adc`` when that variable is set, else ``metadata``).
    :param cache: the connection's ``credential_cache`` (``host``/``process``/``off``; ``None``: the
        deployment's setting). Only the metadata server's token goes to the host cache.
    :param field_names: the caller's connection field for each parameter (``{"audience": "assertion_audience"}``),
        so that a ``ConfigError`` names the field to fix.
    :raises ConfigError: a malformed audience, source or cache setting (before any network call).
    """
    _check(audience, source, cache, field_names or {})
    environ = os.environ if env is None else env
    kind = source
    if kind == "auto":
        kind = "adc" if environ.get("GOOGLE_APPLICATION_CREDENTIALS") else "metadata"
    if kind == "metadata":
        return _metadata_source(audience, cache, registry)
    return _adc_source(audience, environ, registry)
