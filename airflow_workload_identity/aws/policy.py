"""What must be granted for an AWS connection to work, and cloud errors turned into remediation.

``trust_statement`` / ``caller_statement`` give the JSON to paste; ``explain_*`` turn STS errors into
:class:`AccessDenied` (or :class:`ConfigError`) that say hop n of m, the caller, the target and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.spec import AssumeRoleHop, AwsIdentitySpec, account_of
from airflow_workload_identity.errors import (
    AccessDenied,
    ConfigError,
    IdentityMismatch,
    RejectedValue,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.plan import Plan, Step
from airflow_workload_identity.report import Hop, IdentityReport
from airflow_workload_identity.tokens import unverified_claims

__all__ = [
    "caller_statement",
    "check_as",
    "explain_assume_role_error",
    "explain_data_access_denied",
    "explain_federated_error",
    "explain_web_identity_error",
    "federated_provider",
    "federated_steps",
    "federated_trust_statement",
    "plan_as",
    "principal_for",
    "report_as",
    "required_grants",
    "trust_statement",
]

_SESSION_ARN = re.compile(r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+$")
_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
}


def principal_for(caller_arn: str) -> str:
    """The IAM principal a trust policy names for ``caller_arn``.

    A role session ``arn:aws:sts::A:assumed-role/R/S`` is trusted as its role ``arn:aws:iam::A:role/R``
    (which matches every session of the role); users and roles are named as they are.
    """
    match = _SESSION_ARN.match(caller_arn)
    if match:
        return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"
    return caller_arn


def _actions(hop: AssumeRoleHop, source_identity_carried: bool) -> list[str]:
    actions = ["sts:AssumeRole"]
    if hop.tags or hop.transitive_tag_keys:
        actions.append("sts:TagSession")
    if hop.source_identity or source_identity_carried:
        actions.append("sts:SetSourceIdentity")
    return actions


def trust_statement(caller_arn: str, hop: AssumeRoleHop, *, source_identity_carried: bool = False) -> dict[str, Any]:
    """The statement the target role's trust policy needs so that ``caller_arn`` may assume it."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": principal_for(caller_arn)},
        "Action": _actions(hop, source_identity_carried),
    }
    if hop.external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": hop.external_id}}
    return statement


def caller_statement(hop: AssumeRoleHop, *, source_identity_carried: bool = False) -> dict[str, Any]:
    """The identity-policy statement the caller needs (always needed across accounts)."""
    return {"Effect": "Allow", "Action": _actions(hop, source_identity_carried), "Resource": hop.role_arn}


def _dump(statement: Mapping[str, Any]) -> str:
    return json.dumps(statement, indent=2)


def _client_error_parts(error: Exception) -> tuple[str, str, int | None]:
    response = getattr(error, "response", None) or {}
    err = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(err.get("Code", "")), str(err.get("Message", "")), status


