"""How a GCP connection gets and keeps tokens: ambient source, impersonation chain, sharing, refresh.

Built on google-auth: ``compute_engine.Credentials`` (GKE metadata server) or ``google.auth.default``
(Application Default Credentials) as the source, ``impersonated_credentials.Credentials`` for the chain
(one generateAccessToken call with delegates). What google-auth lacks is added once, here, in
:class:`SharedToken`: one token per key per lifetime shared by every hook, thread, background thread
and trigger; refresh ahead of expiry with one refresh in flight; retries with jittered backoff on
429/5xx/HTML 502; the old token kept while a refresh is retried; errors that name the hop and the fix.

No Airflow imports: the spec and the environment are passed in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.auth import compute_engine, impersonated_credentials

from airflow_workload_identity.errors import (
    AccessDenied,
    ConfigError,
    IdentityUnavailable,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.gcp.policy import explain_iam_error, parse_error_body
from airflow_workload_identity.gcp.spec import CLOUD_PLATFORM, CONN_TYPE, GcpIdentitySpec
from airflow_workload_identity.registry import REGISTRY, Registry, refresh_windows
from airflow_workload_identity.report import Hop, IdentityReport
from airflow_workload_identity.tokens import unverified_claims

__all__ = ["IAM_ENDPOINT", "GcpChain", "SharedToken", "resolve"]

logger = logging.getLogger(__name__)

IAM_ENDPOINT = "https://iamcredentials.googleapis.com"
#: (connect, read) seconds for every IAM Credentials call; the metadata server has google-auth's own 3 s.
HTTP_TIMEOUT = (5.0, 30.0)
MAX_ATTEMPTS = 3
METADATA_ENV = ("GCE_METADATA_HOST", "GCE_METADATA_IP")
ADC_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG (gcloud application-default credentials)")

_FRESH = google.auth.credentials.TokenState.FRESH
_STALE = google.auth.credentials.TokenState.STALE
_INVALID = google.auth.credentials.TokenState.INVALID


class _TimeoutRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with bounded timeouts by default (its own default is 120 s)."""

    def __call__(
        self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        return super().__call__(
            url, method=method, body=body, headers=headers, timeout=timeout or HTTP_TIMEOUT, **kwargs
        )


_session_lock = threading.Lock()
_http: requests.Session | None = None


def http_request() -> _TimeoutRequest:
    """A google-auth transport on one shared, pooled ``requests`` session."""
    global _http
    with _session_lock:
        if _http is None:
            _http = requests.Session()
        return _TimeoutRequest(session=_http)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # google-auth's expiries are naive UTC


def _is_transient(error: Exception) -> bool:
    if isinstance(error, google.auth.exceptions.TransportError):
        return True
    if isinstance(error, google.auth.exceptions.RefreshError):
        body = error.args[1] if len(error.args) > 1 else (error.args[0] if error.args else "")
        parsed = parse_error_body(body)
        if parsed is None:  # HTML 502 pages, truncated bodies: the front end, not a verdict
            return True
        code = parsed.get("code")
        return isinstance(code, int) and (code == 429 or code >= 500)
    return False


class SharedToken(google.auth.credentials.Credentials):
    """A google-auth credential shared per key: refresh ahead, single flight, retries, old token kept.

    Wraps an inner google-auth credential (the one that knows how to mint). Token state follows the
    registry's windows (proportional to the lifetime) rather than google-auth's fixed 3m45s threshold:
    ``FRESH`` outside the advisory window, ``STALE`` inside it (one caller refreshes, others keep using
    the token), ``INVALID`` inside the mandatory window (callers wait for the one refresh).
    """

    def __init__(
        self,
        inner: google.auth.credentials.Credentials,
        *,
        describe: str,
        explain: Callable[[Exception], WorkloadIdentityError],
        quota_project_id: str | None = None,
        attempts: int = MAX_ATTEMPTS,
        precheck: Callable[[Any], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.describe = describe
        self._explain = explain
        self._quota_project_id = quota_project_id
        self._sleep = sleep
        self._attempts = attempts
        self._precheck = precheck
        self._lock = threading.Lock()
        self._advisory = 0.0
        self._mandatory = 0.0
        self._failure: tuple[WorkloadIdentityError, float] | None = None
        self.mints = 0
        self._listeners: list[Callable[[str], None]] = []

    # -- state ----------------------------------------------------------------------------------------------

    def _remaining(self) -> float:
        return (self.expiry - _utcnow()).total_seconds() if self.expiry else float("inf")

    @property
    def token_state(self) -> Any:
        if self.token is None:
            return _INVALID
        remaining = self._remaining()
        if remaining <= self._mandatory:
            return _INVALID
        if remaining <= self._advisory:
            return _STALE
        return _FRESH

    @property
    def expired(self) -> bool:
        return self.token is not None and self.token_state == _INVALID

    @property
    def valid(self) -> bool:
        return self.token is not None and self.token_state != _INVALID

    @property
    def windows(self) -> tuple[float, float]:
        return self._advisory, self._mandatory

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every new token (e.g. Airflow's masker); now too, if there is one."""
        if listener not in self._listeners:
            self._listeners.append(listener)
            if self.token:
                listener(self.token)

    # -- refresh --------------------------------------------------------------------------------------------

    def ensure(self, request: Any = None) -> str:
        """A usable token, refreshing as the windows say; returns it.

        Mints always use this package's transport (bounded timeouts), not the caller's ``request``:
        client libraries pass transports whose default timeout is 120 s."""
        state = self.token_state
        if state == _STALE and self._lock.acquire(blocking=False):
            try:
                if self.token_state == _STALE:
                    try:
                        self._mint(http_request())
                    except WorkloadIdentityError as exc:
                        logger.warning(
                            "Advisory refresh of %s failed; keeping the current token (valid until %sZ): %s",
                            self.describe,
                            self.expiry.isoformat(timespec="seconds") if self.expiry else "?",
                            str(exc).splitlines()[0],
                        )
            finally:
                self._lock.release()
        elif state == _INVALID:
            waited_from = time.monotonic()
            with self._lock:
                self._raise_if_failed_since(waited_from)
                if self.token_state == _INVALID:
                    self._mint(http_request())
        assert self.token is not None
        return str(self.token)

    def refresh(self, request: Any) -> None:
        """google-auth's entry point (a stale source, a 401 retry, the official async hooks' token
        refresh): mint only if the shared token is not fresh, so no caller mints while it is."""
        waited_from = time.monotonic()
        with self._lock:
            if self.token_state == _FRESH:
                return
            self._raise_if_failed_since(waited_from)
            self._mint(http_request())

    def before_request(self, request: Any, method: str, url: str, headers: Any) -> None:
        self.ensure(request)
        self.apply(headers)

    def _raise_if_failed_since(self, since: float) -> None:
        """Callers that waited on the lock while a refresh failed get that failure, not another request."""
        failure = self._failure
        if failure is not None and failure[1] >= since:
            raise failure[0]

    def _mint(self, request: Any) -> None:
        """One refresh of the inner credential (lock held), with bounded, jittered retries."""
        try:
            self._mint_once(request)
        except WorkloadIdentityError as exc:
            self._failure = (exc, time.monotonic())
            raise
        self._failure = None

    def _mint_once(self, request: Any) -> None:
        if self._precheck is not None:
            self._precheck(request)
            self._precheck = None
        last: Exception | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                self.inner.refresh(request)
                break
            except WorkloadIdentityError:
                raise
            except Exception as exc:
                if not _is_transient(exc):
                    raise self._explain(exc) from exc
                last = exc
                if attempt < self._attempts:
                    self._sleep(min(4.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not crypto)
        else:
            assert last is not None
            explained = self._explain(last)
            if not isinstance(explained, TransientError):  # e.g. the metadata server is not there at all
                raise explained from last
            raise TransientError(f"refresh of {self.describe}", self._attempts, _short(last)) from last
        self.token = self.inner.token
        self.expiry = self.inner.expiry
        self.mints += 1
        self._advisory, self._mandatory = refresh_windows(self._remaining())
        for listener in self._listeners:
            listener(str(self.token))

    def __copy__(self) -> SharedToken:
        # google-auth's impersonated credentials copy their source; a copy would stop being shared.
        return self

    def __repr__(self) -> str:  # never the token
        return f"<SharedToken {self.describe} expiry={self.expiry}>"


def _short(error: Exception) -> str:
    text = str(error)
    if "<html" in text.lower():
        return f"{type(error).__name__}: an HTML error page (the Google front end), not an API answer"
    return f"{type(error).__name__}: {text[:300]}"


# -- the ambient source ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """The pod's own Google identity: hop 0."""

    kind: str  # "metadata" | "adc"
    token: SharedToken
    key: Hashable
    description: str

    def email(self) -> str | None:
        """The source's service-account e-mail (after a refresh); ``None`` for user credentials."""
        email = getattr(self.token.inner, "service_account_email", None)
        if email and email != "default":
            return str(email)
        return None


def _metadata_host() -> str:
    try:
        from google.auth.compute_engine import _metadata

        return str(getattr(_metadata, "_GCE_METADATA_HOST", "metadata.google.internal"))
    except ImportError:  # pragma: no cover
        return "metadata.google.internal"


def _source_error(kind: str) -> Callable[[Exception], WorkloadIdentityError]:
    def explain(error: Exception) -> WorkloadIdentityError:
        unreachable = isinstance(error, google.auth.exceptions.TransportError) or "metadata" in str(error).lower()
        if kind == "metadata" and unreachable:
            return IdentityUnavailable(
                "metadata",
                (*METADATA_ENV, f"http://{_metadata_host()}/computeMetadata/v1/"),
                f"the GKE metadata server at {_metadata_host()} did not give a token ({_short(error)}); "
                "on GKE enable Workload Identity on the node pool and annotate the Kubernetes service "
                "account with iam.gke.io/gcp-service-account",
            )
        return explain_iam_error(
            error, hop=0, hops=0, caller=None, target=f"the {kind} source credentials", endpoint=None
        )

    return explain


def _ping_metadata(request: Any) -> None:
    from google.auth.compute_engine import _metadata

    if not _metadata.ping(request, timeout=3, retry_count=2):
        raise IdentityUnavailable(
            "metadata",
            (*METADATA_ENV, f"http://{_metadata_host()}/"),
            f"no GKE metadata server answered at {_metadata_host()}; on GKE enable Workload Identity on the node "
            "pool and annotate the Kubernetes service account with iam.gke.io/gcp-service-account",
        )


def resolve_source(spec: GcpIdentitySpec, env: Mapping[str, str], registry: Registry) -> Source:
    """The ambient identity the connection's ``source`` asks for; never a silent fallback."""
    kind = spec.source
    if kind == "auto":
        kind = "adc" if env.get("GOOGLE_APPLICATION_CREDENTIALS") else "metadata"
    if kind == "metadata":
        key: tuple[Any, ...] = ("gcp-source", "metadata", _metadata_host())

        def build_metadata() -> Source:
            inner = compute_engine.Credentials(scopes=[CLOUD_PLATFORM])
            # google-auth retries metadata calls itself (5 times, with backoff): no second retry layer, and
            # one quick ping first so that a missing metadata server fails in seconds, not minutes.
            token = SharedToken(
                inner,
                describe=f"GKE metadata server token ({_metadata_host()})",
                explain=_source_error("metadata"),
                attempts=1,
                precheck=_ping_metadata,
            )
            return Source("metadata", token, key, f"GKE metadata server ({_metadata_host()})")

        return registry.get_or_create(key, build_metadata)

    adc_file = env.get("GOOGLE_APPLICATION_CREDENTIALS") or ""
    adc_key: tuple[Any, ...] = ("gcp-source", "adc", adc_file)

    def build_adc() -> Source:
        try:
            inner, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise IdentityUnavailable("adc", ADC_ENV, _short(exc)) from None
        token = SharedToken(
            inner,
            describe=f"Application Default Credentials ({type(inner).__name__})",
            explain=_source_error("adc"),
            attempts=1,
        )
        return Source("adc", token, adc_key, f"Application Default Credentials ({adc_file or 'gcloud'})")

    return registry.get_or_create(adc_key, build_adc)


# -- the impersonated chain -----------------------------------------------------------------------------------


def _post(url: str, source: SharedToken, body: dict[str, Any]) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    source.ensure()
    source.apply(headers)
    request = http_request()
    return request.session.post(url, data=json.dumps(body), headers=headers, timeout=HTTP_TIMEOUT)


class _IdToken(google.auth.credentials.Credentials):
    """An ID token minted through the chain with ``generateIdToken`` (honours the endpoint override,
    which google-auth's ``IDTokenCredentials`` does not)."""

    def __init__(self, chain: GcpChain, audience: str) -> None:
        super().__init__()
        self._chain = chain
        self._audience = audience

    def refresh(self, request: Any) -> None:
        spec = self._chain.spec
        url = f"{self._chain.endpoint}/v1/projects/-/serviceAccounts/{spec.target}:generateIdToken"
        body = {"audience": self._audience, "delegates": spec.api_delegates(), "includeEmail": True}
        response = _post(url, self._chain.source.token, body)
        if response.status_code != 200:
            raise google.auth.exceptions.RefreshError("Error getting ID token", response.text)
        token = str(response.json()["token"])
        self.token = token
        exp = unverified_claims(token).get("exp")
        self.expiry = dt.datetime.fromtimestamp(int(exp), dt.UTC).replace(tzinfo=None) if exp else None


class GcpChain:
    """The resolved identity of one connection: the source, the delegates and the target token."""

    def __init__(self, spec: GcpIdentitySpec, source: Source, endpoint: str, key: Hashable) -> None:
        self.spec = spec
        self.source = source
        self.endpoint = endpoint
        self.key = key
        inner = impersonated_credentials.Credentials(
            source_credentials=source.token,
            target_principal=spec.target,
            target_scopes=list(spec.scopes),
            delegates=spec.api_delegates(),
            lifetime=spec.lifetime_seconds,
            quota_project_id=spec.quota_project_id,
            iam_endpoint_override=f"{endpoint}/v1/projects/-/serviceAccounts/{spec.target}:generateAccessToken",
            subject=spec.subject,
        )
        self.token = SharedToken(
            inner,
            describe=f"impersonated token for {spec.target}",
            explain=self._explain,
            quota_project_id=spec.quota_project_id,
        )
        self._id_tokens: dict[str, SharedToken] = {}
        self._id_lock = threading.Lock()

    # -- errors -------------------------------------------------------------------------------------------------

    def _explain(self, error: Exception) -> WorkloadIdentityError:
        parsed = parse_error_body(error.args[1] if len(error.args) > 1 else "") or {}
        reason = parsed.get("reason")
        hops = len(self.spec.impersonation_chain)
        if reason == "IAM_PERMISSION_DENIED":
            # One hop: the answer is the source on the target. Several: find the hop by minting hop by hop.
            hop, caller, target = self.diagnose() if hops > 1 else (1, self.source.email(), self.spec.target)
            return explain_iam_error(error, hop=hop, hops=hops, caller=caller, target=target, endpoint=self.endpoint)
        return explain_iam_error(
            error, hop=hops, hops=hops, caller=self.source.email(), target=self.spec.target, endpoint=self.endpoint
        )

    def diagnose(self) -> tuple[int, str | None, str]:
        """Which hop lacks Token Creator: mint hop by hop (only on the error path) until one is refused."""
        caller = self.source.email()
        chain = self.spec.impersonation_chain
        for position, account in enumerate(chain, start=1):
            url = f"{self.endpoint}/v1/projects/-/serviceAccounts/{account}:generateAccessToken"
            body = {
                "delegates": [f"projects/-/serviceAccounts/{d}" for d in chain[: position - 1]],
                "scope": [CLOUD_PLATFORM],
                "lifetime": "300s",
            }
            try:
                response = _post(url, self.source.token, body)
            except (requests.RequestException, WorkloadIdentityError):
                break
            if response.status_code != 200:
                parsed = parse_error_body(response.text) or {}
                if parsed.get("reason") == "IAM_PERMISSION_DENIED":
                    return position, caller, account
                break
            caller = account
        return len(chain), (chain[-2] if len(chain) > 1 else self.source.email()), chain[-1]

    # -- tokens -------------------------------------------------------------------------------------------------

    def access_token(self) -> str:
        return self.token.ensure()

    def id_token(self, audience: str) -> str:
        with self._id_lock:
            shared = self._id_tokens.get(audience)
            if shared is None:
                shared = SharedToken(
                    _IdToken(self, audience),
                    describe=f"ID token of {self.spec.target} for {audience}",
                    explain=self._explain,
                )
                self._id_tokens[audience] = shared
        return shared.ensure()

    async def access_token_async(self) -> str:
        """For triggers: the cached token without a thread while fresh; a refresh runs off the loop."""
        if self.token.token_state == _FRESH:
            return str(self.token.token)
        return await asyncio.to_thread(self.token.ensure)

    # -- reports ------------------------------------------------------------------------------------------------

    def verify(self) -> str:
        """One live call: an ID token through the chain; returns the e-mail Google signed into it."""
        url = f"{self.endpoint}/v1/projects/-/serviceAccounts/{self.spec.target}:generateIdToken"
        body = {"audience": "airflow-workload-identity", "delegates": self.spec.api_delegates(), "includeEmail": True}
        response = _post(url, self.source.token, body)
        if response.status_code != 200:
            raise self._explain(google.auth.exceptions.RefreshError("Error getting ID token", response.text))
        email = str(unverified_claims(str(response.json()["token"])).get("email", ""))
        if email and email.lower() != self.spec.target:
            raise AccessDenied(
                hop=len(self.spec.impersonation_chain),
                hops=len(self.spec.impersonation_chain),
                caller=self.source.email(),
                target=self.spec.target,
                permission="act as the target",
                remediation=f"Google issued a token for {email}, not {self.spec.target}.",
            )
        return email or self.spec.target

    def report(self, conn_id: str | None, *, verify: bool = False) -> IdentityReport:
        self.access_token()
        verified = self.verify() if verify else None
        source_expiry = self.source.token.expiry
        hops = [
            Hop(
                index=0,
                principal=self.source.email() or "(user credentials: no service-account e-mail)",
                method=self.source.description,
                expiry=source_expiry.replace(tzinfo=dt.UTC) if source_expiry else None,
            )
        ]
        chain = self.spec.impersonation_chain
        for position, account in enumerate(chain, start=1):
            last = position == len(chain)
            details: list[tuple[str, str]] = []
            if last:
                details = [("scopes", ", ".join(self.spec.scopes)), ("lifetime", f"{self.spec.lifetime_seconds}s")]
                if self.spec.quota_project_id:
                    details.append(("quota project", self.spec.quota_project_id))
                if self.spec.subject:
                    details.append(("domain-wide delegation subject", self.spec.subject))
            expiry = self.token.expiry.replace(tzinfo=dt.UTC) if last and self.token.expiry else None
            hops.append(
                Hop(
                    index=position,
                    principal=account,
                    method="generateAccessToken target" if last else "delegate (Token Creator on the next)",
                    expiry=expiry,
                    endpoint=self.endpoint,
                    details=tuple(details),
                )
            )
        notes = [f"project: {self.spec.resolved_project(os.environ) or '(none)'}"]
        if verified:
            notes.append(f"verified now: generateIdToken issued a token for {verified}")
        return IdentityReport(cloud="gcp", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))


def resolve(spec: GcpIdentitySpec, *, env: Mapping[str, str] | None = None, registry: Registry = REGISTRY) -> GcpChain:
    """The shared chain for ``spec``. No network call happens here."""
    environ = os.environ if env is None else env
    source = resolve_source(spec, environ, registry)
    endpoint = spec.iam_endpoint_url or IAM_ENDPOINT
    key = (
        "gcp-chain",
        source.key,
        spec.impersonation_chain,
        spec.scopes,
        spec.lifetime_seconds,
        endpoint,
        spec.subject,
        spec.quota_project_id,
    )
    return registry.get_or_create(key, lambda: GcpChain(spec, source, endpoint, key))


__all__ += ["CONN_TYPE", "ConfigError", "Source", "resolve_source"]
