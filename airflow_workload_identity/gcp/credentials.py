"""How a GCP connection gets and keeps tokens: ambient source, impersonation chain, sharing, refresh.

Built on google-auth: ``compute_engine.Credentials`` (GKE metadata server) or ``google.auth.default``
(Application Default Credentials) as the source, ``impersonated_credentials.Credentials`` for the chain
(one generateAccessToken call with delegates). What google-auth lacks comes from the package's
credential core (``core.py``) through :class:`SharedToken`: one token per key per lifetime shared by
every hook, thread, background thread and trigger; refresh ahead of expiry with one refresh in flight;
retries with jittered backoff on 429/5xx/HTML 502 within the budget; the old token kept while a
refresh fails. Here: the mint (google-auth), its error classification, errors that name the hop and the fix.

No Airflow imports: the spec and the environment are passed in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.auth import compute_engine, impersonated_credentials

from airflow_workload_identity._sdk import gce_metadata_host
from airflow_workload_identity.cache import host_layer
from airflow_workload_identity.core import Minted, RefreshingToken, TokenState, TokenStore
from airflow_workload_identity.errors import (
    AccessDenied,
    ConfigError,
    IdentityMismatch,
    IdentityUnavailable,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.gcp.policy import explain_iam_error, parse_error_body
from airflow_workload_identity.gcp.spec import CLOUD_PLATFORM, CONN_TYPE, GcpIdentitySpec
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop, IdentityReport
from airflow_workload_identity.tokens import unverified_claims

__all__ = ["IAM_ENDPOINT", "GcpChain", "SharedToken", "resolve"]

logger = logging.getLogger(__name__)

IAM_ENDPOINT = "https://iamcredentials.googleapis.com"
#: (connect, read) seconds for every IAM Credentials call; the metadata server has google-auth's own 3 s.
#: Three attempts of at most 8 s with backoff fit the 30 s token request budget.
HTTP_TIMEOUT = (5.0, 8.0)
MAX_ATTEMPTS = 3
#: The longest one mint can take (the core starts no retry that could not finish within the budget).
ATTEMPT_SECONDS = 13.0
METADATA_ENV = ("GCE_METADATA_HOST", "GCE_METADATA_IP")
ADC_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG (gcloud application-default credentials)")

_FRESH = google.auth.credentials.TokenState.FRESH
_STALE = google.auth.credentials.TokenState.STALE
_INVALID = google.auth.credentials.TokenState.INVALID


class _TimeoutRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with bounded timeouts by default (its own default is 120 s).

    With a ``deadline`` (``time.monotonic()`` seconds) every request's timeout is cut to what is left, and
    a request that could not start in time raises :class:`TransientError` instead: google-auth retries a
    metadata call five times with up to 15 s of backoff, which alone would outlast the token request
    budget; the error is not google-auth's ``TransportError``, so its retry loop ends there."""

    def __init__(self, session: requests.Session, deadline: float | None = None) -> None:
        super().__init__(session=session)
        self._deadline = deadline
        self._attempts = 0
        self._last_error = "no answer"
        self._last_status: int | None = None

    def __call__(
        self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        timeout = timeout or HTTP_TIMEOUT
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining < MIN_REQUEST_SECONDS:
                parts = urlsplit(url)
                raise TransientError(
                    f"{method} {parts.path}",
                    max(self._attempts, 1),
                    f"{self._last_error} (no time left in this refresh's budget for another attempt)",
                    endpoint=f"{parts.scheme}://{parts.netloc}",
                    status=self._last_status,
                )
            timeout = (
                tuple(min(float(t), remaining) for t in timeout)
                if isinstance(timeout, tuple)
                else min(float(timeout), remaining)
            )
        self._attempts += 1
        try:
            response = super().__call__(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        except Exception as exc:
            self._last_error, self._last_status = _short(exc), None
            self._give_up_if_out_of_time(url, method)
            raise
        if response.status >= 400:
            self._last_error, self._last_status = f"HTTP {response.status}", response.status
            if response.status == 429 or response.status >= 500:
                self._give_up_if_out_of_time(url, method)
        return response

    def _give_up_if_out_of_time(self, url: str, method: str) -> None:
        """After a failed attempt: if google-auth's next backoff (1, 2, 4, 8 s... +10 %) would end past the
        deadline, end now rather than sleep into it."""
        if self._deadline is None:
            return
        next_backoff = SDK_BACKOFF_SECONDS * 2.0 ** (self._attempts - 1) * 1.1
        if time.monotonic() + next_backoff + MIN_REQUEST_SECONDS < self._deadline:
            return
        parts = urlsplit(url)
        raise TransientError(
            f"{method} {parts.path}",
            self._attempts,
            f"{self._last_error} (no time left in this refresh's budget for another attempt)",
            endpoint=f"{parts.scheme}://{parts.netloc}",
            status=self._last_status,
        )


_session_lock = threading.Lock()
_http: requests.Session | None = None


def http_request(deadline: float | None = None) -> _TimeoutRequest:
    """A google-auth transport on one shared, pooled ``requests`` session; ``deadline`` bounds all its calls."""
    global _http
    with _session_lock:
        if _http is None:
            _http = requests.Session()
        return _TimeoutRequest(session=_http, deadline=deadline)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # google-auth's expiries are naive UTC


def _status(error: Exception) -> int | None:
    """The HTTP status an IAM Credentials error carries in its JSON body, if any."""
    if isinstance(error, google.auth.exceptions.RefreshError) and len(error.args) > 1:
        parsed = parse_error_body(error.args[1])
        code = parsed.get("code") if parsed else None
        return code if isinstance(code, int) else None
    return None


def _is_transient(error: Exception) -> bool:
    """Classified from structured data: the exception type, google-auth's ``retryable`` flag, the API
    error's ``code``; a body that is not an API error at all (an HTML 502 page) is the front end."""
    if isinstance(error, google.auth.exceptions.TransportError):
        return True
    if isinstance(error, google.auth.exceptions.RefreshError):
        if error.retryable:
            return True
        body = error.args[1] if len(error.args) > 1 else (error.args[0] if error.args else "")
        if parse_error_body(body) is None:  # HTML 502 pages, truncated bodies: the front end, not a verdict
            return True
        code = _status(error)
        return code is not None and (code == 429 or code >= 500)
    return False


def _utc_epoch(expiry: dt.datetime | None, fallback: float) -> float:
    if expiry is None:
        return fallback
    return expiry.replace(tzinfo=dt.UTC).timestamp()


class _TokenCodec:
    """A google-auth ``(token, naive UTC expiry)`` pair as a host-cache payload."""

    def to_payload(self, value: tuple[str, dt.datetime | None]) -> dict[str, Any]:
        token, expiry = value
        return {"token": token, "expiry": expiry.isoformat() if expiry else None}

    def from_payload(self, payload: dict[str, Any]) -> tuple[str, dt.datetime | None]:
        expiry = payload.get("expiry")
        return str(payload["token"]), dt.datetime.fromisoformat(expiry) if expiry else None


CODEC = _TokenCodec()
_STATES = {TokenState.FRESH: _FRESH, TokenState.STALE: _STALE, TokenState.INVALID: _INVALID}


class SharedToken(google.auth.credentials.Credentials):
    """A google-auth credential shared per key, refreshed by the package's credential core.

    Wraps an inner google-auth credential (the one that knows how to mint); the core
    (:class:`~airflow_workload_identity.core.RefreshingToken`) decides when: ``FRESH`` outside the
    advisory window, ``STALE`` inside it (one caller refreshes, others keep using the token),
    ``INVALID`` inside the mandatory window (callers wait for the one refresh), the current token
    served while a refresh fails, retries with jittered backoff on 429/5xx/HTML 502 within the budget.
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
        endpoint: str | None = None,
        store: TokenStore | None = None,
        store_key: str | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.describe = describe
        self._explain = explain
        self._quota_project_id = quota_project_id
        self._precheck = precheck
        self._endpoint = endpoint
        self._listeners: list[Callable[[str], None]] = []
        self._attempt_seconds = ATTEMPT_SECONDS if attempt_timeout is None else attempt_timeout
        self.core: RefreshingToken[tuple[str, dt.datetime | None]] = RefreshingToken(
            self._mint,
            describe=describe,
            codec=CODEC,
            store=store,
            store_key=store_key,
            max_attempts=attempts,
            attempt_timeout=self._attempt_seconds,
            sleep=sleep,
        )
        self.core.add_listener(self._adopt)

    # -- state ----------------------------------------------------------------------------------------------

    def _adopt(self, value: tuple[str, dt.datetime | None]) -> None:
        self.token, self.expiry = value
        for listener in self._listeners:
            listener(value[0])

    @property
    def token_state(self) -> Any:
        return _STATES[self.core.state()]

    @property
    def expired(self) -> bool:
        return self.token is not None and self.token_state == _INVALID

    @property
    def valid(self) -> bool:
        return self.token is not None and self.token_state != _INVALID

    @property
    def windows(self) -> tuple[float, float]:
        return self.core.windows

    @property
    def mints(self) -> int:
        return self.core.mints

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every new token (e.g. Airflow's masker); now too, if there is one."""
        if listener not in self._listeners:
            self._listeners.append(listener)
            if self.token:
                listener(str(self.token))

    # -- refresh --------------------------------------------------------------------------------------------

    def ensure(self, request: Any = None) -> str:
        """A usable token, refreshing as the windows say; returns it.

        Mints always use this package's transport (bounded timeouts), not the caller's ``request``:
        client libraries pass transports whose default timeout is 120 s."""
        token, expiry = self.core.get()
        self.token, self.expiry = token, expiry
        return token

    async def aensure(self) -> str:
        """:meth:`ensure` for the event loop: no thread while usable; a refresh runs off the loop."""
        token, expiry = await self.core.aget()
        self.token, self.expiry = token, expiry
        return token

    def refresh(self, request: Any) -> None:
        """google-auth's entry point (a stale source, a 401 retry, the official async hooks' token
        refresh): mint only if the shared token is not fresh, so no caller mints while it is."""
        self.ensure(request)

    def before_request(self, request: Any, method: str, url: str, headers: Any) -> None:
        self.ensure(request)
        self.apply(headers)

    def _mint(self) -> Minted[tuple[str, dt.datetime | None]]:
        """One refresh of the inner credential; transient failures become ``TransientError`` (the core
        retries those within the budget), the rest are explained."""
        request = http_request(deadline=time.monotonic() + self._attempt_seconds)
        if self._precheck is not None:
            self._precheck(request)
            self._precheck = None
        try:
            self.inner.refresh(request)
        except WorkloadIdentityError:
            raise
        except Exception as exc:
            if not _is_transient(exc):
                raise self._explain(exc) from exc
            explained = self._explain(exc)
            if not isinstance(explained, TransientError):  # e.g. the metadata server is not there at all
                raise explained from exc
            raise TransientError(
                f"refresh of {self.describe}",
                explained.attempts,
                explained.last_error,
                endpoint=explained.endpoint or self._endpoint,
                status=explained.status if explained.status is not None else _status(exc),
            ) from exc
        token, expiry = str(self.inner.token), self.inner.expiry
        return Minted((token, expiry), _utc_epoch(expiry, time.time() + 3600))

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
    return gce_metadata_host()


#: google-auth's own attempts per metadata request (``_metadata.get``'s ``retry_count``: 429/5xx, resets).
METADATA_SDK_ATTEMPTS = 5
#: One metadata refresh, google-auth's retries included (5 attempts of up to 3 s with 1+2+4+8 s backoff would
#: take 31 s): cut at this deadline by the transport, so that with the probe a hang fails within 30 s.
METADATA_ATTEMPT_SECONDS = 24.0
#: A request is not started with less time than this left before the refresh's deadline.
MIN_REQUEST_SECONDS = 0.5
#: google-auth's first backoff between metadata attempts (``_exponential_backoff``: doubling, 10 % jitter).
SDK_BACKOFF_SECONDS = 1.0


def _metadata_token_url() -> str:
    return f"http://{_metadata_host()}/computeMetadata/v1/instance/service-accounts/default/token"


def _transport_error(error: BaseException) -> google.auth.exceptions.TransportError | None:
    """The metadata server's ``TransportError`` (compute_engine wraps it in a RefreshError)."""
    for part in (error, error.__cause__, *getattr(error, "args", ())):
        if isinstance(part, google.auth.exceptions.TransportError):
            return part
    return None


def _metadata_status(error: google.auth.exceptions.TransportError) -> int | None:
    """The HTTP status google-auth attached to a metadata error (a final, non-retried answer)."""
    response = error.args[1] if len(error.args) > 1 else None
    status = getattr(response, "status", None)
    return status if isinstance(status, int) else None


def _source_error(kind: str) -> Callable[[Exception], WorkloadIdentityError]:
    def explain(error: Exception) -> WorkloadIdentityError:
        transport = _transport_error(error) if kind == "metadata" else None
        if transport is not None:
            status = _metadata_status(transport)
            if status is None or status == 429 or status >= 500:
                # The server is there (probed first) but failing: retried by google-auth, then by the core.
                malformed = isinstance(transport.__cause__, ValueError)  # invalid JSON: google-auth does not retry
                return TransientError(
                    "token request to the GKE metadata server",
                    1 if malformed else METADATA_SDK_ATTEMPTS,
                    _short(transport),
                    endpoint=_metadata_token_url(),
                    status=status,
                )
            return IdentityUnavailable(
                "metadata",
                (*METADATA_ENV, f"http://{_metadata_host()}/computeMetadata/v1/"),
                f"the GKE metadata server at {_metadata_host()} did not give a token (HTTP {status}); "
                "on GKE enable Workload Identity on the node pool and annotate the Kubernetes service "
                "account with iam.gke.io/gcp-service-account",
            )
        return explain_iam_error(
            error, hop=0, hops=0, caller=None, target=f"the {kind} source credentials", endpoint=None
        )

    return explain


def _connection_reset(error: BaseException) -> bool:
    """Whether a requests/urllib3 error chain holds a ``ConnectionResetError`` (a peer that accepted)."""
    seen: set[int] = set()
    stack: list[object] = [error]
    while stack:
        part = stack.pop()
        if id(part) in seen or not isinstance(part, BaseException):
            continue
        seen.add(id(part))
        if isinstance(part, ConnectionResetError):
            return True
        stack.extend((part.__cause__, part.__context__, *part.args))
    return False


def _probe_metadata(request: Any) -> None:
    """Is a GKE metadata server there at all? Nothing listening (refused, no route, connect timeout) fails
    in seconds as ``IdentityUnavailable``; a server that answers, even 429/5xx or slowly, is there, and
    its token request is retried (google-auth's ``ping`` cannot tell "unwell" from "absent")."""
    url = f"http://{_metadata_host()}/"
    unavailable = IdentityUnavailable(
        "metadata",
        (*METADATA_ENV, url),
        f"no GKE metadata server answered at {_metadata_host()}; on GKE enable Workload Identity on the node "
        "pool and annotate the Kubernetes service account with iam.gke.io/gcp-service-account",
    )
    session = request.session if hasattr(request, "session") else http_request().session
    for _ in range(2):
        try:
            response = session.get(url, headers={"Metadata-Flavor": "Google"}, timeout=(3.0, 3.0))
        except requests.ReadTimeout:
            return  # connected: a server is there, answering slowly
        except requests.RequestException as exc:
            if _connection_reset(exc):
                return  # connected, then reset: a server is there, failing
            continue
        status = response.status_code
        if status == 429 or status >= 500:
            return
        if status == 200 and response.headers.get("Metadata-Flavor") == "Google":
            return
        raise unavailable
    raise unavailable


def resolve_source(spec: GcpIdentitySpec, env: Mapping[str, str], registry: Registry) -> Source:
    """The ambient identity the connection's ``source`` asks for; never a silent fallback."""
    kind = spec.source
    if spec.is_federated:  # another cloud, through Google's workload identity federation (federated.py)
        from airflow_workload_identity.gcp.federated import federated_source

        return federated_source(spec, env, registry)
    if kind == "auto":
        kind = "adc" if env.get("GOOGLE_APPLICATION_CREDENTIALS") else "metadata"
    if kind == "metadata":
        key: tuple[Any, ...] = ("gcp-source", "metadata", _metadata_host())

        def build_metadata() -> Source:
            inner = compute_engine.Credentials(scopes=[CLOUD_PLATFORM])
            # google-auth retries each metadata call (5 attempts, backoff); the core adds attempts only for
            # what it does not retry (malformed answers) and within the budget. One quick probe first, so
            # that a missing metadata server fails in seconds, not minutes.
            token = SharedToken(
                inner,
                describe=f"GKE metadata server token ({_metadata_host()})",
                explain=_source_error("metadata"),
                attempts=MAX_ATTEMPTS,
                attempt_timeout=METADATA_ATTEMPT_SECONDS,
                precheck=_probe_metadata,
                endpoint=_metadata_token_url(),
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
        if spec.is_direct:
            self.token, self.expiry = self._chain.own_id_token(self._audience)
            return
        url = f"{self._chain.endpoint}/v1/projects/-/serviceAccounts/{spec.target}:generateIdToken"
        body = {"audience": self._audience, "delegates": spec.api_delegates(), "includeEmail": True}
        response = _post(url, self._chain.source.token, body)
        if response.status_code != 200:
            raise google.auth.exceptions.RefreshError("Error getting ID token", response.text)
        token = str(response.json()["token"])
        self.token = token
        exp = unverified_claims(token).get("exp")
        self.expiry = dt.datetime.fromtimestamp(int(exp), dt.UTC).replace(tzinfo=None) if exp else None


class _PinnedSource(google.auth.credentials.Credentials):
    """A direct identity pinned by ``expected_principal``: the pod's own (shared) token, handed out only
    once the metadata server's e-mail for it is the pinned one."""

    def __init__(self, source: Source, expected: str) -> None:
        super().__init__()
        self._source = source
        self._expected = expected

    def refresh(self, request: Any) -> None:
        token = self._source.token.ensure()
        email = (self._source.email() or "").lower()
        if email != self._expected:
            raise IdentityMismatch("expected_principal", (self._expected,), email or "(no service-account e-mail)")
        self.token, self.expiry = token, self._source.token.expiry


class GcpChain:
    """The resolved identity of one connection: the source, the delegates and the target token.

    With an empty ``impersonation_chain`` (a direct identity) the target is the source itself: its
    shared token is handed out as is (checked against ``expected_principal`` when pinned)."""

    def __init__(
        self,
        spec: GcpIdentitySpec,
        source: Source,
        endpoint: str,
        key: Hashable,
        *,
        store: TokenStore | None = None,
        store_key: str | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.endpoint = endpoint
        self.key = key
        self._id_tokens: dict[str, SharedToken] = {}
        self._id_lock = threading.Lock()
        if spec.is_direct:
            self.token = (
                source.token
                if spec.expected_principal is None
                else SharedToken(
                    _PinnedSource(source, spec.expected_principal),
                    describe=f"{source.description} token pinned to {spec.expected_principal}",
                    explain=_source_error(source.kind),
                )
            )
            return
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
            endpoint=f"{endpoint}/v1/projects/-/serviceAccounts/{spec.target}:generateAccessToken",
            store=store,
            store_key=store_key,
        )

    # -- errors -------------------------------------------------------------------------------------------------

    def _explain(self, error: Exception) -> WorkloadIdentityError:
        parsed = parse_error_body(error.args[1] if len(error.args) > 1 else "") or {}
        reason = parsed.get("reason")
        hops = len(self.spec.impersonation_chain)
        if reason == "IAM_PERMISSION_DENIED":
            # One hop: the answer is the source on the target. Several: find the hop by minting hop by hop.
            hop, caller, target = self.diagnose() if hops > 1 else (1, self.source.email(), self.spec.target)
            explained = explain_iam_error(
                error, hop=hop, hops=hops, caller=caller, target=target, endpoint=self.endpoint
            )
            federated = getattr(self.source, "impersonation_denied", None)  # the federated principal's first hop
            if hop == 1 and federated is not None and isinstance(explained, AccessDenied):
                return federated(explained, target, hops)  # type: ignore[no-any-return]
            return explained
        return explain_iam_error(
            error,
            hop=hops,
            hops=hops,
            caller=self.source.email(),
            target=self.spec.target,
            endpoint=self.endpoint,
            lifetime_seconds=self.spec.lifetime_seconds,
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
        """For triggers: the cached token without a thread while usable; a refresh runs off the loop."""
        return await self.token.aensure()

    # -- reports ------------------------------------------------------------------------------------------------

    def own_id_token(self, audience: str) -> tuple[str, dt.datetime | None]:
        """A direct identity's ID token: from the metadata server's identity endpoint (google-auth's
        ``IDTokenCredentials``), checked against ``expected_principal``."""
        if self.source.kind != "metadata":
            raise IdentityUnavailable(
                "metadata",
                METADATA_ENV,
                "an ID token of the pod's own identity (empty impersonation_chain) comes from the GKE metadata "
                f"server, and this connection's source is {self.source.kind}",
            )
        request = http_request()
        inner = compute_engine.IDTokenCredentials(request, audience, use_metadata_identity_endpoint=True)
        try:
            inner.refresh(request)
        except Exception as exc:
            raise _source_error("metadata")(exc) from exc
        token = str(inner.token)
        email = str(unverified_claims(token).get("email", "")).lower()
        if self.spec.expected_principal and email != self.spec.expected_principal:
            raise IdentityMismatch("expected_principal", (self.spec.expected_principal,), email or "(no e-mail)")
        return token, inner.expiry

    def verify(self) -> str:
        """One live call: an ID token through the chain (the metadata server's for a direct identity);
        returns the e-mail Google signed into it."""
        if self.spec.is_federated and self.spec.is_direct:  # the exchange itself was the live call
            self.access_token()
            return f"Google STS issued a federated token for {self.spec.workload_identity_provider}"
        if self.spec.is_direct:
            token, _ = self.own_id_token("airflow-workload-identity")
            return str(unverified_claims(token).get("email", "")) or (self.source.email() or "")
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
        federated_hops = getattr(self.source, "report_hops", None)  # the other cloud's hop and the federated one
        hops = (
            federated_hops()
            if federated_hops is not None
            else [
                Hop(
                    index=0,
                    principal=self.source.email() or "(user credentials: no service-account e-mail)",
                    method=self.source.description,
                    expiry=source_expiry.replace(tzinfo=dt.UTC) if source_expiry else None,
                )
            ]
        )
        chain = self.spec.impersonation_chain
        offset = len(hops) - 1  # hops before the chain's first: the source, and the federated principal if any
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
                    index=position + offset,
                    principal=account,
                    method="generateAccessToken target" if last else "delegate (Token Creator on the next)",
                    expiry=expiry,
                    endpoint=self.endpoint,
                    details=tuple(details),
                )
            )
        notes = [f"project: {self.spec.resolved_project(os.environ) or '(none)'}"]
        if self.spec.is_direct and self.spec.is_federated:
            notes.append("no impersonation: the tasks act as the federated principal (hop 1), granted roles directly")
        elif self.spec.is_direct:
            notes.append("no impersonation: the tasks act as the pod's own service account (hop 0)")
            if self.spec.expected_principal:
                notes.append(f"pinned to {self.spec.expected_principal}")
        if verified and self.spec.is_federated and self.spec.is_direct:
            notes.append(f"verified now: {verified}")
        elif verified:
            notes.append(f"verified now: generateIdToken issued a token for {verified}")
        return IdentityReport(cloud="gcp", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))


def resolve(spec: GcpIdentitySpec, *, env: Mapping[str, str] | None = None, registry: Registry = REGISTRY) -> GcpChain:
    """The shared chain for ``spec``. No network call happens here."""
    environ = os.environ if env is None else env
    source = resolve_source(spec, environ, registry)
    endpoint = spec.iam_endpoint_url or IAM_ENDPOINT
    identity = (
        "gcp-chain",
        source.key,
        spec.impersonation_chain,
        spec.scopes,
        spec.lifetime_seconds,
        endpoint,
        spec.subject,
        spec.quota_project_id,
        spec.expected_principal if spec.is_direct else None,  # a direct identity's pin wraps its token
    )
    # The impersonated token goes to the host cache when the source is the node's metadata server (the
    # pod's own identity, the same for every process of the pod); ADC may differ between processes.
    cacheable = (source.kind == "metadata" or bool(getattr(source, "host_cacheable", False))) and not spec.is_direct
    store, store_key = host_layer(identity, spec.credential_cache) if cacheable else (None, None)
    key = (*identity, store is not None)
    return registry.get_or_create(key, lambda: GcpChain(spec, source, endpoint, key, store=store, store_key=store_key))


__all__ += ["CONN_TYPE", "ConfigError", "Source", "resolve_source"]
