"""What identity a ``gcp_workload_identity`` connection describes: fields, parsing, validation.

Pure Python (no Airflow, no google-auth). The chain is ordered from the source's side to the target:
the last entry is the service account the tasks act as (gcloud's and the official provider's
convention); earlier entries are delegates, each of which must hold Token Creator on the next.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.fields import CREDENTIAL_CACHE, END, ConnectionForm, Field, describe_value

__all__ = ["CONN_TYPE", "FORM", "GcpIdentitySpec"]

CONN_TYPE = "gcp_workload_identity"
SOURCES = ("auto", "metadata", "adc", "aws", "azure")
Source = Literal["auto", "metadata", "adc", "aws", "azure"]
#: Sources on another cloud: Google's workload identity federation turns their identity into a federated token.
FEDERATED_SOURCES = ("aws", "azure")
AWS_SUBJECT_TOKENS = ("signed_request", "web_identity_token")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
MAX_LIFETIME = 43200
DEFAULT_LIFETIME = 3600

# Service-account e-mails: <name>@<project>.iam.gserviceaccount.com, and Google's other SA domains
# (<number>-compute@developer..., <project>@appspot..., domain-scoped projects, service agents).
SA_EMAIL_PATTERN = rf"^[a-z0-9][a-z0-9-]{{0,62}}@[a-z0-9][a-z0-9.:-]*\.gserviceaccount\.com{END}"
# A chain entry as stored: either case (it is lower-cased), optionally in the API's resource-name form.
CHAIN_ENTRY_PATTERN = (
    rf"^(?:projects/-/serviceAccounts/)?[A-Za-z0-9][A-Za-z0-9-]{{0,62}}@[A-Za-z0-9][A-Za-z0-9.:-]*"
    rf"\.[gG][sS][eE][rR][vV][iI][cC][eE][aA][cC][cC][oO][uU][nN][tT]\.[cC][oO][mM]{END}"
)
_SA_IN_PATH = re.compile(r"^projects/-/serviceAccounts/(?P<email>.+)$")
_IAM_PROJECT = re.compile(r"^[^@]+@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$")
PROJECT_PATTERN = rf"^(?:[a-z][a-z0-9.-]{{0,61}}:)?[a-z][a-z0-9-]{{4,28}}[a-z0-9]{END}"
SCOPE_PATTERN = rf"^https://www\.googleapis\.com/auth/[a-z0-9._/-]+{END}"
# ASCII only: a Cyrillic look-alike in a domain is another domain.
EMAIL_PATTERN = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{{2,}}{END}"
HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
URL_PATTERN = rf"^https?://{HOST}(?::[0-9]{{1,5}})?/?{END}"
_POOL_PATH = r"locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}"
WORKLOAD_IDENTITY_PROVIDER_PATTERN = rf"^projects/[0-9]{{1,20}}/{_POOL_PATH}{END}"
_WIP = re.compile(WORKLOAD_IDENTITY_PROVIDER_PATTERN)
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
GUID_PATTERN = rf"^{_GUID}{END}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
TENANT_PATTERN = rf"^(?:{_GUID}|{_LABEL}(?:\.{_LABEL})+){END}"
AUDIENCE_PATTERN = rf"^[!-~]{{1,1000}}{END}"
AWS_REGION_PATTERN = rf"^[a-z]{{2,4}}(?:-[a-z]{{2,10}}){{1,3}}-[0-9]{{1,2}}{END}"
GOOGLE_STS = "https://sts.googleapis.com"

FIELDS: tuple[Field, ...] = (
    Field(
        name="impersonation_chain",
        explain=lambda entry: (
            None
            if not entry.isascii()
            else "is not a service-account e-mail (<name>@<project>.iam.gserviceaccount.com)"
        ),
        label="Impersonation chain (source side first, target last)",
        description=(
            "Optional. Service-account e-mails, one per line, in order: the pod's own service account needs "
            "Token Creator on the FIRST, each on the next, and the LAST is the account your tasks act as. A "
            "single e-mail impersonates it directly. Example: hop@proj.iam.gserviceaccount.com then "
            "reader@customer.iam.gserviceaccount.com. Empty: no impersonation, the tasks act as the pod's own "
            "service account (the deployment's workload identity, granted IAM roles directly)."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": CHAIN_ENTRY_PATTERN},
            "maxItems": 10,
            "uniqueItems": True,
        },
        fix="list service-account e-mails like reader@my-project.iam.gserviceaccount.com, target last",
        section="Target service account",
    ),
    Field(
        name="expected_principal",
        label="Expected final service account",
        description=(
            "Optional. The e-mail the final identity must be: the chain's target, or with no chain the pod's "
            "own service account (checked on the metadata server's answer). If it differs, the hook refuses "
            "to hand out credentials."
        ),
        schema={"type": "string", "pattern": SA_EMAIL_PATTERN},
        fix="use the target service account's e-mail",
        section="Target service account",
    ),
    Field(
        name="scopes",
        label="OAuth scopes",
        description=(
            "Optional. Scopes of the impersonated access token, one per line. Default "
            f"{CLOUD_PLATFORM} (IAM roles then decide what the account may do)."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": SCOPE_PATTERN},
            "maxItems": 50,
            "uniqueItems": True,
        },
        fix="use scope URLs like https://www.googleapis.com/auth/cloud-platform",
        section="Token",
    ),
    Field(
        name="lifetime_seconds",
        label="Token lifetime (seconds)",
        description=(
            "Optional. Lifetime of impersonated access tokens, default 3600. Up to 43200 only if the "
            "target is listed in the org-policy constraint "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension."
        ),
        schema={"type": "integer", "minimum": 60, "maximum": MAX_LIFETIME, "default": DEFAULT_LIFETIME},
        fix="use a number of seconds between 60 and 43200 (over 3600 needs the org-policy constraint)",
        section="Token",
    ),
    Field(
        name="project_id",
        label="Project ID",
        description=(
            "Optional. The project clients default to. If empty: the target's project when its e-mail is "
            "<name>@<project>.iam.gserviceaccount.com, else GOOGLE_CLOUD_PROJECT; never guessed from "
            "developer/appspot accounts."
        ),
        schema={"type": "string", "pattern": PROJECT_PATTERN},
        fix="use a project id like my-project-123",
        section="Token",
    ),
    Field(
        name="quota_project_id",
        label="Quota project ID",
        description="Optional. The project billed for API quota (x-goog-user-project).",
        schema={"type": "string", "pattern": PROJECT_PATTERN},
        fix="use a project id like my-project-123",
        section="Token",
    ),
    Field(
        name="subject",
        label="Domain-wide delegation subject",
        description=(
            "Optional. A Workspace user e-mail to act as, through the target's domain-wide delegation "
            "(the target must be authorised for the scopes in the Admin console)."
        ),
        schema={"type": "string", "pattern": EMAIL_PATTERN},
        fix="use a user e-mail like analyst@example.com",
        section="Token",
    ),
    Field(
        name="iam_endpoint_url",
        label="IAM Credentials endpoint override",
        description=(
            "Optional. Base URL of the IAM Credentials API (a regional or Private Service Connect "
            "endpoint), e.g. https://iamcredentials.googleapis.com. Used for every token of this connection."
        ),
        schema={"type": "string", "format": "url", "pattern": URL_PATTERN, "maxLength": 2048},
        fix="use an absolute URL such as https://iamcredentials.googleapis.com with no path or query",
        section="Ambient identity",
    ),
    Field(
        name="source",
        label="Ambient identity source",
        description=(
            "Where the pod's own credentials come from: auto (Application Default Credentials if "
            "GOOGLE_APPLICATION_CREDENTIALS is set, else the GKE metadata server), metadata, adc, or another "
            "cloud through Google's workload identity federation: aws (the pod's IRSA / EKS Pod Identity "
            "role) or azure (the pod's AKS workload identity or managed identity), which need "
            "workload_identity_provider. A named source that is absent is an error, never a fallback."
        ),
        schema={"type": "string", "enum": list(SOURCES), "default": "auto"},
        fix="use one of auto, metadata, adc, aws, azure",
        section="Ambient identity",
    ),
    Field(
        name="workload_identity_provider",
        label="Workload identity pool provider",
        description=(
            "With source aws or azure: the provider that trusts the other cloud, "
            "projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>. Its "
            "federated token is used directly (grant roles to its principal://) or, with impersonation_chain, "
            "to impersonate (roles/iam.workloadIdentityUser on the first account)."
        ),
        schema={"type": "string", "pattern": WORKLOAD_IDENTITY_PROVIDER_PATTERN},
        fix="use projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>",
        section="Cross-cloud source",
    ),
    Field(
        name="source_audience",
        label="Audience of the other cloud's token",
        description=(
            "The aud of the token the other cloud issues, one of the provider's allowed audiences. Azure: "
            "required, the Application ID URI of the Entra app (e.g. api://<app id>); AWS with "
            "aws_proof web_identity_token: default https://iam.googleapis.com/<workload_identity_provider> "
            "(Google's default allowed audience). Not used for AWS signed requests."
        ),
        schema={"type": "string", "pattern": AUDIENCE_PATTERN},
        fix="use the audience the provider allows, e.g. api://<Entra app id> or https://iam.googleapis.com/projects/...",
        section="Cross-cloud source",
    ),
    Field(
        name="aws_proof",
        label="AWS credential presented to Google",
        description=(
            "With source aws: signed_request (default; an AWS provider verifies a signed sts:GetCallerIdentity "
            "request) or web_identity_token (a JWT from sts:GetWebIdentityToken, AWS outbound identity "
            "federation, for an OIDC provider that trusts the account's issuer)."
        ),
        schema={"type": "string", "enum": list(AWS_SUBJECT_TOKENS), "default": "signed_request"},
        fix="use signed_request or web_identity_token",
        section="Cross-cloud source",
    ),
    Field(
        name="aws_region",
        label="AWS region",
        description="With source aws: the pod's AWS region (default AWS_REGION); STS is called regionally.",
        schema={"type": "string", "pattern": AWS_REGION_PATTERN},
        fix="use a region name like eu-west-1",
        section="Cross-cloud source",
    ),
    Field(
        name="azure_tenant_id",
        label="Azure tenant",
        description="With source azure: the Entra tenant of the pod's identity (default AZURE_TENANT_ID).",
        schema={"type": "string", "pattern": TENANT_PATTERN},
        fix="paste a tenant GUID or a domain like contoso.onmicrosoft.com",
        section="Cross-cloud source",
    ),
    Field(
        name="azure_client_id",
        label="Azure client id",
        description=(
            "With source azure: the client id of the managed identity or app (default AZURE_CLIENT_ID); "
            "workload identity when a federated token file is configured, else the node's managed identity."
        ),
        schema={"type": "string", "pattern": GUID_PATTERN},
        fix="paste a GUID like 00000000-0000-0000-0000-000000000000",
        section="Cross-cloud source",
    ),
    Field(
        name="sts_endpoint_url",
        label="Google STS endpoint override",
        description=(
            "Optional, with source aws or azure: base URL of Google's Security Token Service (a Private Service "
            f"Connect endpoint), default {GOOGLE_STS}."
        ),
        schema={"type": "string", "format": "url", "pattern": URL_PATTERN, "maxLength": 2048},
        fix="use an absolute URL such as https://sts.googleapis.com with no path or query",
        section="Cross-cloud source",
    ),
    CREDENTIAL_CACHE,
)

FORM = ConnectionForm(
    conn_type=CONN_TYPE,
    hook_name="Google Cloud Workload Identity",
    hook_class_name="airflow_workload_identity.gcp.hook.GcpWorkloadIdentityHook",
    fields=FIELDS,
)


def normalise_account(entry: str) -> str:
    """``projects/-/serviceAccounts/EMAIL`` or ``EMAIL`` → ``EMAIL`` (lower-cased)."""
    match = _SA_IN_PATH.match(entry.strip())
    return (match["email"] if match else entry.strip()).lower()


@dataclass(frozen=True, kw_only=True)
class GcpIdentitySpec:
    """A validated ``gcp_workload_identity`` connection. Build with :meth:`from_extra`."""

    impersonation_chain: tuple[str, ...]
    scopes: tuple[str, ...] = (CLOUD_PLATFORM,)
    lifetime_seconds: int = DEFAULT_LIFETIME
    project_id: str | None = None
    quota_project_id: str | None = None
    iam_endpoint_url: str | None = None
    subject: str | None = None
    source: Source = "auto"
    expected_principal: str | None = None
    credential_cache: str | None = None
    workload_identity_provider: str | None = None
    source_audience: str | None = None
    aws_proof: str = "signed_request"
    aws_region: str | None = None
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    sts_endpoint_url: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> GcpIdentitySpec:
        """The spec of an Airflow connection, read from its stored extra text.

        Not from ``extra_dejson``, which logs text that is not JSON and returns ``{}``: such an extra
        must be a ``ConfigError`` naming ``extra``, not a connection with every field unset.
        """
        return cls.from_extra(conn.extra)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | str | None) -> GcpIdentitySpec:
        v = FORM.parse(extra)
        spec = cls(
            impersonation_chain=tuple(normalise_account(e) for e in v["impersonation_chain"] or ()),
            scopes=tuple(v["scopes"] or (CLOUD_PLATFORM,)),
            lifetime_seconds=DEFAULT_LIFETIME if v["lifetime_seconds"] is None else v["lifetime_seconds"],
            project_id=v["project_id"],
            quota_project_id=v["quota_project_id"],
            iam_endpoint_url=v["iam_endpoint_url"].rstrip("/") if v["iam_endpoint_url"] else None,
            subject=v["subject"],
            source=v["source"] or "auto",
            expected_principal=v["expected_principal"].lower() if v["expected_principal"] else None,
            credential_cache=v["credential_cache"],
            workload_identity_provider=v["workload_identity_provider"],
            source_audience=v["source_audience"],
            aws_proof=v["aws_proof"] or "signed_request",
            aws_region=v["aws_region"],
            azure_tenant_id=v["azure_tenant_id"],
            azure_client_id=v["azure_client_id"],
            sts_endpoint_url=v["sts_endpoint_url"].rstrip("/") if v["sts_endpoint_url"] else None,
        )
        spec.validate()
        return spec

    def _error(self, field: str, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(field, problem, fix or FORM.field(field).fix, conn_type=CONN_TYPE)

    def validate(self) -> None:
        self._validate_federation()
        for position, account in enumerate(self.impersonation_chain, start=1):
            if not re.fullmatch(SA_EMAIL_PATTERN, account):
                raise self._error(
                    "impersonation_chain",
                    f"entry {position} ({describe_value(account)}) is not a service-account e-mail",
                )
        for position, account in enumerate(self.impersonation_chain, start=1):
            first = self.impersonation_chain.index(account) + 1
            if first != position:
                raise self._error(
                    "impersonation_chain",
                    f"entry {position} is entry {first} again (the same service account, ignoring case and the "
                    "projects/-/serviceAccounts/ prefix)",
                    "list each service account once, in hop order, target last",
                )
        if self.is_direct:
            if self.subject:
                raise self._error(
                    "subject",
                    "domain-wide delegation signs as an impersonated service account, and impersonation_chain is "
                    "empty (the pod's own service account)",
                    "put the delegated account in impersonation_chain, or remove subject",
                )
        elif self.expected_principal and self.expected_principal != self.target:
            raise self._error(
                "expected_principal",
                f"is {self.expected_principal} but the chain ends at {self.target}",
                "make the last entry of impersonation_chain the expected account, or fix expected_principal",
            )
        for name in ("iam_endpoint_url", "sts_endpoint_url"):
            url = getattr(self, name)
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise self._error(name, "is not an absolute http(s) URL")
            if parts.query or parts.fragment or parts.username or parts.path not in ("", "/"):
                raise self._error(name, "has a path, query, fragment or user part")
            try:
                parts.port  # noqa: B018  (raises ValueError on a port out of range)
            except ValueError:
                raise self._error(name, "has an invalid port") from None
            if not re.fullmatch(URL_PATTERN, url):
                raise self._error(name, "has a host or port that is not an ASCII host name and number")
        if self.subject and len(self.impersonation_chain) > 1:
            raise self._error(
                "subject",
                "domain-wide delegation signs as the target itself, which needs a single-entry chain",
                "impersonate the delegated account directly (one entry in impersonation_chain)",
            )

    def _validate_federation(self) -> None:
        """The cross-cloud fields: present exactly when their source needs them."""
        federated = self.source in FEDERATED_SOURCES
        if federated and not self.workload_identity_provider:
            raise self._error(
                "workload_identity_provider",
                f"is required with source {self.source} (Google's token exchange needs the provider that trusts it)",
            )
        if not federated:
            for name in (
                "workload_identity_provider",
                "source_audience",
                "aws_region",
                "azure_tenant_id",
                "azure_client_id",
                "sts_endpoint_url",
            ):
                if getattr(self, name):
                    raise self._error(
                        name,
                        f"applies to source aws or azure (workload identity federation), and source is {self.source}",
                        f"set source to aws or azure, or remove {name}",
                    )
        if self.workload_identity_provider and not _WIP.match(self.workload_identity_provider):
            raise self._error("workload_identity_provider", "is not a provider resource name")
        if self.source != "aws" and (self.aws_region or self.aws_proof != "signed_request"):
            name = "aws_region" if self.aws_region else "aws_proof"
            raise self._error(name, f"applies to source aws, and source is {self.source}", f"remove {name}")
        if self.source != "azure":
            for name in ("azure_tenant_id", "azure_client_id"):
                if getattr(self, name):
                    raise self._error(name, f"applies to source azure, and source is {self.source}", f"remove {name}")
        if self.source == "azure" and not self.source_audience:
            raise self._error(
                "source_audience",
                "is required with source azure: Entra issues the token for an app, named by its Application ID URI",
                "set the Application ID URI of the Entra app the provider allows, e.g. api://<app id>",
            )
        if self.source == "aws" and self.aws_proof == "signed_request" and self.source_audience:
            raise self._error(
                "source_audience",
                "applies to tokens (Azure, or AWS web_identity_token); a signed AWS request has no audience",
                "remove source_audience, or set aws_proof to web_identity_token",
            )
        if federated and self.is_direct and self.expected_principal:
            raise self._error(
                "expected_principal",
                "pins a service account, and with no impersonation_chain the tasks act as the federated principal "
                "(principal://...) of the other cloud's identity",
                "put the service account in impersonation_chain, or remove expected_principal",
            )

    @property
    def is_federated(self) -> bool:
        """The source is on another cloud (workload identity federation)."""
        return self.source in FEDERATED_SOURCES

    @property
    def provider_audience(self) -> str:
        """The token exchange's audience: ``//iam.googleapis.com/<workload_identity_provider>``."""
        return f"//iam.googleapis.com/{self.workload_identity_provider}"

    @property
    def subject_audience(self) -> str:
        """The ``aud`` of the other cloud's token: ``source_audience``, else Google's default allowed audience."""
        return self.source_audience or f"https://iam.googleapis.com/{self.workload_identity_provider}"

    @property
    def is_direct(self) -> bool:
        """No impersonation: the tasks act as the pod's own service account (hop 0)."""
        return not self.impersonation_chain

    @property
    def target(self) -> str:
        """The account the tasks act as: the last entry; with no chain, the pinned e-mail if any, else a
        description of the pod's own account (its e-mail is only known from the metadata server)."""
        if self.impersonation_chain:
            return self.impersonation_chain[-1]
        return self.expected_principal or "the pod's own service account"

    @property
    def delegates(self) -> tuple[str, ...]:
        """The accounts in between, in hop order (the first is impersonated by the source)."""
        return self.impersonation_chain[:-1]

    def api_delegates(self) -> list[str]:
        """Delegates as the IAM Credentials API documents them."""
        return [f"projects/-/serviceAccounts/{email}" for email in self.delegates]

    def resolved_project(self, environ: Mapping[str, str]) -> str | None:
        """``project_id``, else the target's own project (only for ``@<project>.iam`` accounts), else
        ``GOOGLE_CLOUD_PROJECT``; ``None`` when none applies."""
        if self.project_id:
            return self.project_id
        match = _IAM_PROJECT.match(self.target)
        if match:
            return match["project"]
        return environ.get("GOOGLE_CLOUD_PROJECT") or environ.get("CLOUDSDK_CORE_PROJECT") or None
