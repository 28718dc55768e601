"""How an AWS connection gets and keeps credentials: ambient source, role hops, sharing, refresh.

Built on botocore's own classes: ``RefreshableCredentials`` (advisory/mandatory windows under one
lock), ``AssumeRoleWithWebIdentityCredentialFetcher`` + ``FileWebIdentityTokenLoader`` for IRSA,
``ContainerMetadataFetcher`` for EKS Pod Identity, and the default credential chain. What botocore
lacks is added once, here: refresh windows proportional to the lifetime, credentials shared per
process by key (one STS call in flight per key), hop-by-hop diagnostics, and an async mirror whose
refresh never blocks the event loop.

No Airflow imports: the spec, the run context and the environment are passed in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleWithWebIdentityCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import ContainerMetadataFetcher, FileWebIdentityTokenLoader

from airflow_workload_identity import __version__
from airflow_workload_identity.attribution import RunContext, fit
from airflow_workload_identity.aws.policy import (
    explain_assume_role_error,
    explain_web_identity_error,
)
from airflow_workload_identity.aws.spec import SESSION_NAME_CHARS, AssumeRoleHop, AwsIdentitySpec, account_of
from airflow_workload_identity.errors import (
    AccessDenied,
    IdentityMismatch,
    IdentityUnavailable,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.registry import MAX_ADVISORY_SECONDS, MAX_MANDATORY_SECONDS, REGISTRY, Registry
from airflow_workload_identity.registry import refresh_windows as _refresh_windows
from airflow_workload_identity.report import Hop, IdentityReport
from airflow_workload_identity.tokens import unverified_claims

__all__ = [
    "STS_CONFIG",
    "HopCredentials",
    "RoleChain",
    "SharedCredentials",
    "Source",
    "StsEndpoint",
    "new_botocore_session",
    "resolve",
    "resolve_source",
]

logger = logging.getLogger(__name__)

STS_MAX_ATTEMPTS = 3
#: Every STS call: bounded connect and read timeouts, botocore's standard retry mode (jittered
#: exponential backoff on throttling and 5xx), and our name in the user agent for CloudTrail.
STS_CONFIG = Config(
    connect_timeout=5,
    read_timeout=15,
    retries={"mode": "standard", "max_attempts": STS_MAX_ATTEMPTS},
    user_agent_extra=f"airflow-workload-identity/{__version__}",
)

WEB_IDENTITY_ENV = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
POD_IDENTITY_ENV = (
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
DEFAULT_CHAIN_SOURCES = (
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "AWS_PROFILE and the shared config/credentials files",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS)",
    "the EC2 instance metadata service",
)


class _UniqueList(list[str]):
    """boto3 appends its data path to the loader on every ``boto3.Session``; keep it once."""

    def append(self, item: str) -> None:
        if item not in self:
            super().append(item)


_loader_lock = threading.Lock()
_loader: botocore.loaders.Loader | None = None


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: service models are parsed once, not once per hook."""
    global _loader
    with _loader_lock:
        if _loader is None:
            loader = botocore.loaders.create_loader()
            loader._search_paths = _UniqueList(loader.search_paths)
            _loader = loader
        return _loader


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    METHOD = "airflow-workload-identity"
    CANONICAL_NAME = "AirflowWorkloadIdentity"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def new_botocore_session(credentials: Credentials | None = None, region: str | None = None) -> Any:
    """A botocore session on the shared loader, signing with ``credentials`` (refreshing ones stay live)."""
    session = botocore.session.Session()
    session.register_component("data_loader", _shared_loader())
    if credentials is not None:
        session.register_component("credential_provider", CredentialResolver([_FixedProvider(credentials)]))
    if region:
        session.set_config_variable("region", region)
    return session


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


