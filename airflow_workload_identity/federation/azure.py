"""Azure as a cross-cloud source: an Entra access token for the pod's identity, audience an app id URI.

The token is what AWS (``AssumeRoleWithWebIdentity`` against an IAM OIDC provider for the Entra issuer)
and Google (workload identity federation with an OIDC provider) accept as a web identity / subject token:

- ``iss``: ``https://sts.windows.net/<tenant>/`` (v1 tokens, the default for an app whose manifest keeps
  ``accessTokenAcceptedVersion`` null or 1) or ``<authority>/<tenant>/v2.0`` (v2);
- ``aud``: the app id URI asked for (requested as the scope ``<audience>/.default``);
- ``sub`` / ``oid``: the object id of the identity's service principal in the tenant.

Nothing is re-implemented: the token comes from this package's Azure machinery (``azure/credentials.py``:
azure-identity's ``WorkloadIdentityCredential`` for AKS workload identity, ``ManagedIdentityCredential``
for IMDS), so it is shared per identity in the process, refreshed ahead of expiry with one request in
flight through ``core.RefreshingToken``, and kept in the host cache like every Azure token.
No Airflow imports.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Hashable, Mapping
from typing import Any, Literal

from airflow_workload_identity.azure.credentials import AzureIdentity, SharedTokenCredential, resolve
from airflow_workload_identity.azure.policy import token_file_claims
from airflow_workload_identity.azure.spec import (
    AUTHORITY_PATTERN,
    CLOUDS,
    GUID,
    MODE_ALIASES,
    TENANT,
    AzureIdentitySpec,
)
from airflow_workload_identity.cache import MODES as CACHE_MODES
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.federation import SubjectToken, source_hop, subject_token
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop

__all__ = [
    "AUDIENCE_PATTERN",
    "EntraTokenSource",
    "entra_token_source",
    "v1_issuer",
    "v2_issuer",
]

#: An app id URI (``api://...``, an https URI registered on the app) or the app's client id (a GUID):
#: printable ASCII, no ``/.default`` (the scope suffix is added here), no whitespace.
AUDIENCE_PATTERN = r"^(?:api://[\x21-\x7e]{1,400}|https://[\x21-\x7e]{1,400}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$(?!\n)"

Mode = Literal["auto", "workload_identity", "imds"]


def v1_issuer(tenant_id: str) -> str:
    """The issuer of Entra v1 access tokens (``accessTokenAcceptedVersion`` null or 1)."""
    return f"https://sts.windows.net/{tenant_id}/"


def v2_issuer(tenant_id: str, authority: str = CLOUDS["public"][0]) -> str:
    """The issuer of Entra v2 access tokens (``accessTokenAcceptedVersion`` 2)."""
    return f"{authority.rstrip('/')}/{tenant_id}/v2.0"


def _named(field_names: Mapping[str, str] | None, name: str) -> str:
    return (field_names or {}).get(name, name)


def _validate(
    audience: str,
    *,
    tenant_id: str | None,
    client_id: str | None,
    mode: str,
    cloud: str,
    authority_host: str | None,
    client_assertion_file: str | None,
    cache: str | None,
    field_names: Mapping[str, str] | None,
) -> None:
    def error(name: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(_named(field_names, name), problem, fix)

    if isinstance(audience, str) and audience.rstrip("/").endswith("/.default"):
        raise error("audience", "ends with /.default (that is the scope, not the audience)", "remove /.default")
    if not isinstance(audience, str) or not re.fullmatch(AUDIENCE_PATTERN, audience):
        raise error(
            "audience",
            "is not an app id URI (api://... or https://...) or an app client id (GUID)",
            "use the app id URI of the Entra app registration the other cloud trusts, e.g. api://airflow-federation",
        )
    if mode not in MODE_ALIASES:
        raise error(
            "mode", f"{mode!r} is not one of auto, workload_identity, imds", "use auto, workload_identity or imds"
        )
    if tenant_id is not None and not re.fullmatch(TENANT, tenant_id):
        raise error(
            "tenant_id", "is not a tenant GUID or domain", "use a tenant GUID or a domain like contoso.onmicrosoft.com"
        )
    if client_id is not None and not re.fullmatch(GUID, client_id):
        raise error("client_id", "is not a GUID", "paste the managed identity's client id, a GUID")
    if cloud not in CLOUDS:
        raise error("cloud", f"{cloud!r} is not one of {', '.join(CLOUDS)}", f"use one of {', '.join(CLOUDS)}")
    if authority_host is not None and not re.fullmatch(AUTHORITY_PATTERN, authority_host):
        raise error("authority_host", "is not an https URL with no path", "use e.g. https://login.microsoftonline.com")
    if client_assertion_file is not None and not os.path.isabs(client_assertion_file):
        raise error("client_assertion_file", "is not an absolute path", "use the projected token's absolute path")
    if cache is not None and cache not in CACHE_MODES:
        raise error("credential_cache", f"{cache!r} is not one of host, process, off", "use host, process or off")


class EntraTokenSource:
    """The pod's Entra identity as a :class:`~airflow_workload_identity.federation.SubjectTokenSource`.

    One per (identity, audience) in the process (:func:`entra_token_source` shares it); the token itself
    lives in the Azure identity's shared credential (one per scope, refreshed single flight, host cache)."""

    source_cloud = "azure"

    def __init__(self, shared: SharedTokenCredential, audience: str) -> None:
        self.shared = shared
        self.identity: AzureIdentity = shared.identity
        self.audience = audience
        self.scope = f"{audience}/.default"
        self._last: SubjectToken | None = None
        self._lock = threading.Lock()

    def key(self) -> tuple[Hashable, ...]:
        return ("entra", self.identity.key, self.audience)

    @property
    def tenant_id(self) -> str | None:
        return self.identity.tenant_id or self.identity.spec.expected_tenant_id

    def _wrap(self, token: str, expires_on: int) -> SubjectToken:
        with self._lock:
            last = self._last
            if last is not None and last.token == token:
                return last
            made = subject_token(token, source_cloud="azure", principal="", expires_at=float(expires_on), owner=self)
            claims = made.claims
            principal = (
                f"Entra object {claims.get('oid', '?')} (client {claims.get('appid') or claims.get('azp') or '?'}, "
                f"tenant {claims.get('tid', '?')})"
            )
            made = SubjectToken(
                token=made.token,
                expires_at=made.expires_at,
                claims=made.claims,
                source_cloud="azure",
                principal=principal,
            )
            self._last = made
            return made

    def get(self) -> SubjectToken:
        info = self.shared.get_token_info(self.scope)
        return self._wrap(info.token, info.expires_on)

    async def aget(self) -> SubjectToken:
        info = await self.shared.aget_token_info(self.scope)
        return self._wrap(info.token, info.expires_on)

    def refresh_now(self) -> SubjectToken:
        """A new token now (unless another caller just got one): after the target refused the current one."""
        info = self.shared.refresh_now(self.scope)
        return self._wrap(info.token, info.expires_on)

    def method(self) -> str:
        return f"Entra token for audience {self.audience} via {self.identity.describe()}"

    def describe(self) -> Hop:
        token = self.get()
        hop = source_hop(token, method=self.method(), endpoint=self.identity.endpoint())
        if self.identity.mode == "workload_identity" and self.identity.token_file:
            sa = token_file_claims(self.identity.token_file)
            if sa:
                via = f"Kubernetes service account {sa.get('sub', '?')} (iss {sa.get('iss', '?')})"
                return Hop(
                    index=hop.index,
                    principal=hop.principal,
                    method=hop.method,
                    expiry=hop.expiry,
                    endpoint=hop.endpoint,
                    details=(*hop.details, ("federated from", via)),
                )
        return hop

    def __repr__(self) -> str:
        return f"<EntraTokenSource audience={self.audience!r} {self.identity.describe()}>"