def explain_assume_role_error(
    error: Exception,
    *,
    hop_index: int,
    hops: int,
    hop: AssumeRoleHop,
    caller_arn: str | None,
    endpoint: str,
    source_identity_carried: bool,
    attempts: int,
) -> WorkloadIdentityError:
    """Turn a botocore ``ClientError`` from AssumeRole into one of our typed errors."""
    code, message, status = _client_error_parts(error)
    sent = [f"RoleSessionName={hop.session_name}", f"DurationSeconds={hop.duration_seconds}"]
    if hop.external_id:
        sent.append("ExternalId=(set)")
    if hop.source_identity or source_identity_carried:
        sent.append("SourceIdentity=" + (hop.source_identity or "(carried from the first hop)"))
    if hop.tags:
        sent.append("Tags=" + ",".join(k for k, _ in hop.tags))
    if code == "AccessDenied":
        caller = caller_arn or "the caller"
        trust = trust_statement(
            caller_arn or "arn:aws:iam::<account>:role/<caller>",
            hop,
            source_identity_carried=source_identity_carried,
        )
        lines = [
            f"Sent: {'; '.join(sent)}.",
            f"Add this statement to the trust policy of {hop.role_arn}:",
            _dump(trust),
        ]
        if caller_arn and account_of(caller_arn) != account_of(hop.role_arn):
            lines += [
                f"and, because the accounts differ, allow the caller ({principal_for(caller)}) in its identity policy:",
                _dump(caller_statement(hop, source_identity_carried=source_identity_carried)),
            ]
        if hop.external_id:
            lines.append("If the statement is already there, check that the external id matches the customer's.")
        return AccessDenied(
            hop=hop_index,
            hops=hops,
            caller=caller_arn,
            target=hop.role_arn,
            permission="sts:AssumeRole",
            remediation="\n".join(lines),
            cloud_code=code,
            cloud_message=message,
            endpoint=endpoint,
        )
    # Which field STS proved wrong, from the request we sent (never from the message text): every role
    # allows 3600 s (MaxSessionDuration is at least that), so a refused longer duration is the duration.
    if code == "ValidationError" and hop.duration_seconds > 3600:
        return RejectedValue(
            "duration_seconds",
            f"STS refused it at hop {hop_index} of {hops} ({message})",
            "set duration_seconds to 3600 or less for chained hops, and no more than the role's MaxSessionDuration",
            conn_type="aws_workload_identity",
            cloud_code=code,
        )
    if code in ("ValidationError", "MalformedPolicyDocument", "PackedPolicyTooLarge"):
        policy_code = code in ("MalformedPolicyDocument", "PackedPolicyTooLarge")
        field = "session_policy" if policy_code or (hop.policy or hop.policy_arns) else "role_arn"
        return RejectedValue(
            field,
            f"STS refused hop {hop_index} of {hops}: {code}: {message}",
            "correct the value STS named",
            conn_type="aws_workload_identity",
            cloud_code=code,
        )
    if code == "RegionDisabled":
        return RejectedValue(
            "region_name",
            f"STS is not activated in this region ({message})",
            f"activate the region for STS in the account of {hop.role_arn}, or pick another region",
            conn_type="aws_workload_identity",
            cloud_code=code,
        )
    if code in _THROTTLING or (status is not None and status >= 500) or not code:
        return TransientError(
            f"sts:AssumeRole {hop.role_arn} (hop {hop_index} of {hops}) at {endpoint}",
            attempts,
            f"{code or type(error).__name__}: {message or error}",
        )
    return AccessDenied(
        hop=hop_index,
        hops=hops,
        caller=caller_arn,
        target=hop.role_arn,
        permission="sts:AssumeRole",
        remediation=f"Sent: {'; '.join(sent)}.",
        cloud_code=code,
        cloud_message=message,
        endpoint=endpoint,
    )


def web_identity_trust_statement(provider_arn: str, issuer_path: str, subject: str, audience: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{issuer_path}:sub": subject, f"{issuer_path}:aud": audience}},
    }


def explain_web_identity_error(
    error: Exception,
    *,
    role_arn: str,
    token_file: str,
    claims: Mapping[str, Any],
    endpoint: str,
    attempts: int,
) -> WorkloadIdentityError:
    """Turn an AssumeRoleWithWebIdentity failure into a typed error that says what to fix."""
    code, message, status = _client_error_parts(error)
    issuer = str(claims.get("iss", "<issuer>"))
    issuer_path = issuer.removeprefix("https://")
    subject = str(claims.get("sub", "<subject>"))
    aud = claims.get("aud", "sts.amazonaws.com")
    audience = str(aud[0] if isinstance(aud, list) and aud else aud)
    account = account_of(role_arn) or "<account>"
    provider_arn = f"arn:aws:iam::{account}:oidc-provider/{issuer_path}"
    seen = f"Token file {token_file}: iss={issuer}, sub={subject}, aud={audience}."
    if code in ("ExpiredTokenException", "ExpiredToken"):
        remediation = (
            f"{seen} The projected service-account token has expired. Kubelet rewrites the file before "
            "expiry: check that AWS_WEB_IDENTITY_TOKEN_FILE points at the projected token volume (not a "
            "copy) and that the node's clock is right."
        )
    elif code == "InvalidIdentityToken" and audience != "sts.amazonaws.com":
        remediation = (
            f"{seen} The token's audience is not a client id of the IAM OIDC provider {provider_arn}. "
            "IRSA tokens are minted for sts.amazonaws.com: check the projected token's audience (the "
            "service account annotation eks.amazonaws.com/audience), or add this audience to the provider:\n"
            f"  aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn {provider_arn} "
            f"--client-id {audience}"
        )
    elif code == "InvalidIdentityToken":
        remediation = (
            f"{seen} STS does not trust this token's issuer or signature. Register the cluster's OIDC "
            f"issuer in account {account}:\n  aws iam create-open-id-connect-provider --url {issuer} "
            "--client-id-list sts.amazonaws.com\nIf it is registered, the token was signed by another "
            "cluster (or the issuer's keys rotated): use the token of this cluster."
        )
    elif code == "AccessDenied" or code == "IDPRejectedClaim":
        remediation = (
            f"{seen} The trust policy of {role_arn} must allow this token's subject and audience:\n"
            + _dump(web_identity_trust_statement(provider_arn, issuer_path, subject, audience))
            + "\nand the pod's service account needs the annotation eks.amazonaws.com/role-arn="
            + role_arn
        )
    elif code in _THROTTLING or code == "IDPCommunicationError" or (status is not None and status >= 500) or not code:
        return TransientError(
            f"sts:AssumeRoleWithWebIdentity {role_arn} at {endpoint}",
            attempts,
            f"{code or type(error).__name__}: {message or error}",
        )
    else:
        remediation = seen
    return AccessDenied(
        hop=0,
        hops=0,
        caller=f"{issuer_path}:{subject}",
        target=role_arn,
        permission="sts:AssumeRoleWithWebIdentity",
        remediation=remediation,
        cloud_code=code,
        cloud_message=message,
        endpoint=endpoint,
    )