class SharedCredentials(DeferredRefreshableCredentials):  # type: ignore[misc]
    """Refreshing credentials shared by every user of one key.

    botocore's windows are fixed (15/10 minutes): 900-second sessions would refresh on every request.
    Here the windows follow each refresh's lifetime (see :func:`registry.refresh_windows`), so a
    session is reused for most of its life; one refresh runs at a time (botocore's lock); during the
    advisory window a failed refresh keeps the old credentials and logs a warning.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        method: str,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        windows: Callable[[float], tuple[float, float]] = _refresh_windows,
    ) -> None:
        if clock is None:
            super().__init__(refresh_using=fetch, method=method)
        else:
            super().__init__(refresh_using=fetch, method=method, time_fetcher=clock)
        self._advisory_refresh_timeout: float = MAX_ADVISORY_SECONDS
        self._mandatory_refresh_timeout: float = MAX_MANDATORY_SECONDS
        self._windows = windows
        self.principal: str | None = None
        self.fetches = 0
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._snapshot: tuple[Any, dt.datetime | None] | None = None

    def _set_from_data(self, data: dict[str, Any]) -> None:
        super()._set_from_data(data)
        lifetime = (self._staged_expiry_time - self._time_fetcher()).total_seconds()
        self._advisory_refresh_timeout, self._mandatory_refresh_timeout = self._windows(lifetime)
        self.principal = data.get("principal") or self.principal
        self.fetches += 1
        for listener in self._listeners:
            listener(data)

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with each refresh's metadata (and now, with the current one, if any)."""
        if listener in self._listeners:
            return
        self._listeners.append(listener)
        if self._snapshot is not None:
            listener(self.metadata())

    def _protected_refresh(self, is_mandatory: bool) -> None:
        # botocore's version logs every failure with a traceback, then re-raises mandatory ones: the
        # caller gets our explained error anyway, so only a failed advisory refresh is logged, in one line.
        try:
            metadata = self._refresh_using()
        except Exception as exc:
            if is_mandatory:
                raise
            logger.warning(
                "Advisory refresh of %r failed; keeping the current credentials (valid until %s): %s: %s",
                self,
                self.expiry,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            return
        try:
            self._set_from_data(metadata)
            self._publish_refresh()
        finally:
            self._staged_expiry_time = None
        if self._is_expired():
            raise RuntimeError("Credentials were refreshed, but the refreshed credentials are still expired.")

    def _publish_refresh(self) -> None:
        super()._publish_refresh()
        self._snapshot = (self._frozen_credentials, self._expiry_time)

    @property
    def expiry(self) -> dt.datetime | None:
        return self._expiry_time  # type: ignore[no-any-return]

    @property
    def windows(self) -> tuple[float, float]:
        return self._advisory_refresh_timeout, self._mandatory_refresh_timeout

    def fresh(self) -> bool:
        """True when the current credentials are usable without a refresh."""
        return self._snapshot is not None and not self.refresh_needed(self._advisory_refresh_timeout)

    def metadata(self) -> dict[str, Any]:
        """The current credentials as refresh metadata (for the async mirror); refreshes if needed."""
        if not self.fresh():
            self.get_frozen_credentials()
        assert self._snapshot is not None
        frozen, expiry = self._snapshot
        return {
            "access_key": frozen.access_key,
            "secret_key": frozen.secret_key,
            "token": frozen.token,
            "expiry_time": _iso(expiry),
            "account_id": frozen.account_id,
        }

    def __repr__(self) -> str:  # never the keys
        return f"<SharedCredentials method={self.method!r} principal={self.principal!r} expiry={self.expiry}>"


@dataclass(frozen=True)
class StsEndpoint:
    """Where STS calls go: the connection's override, else ``AWS_ENDPOINT_URL_STS`` / ``AWS_ENDPOINT_URL``,
    else the regional endpoint of the region (``region_name``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``)."""

    region: str | None
    url: str | None

    @classmethod
    def resolve(cls, spec: AwsIdentitySpec, env: Mapping[str, str]) -> StsEndpoint:
        region = spec.region_name or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        url = spec.sts_endpoint_url or env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL") or None
        return cls(region=region, url=url.rstrip("/") if url else None)

    def client_kwargs(self) -> dict[str, Any]:
        return {"region_name": self.region, "endpoint_url": self.url}

    def describe(self) -> str:
        if self.url:
            return self.url
        return f"https://sts.{self.region}.amazonaws.com" if self.region else "https://sts.amazonaws.com"


def _sts_client(credentials: Credentials | None, endpoint: StsEndpoint, config: Config | None = None) -> Any:
    session = new_botocore_session(credentials)
    merged = STS_CONFIG.merge(config) if config is not None else STS_CONFIG
    return session.create_client("sts", config=merged, **endpoint.client_kwargs())


def _caller_arn(credentials: Credentials, endpoint: StsEndpoint) -> str | None:
    """GetCallerIdentity for diagnostics; ``None`` if even that fails."""
    try:
        return str(_sts_client(credentials, endpoint).get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError, WorkloadIdentityError):
        return None


# -- the ambient source ------------------------------------------------------------------------------------


@dataclass
class Source:
    """The pod's own identity: hop 0."""

    method: str
    credentials: Credentials
    key: Hashable
    endpoint: StsEndpoint
    role_session: bool | None  # None: only known once loaded (default chain)
    description: str

    @property
    def principal(self) -> str | None:
        return getattr(self.credentials, "principal", None)

    def is_role_session(self) -> bool:
        if self.role_session is not None:
            return self.role_session
        return self.credentials.get_frozen_credentials().token is not None

    def caller_arn(self) -> str | None:
        return self.principal or _caller_arn(self.credentials, self.endpoint)


class _WebIdentityFetcher(AssumeRoleWithWebIdentityCredentialFetcher):  # type: ignore[misc]
    """botocore's fetcher, keeping the assumed-role ARN and explaining failures."""

    def __init__(self, role_arn: str, token_file: str, session_name: str, endpoint: StsEndpoint) -> None:
        self._endpoint = endpoint
        self._token_file = token_file
        super().__init__(
            client_creator=self._create_client,
            web_identity_token_loader=FileWebIdentityTokenLoader(token_file),
            role_arn=role_arn,
            extra_args={"RoleSessionName": session_name},
        )

    def _create_client(self, service: str, config: Config | None = None) -> Any:
        return _sts_client(None, self._endpoint, config)

    def fetch(self) -> dict[str, Any]:
        try:
            response = self._get_credentials()
        except FileNotFoundError:
            raise IdentityUnavailable(
                "web_identity", WEB_IDENTITY_ENV, f"the token file {self._token_file} does not exist"
            ) from None
        except ClientError as error:
            claims = unverified_claims(FileWebIdentityTokenLoader(self._token_file)())
            raise explain_web_identity_error(
                error,
                role_arn=self._role_arn,
                token_file=self._token_file,
                claims=claims,
                endpoint=self._endpoint.describe(),
                attempts=STS_MAX_ATTEMPTS,
            ) from error
        except BotoCoreError as error:
            raise TransientError(
                f"sts:AssumeRoleWithWebIdentity at {self._endpoint.describe()}", STS_MAX_ATTEMPTS, str(error)
            ) from error
        creds = response["Credentials"]
        arn = response["AssumedRoleUser"]["Arn"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": _iso(creds["Expiration"]),
            "account_id": account_of(arn),
            "principal": arn,
        }


def _pod_identity_fetch(uri: str, env: Mapping[str, str]) -> Callable[[], dict[str, Any]]:
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    fetcher = ContainerMetadataFetcher()  # 2 s timeout, 3 attempts: botocore's own

    def fetch() -> dict[str, Any]:
        if token_file:
            try:
                with open(token_file) as handle:  # re-read on every refresh: the agent rotates it
                    token = handle.read().strip()
            except OSError as exc:
                raise IdentityUnavailable(
                    "pod_identity", POD_IDENTITY_ENV, f"cannot read {token_file} ({exc.strerror})"
                ) from None
        else:
            token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "").strip()
        try:
            data = fetcher.retrieve_full_uri(uri, headers={"Authorization": token})
        except (BotoCoreError, ValueError) as error:
            raise IdentityUnavailable(
                "pod_identity", POD_IDENTITY_ENV, f"the EKS Pod Identity agent at {uri} failed: {error}"
            ) from error
        return {
            "access_key": data["AccessKeyId"],
            "secret_key": data["SecretAccessKey"],
            "token": data["Token"],
            "expiry_time": data["Expiration"],
            "account_id": data.get("AccountId"),
        }

    return fetch


