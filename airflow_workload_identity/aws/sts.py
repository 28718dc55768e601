"""Where AWS credential calls go and how: the STS endpoint, bounded STS clients, botocore sessions.

One botocore data loader per process (service models parsed once), STS clients with bounded timeouts
and botocore's standard retries sized to fit the token request budget, our name in the user agent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError

from airflow_workload_identity import __version__
from airflow_workload_identity._sdk import set_loader_search_paths
from airflow_workload_identity.aws.spec import AwsIdentitySpec
from airflow_workload_identity.errors import TransientError, WorkloadIdentityError

__all__ = [
    "STS_ATTEMPT_SECONDS",
    "STS_CONFIG",
    "STS_MAX_ATTEMPTS",
    "StsEndpoint",
    "new_botocore_session",
    "sdk_transient",
    "sts_client",
    "with_http_details",
]

STS_MAX_ATTEMPTS = 3
#: The longest one STS call can take, botocore's retries included.
STS_ATTEMPT_SECONDS = 25.0
#: Every STS call: bounded connect and read timeouts, botocore's standard retry mode (jittered
#: exponential backoff on throttling and 5xx), and our name in the user agent for CloudTrail.
#: Three attempts of at most 3 s connect + 5 s read with botocore's backoff (up to 2 s, then 4 s) end within
#: 24 s: a hanging STS fails inside the 30 s budget (STS answers in well under a second when it is well).
STS_CONFIG = Config(
    connect_timeout=3,
    read_timeout=5,
    retries={"mode": "standard", "total_max_attempts": STS_MAX_ATTEMPTS},  # the first call included
    user_agent_extra=f"airflow-workload-identity/{__version__}",
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
            set_loader_search_paths(loader, _UniqueList(loader.search_paths))
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


def sts_client(credentials: Credentials | None, endpoint: StsEndpoint, config: Config | None = None) -> Any:
    """An STS client (unsigned when ``credentials`` is ``None``) with the bounded STS configuration."""
    session = new_botocore_session(credentials)
    merged = STS_CONFIG.merge(config) if config is not None else STS_CONFIG
    return session.create_client("sts", config=merged, **endpoint.client_kwargs())


def caller_arn(credentials: Credentials, endpoint: StsEndpoint) -> str | None:
    """GetCallerIdentity for diagnostics; ``None`` if even that fails."""
    try:
        return str(sts_client(credentials, endpoint).get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError, WorkloadIdentityError):
        return None


def with_http_details(explained: WorkloadIdentityError, error: ClientError, endpoint: str) -> WorkloadIdentityError:
    """``explained`` (the policy module's reading of an STS error), with what the answer itself says:
    a 429 or 5xx is transient whatever its code; a transient error carries the HTTP status, botocore's
    attempts (``RetryAttempts`` + 1), ``Retry-After`` and the endpoint."""
    meta = error.response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    transient = isinstance(explained, TransientError) or (isinstance(status, int) and (status == 429 or status >= 500))
    if not transient:
        return explained
    err = error.response.get("Error", {})
    retry_after = meta.get("HTTPHeaders", {}).get("retry-after")
    return TransientError(
        explained.operation if isinstance(explained, TransientError) else f"STS call at {endpoint}",
        min(int(meta.get("RetryAttempts", STS_MAX_ATTEMPTS - 1)) + 1, STS_MAX_ATTEMPTS),
        explained.last_error
        if isinstance(explained, TransientError)
        else f"{err.get('Code', '')}: {err.get('Message', '')}",
        endpoint=endpoint,
        status=status if isinstance(status, int) else None,
        retry_after=float(retry_after) if isinstance(retry_after, str) and retry_after.isdigit() else None,
    )


def sdk_transient(operation: str, error: Exception, endpoint: str) -> TransientError:
    """A botocore failure without an answer: connection errors and timeouts were retried by botocore's
    standard mode (``STS_MAX_ATTEMPTS``); others (a malformed answer) were not (1 attempt)."""
    attempts = STS_MAX_ATTEMPTS if isinstance(error, HTTPClientError) else 1
    return TransientError(operation, attempts, f"{type(error).__name__}: {error}", endpoint=endpoint)
