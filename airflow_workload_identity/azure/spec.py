"""What identity an ``azure_workload_identity`` connection describes: fields, parsing, validation.

``source`` says where the pod runs: ``azure`` (default: AKS workload identity or a managed identity, below),
``gcp`` (GKE: the pod's Google ID token is the client assertion of the app / user-assigned identity's
federated credential) or ``aws`` (EKS: a JWT from STS ``GetWebIdentityToken``, AWS's outbound identity
federation, is the client assertion). The two cross-cloud sources need ``client_id`` and ``tenant_id``.

Pure Python (no Airflow, no azure-identity). Modes: ``workload_identity`` (AKS: a federated credential
on a user-assigned managed identity or app; the pod's projected service-account token is the client
assertion; what Astro calls the deployment's "Managed identity"), ``imds`` (the node's managed identity
through IMDS on a VM/VMSS node; ``node_managed_identity`` and the older ``managed_identity`` are
aliases, parsed as ``managed_identity``), or ``auto`` (workload identity when a federated token file is
configured, else IMDS). A field the chosen mode ignores is an
error, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.fields import CREDENTIAL_CACHE, END, ConnectionForm, Field

__all__ = ["CLOUDS", "CONN_TYPE", "FORM", "AzureIdentitySpec"]

CONN_TYPE = "azure_workload_identity"
#: The form's values. ``workload_identity``: the federated identity (AKS workload identity; what Astro's
#: UI and the Astro guide call the deployment's "Managed identity"). ``imds``: the node's managed identity
#: through IMDS. ``node_managed_identity`` and the older ``managed_identity`` are aliases of ``imds``.
MODES = ("auto", "workload_identity", "imds", "node_managed_identity", "managed_identity")
#: The parsed mode: the IMDS spellings all become ``managed_identity`` (the value the code has always used).
Mode = Literal["auto", "workload_identity", "managed_identity"]
MODE_ALIASES: dict[str, Mode] = {
    "auto": "auto",
    "workload_identity": "workload_identity",
    "imds": "managed_identity",
    "node_managed_identity": "managed_identity",
    "managed_identity": "managed_identity",
}
#: cloud → (authority host, resource manager scope)
CLOUDS: dict[str, tuple[str, str]] = {
    "public": ("https://login.microsoftonline.com", "https://management.azure.com/.default"),
    "usgov": ("https://login.microsoftonline.us", "https://management.usgovcloudapi.net/.default"),
    "china": ("https://login.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
}
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{2,}"
GUID = rf"^{_GUID}{END}"
TENANT = rf"^(?:{_GUID}|{_DOMAIN}){END}"
RESOURCE_ID = (
    rf"^/subscriptions/{_GUID}/resourceGroups/[^/\s]{{1,90}}/providers/Microsoft\.ManagedIdentity/"
    rf"userAssignedIdentities/[A-Za-z0-9][A-Za-z0-9_-]{{0,127}}{END}"
)
# Printable ASCII only: a zero-width space or a look-alike letter makes another scope that Entra refuses.
SCOPE = rf"^(?:https?://[\x21-\x7e]+|api://[\x21-\x7e]+|{_GUID}/[\x21-\x7e]*){END}"
AUTHORITY_PATTERN = (
    rf"^https://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?/?{END}"
)
TENANT_ITEM = rf"^(?:\*|{_GUID}|{_DOMAIN}){END}"
ASSERTION_AUDIENCE = "api://AzureADTokenExchange"
#: Where the pod runs: its own cloud's identity is the client assertion for Entra (``azure``: the Azure modes).
SOURCES = ("azure", "gcp", "aws")
SourceCloud = Literal["azure", "gcp", "aws"]
#: The ``aud`` of a client assertion: what a federated credential's audience holds (printable ASCII, one token).
ASSERTION_AUDIENCE_PATTERN = rf"^[\x21-\x7e]{{1,512}}{END}"
AWS_REGION_PATTERN = rf"^[a-z]{{2}}(?:-[a-z]+)+-[0-9]{{1,2}}{END}"
AWS_SOURCES = ("auto", "web_identity", "pod_identity", "default_chain")
AWS_ALGORITHMS = ("RS256", "ES384")
AWS_DEFAULT_DURATION = 300

FIELDS: tuple[Field, ...] = (
    Field(
        name="source",
        label="Source cloud (where the pod runs)",
        description=(
            "azure (default): the pod's Azure identity (see Identity mode). gcp: the pod runs on GKE; its Google "
            "ID token (issuer https://accounts.google.com, subject the service account's unique id) is the client "
            "assertion of the app or user-assigned identity's federated credential. aws: the pod runs on EKS; a "
            "JWT from STS GetWebIdentityToken (the account's outbound issuer, subject the pod's role ARN) is the "
            "client assertion. gcp and aws need Client ID and Tenant ID; `airflow-workload-identity policy` "
            "prints the federated credential to create."
        ),
        schema={"type": "string", "enum": list(SOURCES), "default": "azure"},
        fix="use azure (the pod's Azure identity), gcp (a GKE pod) or aws (an EKS pod)",
        section="Source cloud",
    ),
    Field(
        name="assertion_audience",
        label="Assertion audience (gcp / aws sources)",
        description=(
            f"Optional, source gcp or aws. The audience of the token presented to Entra: the federated credential's "
            f"audience. Default {ASSERTION_AUDIENCE}."
        ),
        schema={"type": "string", "pattern": ASSERTION_AUDIENCE_PATTERN, "examples": [ASSERTION_AUDIENCE]},
        fix=f"use the federated credential's audience, normally {ASSERTION_AUDIENCE}",
        section="Source cloud",
    ),
    Field(
        name="aws_region",
        label="AWS region (aws source)",
        description=(
            "Source aws: the region whose STS endpoint issues the token (GetWebIdentityToken is regional only). "
            "Defaults to AWS_REGION (set by EKS)."
        ),
        schema={"type": "string", "pattern": AWS_REGION_PATTERN, "examples": ["us-east-1"]},
        fix="use a region name like us-east-1",
        section="Source cloud",
    ),
    Field(
        name="aws_jwt_duration_seconds",
        label="AWS token lifetime (aws source)",
        description=(
            f"Optional, source aws. Lifetime of the GetWebIdentityToken JWT in seconds, 60-3600, default "
            f"{AWS_DEFAULT_DURATION}; the IAM policy's sts:DurationSeconds condition must allow it."
        ),
        schema={"type": "integer", "minimum": 60, "maximum": 3600},
        fix="use a number of seconds between 60 and 3600",
        section="Source cloud",
    ),
    Field(
        name="aws_signing_algorithm",
        label="AWS token signing algorithm (aws source)",
        description="Optional, source aws. RS256 (default) or ES384; Entra accepts both.",
        schema={"type": "string", "enum": list(AWS_ALGORITHMS)},
        fix="use RS256 or ES384",
        section="Source cloud",
    ),
    Field(
        name="aws_source",
        label="AWS ambient identity (aws source)",
        description=(
            "Optional, source aws. Where the pod's AWS credentials come from: auto (default: IRSA, else EKS Pod "
            "Identity, else botocore's chain), web_identity, pod_identity or default_chain."
        ),
        schema={"type": "string", "enum": list(AWS_SOURCES)},
        fix="use one of auto, web_identity, pod_identity, default_chain",
        section="Source cloud",
    ),
    Field(
        name="mode",
        label="Identity mode",
        description=(
            "workload_identity: the federated user-assigned identity (AKS workload identity, the pod's "
            "projected service-account token; on Astro this is the deployment's 'Managed identity' from the "
            "Astro UI and guide: pick this one). imds: the node's own managed identity through IMDS (VM/VMSS; "
            "node_managed_identity and the older managed_identity mean the same). auto (default): "
            "workload_identity when a federated token file is configured, else imds."
        ),
        schema={"type": "string", "enum": list(MODES), "default": "auto"},
        fix="use workload_identity (Astro, AKS workload identity), imds (the node's identity) or auto",
        section="Identity",
    ),
    Field(
        name="client_id",
        label="Client ID",
        description=(
            "The managed identity's (or app's) client id, a GUID from the portal (Managed Identities > the "
            "identity > Overview). Workload identity: defaults to AZURE_CLIENT_ID. Managed identity: picks "
            "one of several identities attached to the node."
        ),
        schema={"type": "string", "pattern": GUID},
        fix="paste a GUID like 00000000-0000-0000-0000-000000000000",
        section="Identity",
    ),
    Field(
        name="tenant_id",
        label="Tenant ID",
        description=(
            "Workload identity: the Entra tenant (GUID or domain like contoso.onmicrosoft.com); defaults to "
            "AZURE_TENANT_ID. Not used by managed identity (its tokens come from its own tenant)."
        ),
        schema={"type": "string", "pattern": TENANT},
        fix="use a tenant GUID or a domain like contoso.onmicrosoft.com",
        section="Identity",
    ),
    Field(
        name="object_id",
        label="Managed identity object ID",
        description="Managed identity only: select the identity by its object (principal) id, a GUID.",
        schema={"type": "string", "pattern": GUID},
        fix="paste the identity's object (principal) id, a GUID",
        section="Identity",
    ),
    Field(
        name="resource_id",
        label="Managed identity resource ID",
        description=(
            "Managed identity only: select the identity by its ARM resource id, "
            "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/<name>."
        ),
        schema={"type": "string", "pattern": RESOURCE_ID},
        fix="paste the identity's resource id from its Properties page",
        section="Identity",
    ),
    Field(
        name="cloud",
        label="Cloud",
        description="public (default), usgov or china: sets the authority host and the default scope.",
        schema={"type": "string", "enum": list(CLOUDS), "default": "public"},
        fix="use one of public, usgov, china",
        section="Cloud",
    ),
    Field(
        name="authority_host",
        label="Authority host override",
        description=(
            "Optional. An https Entra authority (e.g. https://login.microsoftonline.com) for sovereign or "
            "private clouds; overrides the cloud's. Defaults to AZURE_AUTHORITY_HOST, then the cloud's."
        ),
        schema={"type": "string", "format": "url", "pattern": AUTHORITY_PATTERN, "maxLength": 2048},
        fix="use an https URL with no path, like https://login.microsoftonline.com",
        section="Cloud",
    ),
    Field(
        name="scopes",
        label="Default scopes",
        description=(
            "Optional. Scopes for tokens when the caller names none (and for the connection test), one per "
            "line, e.g. https://storage.azure.com/.default. Default: the cloud's Resource Manager scope."
        ),
        schema={"type": "array", "items": {"type": "string", "pattern": SCOPE}, "maxItems": 20, "uniqueItems": True},
        fix="use scopes like https://storage.azure.com/.default",
        section="Cloud",
    ),
    Field(
        name="client_assertion_file",
        label="Federated token file",
        description=(
            "Workload identity: path of the projected service-account token; defaults to "
            "AZURE_FEDERATED_TOKEN_FILE (set by the AKS webhook). It is re-read whenever it changes."
        ),
        schema={
            "type": "string",
            "pattern": rf"^/(?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?{END}",
            "maxLength": 4096,
        },
        fix="use an absolute path like /var/run/secrets/azure/tokens/azure-identity-token",
        section="Identity",
    ),
    Field(
        name="additionally_allowed_tenants",
        label="Additionally allowed tenants",
        description=(
            "Workload identity: other tenants tokens may be requested for (one per line, or * for any). "
            "Cross-tenant requests are refused unless listed."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": TENANT_ITEM},
            "maxItems": 50,
            "uniqueItems": True,
        },
        fix="list tenant GUIDs or domains, or *",
        section="Cloud",
    ),
    Field(
        name="identity_name",
        label="Managed identity name (for setup commands)",
        description="Optional. Only used to print the az commands that set this identity up.",
        schema={"type": "string", "pattern": rf"^[A-Za-z0-9][A-Za-z0-9_-]{{1,127}}{END}"},
        fix="use the identity's name as shown in the portal",
        section="Setup",
    ),
    Field(
        name="resource_group",
        label="Resource group (for setup commands)",
        description="Optional. The identity's resource group; only used to print setup commands.",
        schema={"type": "string", "pattern": rf"^[-\w._()]{{0,89}}[-\w_()]{END}"},
        fix="use the resource group's name",
        section="Setup",
    ),
    Field(
        name="expected_tenant_id",
        label="Expected tenant ID",
        description="Optional. The tenant (tid claim) the final token must come from; otherwise refused.",
        schema={"type": "string", "pattern": GUID},
        fix="paste the tenant GUID",
        section="Identity",
    ),
    Field(
        name="expected_object_id",
        label="Expected object ID",
        description="Optional. The object id (oid claim) the final token must carry; otherwise refused.",
        schema={"type": "string", "pattern": GUID},
        fix="paste the identity's object (principal) id",
        section="Identity",
    ),
    CREDENTIAL_CACHE,
)

FORM = ConnectionForm(
    conn_type=CONN_TYPE,
    hook_name="Azure Workload Identity",
    hook_class_name="airflow_workload_identity.azure.hook.AzureWorkloadIdentityHook",
    fields=FIELDS,
    hidden_fields=("port", "schema", "login", "password"),
    relabeling={"host": "Storage account URL (for WasbHook)"},
    placeholders={"host": "https://<account>.blob.core.windows.net"},
)

_WI_ONLY = ("tenant_id", "client_assertion_file", "additionally_allowed_tenants")
_AWS_ONLY = ("aws_region", "aws_jwt_duration_seconds", "aws_signing_algorithm", "aws_source")
_FEDERATED_ONLY = ("assertion_audience", *_AWS_ONLY)
_MI_ONLY = ("object_id", "resource_id")


@dataclass(frozen=True, kw_only=True)
class AzureIdentitySpec:
    """A validated ``azure_workload_identity`` connection. Build with :meth:`from_extra`."""

    mode: Mode = "auto"
    source: SourceCloud = "azure"
    assertion_audience: str | None = None
    aws_region: str | None = None
    aws_jwt_duration_seconds: int | None = None
    aws_signing_algorithm: str | None = None
    aws_source: str | None = None
    client_id: str | None = None
    tenant_id: str | None = None
    object_id: str | None = None
    resource_id: str | None = None
    cloud: str = "public"
    authority_host: str | None = None
    scopes: tuple[str, ...] = ()
    client_assertion_file: str | None = None
    additionally_allowed_tenants: tuple[str, ...] = ()
    identity_name: str | None = None
    resource_group: str | None = None
    expected_tenant_id: str | None = None
    expected_object_id: str | None = None
    credential_cache: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> AzureIdentitySpec:
        """The spec of an Airflow connection, read from its stored extra text.

        Not from ``extra_dejson``, which logs text that is not JSON and returns ``{}``: such an extra
        must be a ``ConfigError`` naming ``extra``, not a connection with every field unset.
        """
        return cls.from_extra(conn.extra)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | str | None) -> AzureIdentitySpec:
        v = FORM.parse(extra)
        spec = cls(
            mode=MODE_ALIASES[v["mode"] or "auto"],
            source=v["source"] or "azure",
            assertion_audience=v["assertion_audience"],
            aws_region=v["aws_region"],
            aws_jwt_duration_seconds=v["aws_jwt_duration_seconds"],
            aws_signing_algorithm=v["aws_signing_algorithm"],
            aws_source=v["aws_source"],
            client_id=v["client_id"].lower() if v["client_id"] else None,
            tenant_id=v["tenant_id"],
            object_id=v["object_id"].lower() if v["object_id"] else None,
            resource_id=v["resource_id"],
            cloud=v["cloud"] or "public",
            authority_host=v["authority_host"].rstrip("/") if v["authority_host"] else None,
            scopes=tuple(v["scopes"] or ()),
            client_assertion_file=v["client_assertion_file"],
            additionally_allowed_tenants=tuple(v["additionally_allowed_tenants"] or ()),
            identity_name=v["identity_name"],
            resource_group=v["resource_group"],
            expected_tenant_id=v["expected_tenant_id"].lower() if v["expected_tenant_id"] else None,
            expected_object_id=v["expected_object_id"].lower() if v["expected_object_id"] else None,
            credential_cache=v["credential_cache"],
        )
        spec.validate()
        return spec

    def _error(self, field: str, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(field, problem, fix or FORM.field(field).fix, conn_type=CONN_TYPE)

    def validate(self) -> None:
        if self.authority_host is not None:
            parts = urlsplit(self.authority_host)
            if parts.scheme != "https" or not parts.hostname:
                raise self._error("authority_host", "is not an https URL (Entra refuses plain http)")
            if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
                raise self._error("authority_host", "has a path, query, fragment or user part")
            try:
                parts.port  # noqa: B018  (raises ValueError on a port out of range)
            except ValueError:
                raise self._error("authority_host", "has an invalid port") from None
            if not re.fullmatch(AUTHORITY_PATTERN, self.authority_host):
                raise self._error("authority_host", "has a host that is not an ASCII host name or IP address")
        if self.source != "azure":
            self.check_federated()
        elif self.mode != "auto":
            self.check_mode(self.mode)
        if self.source == "azure":
            for name in _FEDERATED_ONLY:
                if getattr(self, name) is not None:
                    raise self._error(
                        name,
                        "is set but source 'azure' does not use it (it is a gcp / aws source field)",
                        f"remove {name}, or set source to gcp or aws",
                    )

    @property
    def is_federated(self) -> bool:
        """The pod runs on another cloud: its token there is the client assertion."""
        return self.source != "azure"

    @property
    def audience(self) -> str:
        """The client assertion's audience (cross-cloud sources)."""
        return self.assertion_audience or ASSERTION_AUDIENCE

    def check_federated(self) -> None:
        """A cross-cloud source: client and tenant named, no Azure-ambient field, only its own source's fields."""
        source = self.source
        if self.mode != "auto":
            raise self._error(
                "mode",
                f"is {self.mode!r} but source {source!r} does not use it (the identity mode is for a pod on Azure)",
                "clear mode (or set it to auto), or set source to azure",
            )
        for name in (*_MI_ONLY, "client_assertion_file"):
            if getattr(self, name):
                raise self._error(
                    name,
                    f"is set but source {source!r} does not use it (it is an Azure-ambient field)",
                    f"remove {name}, or set source to azure",
                )
        if source != "aws":
            for name in _AWS_ONLY:
                if getattr(self, name) is not None:
                    raise self._error(
                        name, f"is set but source {source!r} does not use it", f"remove {name}, or set source to aws"
                    )
        for name in ("client_id", "tenant_id"):
            if not getattr(self, name):
                raise self._error(
                    name,
                    f"is required with source {source!r} (the pod on {source.upper()} has no AZURE_* variables)",
                    "paste the app registration's or user-assigned identity's client id (a GUID)"
                    if name == "client_id"
                    else "use the Entra tenant GUID or a domain like contoso.onmicrosoft.com",
                )

    def check_mode(self, mode: str) -> None:
        """Fields the chosen mode would ignore are errors, never silently dropped."""
        ignored = _MI_ONLY if mode == "workload_identity" else _WI_ONLY
        for name in ignored:
            if getattr(self, name):
                shown = "imds" if mode == "managed_identity" else mode
                other = "imds" if mode == "workload_identity" else "workload_identity"
                raise self._error(
                    name,
                    f"is set but mode {shown!r} does not use it (it is a {other} field)",
                    f"remove {name}, or set mode to {other!r}",
                )
        if mode == "managed_identity":
            chosen = [n for n in ("client_id", "object_id", "resource_id") if getattr(self, n)]
            if len(chosen) > 1:
                raise self._error(
                    chosen[1],
                    f"selects the managed identity together with {chosen[0]}; IMDS takes exactly one",
                    "keep one of client_id, object_id, resource_id",
                )

    def authority(self, environ: Mapping[str, str]) -> str:
        """``authority_host``, else ``AZURE_AUTHORITY_HOST``, else the cloud's."""
        value = self.authority_host or environ.get("AZURE_AUTHORITY_HOST") or CLOUDS[self.cloud][0]
        return value.rstrip("/") if "://" in value else f"https://{value.rstrip('/')}"

    def default_scopes(self) -> tuple[str, ...]:
        return self.scopes or (CLOUDS[self.cloud][1],)