def required_grants(
    hops: tuple[AssumeRoleHop, ...],
    source_arn: str | None,
    source_description: str,
    *,
    web_identity: tuple[str, str] | None = None,
    platform_role: str | None = None,
) -> Plan:
    """Everything to grant, hop by hop, for a chain that starts at ``source_arn``.

    With ``web_identity`` (the IRSA base role ARN and its token file), first the base role's trust
    statement for the cluster's OIDC provider, with ``sub``/``aud`` read from the projected token's claims.
    For each hop: the statement the target role's trust policy needs and the statement the caller's
    identity policy needs (required across accounts, harmless within one).
    """
    caller = source_arn or "arn:aws:iam::<account>:role/<the pod's role>"
    plan = Plan(
        cloud="aws",
        source=source_arn,
        header=[
            f"Source identity: {source_arn or '(unknown: no ambient AWS identity could be resolved here)'} "
            f"via {source_description}.",
            f"This connection assumes {len(hops)} role(s) in order."
            if hops
            else "This connection assumes no role: the tasks act as the source identity itself.",
        ],
    )
    if web_identity is not None:
        base_role, token_file = web_identity
        try:
            with open(token_file, encoding="utf-8") as handle:
                claims = unverified_claims(handle.read())
        except OSError:
            claims = {}
        issuer_path = str(claims.get("iss", "<issuer>")).removeprefix("https://")
        aud = claims.get("aud", "sts.amazonaws.com")
        provider = f"arn:aws:iam::{account_of(base_role) or '<account>'}:oidc-provider/{issuer_path}"
        statement = web_identity_trust_statement(
            provider,
            issuer_path,
            str(claims.get("sub", "<subject>")),
            str(aud[0] if isinstance(aud, list) and aud else aud),
        )
        plan.steps.append(
            Step(
                hop=0,
                title=f"Hop 0: the pod's service account -> {base_role} (IRSA; values read from {token_file})",
                kind="trust_statement",
                target=base_role,
                content=statement,
                granted_by="platform",
            )
        )
    elif platform_role is not None:  # from a laptop (--as): the platform's IRSA trust, shape only
        plan.steps.append(
            Step(
                hop=0,
                title=f"Hop 0: the deployment's Kubernetes service account -> {platform_role} (IRSA)",
                kind="trust_statement",
                target=platform_role,
                content=web_identity_trust_statement(
                    f"arn:aws:iam::{account_of(platform_role) or '<account>'}:oidc-provider/<cluster OIDC issuer>",
                    "<cluster OIDC issuer>",
                    "system:serviceaccount:<namespace>:<service account>",
                    "sts.amazonaws.com",
                ),
                granted_by="platform",
            )
        )
    if not hops:
        plan.steps.append(
            Step(
                hop=None,
                title="Grant the workload identity's role what the tasks do (an example: replace the action and "
                "the resource). Where its identity policy is not yours to edit (Astro manages the role), name "
                "the role as Principal in the resource's own policy instead (a bucket policy, a key policy)",
                kind="identity_statement",
                target=principal_for(caller),
                content={"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::<bucket>/*"},
            )
        )
    carried = False
    for index, hop in enumerate(hops, start=1):
        title = f"Hop {index} of {len(hops)}: {principal_for(caller)} -> {hop.role_arn}"
        plan.steps.append(
            Step(
                hop=index,
                title=title,
                kind="trust_statement",
                target=hop.role_arn,
                content=trust_statement(caller, hop, source_identity_carried=carried),
            )
        )
        platforms = index == 1 and (web_identity is not None or platform_role is not None)
        plan.steps.append(
            Step(
                hop=index,
                # the first caller is the deployment's own role: its identity policy is the platform's
                title=f"Hop {index}: the deployment's role may assume {hop.role_arn}" if platforms else "",
                kind="identity_statement",
                target=principal_for(caller),
                content=caller_statement(hop, source_identity_carried=carried),
                granted_by="platform" if platforms else "you",
            )
        )
        caller = hop.role_arn
        carried = carried or bool(hop.source_identity)
    return plan


