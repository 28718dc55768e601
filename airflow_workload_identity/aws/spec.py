"""What identity an ``aws_workload_identity`` connection describes: fields, parsing, validation.

Pure Python (no Airflow, no botocore). Every limit here is STS's own (see docs/aws.md), so a value
STS would refuse is refused first, with the field's name and the fix, before any network call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_workload_identity.attribution import PLACEHOLDERS, RunContext, placeholders_in, render
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.fields import CREDENTIAL_CACHE, END, ConnectionForm, Field, describe_value

__all__ = ["FORM", "SOURCES", "AssumeRoleHop", "AwsIdentitySpec"]

CONN_TYPE = "aws_workload_identity"
SOURCES = ("auto", "web_identity", "pod_identity", "default_chain", "gcp", "azure")
Source = Literal["auto", "web_identity", "pod_identity", "default_chain", "gcp", "azure"]
#: Sources on another cloud: its token is the web identity of the first role (``AssumeRoleWithWebIdentity``).
FEDERATED_SOURCES = ("gcp", "azure")
#: The audience a Google ID token is minted for when the connection names none (AWS's documented default).
GCP_DEFAULT_AUDIENCE = "sts.amazonaws.com"
#: ``source_mode`` values per federated source.
SOURCE_MODES = {"gcp": ("auto", "metadata", "adc"), "azure": ("auto", "workload_identity", "imds")}
_FEDERATION_FIELDS = ("source_audience", "source_mode", "source_tenant_id", "source_client_id")
_AZURE_ONLY = ("source_tenant_id", "source_client_id")

_PARTITION = r"aws(?:-cn|-us-gov|-iso|-iso-[a-z]|-eusc)?"
# ASCII classes only: Python's \w and \d also match Cyrillic letters and full-width digits, which IAM refuses.
ROLE_ARN_PATTERN = rf"^arn:{_PARTITION}:iam::[0-9]{{12}}:role/(?:[\x21-\x7e]{{0,510}}/)?[A-Za-z0-9_+=,.@-]{{1,64}}{END}"
POLICY_ARN_PATTERN = rf"^arn:{_PARTITION}:iam::(?:[0-9]{{12}}|aws):policy/[A-Za-z0-9_+=,.@/-]{{1,1024}}{END}"
REGION_PATTERN = rf"^[a-z]{{2}}(?:-gov|-iso|-isob|-isoe|-isof)?-[a-z]+-[0-9]{{1,2}}{END}"
ACCOUNT_ID_PATTERN = rf"^[0-9]{{12}}{END}"
EXTERNAL_ID_PATTERN = rf"^[A-Za-z0-9_+=,.@:/-]+{END}"
SESSION_NAME_CHARS = r"A-Za-z0-9_+=,.@-"
TAG_KEY_PATTERN = r"^[\w\s.:/=+\-@]{1,128}$"
TAG_VALUE_PATTERN = r"^[\w\s.:/=+\-@]{0,256}$"
CHAINED_MAX_DURATION = 3600
DEFAULT_SESSION_NAME = "airflow.{dag_id}.{task_id}"
DEFAULT_SESSION_NAME_OUTSIDE_TASK = "airflow.{conn_id}"

_TEMPLATE_HELP = "placeholders: " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
# A template's braces are {placeholder}, or {{ and }} for literal braces: no attribute or index access,
# no format spec or conversion (what str.format would otherwise evaluate).
_TEMPLATE_PART = r"(?:[^{}]|\{\{|\}\}|\{(?:" + "|".join(PLACEHOLDERS) + r")\})"
TEMPLATE_PATTERN = rf"^(?!\s){_TEMPLATE_PART}*(?<!\s){END}"
SOURCE_IDENTITY_PATTERN = rf"^(?!\s)(?![aA][wW][sS]:){_TEMPLATE_PART}*(?<!\s){END}"
TAG_VALUE_TEMPLATE_PATTERN = rf"^{_TEMPLATE_PART}*{END}"


def _explain_template(template: str) -> str | None:
    """What is wrong with a template that fails its pattern, in the words of the template rules."""
    try:
        used = placeholders_in(template)
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    unknown = used - set(PLACEHOLDERS)
    if unknown:
        shown = describe_value("{" + sorted(unknown)[0] + "}")
        return f"uses unknown placeholder {shown} (placeholders allow no attribute or index access)"
    return None


_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
SOURCE_AUDIENCE_PATTERN = rf"^[\x21-\x7e]{{1,512}}{END}"
SOURCE_TENANT_PATTERN = rf"^(?:{_GUID}|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{{2,}}){END}"
SOURCE_CLIENT_PATTERN = rf"^{_GUID}{END}"

HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
URL_PATTERN = rf"^https?://{HOST}(?::[0-9]{{1,5}})?/?{END}"

FIELDS: tuple[Field, ...] = (
    Field(
        name="role_arn",
        label="Role ARN",
        description=(
            "Optional. The role the tasks act as: the customer's role ARN, arn:aws:iam::<account>:role/<name>, "
            "from the customer's IAM console (Roles > the role > ARN). Its trust policy must allow the "
            "pod's identity (run 'airflow-workload-identity policy' to print the statement). Empty: no role "
            "is assumed, the tasks act as the pod's own identity (the IRSA or Pod Identity role)."
        ),
        schema={
            "type": "string",
            "pattern": ROLE_ARN_PATTERN,
            "examples": ["arn:aws:iam::123456789012:role/reader"],
        },
        fix="paste a role ARN like arn:aws:iam::123456789012:role/my-role (not a user, policy or session ARN)",
        section="Target role",
    ),
    Field(
        name="role_chain",
        label="Intermediate roles (in order)",
        description=(
            "Optional. Roles assumed in order before the role ARN, one ARN per line: the pod's identity "
            "assumes the first, the first assumes the second, ... and the last assumes the role ARN. "
            "Leave empty to assume the role ARN directly."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": ROLE_ARN_PATTERN},
            "maxItems": 10,
            "uniqueItems": True,
        },
        fix="list distinct role ARNs (arn:aws:iam::<account>:role/<name>), first hop first, at most 10",
        section="Target role",
    ),
    Field(
        name="external_id",
        label="External ID",
        description=(
            "Optional. The external id the customer's trust policy requires (condition sts:ExternalId); "
            "the customer gives it to you. Sent on the final hop only."
        ),
        schema={"type": "string", "minLength": 2, "maxLength": 1224, "pattern": EXTERNAL_ID_PATTERN},
        fix="use 2-1224 characters from letters, digits and + = , . @ : / - _",
        section="Target role",
    ),
    Field(
        name="expected_account_ids",
        label="Expected account IDs",
        description=(
            "Optional. 12-digit AWS account ids the final role must belong to, one per line. If the "
            "identity reached is in another account the hook refuses to hand out credentials."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": ACCOUNT_ID_PATTERN},
            "maxItems": 50,
            "uniqueItems": True,
        },
        fix="list 12-digit account ids such as 123456789012",
        section="Target role",
    ),
    Field(
        name="region_name",
        label="Region",
        description=(
            "Optional. Region for clients and for the regional STS endpoint (https://sts.<region>."
            "amazonaws.com), e.g. eu-west-1. Defaults to AWS_REGION / AWS_DEFAULT_REGION."
        ),
        schema={"type": "string", "pattern": REGION_PATTERN, "examples": ["us-east-1", "eu-west-1"]},
        fix="use a region code such as us-east-1 or eu-west-1",
        section="Session",
    ),
    Field(
        name="sts_endpoint_url",
        label="STS endpoint override",
        description=(
            "Optional. An STS endpoint URL for every STS call of this connection (a VPC endpoint, a "
            "FIPS endpoint). Leave empty for the regional endpoint; AWS_ENDPOINT_URL_STS also works."
        ),
        schema={"type": "string", "format": "url", "maxLength": 2048, "pattern": URL_PATTERN},
        fix="use an absolute URL such as https://sts.eu-west-1.amazonaws.com with no path, query or user",
        section="Session",
    ),
    Field(
        name="duration_seconds",
        label="Session duration (seconds)",
        description=(
            "Optional. Lifetime of each assumed-role session, 900-43200 (default 3600). At most 3600 "
            "when a hop is chained, which it is whenever the pod's identity is itself a role (IRSA, Pod "
            "Identity, instance role) and for every intermediate role."
        ),
        schema={"type": "integer", "minimum": 900, "maximum": 43200, "default": 3600},
        fix="use a number of seconds between 900 and 43200 (at most 3600 for a chained hop)",
        section="Session",
    ),
    Field(
        name="role_session_name",
        explain=_explain_template,
        label="Session name template",
        description=(
            "Optional. The session name CloudTrail records for every hop; " + _TEMPLATE_HELP + ". "
            f"Default {DEFAULT_SESSION_NAME} ({DEFAULT_SESSION_NAME_OUTSIDE_TASK} outside a task). "
            "Rendered names are fitted to STS's 64-character limit (long names end in a hash)."
        ),
        schema={
            "type": "string",
            "maxLength": 256,
            "pattern": TEMPLATE_PATTERN,
            "examples": [DEFAULT_SESSION_NAME],
        },
        fix="use text and placeholders such as airflow.{dag_id}.{task_id}",
        section="Session",
    ),
    Field(
        name="source_identity",
        explain=_explain_template,
        label="Source identity template",
        description=(
            "Optional. A source identity set on the first role session and carried by every later "
            "hop, so CloudTrail ties all actions to it; " + _TEMPLATE_HELP + ". Needs "
            "sts:SetSourceIdentity in each trust policy. Fitted to STS's 64-character limit."
        ),
        schema={
            "type": "string",
            "maxLength": 256,
            "pattern": SOURCE_IDENTITY_PATTERN,
            "examples": ["{dag_id}.{task_id}"],
        },
        fix="use text and placeholders such as {dag_id}.{task_id}; it must not start with 'aws:'",
        section="Session",
    ),
    Field(
        name="session_tags",
        explain=_explain_template,
        label="Session tags",
        description=(
            'Optional. A JSON object of session tags, e.g. {"team": "data", "dag": "{dag_id}"} (values may '
            "use the placeholders). Needs sts:TagSession in each trust policy. At most 50."
        ),
        schema={
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"minLength": 1, "maxLength": 128},
            "additionalProperties": {"type": "string", "maxLength": 256, "pattern": TAG_VALUE_TEMPLATE_PATTERN},
        },
        fix='use a JSON object of up to 50 "key": "value" pairs (keys 1-128, values up to 256 characters)',
        section="Session",
    ),
    Field(
        name="transitive_tag_keys",
        label="Transitive tag keys",
        description=(
            "Optional. Session tag keys that carry over to every later hop of a chain, one per line. "
            "Each must be a key of the session tags."
        ),
        schema={
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 128},
            "maxItems": 50,
            "uniqueItems": True,
        },
        fix="list keys that also appear in session_tags",
        section="Session",
    ),
    Field(
        name="session_policy",
        label="Session policy (JSON)",
        description=(
            "Optional. An inline IAM policy (JSON) that narrows what the final session may do; the "
            "result is the intersection with the role's own policies. At most 2048 characters."
        ),
        schema={"type": "string", "format": "multiline", "minLength": 1, "maxLength": 2048, "pattern": r"\S"},
        fix='use a JSON policy document like {"Version": "2012-10-17", "Statement": [...]}',
        section="Session",
    ),
    Field(
        name="policy_arns",
        label="Session policy ARNs",
        description="Optional. Managed policy ARNs that narrow the final session, one per line, at most 10.",
        schema={
            "type": "array",
            "items": {"type": "string", "pattern": POLICY_ARN_PATTERN},
            "maxItems": 10,
            "uniqueItems": True,
        },
        fix="list managed policy ARNs like arn:aws:iam::aws:policy/ReadOnlyAccess, at most 10",
        section="Session",
    ),
    Field(
        name="source",
        label="Ambient identity source",
        description=(
            "Where the pod's own identity comes from: auto (IRSA if AWS_ROLE_ARN and "
            "AWS_WEB_IDENTITY_TOKEN_FILE are set, else EKS Pod Identity if "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI is set, else botocore's default chain), web_identity, "
            "pod_identity or default_chain. A named source that is absent is an error, never a fallback."
        ),
        schema={"type": "string", "enum": list(SOURCES), "default": "auto"},
        fix="use one of auto, web_identity, pod_identity, default_chain, gcp, azure",
        section="Ambient identity",
    ),
    Field(
        name="source_audience",
        label="Federated token audience",
        description=(
            "Source gcp or azure: the audience (aud) of the other cloud's token presented to "
            "AssumeRoleWithWebIdentity. gcp: default sts.amazonaws.com (the trust policy's "
            "accounts.google.com:oaud). azure: required, the app id URI of the Entra app registration the IAM "
            "OIDC provider lists as a client id, e.g. api://airflow-aws."
        ),
        schema={"type": "string", "pattern": SOURCE_AUDIENCE_PATTERN, "examples": ["sts.amazonaws.com"]},
        fix="use one word of printable ASCII, e.g. sts.amazonaws.com (gcp) or api://airflow-aws (azure)",
        section="Cross-cloud source",
    ),
    Field(
        name="source_mode",
        label="Federated source mode",
        description=(
            "Source gcp: auto (default), metadata (the GKE metadata server) or adc (a key or impersonation file "
            "in GOOGLE_APPLICATION_CREDENTIALS). Source azure: auto (default), workload_identity (AKS) or imds "
            "(the node's managed identity)."
        ),
        schema={
            "type": "string",
            "enum": sorted({mode for modes in SOURCE_MODES.values() for mode in modes}),
            "default": "auto",
        },
        fix="use auto, metadata or adc for source gcp; auto, workload_identity or imds for source azure",
        section="Cross-cloud source",
    ),
    Field(
        name="source_tenant_id",
        label="Source Entra tenant ID",
        description=(
            "Source azure: the pod's Entra tenant (GUID or domain); defaults to AZURE_TENANT_ID. With imds a GUID "
            "pins the token's tid."
        ),
        schema={"type": "string", "pattern": SOURCE_TENANT_PATTERN},
        fix="use a tenant GUID or a domain like contoso.onmicrosoft.com",
        section="Cross-cloud source",
    ),
    Field(
        name="source_client_id",
        label="Source managed identity client ID",
        description=(
            "Source azure: the managed identity's (or app's) client id, a GUID; defaults to AZURE_CLIENT_ID "
            "(workload identity). With imds it picks one of several identities attached to the node."
        ),
        schema={"type": "string", "pattern": SOURCE_CLIENT_PATTERN},
        fix="paste a GUID like 00000000-0000-0000-0000-000000000000",
        section="Cross-cloud source",
    ),
    CREDENTIAL_CACHE,
)

FORM = ConnectionForm(
    conn_type=CONN_TYPE,
    hook_name="AWS Workload Identity",
    hook_class_name="airflow_workload_identity.aws.hook.AwsWorkloadIdentityHook",
    fields=FIELDS,
)


@dataclass(frozen=True, kw_only=True)
class AssumeRoleHop:
    """One ``sts:AssumeRole`` call, fully rendered: what is sent, in botocore's parameter names."""

    role_arn: str
    session_name: str
    duration_seconds: int
    external_id: str | None = None
    source_identity: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    policy: str | None = None
    policy_arns: tuple[str, ...] = ()

    def assume_role_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": self.session_name,
            "DurationSeconds": self.duration_seconds,
        }
        if self.external_id:
            kwargs["ExternalId"] = self.external_id
        if self.source_identity:
            kwargs["SourceIdentity"] = self.source_identity
        if self.tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags]
        if self.transitive_tag_keys:
            kwargs["TransitiveTagKeys"] = list(self.transitive_tag_keys)
        if self.policy:
            kwargs["Policy"] = self.policy
        if self.policy_arns:
            kwargs["PolicyArns"] = [{"arn": arn} for arn in self.policy_arns]
        return kwargs


