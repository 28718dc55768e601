"""The pod's own AWS identity (hop 0): IRSA web identity, EKS Pod Identity, or botocore's default chain.

Each source is a fetch (botocore's fetchers, re-reading the projected token on every refresh) wrapped
in :class:`~airflow_workload_identity.aws.shared.SharedCredentials`, shared per process by key.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSRequest
from botocore.credentials import AssumeRoleWithWebIdentityCredentialFetcher, Credentials
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.httpsession import URLLib3Session
from botocore.parsers import ResponseParserError
from botocore.utils import FileWebIdentityTokenLoader

from airflow_workload_identity._sdk import check_container_metadata_url, web_identity_call
from airflow_workload_identity.attribution import RunContext, fit
from airflow_workload_identity.aws.policy import explain_web_identity_error
from airflow_workload_identity.aws.shared import SharedCredentials, refresh_data
from airflow_workload_identity.aws.spec import SESSION_NAME_CHARS, AwsIdentitySpec
from airflow_workload_identity.aws.sts import (
    STS_MAX_ATTEMPTS,
    StsEndpoint,
    caller_arn,
    new_botocore_session,
    sdk_transient,
    sts_client,
    with_http_details,
)
from airflow_workload_identity.cache import host_layer
from airflow_workload_identity.errors import IdentityUnavailable, TransientError
from airflow_workload_identity.registry import Registry
from airflow_workload_identity.tokens import stale_projected_token, unverified_claims

__all__ = ["DEFAULT_CHAIN_SOURCES", "POD_IDENTITY_ENV", "WEB_IDENTITY_ENV", "Source", "resolve_source"]

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

    @property
    def host_cacheable(self) -> bool:
        """Whether the key names the ambient identity (IRSA, Pod Identity), so credentials derived from it
        may go to the host cache; botocore's default chain may find anything (keys in the environment of
        one process only), so its hops stay in-process."""
        return self.method in ("web_identity", "pod_identity")

    def is_role_session(self) -> bool:
        if self.role_session is not None:
            return self.role_session
        return self.credentials.get_frozen_credentials().token is not None

    def caller_arn(self) -> str | None:
        return self.principal or caller_arn(self.credentials, self.endpoint)


class _WebIdentityFetcher(AssumeRoleWithWebIdentityCredentialFetcher):  # type: ignore[misc]
    """botocore's fetcher, keeping the assumed-role ARN and explaining failures."""

    def __init__(self, role_arn: str, token_file: str, session_name: str, endpoint: StsEndpoint) -> None:
        self._endpoint = endpoint
        self.role_arn = role_arn
        self._token_file = token_file
        super().__init__(
            client_creator=self._create_client,
            web_identity_token_loader=FileWebIdentityTokenLoader(token_file),
            role_arn=role_arn,
            extra_args={"RoleSessionName": session_name},
        )

    def _create_client(self, service: str, config: Any = None) -> Any:
        return sts_client(None, self._endpoint, config)

    def fetch(self) -> dict[str, Any]:
        stale = stale_projected_token(self._token_file)
        if stale is not None:  # no request: STS would only say ExpiredTokenException
            raise IdentityUnavailable("web_identity", WEB_IDENTITY_ENV, f"AWS_WEB_IDENTITY_TOKEN_FILE: {stale}")
        try:
            response = web_identity_call(self)
        except ClientError as error:
            claims = unverified_claims(FileWebIdentityTokenLoader(self._token_file)())
            explained = explain_web_identity_error(
                error,
                role_arn=self.role_arn,
                token_file=self._token_file,
                claims=claims,
                endpoint=self._endpoint.describe(),
                attempts=STS_MAX_ATTEMPTS,
            )
            raise with_http_details(explained, error, self._endpoint.describe()) from error
        except (BotoCoreError, ResponseParserError) as error:  # before OSError: botocore's timeouts are OSErrors
            raise sdk_transient("sts:AssumeRoleWithWebIdentity", error, self._endpoint.describe()) from error
        except FileNotFoundError:
            raise IdentityUnavailable(
                "web_identity", WEB_IDENTITY_ENV, f"the token file {self._token_file} does not exist"
            ) from None
        except OSError as exc:
            raise IdentityUnavailable(
                "web_identity", WEB_IDENTITY_ENV, f"cannot read the token file {self._token_file} ({exc.strerror})"
            ) from None
        return refresh_data(response)


