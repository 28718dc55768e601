"""What must be granted for a GCP connection to work, and IAM Credentials errors turned into fixes.

``token_creator_command`` gives the ``gcloud`` binding for one hop; ``explain_iam_error`` turns an
error body (``status``, ``details[].reason``, ``metadata.permission``) into a typed error that names the
hop, the caller, the target and the command that fixes it. Pure Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_workload_identity.errors import (
    AccessDenied,
    ConfigError,
    IdentityMismatch,
    IdentityUnavailable,
    RejectedValue,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.plan import Plan, Step
from airflow_workload_identity.report import Hop, IdentityReport

if TYPE_CHECKING:  # annotations only
    from airflow_workload_identity.gcp.spec import GcpIdentitySpec

__all__ = [
    "check_as",
    "explain_iam_error",
    "explain_storage_denied",
    "parse_error_body",
    "plan_as",
    "platform_binding_step",
    "project_binding_command",
    "report_as",
    "required_bindings",
    "token_creator_command",
]

CONN_TYPE = "gcp_workload_identity"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


def token_creator_command(caller: str, target: str) -> str:
    """The gcloud command that lets ``caller`` mint tokens for ``target``."""
    return (
        f"gcloud iam service-accounts add-iam-policy-binding {target} "
        f"--member=serviceAccount:{caller} --role={TOKEN_CREATOR}"
    )


def parse_error_body(body: Any) -> dict[str, Any] | None:
    """``{"code", "status", "message", "reason", "permission"}`` from a Google JSON error, else ``None``."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            data = json.loads(str(body))
        except ValueError:
            match = re.search(r"\{.*\}", str(body), re.S)  # google-auth sometimes wraps the body in text
            if not match:
                return None
            try:
                data = json.loads(match.group(0).replace("'", '"'))
            except ValueError:
                return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    reason = permission = None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reason = detail.get("reason")
            permission = (detail.get("metadata") or {}).get("permission")
            break
    return {
        "code": error.get("code"),
        "status": error.get("status"),
        "message": str(error.get("message", "")),
        "reason": reason,
        "permission": permission,
    }


def explain_iam_error(
    error: Exception,
    *,
    hop: int,
    hops: int,
    caller: str | None,
    target: str,
    endpoint: str | None,
    lifetime_seconds: int | None = None,
) -> WorkloadIdentityError:
    """A typed error for a failed token request, with the fix."""
    body = error.args[1] if len(error.args) > 1 else (error.args[0] if error.args else "")
    parsed = parse_error_body(body)
    if parsed is None:
        text = str(body)
        shown = "an HTML error page (the Google front end)" if "<html" in text.lower() else text[:300]
        return TransientError(f"token request for {target}", 1, shown)
    code, status, message, reason = parsed["code"], parsed["status"], parsed["message"], parsed["reason"]
    cloud = {"cloud_code": f"{code} {status}".strip(), "cloud_message": message, "endpoint": endpoint}
    if reason == "IAM_PERMISSION_DENIED":
        who = caller or "<the source service account>"
        return AccessDenied(
            hop=hop,
            hops=hops,
            caller=caller,
            target=target,
            permission=str(parsed["permission"] or "iam.serviceAccounts.getAccessToken"),
            remediation=(
                f"{who} needs {TOKEN_CREATOR} on {target} (hop {hop} of {hops}). Run, as an owner of {target}:\n"
                f"  {token_creator_command(who, target)}"
            ),
            **cloud,
        )
    if code == 404:
        missing = re.search(r"email ([^\s]+)", message)  # only to name the account in the text
        account = missing.group(1) if missing else target
        return RejectedValue(
            "impersonation_chain",
            f"service account {account} does not exist (IAM Credentials answered 404)",
            "check the e-mail for typos and that the account was not deleted",
            conn_type=CONN_TYPE,
            cloud_code=f"{code} {status}".strip(),
        )
    # INVALID_ARGUMENT on a request for more than an hour: the lifetime (from what we sent, not the text).
    if code == 400 and lifetime_seconds is not None and lifetime_seconds > 3600:
        return RejectedValue(
            "lifetime_seconds",
            f"IAM Credentials refused it: {message}",
            f"set lifetime_seconds to 3600 or less, or add {target} to the org-policy constraint "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension",
            conn_type=CONN_TYPE,
            cloud_code=f"{code} {status}".strip(),
        )
    if reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT":
        return AccessDenied(
            hop=0,
            hops=hops,
            caller=caller,
            target=target,
            permission="call the IAM Credentials API",
            remediation=(
                "The source credentials lack the cloud-platform (or iam) OAuth scope. On GKE with Workload "
                "Identity tokens carry cloud-platform; on a VM, give the instance the cloud-platform scope; "
                "for ADC run: gcloud auth application-default login --scopes="
                "https://www.googleapis.com/auth/cloud-platform"
            ),
            **cloud,
        )
    if reason == "SERVICE_DISABLED":
        return AccessDenied(
            hop=hop,
            hops=hops,
            caller=caller,
            target=target,
            permission="use iamcredentials.googleapis.com",
            remediation="Enable the IAM Service Account Credentials API in the source's project:\n"
            "  gcloud services enable iamcredentials.googleapis.com --project <the source's project>",
            **cloud,
        )
    if code == 401:
        return IdentityUnavailable(
            "source",
            ("the source credentials",),
            f"IAM Credentials rejected the source token ({reason or status}: {message})",
        )
    if isinstance(code, int) and (code == 429 or code >= 500):
        return TransientError(f"token request for {target} at {endpoint}", 1, f"{code} {status}: {message}")
    return AccessDenied(
        hop=hop,
        hops=hops,
        caller=caller,
        target=target,
        permission="mint a token",
        remediation="See the cloud's message above.",
        **cloud,
    )