def _source_session_name(env: Mapping[str, str], context: RunContext) -> str:
    name = env.get("AWS_ROLE_SESSION_NAME") or f"airflow-wi-{context.hostname or 'pod'}"
    return fit(name, allowed=SESSION_NAME_CHARS, max_len=64)


def resolve_source(
    spec: AwsIdentitySpec,
    env: Mapping[str, str],
    endpoint: StsEndpoint,
    context: RunContext,
    registry: Registry,
    clock: Callable[[], dt.datetime] | None = None,
) -> Source:
    """The ambient identity the connection's ``source`` asks for; never a silent fallback."""
    wanted = spec.source
    has_web = all(env.get(v) for v in WEB_IDENTITY_ENV)
    pod_uri = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    has_pod = bool(pod_uri) and bool(
        env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    )
    if wanted == "auto":
        wanted = "web_identity" if has_web else "pod_identity" if has_pod else "default_chain"

    if wanted == "web_identity":
        if not has_web:
            missing = [v for v in WEB_IDENTITY_ENV if not env.get(v)]
            raise IdentityUnavailable(
                "web_identity",
                WEB_IDENTITY_ENV,
                f"{', '.join(missing)} not set (IRSA sets both when the service account has the "
                "eks.amazonaws.com/role-arn annotation)",
            )
        role_arn, token_file = env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
        session_name = _source_session_name(env, context)
        key: tuple[Any, ...] = ("aws-source", "web_identity", role_arn, token_file, session_name, endpoint)

        def build_web() -> Source:
            fetcher = _WebIdentityFetcher(role_arn, token_file, session_name, endpoint)
            creds = SharedCredentials(fetcher.fetch, "web_identity", clock=clock)
            return Source("web_identity", creds, key, endpoint, True, f"IRSA web identity ({token_file})")

        return registry.get_or_create(key, build_web)

    if wanted == "pod_identity":
        if not has_pod:
            raise IdentityUnavailable(
                "pod_identity",
                POD_IDENTITY_ENV,
                "AWS_CONTAINER_CREDENTIALS_FULL_URI and a token (file) are not both set (the EKS Pod "
                "Identity webhook sets them when the service account has a pod identity association)",
            )
        assert pod_uri is not None
        token_ref = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or "env:AWS_CONTAINER_AUTHORIZATION_TOKEN"
        pod_key: tuple[Any, ...] = ("aws-source", "pod_identity", pod_uri, token_ref)

        def build_pod() -> Source:
            creds = SharedCredentials(_pod_identity_fetch(pod_uri, env), "pod_identity", clock=clock)
            return Source("pod_identity", creds, pod_key, endpoint, True, f"EKS Pod Identity ({pod_uri})")

        return registry.get_or_create(pod_key, build_pod)

    default_key: tuple[Any, ...] = ("aws-source", "default_chain", endpoint)

    def build_default() -> Source:
        credentials = new_botocore_session().get_credentials()
        if credentials is None:
            raise IdentityUnavailable(
                "default_chain",
                (*WEB_IDENTITY_ENV, *POD_IDENTITY_ENV, *DEFAULT_CHAIN_SOURCES),
                "botocore's default credential chain found nothing",
            )
        method = f"default_chain:{credentials.method}"
        return Source(
            method, credentials, default_key, endpoint, None, f"botocore default chain ({credentials.method})"
        )

    return registry.get_or_create(default_key, build_default)