def entra_token_source(
    audience: str,
    *,
    tenant_id: str | None = None,
    client_id: str | None = None,
    mode: Mode | str = "auto",
    cloud: str = "public",
    authority_host: str | None = None,
    client_assertion_file: str | None = None,
    cache: str | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    field_names: Mapping[str, str] | None = None,
) -> EntraTokenSource:
    """An Entra access token for the pod's workload identity (AKS) or managed identity (IMDS) whose ``aud``
    is ``audience``, shared per identity and audience in the process.

    :param audience: the app id URI (or client id) of the Entra app registration the target cloud trusts;
        requested as the scope ``<audience>/.default``.
    :param tenant_id: workload identity: the tenant (default ``AZURE_TENANT_ID``); IMDS: the tenant the
        token must come from (a GUID pins the ``tid`` claim).
    :param client_id: the managed identity's (or app's) client id (workload identity default
        ``AZURE_CLIENT_ID``; IMDS: selects one of several identities attached to the node).
    :param mode: ``workload_identity``, ``imds`` or ``auto`` (workload identity when a federated token
        file is configured).
    :param cloud: ``public``, ``usgov`` or ``china``; ``authority_host`` overrides its authority.
    :param cache: the connection's ``credential_cache`` (``host``, ``process``, ``off``; None: the
        deployment's setting).
    :param field_names: the caller's connection field for each keyword (``{"audience": "source_audience"}``)
        so a :class:`ConfigError` names the field the user typed.

    Raises :class:`ConfigError` for a bad value before any network call; no request is made here.
    """
    _validate(
        audience,
        tenant_id=tenant_id,
        client_id=client_id,
        mode=mode,
        cloud=cloud,
        authority_host=authority_host,
        client_assertion_file=client_assertion_file,
        cache=cache,
        field_names=field_names,
    )
    environ: Mapping[str, str] = os.environ if env is None else env
    parsed = MODE_ALIASES[mode]
    if parsed == "auto":
        wi_file = client_assertion_file or environ.get("AZURE_FEDERATED_TOKEN_FILE")
        parsed = "workload_identity" if wi_file else "managed_identity"
    kwargs: dict[str, Any] = {
        "mode": parsed,
        "client_id": client_id.lower() if client_id else None,
        "cloud": cloud,
        "authority_host": authority_host.rstrip("/") if authority_host else None,
        "credential_cache": cache,
    }
    if parsed == "workload_identity":
        kwargs.update(tenant_id=tenant_id, client_assertion_file=client_assertion_file)
    else:
        if client_assertion_file:
            raise ConfigError(
                _named(field_names, "client_assertion_file"),
                "is set but the IMDS mode does not use it",
                "remove it, or use the workload_identity mode",
            )
        if tenant_id and re.fullmatch(GUID, tenant_id):
            kwargs["expected_tenant_id"] = tenant_id.lower()
    spec = AzureIdentitySpec(**kwargs)
    try:
        spec.validate()
    except ConfigError as exc:
        raise ConfigError(_named(field_names, exc.field), exc.problem, exc.fix) from None
    shared = resolve(spec, env=environ, registry=registry)
    return registry.get_or_create(
        ("federation", "entra", shared.identity.key, id(shared), audience),
        lambda: EntraTokenSource(shared, audience),
    )