#: The role a direct identity's binding shows: a placeholder the user replaces with the role they need.
EXAMPLE_ROLE = "roles/storage.objectViewer"


def project_binding_command(project: str, member: str, role: str = EXAMPLE_ROLE) -> str:
    """The gcloud command that grants ``member`` (a service-account e-mail) ``role`` on ``project``."""
    return f"gcloud projects add-iam-policy-binding {project} --member=serviceAccount:{member} --role={role}"


def platform_binding_step(source_email: str | None) -> Step:
    """Hop 0: the Kubernetes service account -> Google service account binding (GKE Workload Identity),
    which the platform (Astro) creates for the deployment; the customer cannot edit it."""
    account = source_email or "<the deployment's Google service account>"
    return Step(
        hop=0,
        title="Hop 0: the deployment's Kubernetes service account may act as its Google service account",
        kind="command",
        target=account,
        content=(
            f"gcloud iam service-accounts add-iam-policy-binding {account} --role=roles/iam.workloadIdentityUser "
            '--member="serviceAccount:<cluster project>.svc.id.goog[<namespace>/<kubernetes service account>]"'
        ),
        granted_by="platform",
    )


def required_bindings(
    chain: tuple[str, ...],
    source_email: str | None,
    *,
    project: str | None = None,
    source_label: str | None = None,
) -> Plan:
    """Every binding the connection needs, hop by hop, as gcloud commands: hop 0 (the platform's) first,
    then the Token Creator binding of each hop, or, with no chain (a direct identity), the project
    binding of the pod's own service account."""
    caller = source_email or "<the pod's Google service account>"
    seen = source_email or "(unknown: no Google service account could be resolved here)"
    header = [f"Source identity: {seen}{f' ({source_label})' if source_label else ''}."]
    if not chain:
        header.append(
            "This connection impersonates nothing: the tasks act as the source identity itself (the deployment's "
            "workload identity), so grant IAM roles to it directly."
        )
    else:
        header.append(f"This connection impersonates {len(chain)} service account(s) in order; the last is the target.")
    plan = Plan(cloud="gcp", source=source_email, header=header)
    plan.steps.append(platform_binding_step(source_email))
    if not chain:
        plan.steps.append(
            Step(
                hop=None,
                title=f"Grant the workload identity a role on the project ({EXAMPLE_ROLE} is an example: pick the "
                "role your tasks need)",
                kind="command",
                target=caller,
                content=project_binding_command(project or "<project>", caller),
            )
        )
        return plan
    for position, account in enumerate(chain, start=1):
        plan.steps.append(
            Step(
                hop=position,
                title=f"Hop {position} of {len(chain)}: {caller} -> {account}",
                kind="command",
                target=account,
                content=token_creator_command(caller, account),
            )
        )
        caller = account
    plan.steps.append(
        Step(
            hop=None,
            title="Also: the IAM Service Account Credentials API enabled in the source's project",
            kind="command",
            target="iamcredentials.googleapis.com",
            content="gcloud services enable iamcredentials.googleapis.com --project <the source's project>",
        )
    )
    plan.steps.append(
        Step(
            hop=None,
            title="",
            kind="note",
            target=chain[-1],
            content=f"and the target granted on the data it reads (e.g. {EXAMPLE_ROLE} on a bucket).",
        )
    )
    return plan


