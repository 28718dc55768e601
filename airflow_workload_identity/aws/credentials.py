"""How an AWS connection gets and keeps credentials: the resolved role chain.

Built on botocore's own classes and the package's credential core; split by concern:

- ``sts.py``: where STS calls go (the endpoint), bounded STS clients, botocore sessions on one loader;
- ``shared.py``: :class:`SharedCredentials`, botocore ``RefreshableCredentials`` refreshed by the core
  (windows proportional to the lifetime, single flight, the current credentials served while a refresh
  fails, the host cache), and its aiobotocore mirror whose refresh never blocks the event loop;
- ``sources.py``: the ambient source (IRSA, EKS Pod Identity, the default chain);
- ``hops.py``: one ``AssumeRole`` hop;
- here: the chain of one connection, its verification and report, and :func:`resolve`.

No Airflow imports: the spec, the run context and the environment are passed in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_workload_identity._sdk import botocore_expiry
from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.hops import HopCredentials
from airflow_workload_identity.aws.shared import SharedCredentials, async_mirror
from airflow_workload_identity.aws.sources import Source, resolve_source
from airflow_workload_identity.aws.spec import AssumeRoleHop, AwsIdentitySpec, account_of
from airflow_workload_identity.aws.sts import (
    STS_CONFIG,
    STS_MAX_ATTEMPTS,
    StsEndpoint,
    new_botocore_session,
    sts_client,
)
from airflow_workload_identity.aws.sts import _shared_loader as _shared_loader  # the hook imports it here
from airflow_workload_identity.cache import host_layer
from airflow_workload_identity.core import TokenStore
from airflow_workload_identity.errors import AccessDenied, IdentityMismatch, TransientError
from airflow_workload_identity.federation import SubjectTokenSource
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop, IdentityReport

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


@dataclass
class RoleChain:
    """The resolved identity of one connection: the source and every hop; the last hop is the target."""

    spec: AwsIdentitySpec
    source: Source
    hops: tuple[HopCredentials, ...]
    endpoint: StsEndpoint
    #: A direct identity (no ``role_arn``): the source's own credentials, shared (pinned when asked).
    direct: SharedCredentials | None = None
    #: A cross-cloud source (``source`` gcp / azure): the other cloud's token source, hop 0 of the report.
    federation: SubjectTokenSource | None = None

    def __post_init__(self) -> None:
        self._mirrors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    @property
    def credentials(self) -> SharedCredentials:
        """The target's refreshing credentials (shared by every hook with the same key)."""
        if self.direct is not None:
            return self.direct
        return self.hops[-1].credentials

    def async_credentials(self) -> Any:
        """aiobotocore credentials for the running event loop (one per loop, sharing the sync refresh)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built in a worker thread (the Amazon provider's get_async_conn): not cached
            return async_mirror(self.credentials)
        mirror = self._mirrors.get(loop)
        if mirror is None:
            mirror = async_mirror(self.credentials)
            self._mirrors[loop] = mirror
        return mirror

    def verify(self) -> str:
        """Ask STS who the final credentials are (``GetCallerIdentity``) and check it is the expected role.

        Proves the credentials work now, not only that they were issued; returns the caller ARN.
        """
        final = self.hops[-1] if self.hops else None
        try:
            arn = str(sts_client(self.credentials, self.endpoint).get_caller_identity()["Arn"])
        except ClientError as error:
            err = error.response.get("Error", {})
            raise AccessDenied(
                hop=final.index if final else 0,
                hops=final.total if final else 0,
                caller=final.principal if final else self.source.principal,
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
                "sts:GetCallerIdentity",
                STS_MAX_ATTEMPTS,
                f"{type(error).__name__}: {error}",
                endpoint=self.endpoint.describe(),
            ) from error
        if self.spec.expected_account_ids and account_of(arn) not in self.spec.expected_account_ids:
            raise IdentityMismatch("expected_account_ids", self.spec.expected_account_ids, arn)
        return arn

    def report(self, conn_id: str | None, *, verify: bool = False) -> IdentityReport:
        """Resolve every hop (fetching what is not yet fetched) and say who was reached.

        With ``verify``, also make one ``GetCallerIdentity`` call with the final credentials."""
        self.credentials.get_frozen_credentials()
        verified = self.verify() if verify else None
        if self.federation is not None:
            hops = [self.federation.describe()]
        else:
            source_arn = self.source.caller_arn() or "(unknown: GetCallerIdentity failed)"
            source_expiry = botocore_expiry(self.source.credentials)
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
            method = "sts:AssumeRole"
            if self.federation is not None and hc.index == 1:
                method = "sts:AssumeRoleWithWebIdentity"
                token = self.federation.get()
                details.append(("web identity", f"{token.source_cloud} token iss={token.issuer} sub={token.subject}"))
            hops.append(
                Hop(
                    index=hc.index,
                    principal=hc.principal or hc.hop.role_arn,
                    method=method,
                    expiry=hc.credentials.expiry,
                    endpoint=hc.endpoint_url(),
                    details=tuple(details),
                )
            )
        notes: list[str] = []
        if self.spec.is_direct:
            notes.append("no role assumed: the tasks act as the pod's own identity (hop 0)")
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
    if spec.is_federated:  # another cloud's token is the first role's web identity (aws/federated.py)
        from airflow_workload_identity.aws.federated import resolve_federated

        return resolve_federated(spec, context, environ, endpoint, registry, clock)
    source = resolve_source(spec, environ, endpoint, context, registry, clock)
    if spec.source in ("auto", "default_chain") and not spec.role_chain and source.is_role_session():
        spec.check_chained_duration(reason=f"the ambient identity ({source.description}) is itself a role session")
    if spec.is_direct:
        return RoleChain(
            spec=spec, source=source, hops=(), endpoint=endpoint, direct=_direct(spec, source, registry, clock)
        )
    hops = role_hops(spec, spec.hops(context), source, source.key, source.host_cacheable, endpoint, registry, clock)
    return RoleChain(spec=spec, source=source, hops=hops, endpoint=endpoint)


def role_hops(
    spec: AwsIdentitySpec,
    rendered: tuple[AssumeRoleHop, ...],
    caller: Source | HopCredentials,
    source_key: Hashable,
    host_cacheable: bool,
    endpoint: StsEndpoint,
    registry: Registry,
    clock: Callable[[], dt.datetime] | None,
    *,
    first: tuple[HopCredentials, ...] = (),
) -> tuple[HopCredentials, ...]:
    """The shared ``AssumeRole`` hops of ``rendered`` after the ``first`` ones already built (a cross-cloud
    source's web identity hop), each signed by the one before (``caller`` for the first built here)."""
    hops: list[HopCredentials] = list(first)
    carried = any(bool(h.hop.source_identity) for h in first)
    for position, hop in enumerate(rendered, start=1):
        if position <= len(first):
            continue
        last = position == len(rendered)
        expected = spec.expected_account_ids if last else ()
        identity = ("aws-hop", source_key, endpoint, rendered[:position], len(rendered), expected)
        store, store_key = host_layer(identity, spec.credential_cache) if host_cacheable else (None, None)
        key = (*identity, store is not None)
        previous, already_carried = caller, carried

        def build(
            previous: Source | HopCredentials = previous,
            hop: AssumeRoleHop = hop,
            position: int = position,
            already_carried: bool = already_carried,
            expected: tuple[str, ...] = expected,
            store: TokenStore | None = store,
            store_key: str | None = store_key,
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
                store=store,
                store_key=store_key,
            )

        current = registry.get_or_create(key, build)
        hops.append(current)
        caller = current
        carried = carried or bool(hop.source_identity)
    return tuple(hops)


def _direct(
    spec: AwsIdentitySpec, source: Source, registry: Registry, clock: Callable[[], dt.datetime] | None
) -> SharedCredentials:
    """A direct identity's credentials: the source's own shared credentials as they are; pinned by
    ``expected_account_ids`` (or from botocore's default chain), one shared wrapper per source that hands
    them out only once the caller's account is known to be allowed."""
    expected = spec.expected_account_ids
    if not expected and isinstance(source.credentials, SharedCredentials):
        return source.credentials

    def fetch() -> dict[str, Any]:
        frozen = source.credentials.get_frozen_credentials()
        arn = source.caller_arn() or ""
        if expected and account_of(arn) not in expected:
            raise IdentityMismatch("expected_account_ids", expected, arn or "(unknown caller)")
        expiry = botocore_expiry(source.credentials)
        if expiry is None:  # static keys of the default chain: re-read them hourly
            expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        return {
            "access_key": frozen.access_key,
            "secret_key": frozen.secret_key,
            "token": frozen.token,
            "expiry_time": expiry.isoformat(),
            "account_id": account_of(arn) or None,
            "principal": arn or None,
        }

    key = ("aws-direct", source.key, expected)
    return registry.get_or_create(
        key, lambda: SharedCredentials(fetch, source.method, describe=f"{source.description} (direct)", clock=clock)
    )
