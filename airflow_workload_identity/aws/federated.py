"""Cross-cloud sources for an AWS connection (``source`` ``gcp`` / ``azure``): GCP -> AWS and Azure -> AWS.

The other cloud's token (a Google ID token of the pod's service account, an Entra token of its workload or
managed identity, from ``federation/``) is the web identity of the first role: one
``sts:AssumeRoleWithWebIdentity`` call, unsigned, at the connection's STS endpoint. Every later hop is the
existing role chain (``credentials.role_hops``): the same shared, single-flight, host-cached
:class:`~airflow_workload_identity.aws.shared.SharedCredentials` as any chain.

Refresh composition: the first hop's credentials refresh through the core's windows; a refresh asks the
source for its token, which refreshes itself (its own core, its own windows) only when stale, so the
token is fetched at most once per its lifetime whatever the role sessions' lifetime. STS credentials do not
depend on the token once issued (AWS does not require the token to outlive them), so no clamp is needed.
No Airflow imports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import CredentialResolver, Credentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.hops import HopCredentials
from airflow_workload_identity.aws.policy import explain_federated_error
from airflow_workload_identity.aws.shared import refresh_data
from airflow_workload_identity.aws.sources import Source
from airflow_workload_identity.aws.spec import CONN_TYPE, AssumeRoleHop, AwsIdentitySpec, account_of
from airflow_workload_identity.aws.sts import (
    STS_CONFIG,
    STS_MAX_ATTEMPTS,
    StsEndpoint,
    new_botocore_session,
    sdk_transient,
    with_http_details,
)
from airflow_workload_identity.cache import host_layer
from airflow_workload_identity.core import TokenStore
from airflow_workload_identity.errors import ConfigError, IdentityMismatch
from airflow_workload_identity.federation import SubjectTokenSource
from airflow_workload_identity.registry import Registry

if TYPE_CHECKING:
    from airflow_workload_identity.aws.credentials import RoleChain

__all__ = ["WebIdentityHop", "resolve_federated", "subject_source"]

#: The connection's field for each keyword of the source functions (errors name what the user typed).
_FIELD_NAMES = {
    "audience": "source_audience",
    "source": "source_mode",
    "mode": "source_mode",
    "tenant_id": "source_tenant_id",
    "client_id": "source_client_id",
}
#: AssumeRoleWithWebIdentity takes these of an AssumeRole hop's parameters (no ExternalId, tags, source identity).
_WEB_IDENTITY_PARAMS = ("RoleArn", "RoleSessionName", "DurationSeconds", "Policy", "PolicyArns")


def _renamed(exc: ConfigError) -> ConfigError:
    return ConfigError(_FIELD_NAMES.get(exc.field, exc.field), exc.problem, exc.fix, conn_type=CONN_TYPE)


def subject_source(spec: AwsIdentitySpec, env: Mapping[str, str], registry: Registry) -> SubjectTokenSource:
    """The other cloud's token source for ``spec`` (shared per identity and audience; no request here)."""
    audience = spec.federated_audience
    assert audience is not None  # the spec refuses a federated source without one
    try:
        if spec.source == "gcp":
            from airflow_workload_identity.federation.gcp import google_id_token_source

            return google_id_token_source(
                audience, source=spec.source_mode or "auto", cache=spec.credential_cache, env=env, registry=registry
            )
        from airflow_workload_identity.federation.azure import entra_token_source

        return entra_token_source(
            audience,
            tenant_id=spec.source_tenant_id,
            client_id=spec.source_client_id,
            mode=spec.source_mode or "auto",
            cache=spec.credential_cache,
            env=env,
            registry=registry,
            field_names=_FIELD_NAMES,
        )
    except ConfigError as exc:
        raise _renamed(exc) from None


class _Unsigned:
    """The caller of a web identity hop: nobody signs; the token is the credential."""

    @property
    def credentials(self) -> Credentials | None:
        return None

    def caller_arn(self) -> str | None:
        return None