# -- role hops ------------------------------------------------------------------------------------------------


class HopCredentials:
    """One AssumeRole hop, shared by every chain that starts the same way."""

    def __init__(
        self,
        caller: Source | HopCredentials,
        hop: AssumeRoleHop,
        *,
        index: int,
        total: int,
        endpoint: StsEndpoint,
        source_identity_carried: bool,
        expected_accounts: tuple[str, ...],
        clock: Callable[[], dt.datetime] | None,
    ) -> None:
        self.caller = caller
        self.hop = hop
        self.index = index
        self.total = total
        self.endpoint = endpoint
        self.source_identity_carried = source_identity_carried
        self.expected_accounts = expected_accounts
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.credentials: SharedCredentials = SharedCredentials(self._fetch, "assume-role", clock=clock)

    @property
    def principal(self) -> str | None:
        return self.credentials.principal

    def caller_arn(self) -> str | None:
        return self.principal or _caller_arn(self.credentials, self.endpoint)

    def client(self) -> Any:
        """The STS client for this hop, created once and reused (botocore retry quota is per client)."""
        with self._client_lock:
            if self._client is None:
                self._client = _sts_client(self.caller.credentials, self.endpoint)
            return self._client

    def endpoint_url(self) -> str:
        client = self._client
        return str(client.meta.endpoint_url) if client is not None else self.endpoint.describe()

    def _fetch(self) -> dict[str, Any]:
        client = self.client()
        try:
            response = client.assume_role(**self.hop.assume_role_kwargs())
        except ClientError as error:
            raise explain_assume_role_error(
                error,
                hop_index=self.index,
                hops=self.total,
                hop=self.hop,
                caller_arn=self.caller.caller_arn(),
                endpoint=self.endpoint_url(),
                source_identity_carried=self.source_identity_carried,
                attempts=STS_MAX_ATTEMPTS,
            ) from error
        except BotoCoreError as error:
            raise TransientError(
                f"sts:AssumeRole {self.hop.role_arn} (hop {self.index} of {self.total}) at {self.endpoint_url()}",
                STS_MAX_ATTEMPTS,
                str(error),
            ) from error
        arn = response["AssumedRoleUser"]["Arn"]
        if self.expected_accounts and account_of(arn) not in self.expected_accounts:
            raise IdentityMismatch("expected_account_ids", self.expected_accounts, arn)
        creds = response["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": _iso(creds["Expiration"]),
            "account_id": account_of(arn),
            "principal": arn,
        }


