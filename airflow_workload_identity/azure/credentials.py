"""How an Azure connection gets and keeps tokens: workload identity or managed identity, shared, refreshed.

Built on azure-identity: ``WorkloadIdentityCredential`` (the pod's projected token as client assertion)
or ``ManagedIdentityCredential`` (IMDS) directly, as the mode says, never the slow
``DefaultAzureCredential`` chain. A pod on another cloud (``source`` ``gcp`` / ``aws``) uses
``ClientAssertionCredential`` whose callback returns the source cloud's token
(:mod:`airflow_workload_identity.federation`: a Google ID token, an AWS ``GetWebIdentityToken`` JWT), itself
shared and refreshed single flight from the source's shared credentials. Every identity HTTP call has
bounded connect/read timeouts and bounded retries. What azure-identity lacks comes from the package's
credential core (``core.py``): one token per key (identity, tenant, authority, scopes) per lifetime shared
across hooks, threads and triggers; refresh ahead of expiry with one refresh in flight; the old token kept
while a refresh fails. Here: the mint (azure-identity), the federated token file re-read whenever it
changes, errors that say what to fix.

No Airflow imports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import (
    ClientAssertionCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from airflow_workload_identity._sdk import AZURE_MI_EXCLUDE_WORKLOAD_IDENTITY, refresh_wi_token_file, wi_token_file
from airflow_workload_identity.azure.policy import explain_identity_error, token_file_claims
from airflow_workload_identity.azure.spec import AWS_DEFAULT_DURATION, AzureIdentitySpec
from airflow_workload_identity.cache import FORMAT_VERSION, configured_store, store_key
from airflow_workload_identity.core import Minted, RefreshingToken, TokenState, TokenStore
from airflow_workload_identity.errors import (
    ConfigError,
    IdentityMismatch,
    IdentityUnavailable,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.federation import SubjectTokenSource
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop, IdentityReport
from airflow_workload_identity.tokens import stale_projected_token, unverified_claims

__all__ = ["AsyncSharedTokenCredential", "AzureIdentity", "SharedTokenCredential", "resolve"]

logger = logging.getLogger(__name__)

#: Bounded identity HTTP calls: a hanging IMDS or Entra fails in seconds, not minutes. Entra: three
#: attempts of at most 8 s (azure-core's retry policy, jittered backoff) fit the 30 s token request budget.
TRANSPORT = {"connection_timeout": 3, "read_timeout": 8, "retry_total": 2}
#: The longest one token request can take, SDK retries included (the core starts no retry past the budget).
ATTEMPT_SECONDS = 28.0
IMDS_ATTEMPT_SECONDS = 12.0
#: IMDS answers in milliseconds when healthy: 5 s per attempt, one retry (azure-identity's default is five
#: retries over more than a minute, and no read timeout at all in DefaultAzureCredential's probe).
IMDS_TRANSPORT = {
    "connection_timeout": 2,
    "read_timeout": 5,
    "retry_total": 1,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 2,
}
WI_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST")
IMDS_ENV = ("AZURE_POD_IDENTITY_AUTHORITY_HOST (test/proxy override)", "http://169.254.169.254/metadata/identity")
#: What each cross-cloud source presents to Entra as the client assertion.
ASSERTION_NAMES = {"gcp": "Google ID token", "aws": "AWS GetWebIdentityToken JWT"}


class _RotatingWorkloadIdentityCredential(WorkloadIdentityCredential):
    """azure-identity re-reads the token file at most every 600 s; re-read it whenever it changes."""

    # azure-identity passes this bound method as the assertion function (tests/unit/test_sdk_adapter.py).
    def _get_service_account_token(self) -> str:
        stale = stale_projected_token(wi_token_file(self))
        if stale is not None:  # no request: Entra would only say AADSTS700024
            raise IdentityUnavailable("workload_identity", WI_ENV, f"AZURE_FEDERATED_TOKEN_FILE: {stale}")
        try:
            stamp = os.stat(wi_token_file(self)).st_mtime_ns
        except OSError:
            stamp = -1
        if stamp != getattr(self, "_awi_stamp", None):
            refresh_wi_token_file(self)
            self._awi_stamp = stamp
        return str(super()._get_service_account_token())


class AzureIdentity:
    """The resolved identity of one connection: mode, ids, authority and the azure-identity credential."""

    def __init__(
        self, spec: AzureIdentitySpec, environ: Mapping[str, str], source: SubjectTokenSource | None = None
    ) -> None:
        self.spec = spec
        self.source = source
        self._credential: Any = None
        self._lock = threading.Lock()
        if spec.is_federated:
            if source is None:
                raise ValueError(f"source {spec.source!r} needs its subject-token source")
            spec.check_federated()
            self.mode = "federated"
            self.authority = spec.authority(environ)
            self.client_id, self.tenant_id, self.token_file = spec.client_id, spec.tenant_id, None
            self.selector = ("client_id", self.client_id)
            self.key: Hashable = (
                "azure-identity",
                "federated",
                source.key(),
                self.client_id,
                self.tenant_id,
                self.authority,
                spec.additionally_allowed_tenants,
                spec.expected_tenant_id,
                spec.expected_object_id,
            )
            return
        wi_file = spec.client_assertion_file or environ.get("AZURE_FEDERATED_TOKEN_FILE")
        mode = spec.mode if spec.mode != "auto" else ("workload_identity" if wi_file else "managed_identity")
        spec.check_mode(mode)
        self.mode = mode
        self.authority = spec.authority(environ)
        if mode == "workload_identity":
            self.client_id = spec.client_id or environ.get("AZURE_CLIENT_ID")
            self.tenant_id = spec.tenant_id or environ.get("AZURE_TENANT_ID")
            self.token_file = wi_file
            missing = [
                name
                for name, value in (
                    ("client_id / AZURE_CLIENT_ID", self.client_id),
                    ("tenant_id / AZURE_TENANT_ID", self.tenant_id),
                    ("client_assertion_file / AZURE_FEDERATED_TOKEN_FILE", self.token_file),
                )
                if not value
            ]
            if missing:
                raise IdentityUnavailable(
                    "workload_identity",
                    WI_ENV,
                    f"{', '.join(missing)} not set (the AKS workload identity webhook sets the variables for pods "
                    "labelled azure.workload.identity/use=true whose service account names a client id)",
                )
            self.selector = ("client_id", self.client_id)
        else:
            self.client_id = spec.client_id
            self.tenant_id = None
            self.token_file = None
            if spec.object_id:
                self.selector = ("object_id", spec.object_id)
            elif spec.resource_id:
                self.selector = ("resource_id", spec.resource_id)
            elif spec.client_id:
                self.selector = ("client_id", spec.client_id)
            else:
                self.selector = ("system-assigned or only attached identity", "")
        self.key = (
            "azure-identity",
            mode,
            self.selector,
            self.tenant_id,
            self.authority,
            self.token_file,
            spec.additionally_allowed_tenants,
            spec.expected_tenant_id,
            spec.expected_object_id,
        )

    def credential(self) -> Any:
        """The azure-identity credential (built once; no network call here)."""
        with self._lock:
            if self._credential is None:
                self._credential = self._build()
            return self._credential

    def new_credential(self, observe: Callable[[Any], None] | None = None) -> Any:
        """A new azure-identity credential, without its own token cache's state (no network call here);
        ``observe`` is called with every HTTP response it gets (azure-core's ``raw_response_hook``)."""
        return self._build(observe)

    def _assertion(self) -> str:
        """The client assertion: the source cloud's current token (shared, refreshed single flight)."""
        assert self.source is not None
        return self.source.get().token

    @property
    def federated(self) -> bool:
        """Entra is reached with a client assertion (AKS workload identity or another cloud's token)."""
        return self.mode in ("workload_identity", "federated")

    def _build(self, observe: Callable[[Any], None] | None = None) -> Any:
        hooks: dict[str, Any] = {"raw_response_hook": observe} if observe is not None else {}
        if self.mode == "federated":
            return ClientAssertionCredential(
                str(self.tenant_id),
                str(self.client_id),
                self._assertion,
                authority=self.authority,
                additionally_allowed_tenants=list(self.spec.additionally_allowed_tenants),
                **TRANSPORT,
            )
        if self.mode == "workload_identity":
            return _RotatingWorkloadIdentityCredential(
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                token_file_path=self.token_file,
                authority=self.authority,
                additionally_allowed_tenants=list(self.spec.additionally_allowed_tenants),
                **TRANSPORT,
            )
        kind, value = self.selector
        kwargs: dict[str, Any] = {**IMDS_TRANSPORT, **hooks, AZURE_MI_EXCLUDE_WORKLOAD_IDENTITY: True}
        if kind == "client_id":
            kwargs["client_id"] = value
        elif kind == "object_id":
            kwargs["identity_config"] = {"object_id": value}
        elif kind == "resource_id":
            kwargs["identity_config"] = {"msi_res_id": value}
        return ManagedIdentityCredential(**kwargs)

    def endpoint(self) -> str:
        """Where token requests go (for errors)."""
        if self.federated:
            return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"
        imds = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or "http://169.254.169.254"
        return f"{imds.rstrip('/')}/metadata/identity/oauth2/token"

    def attempt_seconds(self) -> float:
        """The longest one token request can take, azure-core's retries included."""
        return ATTEMPT_SECONDS if self.federated else IMDS_ATTEMPT_SECONDS

    def sdk_attempts(self) -> int:
        """Attempts azure-core's retry policy makes per token request (429, 5xx, connection errors)."""
        transport = TRANSPORT if self.federated else IMDS_TRANSPORT
        return int(transport.get("retry_total", 3)) + 1

    def describe(self) -> str:
        if self.mode == "federated":
            assertion = ASSERTION_NAMES.get(self.spec.source, f"{self.spec.source} token")
            return (
                f"{assertion} as the client assertion of client {self.client_id} (tenant {self.tenant_id}, "
                f"audience {self.spec.audience})"
            )
        if self.mode == "workload_identity":
            return f"AKS workload identity (client {self.client_id}, tenant {self.tenant_id}, token {self.token_file})"
        kind, value = self.selector
        return f"managed identity via IMDS ({kind} {value})".rstrip()


class _InfoCodec:
    """An ``AccessTokenInfo`` as a host-cache payload (token and expiry only)."""

    def to_payload(self, value: AccessTokenInfo) -> dict[str, Any]:
        return {"token": value.token, "expires_on": value.expires_on, "refresh_on": value.refresh_on}

    def from_payload(self, payload: dict[str, Any]) -> AccessTokenInfo:
        refresh_on = payload.get("refresh_on")
        return AccessTokenInfo(
            str(payload["token"]), int(payload["expires_on"]), refresh_on=int(refresh_on) if refresh_on else None
        )


CODEC = _InfoCodec()


def _on_token(listener: Callable[[str], None]) -> Callable[[AccessTokenInfo], None]:
    def call(info: AccessTokenInfo) -> None:
        listener(info.token)

    return call


def _transient(exc: Exception, identity: AzureIdentity, last_status: int | None = None) -> TransientError | None:
    """A failed token request that may pass, classified from structured data: no answer (azure-core's
    ``ServiceRequestError`` / ``ServiceResponseError``), an HTTP 429 or 5xx answer (``status_code``), or
    an answer that is not JSON (a ``ValueError`` cause); ``None`` for a verdict (explained elsewhere)."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    status = status if isinstance(status, int) else None
    if status is None and isinstance(exc, CredentialUnavailableError) and last_status is not None:
        # azure-identity reports IMDS's 429/5xx as CredentialUnavailableError without the answer: the status
        # is the last one azure-core's pipeline saw (raw_response_hook)
        status = last_status if last_status == 429 or last_status >= 500 else None
    malformed = status in (None, 200) and any(
        isinstance(part, (DecodeError, ValueError)) for part in (exc, exc.__cause__, exc.__context__)
    )
    # azure-identity reports an IMDS that did not answer as CredentialUnavailableError caused by azure-core's.
    unanswered = any(isinstance(e, (ServiceRequestError, ServiceResponseError)) for e in (exc, exc.__cause__))
    if not (unanswered or malformed or (status is not None and (status == 429 or status >= 500))):
        return None
    headers = getattr(response, "headers", None) or {}
    retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
    first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
    return TransientError(
        f"token request ({identity.describe()})",
        1 if malformed else identity.sdk_attempts(),
        f"{type(exc).__name__}: {first_line}" if not malformed else "a malformed answer (not JSON)",
        endpoint=identity.endpoint(),
        status=None if malformed else status,
        retry_after=float(retry_after) if isinstance(retry_after, str) and retry_after.strip().isdigit() else None,
    )


class SharedTokenCredential:
    """An azure-core ``TokenCredential`` shared per identity: one token per scope set per lifetime.

    Each scope set (and tenant) is one :class:`~airflow_workload_identity.core.RefreshingToken`: windows
    proportional to the lifetime, one request in flight, the current token served while a refresh
    fails. This class only mints (azure-identity) and describes.
    """

    def __init__(self, identity: AzureIdentity, *, store: TokenStore | None = None) -> None:
        self.identity = identity
        self._store = store
        self._tokens: dict[tuple[Any, ...], RefreshingToken[AccessTokenInfo]] = {}
        self._claims: dict[tuple[Any, ...], str] = {}
        self._claims_lock = threading.Lock()
        self._guard = threading.Lock()
        self.requests = 0
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every new token (and now with the current ones)."""
        with self._guard:
            if listener in self._listeners:
                return
            self._listeners.append(listener)
            tokens = list(self._tokens.values())
        for token in tokens:
            token.add_listener(_on_token(listener))

    def _key(self, scopes: tuple[str, ...], tenant_id: str | None) -> tuple[Any, ...]:
        """One token per scope set and tenant; the identity's own tenant named explicitly (Key Vault's
        challenge does) is the same token as no tenant."""
        own = (self.identity.tenant_id or "").lower()
        if tenant_id and tenant_id.lower() == own:
            tenant_id = None
        return (scopes, tenant_id)

    def _token_for(self, key: tuple[Any, ...]) -> RefreshingToken[AccessTokenInfo]:
        with self._guard:
            token = self._tokens.get(key)
            if token is None:
                scopes, tenant_id = key
                token = RefreshingToken(
                    lambda: self._request(key, scopes, tenant_id),
                    describe=f"the {self.identity.mode} token for {' '.join(scopes) or 'the default scopes'}",
                    codec=CODEC,
                    store=self._store,
                    store_key=store_key("airflow-workload-identity", FORMAT_VERSION, self.identity.key, key)
                    if self._store is not None
                    else None,
                    max_attempts=self.identity.sdk_attempts(),
                    attempt_timeout=self.identity.attempt_seconds(),
                )
                for listener in self._listeners:
                    token.add_listener(_on_token(listener))
                self._tokens[key] = token
            return token

    def fresh(self, *scopes: str, tenant_id: str | None = None) -> AccessTokenInfo | None:
        """The cached token if it is fresh (no lock, no I/O)."""
        token = self._tokens.get(self._key(scopes, tenant_id))
        if token is None or token.state() is not TokenState.FRESH:
            return None
        return token.value

    def get_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> AccessTokenInfo:
        claims = (options or {}).get("claims")
        key = self._key(scopes, (options or {}).get("tenant_id"))
        token = self._token_for(key)
        if claims:  # a claims challenge (CAE): a new token carrying the claims, one at a time
            with self._claims_lock:
                self._claims[key] = str(claims)
                try:
                    return token.get(force=True)
                finally:
                    self._claims.pop(key, None)
        return token.get()

    def refresh_now(self, *scopes: str) -> AccessTokenInfo:
        """A new token for ``scopes`` from the identity endpoint now (unless another caller just got one)."""
        return self._token_for((scopes, None)).get(force=True)

    async def aget_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> AccessTokenInfo:
        """For the event loop: no thread while the token is usable; a refresh runs off the loop."""
        if options and options.get("claims"):
            return await asyncio.to_thread(self.get_token_info, *scopes, options=options)
        return await self._token_for(self._key(scopes, (options or {}).get("tenant_id"))).aget()

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        options: dict[str, Any] = {}
        if claims:
            options["claims"] = claims
        if tenant_id:
            options["tenant_id"] = tenant_id
        info = self.get_token_info(*scopes, options=options or None)
        return AccessToken(info.token, info.expires_on)

    def _request(self, key: tuple[Any, ...], scopes: tuple[str, ...], tenant_id: str | None) -> Minted[AccessTokenInfo]:
        if not scopes:
            scopes = self.identity.spec.default_scopes()
        options: dict[str, Any] = {}
        if tenant_id:
            options["tenant_id"] = tenant_id
        claims = self._claims.get(key)
        if claims:
            options["claims"] = claims
        # A new azure-identity credential per request: the core is the only token cache. azure-identity's own
        # (per credential) would answer a refresh with the token we already hold until 300 s before expiry,
        # hiding both the refresh and its failures from the windows and the backoff.
        statuses: list[int] = []
        credential = self.identity.new_credential(
            observe=lambda response: statuses.append(int(response.http_response.status_code))
        )
        self.requests += 1
        try:
            info = credential.get_token_info(*scopes, options=options or None)
        except WorkloadIdentityError:
            raise  # the source cloud's side failed (explained there): the client assertion was never sent
        except (
            ClientAuthenticationError,
            CredentialUnavailableError,
            DecodeError,
            ServiceRequestError,
            ServiceResponseError,
        ) as exc:
            transient = _transient(exc, self.identity, statuses[-1] if statuses else None)
            if transient is not None:
                raise transient from exc
            raise explain_identity_error(exc, self.identity) from exc
        except (ValueError, OSError) as exc:
            raise explain_identity_error(exc, self.identity) from exc
        finally:
            credential.close()  # its HTTP session: nothing left open per refresh
        self._check_expected(info.token)
        return Minted(info, float(info.expires_on))

    def _check_expected(self, token: str) -> None:
        spec, claims = self.identity.spec, unverified_claims(token)
        if spec.expected_tenant_id and str(claims.get("tid", "")).lower() != spec.expected_tenant_id:
            raise IdentityMismatch("expected_tenant_id", (spec.expected_tenant_id,), f"tenant {claims.get('tid')}")
        if spec.expected_object_id and str(claims.get("oid", "")).lower() != spec.expected_object_id:
            raise IdentityMismatch("expected_object_id", (spec.expected_object_id,), f"object {claims.get('oid')}")

    def close(self) -> None:
        """Shared: closing a hook's view does not close the process-wide credential."""

    def __enter__(self) -> SharedTokenCredential:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SharedTokenCredential {self.identity.describe()}>"


class AsyncSharedTokenCredential:
    """An azure-core ``AsyncTokenCredential`` over the shared credential: a fresh token is returned
    without a thread or I/O; a refresh runs the shared (single-flight) sync refresh off the event loop.
    It owns no aiohttp session, so there is nothing left unclosed."""

    def __init__(self, shared: SharedTokenCredential) -> None:
        self._shared = shared

    async def get_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> AccessTokenInfo:
        return await self._shared.aget_token_info(*scopes, options=options)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        options: dict[str, Any] = {k: v for k, v in (("claims", claims), ("tenant_id", tenant_id)) if v}
        info = await self.get_token_info(*scopes, options=options or None)
        return AccessToken(info.token, info.expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncSharedTokenCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


def report(
    shared: SharedTokenCredential, conn_id: str | None, scopes: tuple[str, ...], *, verify: bool = False
) -> IdentityReport:
    """Acquire a token for ``scopes`` and say who it is, from its claims (``verify``: a new token now,
    proving the identity works at this moment, not only that a cached token exists)."""
    identity = shared.identity
    info = shared.refresh_now(*scopes) if verify else shared.get_token_info(*scopes)
    claims = unverified_claims(info.token)
    import datetime as dt

    details: tuple[tuple[str, str], ...] = (
        ("tenant (tid)", str(claims.get("tid", ""))),
        ("object id (oid)", str(claims.get("oid", ""))),
        ("client id (appid)", str(claims.get("appid") or claims.get("azp") or "")),
        ("audience (aud)", str(claims.get("aud", ""))),
    )
    if identity.mode == "federated" and identity.source is not None:
        assertion = identity.source.get()  # the token Entra accepted (shared: no new request)
        details = (
            *details,
            (
                "federated credential matched",
                f"issuer {assertion.issuer}, subject {assertion.subject}, audience {assertion.audience}",
            ),
        )
    hop = Hop(
        index=1 if identity.federated else 0,
        principal=f"object {claims.get('oid', '?')} in tenant {claims.get('tid', '?')}",
        method=identity.describe(),
        expiry=dt.datetime.fromtimestamp(info.expires_on, dt.UTC),
        endpoint=identity.authority if identity.federated else "IMDS",
        details=details,
    )
    hops = [hop]
    if identity.mode == "federated" and identity.source is not None:
        hops.insert(0, identity.source.describe())
    if identity.mode == "workload_identity" and identity.token_file:
        sa = token_file_claims(identity.token_file)
        hops.insert(
            0,
            Hop(
                index=0,
                principal=str(sa.get("sub", "(service account token unreadable)")),
                method=f"Kubernetes service account token (iss {sa.get('iss', '?')})",
            ),
        )
    notes = [f"scopes: {', '.join(scopes)}"]
    if verify:
        notes.append("verified now: a new token was issued for this identity")
    return IdentityReport(cloud="azure", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))


def federation_source(spec: AzureIdentitySpec, environ: Mapping[str, str], registry: Registry) -> SubjectTokenSource:
    """The source cloud's token for a ``gcp`` / ``aws`` source (shared per key; no network call here).

    The source's own errors name this connection's fields (``assertion_audience``, ``aws_region``, ...)."""
    try:
        if spec.source == "gcp":
            from airflow_workload_identity.federation.gcp import google_id_token_source

            return google_id_token_source(
                spec.audience,
                cache=spec.credential_cache,
                env=environ,
                registry=registry,
                field_names={"audience": "assertion_audience"},
            )
        from airflow_workload_identity.federation.aws import aws_web_identity_token_source

        return aws_web_identity_token_source(
            spec.audience,
            region=spec.aws_region,
            duration_seconds=spec.aws_jwt_duration_seconds or AWS_DEFAULT_DURATION,
            signing_algorithm=spec.aws_signing_algorithm or "RS256",
            source=spec.aws_source or "auto",
            cache=spec.credential_cache,
            env=environ,
            registry=registry,
            field_names={
                "audience": "assertion_audience",
                "region": "aws_region",
                "duration_seconds": "aws_jwt_duration_seconds",
                "signing_algorithm": "aws_signing_algorithm",
                "source": "aws_source",
            },
        )
    except ImportError as exc:
        extra = "gcp" if spec.source == "gcp" else "aws"
        raise ConfigError(
            "source",
            f"is {spec.source!r} but that cloud's SDK is not installed ({exc.name or exc})",
            f"install airflow-workload-identity[{extra}] next to [azure]",
            conn_type="azure_workload_identity",
        ) from None


def resolve(
    spec: AzureIdentitySpec,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    store: TokenStore | None = None,
) -> SharedTokenCredential:
    """The shared credential for ``spec``; bad combinations are refused here, before any network call."""
    environ = os.environ if env is None else env
    source = federation_source(spec, environ, registry) if spec.is_federated else None
    identity = AzureIdentity(spec, environ, source)
    if store is None:  # the deployment's host cache, unless the connection opts out
        store = configured_store(spec.credential_cache)
    return registry.get_or_create(
        (identity.key, store is not None), lambda: SharedTokenCredential(identity, store=store)
    )