class WebIdentityHop(HopCredentials):
    """Hop 1 of a cross-cloud chain: ``sts:AssumeRoleWithWebIdentity`` with the other cloud's token."""

    def __init__(
        self,
        subject: SubjectTokenSource,
        hop: AssumeRoleHop,
        *,
        total: int,
        endpoint: StsEndpoint,
        expected_accounts: tuple[str, ...],
        clock: Callable[[], dt.datetime] | None,
        store: TokenStore | None = None,
        store_key: str | None = None,
    ) -> None:
        self.subject = subject
        super().__init__(
            _Unsigned(),
            hop,
            index=1,
            total=total,
            endpoint=endpoint,
            source_identity_carried=False,
            expected_accounts=expected_accounts,
            clock=clock,
            store=store,
            store_key=store_key,
        )

    def client(self) -> Any:
        """An unsigned STS client that never looks for ambient AWS credentials (there are none to find on
        another cloud, and botocore's search would probe metadata endpoints)."""
        with self._client_lock:
            if self._client is None:
                session = new_botocore_session()
                session.register_component("credential_provider", CredentialResolver([]))
                config = STS_CONFIG.merge(Config(signature_version=UNSIGNED))
                self._client = session.create_client("sts", config=config, **self.endpoint.client_kwargs())
            return self._client

    def _fetch(self) -> dict[str, Any]:
        token = self.subject.get()
        sent = self.hop.assume_role_kwargs()
        kwargs = {name: sent[name] for name in _WEB_IDENTITY_PARAMS if name in sent}
        client = self.client()
        try:
            response = client.assume_role_with_web_identity(WebIdentityToken=token.token, **kwargs)
        except ClientError as error:
            explained = explain_federated_error(
                error,
                claims=token.claims,
                source_cloud=token.source_cloud,
                principal=token.principal,
                role_arn=self.hop.role_arn,
                hop_index=self.index,
                hops=self.total,
                endpoint=self.endpoint_url(),
                attempts=STS_MAX_ATTEMPTS,
            )
            raise with_http_details(explained, error, self.endpoint_url()) from error
        except (BotoCoreError, ResponseParserError) as error:
            raise sdk_transient(
                f"sts:AssumeRoleWithWebIdentity {self.hop.role_arn} (hop 1 of {self.total}) at {self.endpoint_url()}",
                error,
                self.endpoint_url(),
            ) from error
        arn = response["AssumedRoleUser"]["Arn"]
        if self.expected_accounts and account_of(arn) not in self.expected_accounts:
            raise IdentityMismatch("expected_account_ids", self.expected_accounts, arn)
        return refresh_data(response)

    def __repr__(self) -> str:
        return f"<WebIdentityHop {self.hop.role_arn} from {self.subject!r}>"


def resolve_federated(
    spec: AwsIdentitySpec,
    context: RunContext,
    env: Mapping[str, str],
    endpoint: StsEndpoint,
    registry: Registry,
    clock: Callable[[], dt.datetime] | None,
) -> RoleChain:
    """The shared chain of a cross-cloud connection: the source token, the web identity hop, then the usual
    ``AssumeRole`` hops. No request happens here."""
    from airflow_workload_identity.aws.credentials import RoleChain, role_hops

    subject = subject_source(spec, env, registry)
    rendered = spec.hops(context)
    total = len(rendered)
    expected = spec.expected_account_ids if total == 1 else ()
    identity = ("aws-hop", ("federated", spec.source, subject.key()), endpoint, rendered[:1], total, expected)
    store, store_key = host_layer(identity, spec.credential_cache)
    key = (*identity, store is not None)
    first = registry.get_or_create(
        key,
        lambda: WebIdentityHop(
            subject,
            rendered[0],
            total=total,
            endpoint=endpoint,
            expected_accounts=expected,
            clock=clock,
            store=store,
            store_key=store_key,
        ),
    )
    source = Source(
        f"federated_{spec.source}",
        first.credentials,
        identity[1],
        endpoint,
        True,
        f"{spec.source} token ({subject!r}) as web identity",
    )
    hops = role_hops(spec, rendered, first, identity[1], True, endpoint, registry, clock, first=(first,))
    return RoleChain(spec=spec, source=source, hops=hops, endpoint=endpoint, federation=subject)