#: The EKS Pod Identity agent: botocore's per-request timeout; the core retries 429/5xx/resets/malformed.
POD_IDENTITY_TIMEOUT = 2.0
POD_IDENTITY_ATTEMPTS = 3


def _pod_identity_fetch(uri: str, env: Mapping[str, str]) -> Callable[[], dict[str, Any]]:
    """One request to the Pod Identity agent (botocore's HTTP session and URL rule), classified by its
    HTTP status: 429/5xx, resets, timeouts and malformed answers are ``TransientError`` (retried by the
    core within the budget), other answers ``IdentityUnavailable``."""
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    try:
        check_container_metadata_url(uri)
    except ValueError as exc:
        raise IdentityUnavailable("pod_identity", POD_IDENTITY_ENV, str(exc)) from None
    session = URLLib3Session(timeout=POD_IDENTITY_TIMEOUT)
    operation = "EKS Pod Identity agent credentials"

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
        request = AWSRequest(method="GET", url=uri, headers={"Accept": "application/json", "Authorization": token})
        try:
            response = session.send(request.prepare())
        except (HTTPClientError, OSError) as error:  # resets, timeouts, refused connections
            raise TransientError(operation, 1, f"{type(error).__name__}", endpoint=uri) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                operation,
                1,
                f"HTTP {status}",
                endpoint=uri,
                status=status,
                retry_after=float(retry_after) if retry_after and retry_after.strip().isdigit() else None,
            )
        if status != 200:  # the agent refused the token (expired, wrong audience) or the association
            source = f"the token in {token_file}" if token_file else "AWS_CONTAINER_AUTHORIZATION_TOKEN"
            raise IdentityUnavailable(
                "pod_identity",
                POD_IDENTITY_ENV,
                f"the EKS Pod Identity agent at {uri} answered HTTP {status} to {source}",
            )
        try:
            data = json.loads(response.content.decode("utf-8"))
            return {
                "access_key": data["AccessKeyId"],
                "secret_key": data["SecretAccessKey"],
                "token": data["Token"],
                "expiry_time": data["Expiration"],
                "account_id": data.get("AccountId"),
            }
        except (ValueError, KeyError, TypeError):
            raise TransientError(operation, 1, "a malformed answer (not the credentials JSON)", endpoint=uri) from None

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
        identity: tuple[Any, ...] = ("aws-source", "web_identity", role_arn, token_file, session_name, endpoint)
        store, store_key = host_layer(identity, spec.credential_cache)
        key = (*identity, store is not None)

        def build_web() -> Source:
            fetcher = _WebIdentityFetcher(role_arn, token_file, session_name, endpoint)
            creds = SharedCredentials(
                fetcher.fetch,
                "web_identity",
                describe=f"IRSA credentials for {role_arn}",
                clock=clock,
                store=store,
                store_key=store_key,
            )
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
        pod_identity: tuple[Any, ...] = ("aws-source", "pod_identity", pod_uri, token_ref)
        pod_store, pod_store_key = host_layer(pod_identity, spec.credential_cache)
        pod_key = (*pod_identity, pod_store is not None)

        def build_pod() -> Source:
            creds = SharedCredentials(
                _pod_identity_fetch(pod_uri, env),
                "pod_identity",
                describe=f"EKS Pod Identity ({pod_uri})",
                clock=clock,
                max_attempts=POD_IDENTITY_ATTEMPTS,
                attempt_timeout=POD_IDENTITY_TIMEOUT * 2,
                store=pod_store,
                store_key=pod_store_key,
            )
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