# Operations whose IAM action is not "<service>:<operation>".
_ACTION_OF = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "CopyObject"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
}


def explain_data_access_denied(
    error: Exception, *, principal: str, service: str, resource: str | None = None, action: str | None = None
) -> str:
    """Remediation for a data-plane AccessDenied (e.g. S3 403): the statement the role is missing."""
    code, message, _ = _client_error_parts(error)
    operation = str(getattr(error, "operation_name", "") or "")
    action = action or _ACTION_OF.get((service, operation), f"{service}:{operation or '<Action>'}")
    statement = {"Effect": "Allow", "Action": action, "Resource": resource or "<the resource ARN>"}
    return "\n".join(
        [
            f"{principal} may not {action} on {resource or 'the resource'} ({operation or 'request'} was refused).",
            f"The cloud said: {code}: {message}",
            f"If this access is intended, add to the identity policy of {principal_for(principal)}:",
            _dump(statement),
            "(and check the resource's own policy, e.g. the bucket policy, does not deny it).",
        ]
    )


# -- from a laptop: the deployment's identity given on the command line (``--as``), no cloud call ---------------

AS_FIX = (
    "pass the deployment's workload identity as shown in the Astro UI (Deployment > Details > Workload "
    "Identity), a role ARN like arn:aws:iam::123456789012:role/my-deployment"
)


def check_as(identity: str) -> str:
    """``--as`` for AWS: an IAM role ARN (the deployment's workload identity), else a ``ConfigError``."""
    from airflow_workload_identity.aws.spec import ROLE_ARN_PATTERN

    value = identity.strip()
    if not re.fullmatch(ROLE_ARN_PATTERN, value):
        raise ConfigError("--as", "is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", AS_FIX)
    return value


def _check_not_federated(spec: AwsIdentitySpec) -> None:
    """``--as`` names an AWS role: a connection whose source is another cloud starts from that cloud's identity."""
    if spec.is_federated:
        raise ConfigError(
            "--as",
            f"does not apply: this connection's source is {spec.source!r}, so it starts from the pod's "
            f"{spec.source} identity, not from an AWS role",
            "run 'airflow-workload-identity policy <conn>' inside the deployment: the trust statement is read "
            "from the live token's claims (iss, sub, aud)",
        )


def _check_pin(spec: AwsIdentitySpec, identity: str) -> None:
    if spec.is_direct and spec.expected_account_ids and account_of(identity) not in spec.expected_account_ids:
        raise IdentityMismatch("expected_account_ids", spec.expected_account_ids, identity)


def plan_as(spec: AwsIdentitySpec, identity: str, context: RunContext) -> Plan:
    """:func:`required_grants` from the spec alone, the caller being ``identity`` (no cloud call)."""
    _check_not_federated(spec)
    caller = check_as(identity)
    _check_pin(spec, caller)
    return required_grants(
        spec.hops(context),
        caller,
        "the deployment's workload identity given with --as (not checked: no cloud call)",
        platform_role=caller,
    )