# -- the chain -------------------------------------------------------------------------------------------------


class _AsyncMirror:
    """Builds aiobotocore credentials that mirror shared sync credentials without blocking the loop."""

    @staticmethod
    def build(shared: SharedCredentials) -> Any:
        from aiobotocore.credentials import AioDeferredRefreshableCredentials

        class AsyncSharedCredentials(AioDeferredRefreshableCredentials):  # type: ignore[misc]
            async def _pull(self) -> dict[str, Any]:
                if shared.fresh():
                    return shared.metadata()  # no STS call and no thread while fresh
                # The refresh is the shared (single-flight) one, run off the event loop.
                return await asyncio.to_thread(shared.metadata)

            def _set_from_data(self, data: dict[str, Any]) -> None:
                super()._set_from_data(data)
                self._advisory_refresh_timeout, self._mandatory_refresh_timeout = shared.windows

            def __repr__(self) -> str:
                return f"<AsyncSharedCredentials of {shared!r}>"

        mirror = AsyncSharedCredentials(refresh_using=None, method=shared.method)
        mirror._refresh_using = mirror._pull
        return mirror


@dataclass
class RoleChain:
    """The resolved identity of one connection: the source and every hop; the last hop is the target."""

    spec: AwsIdentitySpec
    source: Source
    hops: tuple[HopCredentials, ...]
    endpoint: StsEndpoint

    def __post_init__(self) -> None:
        self._mirrors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    @property
    def credentials(self) -> SharedCredentials:
        """The target's refreshing credentials (shared by every hook with the same key)."""
        return self.hops[-1].credentials

    def async_credentials(self) -> Any:
        """aiobotocore credentials for the running event loop (one per loop, sharing the sync refresh)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built in a worker thread (the Amazon provider's get_async_conn): not cached
            return _AsyncMirror.build(self.credentials)
        mirror = self._mirrors.get(loop)
        if mirror is None:
            mirror = _AsyncMirror.build(self.credentials)
            self._mirrors[loop] = mirror
        return mirror

    def verify(self) -> str:
        """Ask STS who the final credentials are (``GetCallerIdentity``) and check it is the expected role.

        Proves the credentials work now, not only that they were issued; returns the caller ARN.
        """
        final = self.hops[-1]
        try:
            arn = str(_sts_client(self.credentials, self.endpoint).get_caller_identity()["Arn"])
        except ClientError as error:
            err = error.response.get("Error", {})
            raise AccessDenied(
                hop=final.index,
                hops=final.total,
                caller=final.principal,
                target="sts:GetCallerIdentity",
                permission="use the credentials STS issued",
                remediation="STS refused credentials it issued for this hop: they may have been revoked (an "
                "AWSRevokeOlderSessions policy on the role) or the clock is wrong; new ones are fetched on the "
                "next refresh.",
                cloud_code=str(err.get("Code", "")),
                cloud_message=str(err.get("Message", "")),
                endpoint=self.endpoint.describe(),
            ) from error
        except BotoCoreError as error:
            raise TransientError(
                f"sts:GetCallerIdentity at {self.endpoint.describe()}", STS_MAX_ATTEMPTS, str(error)
            ) from error
        if self.spec.expected_account_ids and account_of(arn) not in self.spec.expected_account_ids:
            raise IdentityMismatch("expected_account_ids", self.spec.expected_account_ids, arn)
        return arn

    def report(self, conn_id: str | None, *, verify: bool = False) -> IdentityReport:
        """Resolve every hop (fetching what is not yet fetched) and say who was reached.

        With ``verify``, also make one ``GetCallerIdentity`` call with the final credentials."""
        self.credentials.get_frozen_credentials()
        verified = self.verify() if verify else None
        source_arn = self.source.caller_arn() or "(unknown: GetCallerIdentity failed)"
        source_expiry = getattr(self.source.credentials, "expiry", None)
        if source_expiry is None:
            source_expiry = getattr(self.source.credentials, "_expiry_time", None)
        hops = [
            Hop(
                index=0,
                principal=source_arn,
                method=self.source.description,
                expiry=source_expiry,
                endpoint=self.endpoint.describe(),
            )
        ]
        for hc in self.hops:
            details: list[tuple[str, str]] = [
                ("role", hc.hop.role_arn),
                ("session name", hc.hop.session_name),
                ("duration", f"{hc.hop.duration_seconds}s"),
            ]
            if hc.hop.external_id:
                details.append(("external id", "sent"))
            if hc.hop.source_identity:
                details.append(("source identity", hc.hop.source_identity))
            if hc.hop.tags:
                details.append(("session tags", ", ".join(f"{k}={v}" for k, v in hc.hop.tags)))
            hops.append(
                Hop(
                    index=hc.index,
                    principal=hc.principal or hc.hop.role_arn,
                    method="sts:AssumeRole",
                    expiry=hc.credentials.expiry,
                    endpoint=hc.endpoint_url(),
                    details=tuple(details),
                )
            )
        notes: list[str] = []
        if self.spec.expected_account_ids:
            notes.append(f"final account pinned to {', '.join(self.spec.expected_account_ids)}")
        if verified:
            notes.append(f"verified now: sts:GetCallerIdentity answered {verified}")
        return IdentityReport(cloud="aws", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))


def resolve(
    spec: AwsIdentitySpec,
    context: RunContext,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    clock: Callable[[], dt.datetime] | None = None,
) -> RoleChain:
    """The shared chain for ``spec`` in ``context``. No STS call happens here (credentials are deferred);
    bad combinations (a chained hop longer than an hour) are refused before any STS call."""
    environ = os.environ if env is None else env
    endpoint = StsEndpoint.resolve(spec, environ)
    source = resolve_source(spec, environ, endpoint, context, registry, clock)
    if spec.source in ("auto", "default_chain") and not spec.role_chain and source.is_role_session():
        spec.check_chained_duration(reason=f"the ambient identity ({source.description}) is itself a role session")
    rendered = spec.hops(context)
    caller: Source | HopCredentials = source
    hops: list[HopCredentials] = []
    carried = False
    for position, hop in enumerate(rendered, start=1):
        last = position == len(rendered)
        expected = spec.expected_account_ids if last else ()
        key = ("aws-hop", source.key, endpoint, rendered[:position], len(rendered), expected)
        previous, already_carried = caller, carried

        def build(
            previous: Source | HopCredentials = previous,
            hop: AssumeRoleHop = hop,
            position: int = position,
            already_carried: bool = already_carried,
            expected: tuple[str, ...] = expected,
        ) -> HopCredentials:
            return HopCredentials(
                previous,
                hop,
                index=position,
                total=len(rendered),
                endpoint=endpoint,
                source_identity_carried=already_carried,
                expected_accounts=expected,
                clock=clock,
            )

        current = registry.get_or_create(key, build)
        hops.append(current)
        caller = current
        carried = carried or bool(hop.source_identity)
    return RoleChain(spec=spec, source=source, hops=tuple(hops), endpoint=endpoint)