def account_of(arn: str) -> str:
    """The account id in an IAM or STS ARN (``""`` if it has none)."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


@dataclass(frozen=True, kw_only=True)
class AwsIdentitySpec:
    """A validated ``aws_workload_identity`` connection. Build with :meth:`from_extra`."""

    role_arn: str | None = None
    role_chain: tuple[str, ...] = ()
    region_name: str | None = None
    sts_endpoint_url: str | None = None
    external_id: str | None = None
    duration_seconds: int = 3600
    role_session_name: str | None = None
    source_identity: str | None = None
    session_tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    session_policy: str | None = None
    policy_arns: tuple[str, ...] = ()
    source: Source = "auto"
    expected_account_ids: tuple[str, ...] = ()
    credential_cache: str | None = None
    source_audience: str | None = None
    source_mode: str | None = None
    source_tenant_id: str | None = None
    source_client_id: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> AwsIdentitySpec:
        """The spec of an Airflow connection, read from its stored extra text.

        Not from ``extra_dejson``, which logs text that is not JSON and returns ``{}``: such an extra
        must be a ``ConfigError`` naming ``extra``, not a connection with every field unset.
        """
        return cls.from_extra(conn.extra)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | str | None) -> AwsIdentitySpec:
        """Parse and validate a connection's extra (plain or legacy keys; ``None``/``""`` = unset)."""
        v = FORM.parse(extra)
        spec = cls(
            role_arn=v["role_arn"],
            role_chain=v["role_chain"] or (),
            region_name=v["region_name"],
            sts_endpoint_url=v["sts_endpoint_url"],
            external_id=v["external_id"],
            duration_seconds=3600 if v["duration_seconds"] is None else v["duration_seconds"],
            role_session_name=v["role_session_name"],
            source_identity=v["source_identity"],
            session_tags=tuple((v["session_tags"] or {}).items()),
            transitive_tag_keys=v["transitive_tag_keys"] or (),
            session_policy=v["session_policy"],
            policy_arns=v["policy_arns"] or (),
            source=v["source"] or "auto",
            expected_account_ids=v["expected_account_ids"] or (),
            credential_cache=v["credential_cache"],
            source_audience=v["source_audience"],
            source_mode=v["source_mode"],
            source_tenant_id=v["source_tenant_id"],
            source_client_id=v["source_client_id"].lower() if v["source_client_id"] else None,
        )
        spec.validate()
        return spec

    # -- cross-field rules ------------------------------------------------------------------------------

    def _error(self, field: str, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(field, problem, fix or FORM.field(field).fix, conn_type=CONN_TYPE)

    def validate(self) -> None:
        """Rules that involve more than one field, or more than a schema can say."""
        for name in ("role_session_name", "source_identity"):
            template = getattr(self, name)
            if template is not None:
                self._check_template(name, template)
        if self.source_identity and self.source_identity.lower().startswith("aws:"):
            raise self._error("source_identity", "starts with 'aws:', which STS reserves")
        if self.sts_endpoint_url is not None:
            self._check_endpoint(self.sts_endpoint_url)
        self._check_federation()
        if self.role_arn is None:
            for name in (
                "role_chain",
                "external_id",
                "session_policy",
                "policy_arns",
                "role_session_name",
                "source_identity",
                "session_tags",
                "transitive_tag_keys",
            ):
                if getattr(self, name):
                    raise self._error(
                        name,
                        "applies to an assumed role, and role_arn is empty (the connection acts as the pod's own "
                        "identity, no role is assumed)",
                        f"set role_arn to the role to assume, or remove {name}",
                    )
        if self.role_arn is not None and self.role_arn in self.role_chain:
            raise self._error(
                "role_chain",
                f"lists the target role itself (entry {self.role_chain.index(self.role_arn) + 1}), so the chain "
                "would assume it twice",
                "list only the intermediate roles in role_chain; the role ARN is always the last hop",
            )
        if self.session_policy is not None:
            try:
                document = json.loads(self.session_policy)
            except json.JSONDecodeError as exc:
                raise self._error("session_policy", f"is not valid JSON ({exc.msg})") from None
            if not isinstance(document, dict) or "Statement" not in document:
                raise self._error("session_policy", "is not a policy document (no 'Statement')")
        keys = [k for k, _ in self.session_tags]
        for key, value in self.session_tags:
            if not re.fullmatch(TAG_KEY_PATTERN, key) or key.lower().startswith("aws:"):
                raise self._error("session_tags", f"tag key {describe_value(key)} is not a valid tag key")
            try:
                placeholders = placeholders_in(value)
            except ValueError as exc:
                raise self._error("session_tags", f"tag {describe_value(key)}: {exc}") from None
            unknown = placeholders - set(PLACEHOLDERS)
            if unknown:
                raise self._error(
                    "session_tags",
                    f"tag {describe_value(key)} uses unknown placeholder {describe_value(sorted(unknown)[0])}",
                )
        if len({k.lower() for k in keys}) != len(keys):
            raise self._error("session_tags", "has keys that differ only in case, which STS refuses")
        missing = [k for k in self.transitive_tag_keys if k not in keys]
        if missing:
            raise self._error("transitive_tag_keys", f"{describe_value(missing[0])} is not a key of session_tags")
        if self.role_arn is not None and (self.source in ("web_identity", "pod_identity") or self.role_chain):
            self.check_chained_duration(reason=self._chained_reason())
        if (
            self.role_arn is not None
            and self.expected_account_ids
            and account_of(self.role_arn) not in self.expected_account_ids
        ):
            raise self._error(
                "expected_account_ids",
                f"the role ARN's account {account_of(self.role_arn)} is not listed",
                "add the role's account id, or fix the role ARN",
            )

    @property
    def is_federated(self) -> bool:
        """The source is another cloud's identity (its token is the first role's web identity)."""
        return self.source in FEDERATED_SOURCES

    @property
    def federated_audience(self) -> str | None:
        """The audience of the other cloud's token (gcp: ``sts.amazonaws.com`` unless set)."""
        if self.source == "gcp":
            return self.source_audience or GCP_DEFAULT_AUDIENCE
        return self.source_audience if self.source == "azure" else None

    def _check_federation(self) -> None:
        if not self.is_federated:
            for name in _FEDERATION_FIELDS:
                # the form stores a field's default ('auto') whether or not its section applies: that is unset
                if getattr(self, name) and not (name == "source_mode" and self.source_mode == "auto"):
                    raise self._error(
                        name,
                        f"applies to a cross-cloud source, and source is {self.source!r}",
                        f"set source to gcp or azure, or remove {name}",
                    )
            return
        if self.source == "gcp":
            for name in _AZURE_ONLY:
                if getattr(self, name):
                    raise self._error(name, "applies to source azure, and source is 'gcp'", f"remove {name}")
        if self.source == "azure" and not self.source_audience:
            raise self._error(
                "source_audience",
                "is empty, and source azure needs the app id URI the Entra token is issued for",
                "set source_audience to the app id URI of the Entra app registration (e.g. api://airflow-aws), the "
                "client id the account's IAM OIDC provider for https://sts.windows.net/<tenant>/ lists",
            )
        if self.source == "azure" and self.source_audience and self.source_audience.rstrip("/").endswith("/.default"):
            raise self._error(
                "source_audience", "ends with /.default (that is the scope, not the audience)", "remove /.default"
            )
        modes = SOURCE_MODES[self.source]
        if self.source_mode and self.source_mode not in modes:
            raise self._error(
                "source_mode",
                f"{self.source_mode!r} is not a mode of source {self.source!r}",
                f"use one of {', '.join(modes)}",
            )
        if self.role_arn is None:
            raise self._error(
                "role_arn",
                f"is empty, and source {self.source!r} needs a role to assume with the {self.source} token "
                "(AssumeRoleWithWebIdentity); there is no AWS identity to act as without one",
                "set role_arn to the role whose trust policy allows the federated identity "
                "(run 'airflow-workload-identity policy' to print the statement)",
            )
        first = "the first role" if self.role_chain else "the role"
        for name in ("source_identity", "session_tags", "transitive_tag_keys"):
            if getattr(self, name):
                raise self._error(
                    name,
                    f"cannot be sent: {first} is assumed with AssumeRoleWithWebIdentity, which takes no source "
                    "identity or session tags (STS reads them from the token's claims)",
                    f"remove {name}",
                )
        if self.external_id and not self.role_chain:
            raise self._error(
                "external_id",
                "cannot be sent: the role is assumed with AssumeRoleWithWebIdentity, which takes no external id "
                "(the trust policy's conditions on the token's claims play its part)",
                "remove external_id, or assume the customer's role through role_chain (the external id goes on "
                "the last AssumeRole)",
            )

    def _chained_reason(self) -> str:
        if self.role_chain:
            return "the role is assumed through intermediate roles"
        return f"the ambient identity ({self.source}) is itself a role session"

    def check_chained_duration(self, *, reason: str) -> None:
        """STS caps chained sessions at one hour; say so before STS does."""
        if self.duration_seconds > CHAINED_MAX_DURATION:
            raise self._error(
                "duration_seconds",
                f"is {self.duration_seconds}, but {reason}, so every hop is role chaining and STS "
                f"allows at most {CHAINED_MAX_DURATION} seconds (the 1 hour limit for role chaining)",
                f"set duration_seconds to {CHAINED_MAX_DURATION} or less",
            )

    def _check_template(self, name: str, template: str) -> None:
        try:
            used = placeholders_in(template)
        except ValueError as exc:
            raise self._error(name, f"is not a valid template ({exc})") from None
        unknown = used - set(PLACEHOLDERS)
        if unknown:
            shown = describe_value("{" + sorted(unknown)[0] + "}")
            raise self._error(
                name,
                f"uses unknown placeholder {shown} (no attribute or index access)",
                f"use only {_TEMPLATE_HELP}",
            )

    def _check_endpoint(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error("sts_endpoint_url", "is not an absolute http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise self._error("sts_endpoint_url", "has a path, query, fragment or user part")
        try:
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError:
            raise self._error("sts_endpoint_url", "has an invalid port") from None
        if not re.fullmatch(URL_PATTERN, url):
            raise self._error("sts_endpoint_url", "has a host that is not an ASCII host name or IP address")

    # -- derived ------------------------------------------------------------------------------------------

    @property
    def is_direct(self) -> bool:
        """No role assumed: the tasks act as the pod's own identity (hop 0)."""
        return self.role_arn is None

    @property
    def roles(self) -> tuple[str, ...]:
        """Every role assumed, in order; the last is the target (none for a direct identity)."""
        return () if self.role_arn is None else (*self.role_chain, self.role_arn)

    def session_name(self, context: RunContext) -> str:
        template = self.role_session_name or (
            DEFAULT_SESSION_NAME if context.in_task else DEFAULT_SESSION_NAME_OUTSIDE_TASK
        )
        return render(template, context, allowed=SESSION_NAME_CHARS, max_len=64)

    def hops(self, context: RunContext) -> tuple[AssumeRoleHop, ...]:
        """The AssumeRole calls this connection makes for ``context``, in order.

        The session name and duration go on every hop. The source identity goes on the first hop and
        STS carries it to the later ones. Transitive tags go on the first hop (STS carries them);
        other tags on every hop. External id and session policies go on the final hop.
        """
        session_name = self.session_name(context)
        source_identity = (
            render(self.source_identity, context, allowed=SESSION_NAME_CHARS, max_len=64)
            if self.source_identity
            else None
        )
        tags = tuple(
            (key, render(value, context, allowed=r"\w\s.:/=+\-@", max_len=256, min_len=0) if value else "")
            for key, value in self.session_tags
        )
        transitive = set(self.transitive_tag_keys)
        hops = []
        for index, role in enumerate(self.roles):
            first, last = index == 0, index == len(self.roles) - 1
            hops.append(
                AssumeRoleHop(
                    role_arn=role,
                    session_name=session_name,
                    duration_seconds=self.duration_seconds,
                    external_id=self.external_id if last else None,
                    source_identity=source_identity if first else None,
                    tags=tags if first else tuple(t for t in tags if t[0] not in transitive),
                    transitive_tag_keys=self.transitive_tag_keys if first else (),
                    policy=self.session_policy if last else None,
                    policy_arns=self.policy_arns if last else (),
                )
            )
        return tuple(hops)