def report_as(spec: AwsIdentitySpec, identity: str, context: RunContext, conn_id: str) -> IdentityReport:
    """Who the connection would be, hop by hop, starting from ``identity`` (planned, not verified)."""
    _check_not_federated(spec)
    caller = check_as(identity)
    _check_pin(spec, caller)
    hops = [Hop(index=0, principal=caller, method="the deployment's workload identity, given with --as")]
    for index, hop in enumerate(spec.hops(context), start=1):
        details = [("session name", hop.session_name), ("duration", f"{hop.duration_seconds}s")]
        if hop.external_id:
            details.append(("external id", "sent"))
        hops.append(Hop(index=index, principal=hop.role_arn, method="sts:AssumeRole (planned)", details=tuple(details)))
    notes = ["planned from --as: no cloud call was made; whoami inside the deployment verifies it"]
    if spec.is_direct:
        notes.append("no role assumed: the tasks act as the deployment's workload identity itself")
    if spec.expected_account_ids:
        notes.append(f"final account pinned to {', '.join(spec.expected_account_ids)}")
    return IdentityReport(cloud="aws", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))


# -- cross-cloud sources (source gcp / azure): the other cloud's token as the first role's web identity ----------

#: Google's issuer is built into STS: no IAM OIDC provider, ``Federated: accounts.google.com``.
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_PROVIDER = "accounts.google.com"
_CLOUD_NAMES = {"gcp": "Google Cloud", "azure": "Azure (Entra ID)", "aws": "AWS"}


def federated_provider(claims: Mapping[str, Any], account: str) -> tuple[str, str, str | None]:
    """``(Federated principal, condition-key prefix, command creating the IAM OIDC provider or None)`` for the
    issuer of a cross-cloud token. Google is built in; any other issuer (Entra's
    ``https://sts.windows.net/<tenant>/``) needs an IAM OIDC provider whose URL is the issuer, client id
    the token's audience; its condition keys are prefixed by the issuer without ``https://``."""
    issuer = str(claims.get("iss", "<issuer>"))
    if issuer.rstrip("/") == GOOGLE_ISSUER:
        return GOOGLE_PROVIDER, GOOGLE_PROVIDER, None
    prefix = issuer.removeprefix("https://")
    audience = _first_audience(claims)
    command = (
        f"aws iam create-open-id-connect-provider --url {issuer} --client-id-list {audience}    # in account {account}"
    )
    return f"arn:aws:iam::{account}:oidc-provider/{prefix}", prefix, command


def _first_audience(claims: Mapping[str, Any]) -> str:
    aud = claims.get("aud", "<audience>")
    return str(aud[0] if isinstance(aud, list) and aud else aud)


def federated_trust_statement(claims: Mapping[str, Any], account: str) -> dict[str, Any]:
    """The role's trust statement for a cross-cloud token, with the conditions read from its claims.

    Google: ``accounts.google.com:aud`` is the token's ``azp`` (the service account's unique id; ``aud`` when
    absent), ``:oaud`` its ``aud`` (the audience asked for), ``:sub`` the unique id. Other issuers:
    ``<issuer>:aud`` and ``<issuer>:sub`` (Entra: the app id URI and the identity's object id)."""
    principal, prefix, _ = federated_provider(claims, account)
    subject = str(claims.get("sub", "<subject>"))
    audience = _first_audience(claims)
    if prefix == GOOGLE_PROVIDER:
        conditions = {
            f"{prefix}:aud": str(claims.get("azp") or audience),
            f"{prefix}:oaud": audience,
            f"{prefix}:sub": subject,
        }
    else:
        conditions = {f"{prefix}:aud": audience, f"{prefix}:sub": subject}
    return {
        "Effect": "Allow",
        "Principal": {"Federated": principal},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": conditions},
    }