def explain_storage_denied(error: Exception, *, principal: str, bucket: str, role: str) -> str:
    """Remediation for a data-plane 403 (e.g. GCS): who was refused, and the binding that would allow it."""
    text = str(getattr(error, "message", "") or error)
    parsed = parse_error_body(text)
    message = parsed["message"] if parsed else text.strip().splitlines()[0]
    federated = principal.startswith(("principal://", "principalSet://"))  # workload identity federation
    member = f'"{principal}"' if federated else f"serviceAccount:{principal}"
    return "\n".join(
        [
            f"{principal} was refused on gs://{bucket}: {message}",
            "If this access is intended, grant it on the bucket:",
            f"  gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} --role={role}",
        ]
    )


# -- from a laptop: the deployment's identity given on the command line (``--as``), no cloud call ---------------

AS_FIX = (
    "pass the deployment's workload identity as shown in the Astro UI (Deployment > Details > Workload "
    "Identity), a service-account e-mail like my-deployment@my-project.iam.gserviceaccount.com"
)


def check_as(identity: str) -> str:
    """``--as`` for GCP: a service-account e-mail (the deployment's workload identity), else ``ConfigError``."""
    from airflow_workload_identity.gcp.spec import SA_EMAIL_PATTERN

    value = identity.strip().lower()
    if not re.fullmatch(SA_EMAIL_PATTERN, value):
        raise ConfigError("--as", "is not a service-account e-mail (<name>@<project>.iam.gserviceaccount.com)", AS_FIX)
    return value


def _refuse_federated(spec: GcpIdentitySpec) -> None:
    """``--as`` names a Google service account; a federated connection starts on another cloud, and its
    federated principal is only known from the live caller ARN or token (``policy`` inside the deployment)."""
    if spec.is_federated:
        raise ConfigError(
            "--as",
            f"this connection's source is {spec.source} (workload identity federation): its principal comes from "
            "the other cloud's live identity, not from a service-account e-mail",
            "run the command without --as inside the deployment (it reads the live caller or token)",
        )


def _check_pin(spec: GcpIdentitySpec, identity: str) -> None:
    if spec.is_direct and spec.expected_principal and spec.expected_principal != identity:
        raise IdentityMismatch("expected_principal", (spec.expected_principal,), identity)


def plan_as(spec: GcpIdentitySpec, identity: str, environ: Mapping[str, str]) -> Plan:
    """:func:`required_bindings` from the spec alone, the source being ``identity`` (no cloud call)."""
    _refuse_federated(spec)
    source = check_as(identity)
    _check_pin(spec, source)
    return required_bindings(
        spec.impersonation_chain,
        source,
        project=spec.resolved_project(environ),
        source_label="the deployment's workload identity given with --as; not checked: no cloud call",
    )


def report_as(spec: GcpIdentitySpec, identity: str, environ: Mapping[str, str], conn_id: str) -> IdentityReport:
    """Who the connection would be, hop by hop, starting from ``identity`` (planned, not verified)."""
    _refuse_federated(spec)
    source = check_as(identity)
    _check_pin(spec, source)
    hops = [Hop(index=0, principal=source, method="the deployment's workload identity, given with --as")]
    chain = spec.impersonation_chain
    for position, account in enumerate(chain, start=1):
        last = position == len(chain)
        method = "generateAccessToken target (planned)" if last else "delegate (planned)"
        hops.append(Hop(index=position, principal=account, method=method))
    notes = [
        f"project: {spec.resolved_project(environ) or '(none)'}",
        "planned from --as: no cloud call was made; whoami inside the deployment verifies it",
    ]
    if spec.is_direct:
        notes.append("no impersonation: the tasks act as the deployment's workload identity itself")
    return IdentityReport(cloud="gcp", conn_id=conn_id, hops=tuple(hops), notes=tuple(notes))