def federated_steps(claims: Mapping[str, Any], source_cloud: str, principal: str, role_arn: str) -> list[Step]:
    """What the AWS side grants for a cross-cloud first hop: the IAM OIDC provider (not for Google) and the
    trust statement of the first role, both from the live token's claims."""
    account = account_of(role_arn) or "<account>"
    _, _, command = federated_provider(claims, account)
    steps: list[Step] = []
    cloud = _CLOUD_NAMES.get(source_cloud, source_cloud)
    if command is not None:
        steps.append(
            Step(
                hop=1,
                title=f"Hop 1 (AWS side): trust the {cloud} issuer {claims.get('iss')} in account {account}",
                kind="command",
                target=f"IAM OIDC provider {claims.get('iss')}",
                content=command,
            )
        )
    steps.append(
        Step(
            hop=1,
            title=f"Hop 1 (AWS side): {cloud} identity {principal} -> {role_arn} (sts:AssumeRoleWithWebIdentity; "
            "values read from the live token)",
            kind="trust_statement",
            target=role_arn,
            content=federated_trust_statement(claims, account),
        )
    )
    return steps


def explain_federated_error(
    error: Exception,
    *,
    claims: Mapping[str, Any],
    source_cloud: str,
    principal: str,
    role_arn: str,
    hop_index: int,
    hops: int,
    endpoint: str,
    attempts: int,
    audience_field: str = "source_audience",
) -> WorkloadIdentityError:
    """STS refusing another cloud's token (AssumeRoleWithWebIdentity): the AWS side refused; say which check
    failed and print what to add on the AWS side, from the token's claims (never the token)."""
    code, message, status = _client_error_parts(error)
    cloud = _CLOUD_NAMES.get(source_cloud, source_cloud)
    issuer = str(claims.get("iss", "<issuer>"))
    subject = str(claims.get("sub", "<subject>"))
    audience = _first_audience(claims)
    account = account_of(role_arn) or "<account>"
    provider, prefix, command = federated_provider(claims, account)
    seen = (
        f"The AWS side (STS, account {account}) refused the {cloud} token of {principal}: "
        f"iss={issuer}, sub={subject}, aud={audience}" + (f", azp={claims['azp']}" if "azp" in claims else "") + "."
    )
    statement = _dump(federated_trust_statement(claims, account))
    if code in _THROTTLING or code == "IDPCommunicationError" or (status is not None and status >= 500) or not code:
        return TransientError(
            f"sts:AssumeRoleWithWebIdentity {role_arn} (hop {hop_index} of {hops}) at {endpoint}",
            attempts,
            f"{code or type(error).__name__}: {message or error}",
        )
    if code in ("ExpiredTokenException", "ExpiredToken"):
        remediation = (
            f"{seen} The {cloud} token had expired when STS checked it: check this host's clock (a new token "
            "is fetched on the next attempt)."
        )
    elif code == "InvalidIdentityToken" and "audience" in message.lower():
        remediation = (
            f"{seen} The IAM OIDC provider {provider} does not list the token's audience {audience!r} as a client "
            f"id. Either add it on the AWS side:\n  aws iam add-client-id-to-open-id-connect-provider "
            f"--open-id-connect-provider-arn {provider} --client-id {audience}\nor set the connection's "
            f"{audience_field} to a client id the provider lists."
        )
    elif code == "InvalidIdentityToken":
        trust = (
            f"Create it on the AWS side:\n  {command}\nthen add this statement to the trust policy of {role_arn}:\n"
            if command
            else f"Add this statement to the trust policy of {role_arn}:\n"
        )
        remediation = (
            f"{seen} STS does not trust the issuer {issuer} in account {account} (no IAM OIDC provider, or its "
            f"keys could not be fetched or do not match the token's signature). {trust}{statement}"
        )
    elif code in ("AccessDenied", "IDPRejectedClaim"):
        remediation = (
            f"{seen} The trust policy of {role_arn} does not allow this token's subject and audience "
            f"(Federated {provider}). Add this statement to it (conditions read from the live token):\n{statement}"
            + (
                f"\nIf the audience is not the one intended, set the connection's {audience_field} to the "
                f"{prefix}:{'oaud' if prefix == GOOGLE_PROVIDER else 'aud'} value the trust policy expects."
            )
        )
    else:
        remediation = seen
    return AccessDenied(
        hop=hop_index,
        hops=hops,
        caller=f"{cloud} {principal} (iss {issuer}, sub {subject})",
        target=role_arn,
        permission="sts:AssumeRoleWithWebIdentity",
        remediation=remediation,
        cloud_code=code,
        cloud_message=message,
        endpoint=endpoint,
    )
