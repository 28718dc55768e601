"""What must be set up for an Azure connection, and identity errors turned into fixes.

``federated_credential_command`` prints the ``az identity federated-credential create`` command with the
issuer/subject/audience read from the pod's projected token; ``explain_identity_error`` maps AADSTS
codes and IMDS answers to typed errors. Pure Python (azure-identity objects are only duck-typed).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from airflow_workload_identity.azure.spec import AzureIdentitySpec
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
from airflow_workload_identity.tokens import unverified_claims

__all__ = [
    "app_federated_credential_command",
    "assertion_claims",
    "check_as",
    "explain_identity_error",
    "explain_storage_denied",
    "federated_credential_command",
    "plan_as",
    "report_as",
    "required_setup",
]

CONN_TYPE = "azure_workload_identity"
FIC_LIMIT = 20


def token_file_claims(path: str | None) -> dict[str, Any]:
    """iss/sub/aud of the projected service-account token (claims only, never the token)."""
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return unverified_claims(handle.read())


def federated_credential_command(
    *, issuer: str, subject: str, identity_name: str | None, resource_group: str | None, audience: str | None = None
) -> str:
    name = re.sub(r"[^A-Za-z0-9-]", "-", subject.removeprefix("system:serviceaccount:"))[:120] or "airflow"
    return (
        f"az identity federated-credential create --name {name} --identity-name {identity_name or '<identity name>'} "
        f"--resource-group {resource_group or '<resource group>'} --issuer {issuer} --subject {subject} "
        f"--audience {audience or 'api://AzureADTokenExchange'}"
    )


def app_federated_credential_command(*, client_id: str, issuer: str, subject: str, audience: str) -> str:
    """``az ad app federated-credential create`` (an app registration rather than a managed identity)."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", subject)[-120:].strip("-") or "airflow"
    parameters = json.dumps({"name": name, "issuer": issuer, "subject": subject, "audiences": [audience]})
    return f"az ad app federated-credential create --id {client_id} --parameters '{parameters}'"


#: Entra's "no federated credential matches" codes: the assertion's issuer, audience, subject, or all three.
NO_MATCHING_FIC = ("70021", "700211", "700212", "700213")
_SOURCE_CLOUD_NAMES = {"gcp": "Google Cloud", "aws": "AWS"}


def assertion_claims(identity: Any) -> dict[str, Any]:
    """iss/sub/aud (and the rest) of the client assertion: a cross-cloud source's current token (shared: no
    new request while it is fresh), else the pod's projected token; ``{}`` if neither can be read."""
    source = getattr(identity, "source", None)
    if source is None:
        return token_file_claims(identity.token_file)
    try:
        return dict(source.get().claims)
    except WorkloadIdentityError:
        return {}


def _federated_fix(identity: Any, claims: dict[str, Any]) -> str:
    """The commands to run on the Azure side so that Entra accepts the source cloud's token as is."""
    spec = identity.spec
    issuer, subject = str(claims.get("iss", "<issuer>")), str(claims.get("sub", "<subject>"))
    aud = claims.get("aud", spec.audience)
    audience = str(aud[0] if isinstance(aud, list) and aud else aud)
    return (
        f"On the Azure side, add a federated credential matching the token exactly (issuer {issuer}, subject "
        f"{subject}, audience {audience}) to the user-assigned identity:\n  "
        + federated_credential_command(
            issuer=issuer,
            subject=subject,
            identity_name=spec.identity_name,
            resource_group=spec.resource_group,
            audience=audience,
        )
        + "\nor, if client "
        + str(identity.client_id)
        + " is an app registration:\n  "
        + app_federated_credential_command(
            client_id=str(identity.client_id), issuer=issuer, subject=subject, audience=audience
        )
        + f"\nOr set the connection's assertion_audience to the audience of an existing federated credential "
        f"(now {spec.audience}). New credentials take a minute or two to propagate."
    )


def _explain_federated(error: Exception, identity: Any, aadsts: str | None, text: str) -> WorkloadIdentityError | None:
    """Entra refused another cloud's token: name the Azure side and print what to add there."""
    cloud = _SOURCE_CLOUD_NAMES.get(identity.spec.source, identity.spec.source)
    claims = assertion_claims(identity)
    caller = f"{claims.get('sub', '?')} ({cloud}, issuer {claims.get('iss', '?')})"
    if aadsts in NO_MATCHING_FIC:
        return AccessDenied(
            hop=1,
            hops=1,
            caller=caller,
            target=f"Azure client {identity.client_id} in tenant {identity.tenant_id}",
            permission=f"sign in with the {cloud} token (Entra, the Azure side, found no matching federated "
            "identity credential)",
            remediation=_federated_fix(identity, claims),
            cloud_code=f"AADSTS{aadsts}",
            cloud_message=text.splitlines()[0][:500],
            endpoint=identity.authority,
        )
    if aadsts in ("700027", "50027"):
        return AccessDenied(
            hop=1,
            hops=1,
            caller=caller,
            target=f"Azure client {identity.client_id} in tenant {identity.tenant_id}",
            permission=f"sign in with the {cloud} token (Entra, the Azure side, could not verify its signature)",
            remediation=(
                f"Entra verifies the token with the keys it fetches from the issuer {claims.get('iss', '?')} "
                "(its /.well-known/openid-configuration jwks_uri). Check that the federated credential's issuer is "
                "exactly the token's issuer and that the issuer's keys are public; then:\n"
                + _federated_fix(identity, claims)
            ),
            cloud_code=f"AADSTS{aadsts}",
            cloud_message=text.splitlines()[0][:500],
            endpoint=identity.authority,
        )
    if aadsts == "700024":
        return AccessDenied(
            hop=1,
            hops=1,
            caller=caller,
            target=f"Azure client {identity.client_id}",
            permission=f"use the {cloud} token (Entra says it is outside its validity period)",
            remediation="The token was refreshed ahead of expiry: check this host's clock against the source "
            "cloud's (NTP).",
            cloud_code="AADSTS700024",
            cloud_message=text.splitlines()[0][:500],
            endpoint=identity.authority,
        )
    return None


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of the answer behind an azure-core/azure-identity error (or its cause)."""
    for part in (error, error.__cause__, error.__context__):
        response = getattr(part, "response", None)
        status = getattr(part, "status_code", None) or getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _aadsts_code(error: BaseException) -> str | None:
    """Entra's error code from its JSON answer (``error_codes``), when azure-identity attached it."""
    for part in (error, error.__cause__, error.__context__):
        response = getattr(part, "response", None)
        if response is None or not hasattr(response, "text"):
            continue
        try:
            body = json.loads(response.text())
        except (ValueError, TypeError):
            continue
        codes = body.get("error_codes") if isinstance(body, dict) else None
        if isinstance(codes, list) and codes and isinstance(codes[0], int):
            return str(codes[0])
    return None


def explain_identity_error(error: Exception, identity: Any) -> WorkloadIdentityError:
    """A typed error for a failed token request (Entra AADSTS codes, IMDS answers), with the fix."""
    text = str(getattr(error, "message", "") or error)
    spec = identity.spec
    if isinstance(error, FileNotFoundError | OSError) and identity.mode == "workload_identity":
        return IdentityUnavailable(
            "workload_identity",
            ("AZURE_FEDERATED_TOKEN_FILE", "client_assertion_file"),
            f"cannot read the federated token file {identity.token_file} ({getattr(error, 'strerror', error)})",
        )
    aadsts = _aadsts_code(error)
    if aadsts is None:  # azure-identity raised without Entra's answer attached: its message carries the code
        code = re.search(r"AADSTS(\d+)", text)
        aadsts = code.group(1) if code else None
    if identity.mode == "federated":
        explained = _explain_federated(error, identity, aadsts, text)
        if explained is not None:
            return explained
    if aadsts == "70021":
        claims = token_file_claims(identity.token_file)
        issuer, subject = str(claims.get("iss", "<issuer>")), str(claims.get("sub", "<subject>"))
        aud = claims.get("aud", "api://AzureADTokenExchange")
        audience = str(aud[0] if isinstance(aud, list) and aud else aud)
        return AccessDenied(
            hop=1,
            hops=1,
            caller=subject,
            target=f"client {identity.client_id}",
            permission="exchange the service-account token (no matching federated credential)",
            remediation=(
                f"The pod's token has iss={issuer}, sub={subject}, aud={audience}; no federated credential of "
                f"client {identity.client_id} matches all three. Add one:\n  "
                + federated_credential_command(
                    issuer=issuer,
                    subject=subject,
                    identity_name=spec.identity_name,
                    resource_group=spec.resource_group,
                    audience=audience,
                )
                + f"\nAn identity holds at most {FIC_LIMIT} federated credentials (one per cluster issuer and "
                "service account): with many deployments or clusters, use one identity per group of deployments."
                " New credentials take a minute or two to propagate."
            ),
            cloud_code=f"AADSTS{aadsts}",
            cloud_message=text.splitlines()[0][:500],
            endpoint=identity.authority,
        )
    if aadsts == "700016":
        return RejectedValue(
            "client_id",
            f"Entra has no application {identity.client_id} in tenant {identity.tenant_id} (AADSTS700016)",
            "check client_id (the managed identity's client id, not its object id) and tenant_id",
            conn_type=CONN_TYPE,
            cloud_code="AADSTS700016",
        )
    if aadsts == "90002":
        return RejectedValue(
            "tenant_id",
            f"Entra does not know tenant {identity.tenant_id} (AADSTS90002)",
            "use the tenant GUID or its verified domain",
            conn_type=CONN_TYPE,
            cloud_code="AADSTS90002",
        )
    if aadsts == "700024":
        return AccessDenied(
            hop=1,
            hops=1,
            caller=None,
            target=f"client {identity.client_id}",
            permission="use the service-account token (expired)",
            remediation=(
                f"The projected token in {identity.token_file} has expired. Kubelet rewrites it before expiry: "
                "check the pod mounts the projected volume (not a copy) and the node's clock."
            ),
            cloud_code="AADSTS700024",
            cloud_message=text.splitlines()[0][:500],
            endpoint=identity.authority,
        )
    # IMDS: no such identity here (HTTP 400). azure-identity's ManagedIdentityCredential re-raises that as a
    # bare CredentialUnavailableError without the answer, so its message is all there is to read.
    no_identity = "Identity not found" in text or "No identity has been assigned" in text
    if identity.mode == "managed_identity" and (_http_status(error) == 400 or no_identity):
        kind, value = identity.selector
        return IdentityUnavailable(
            "managed_identity",
            ("IMDS http://169.254.169.254/metadata/identity/oauth2/token",),
            f"IMDS says this node has no identity with {kind} {value or '(default)'}: attach it to the VM scale "
            "set, e.g. az vmss identity assign -g <node resource group> -n <vmss> --identities "
            f"{spec.resource_id or '<identity resource id>'}",
        )
    if "tenant" in text.lower() and ("additionally_allowed_tenants" in text or "not allowed" in text.lower()):
        return ConfigError(
            "additionally_allowed_tenants",
            f"a token was requested for another tenant: {text.splitlines()[0]}",
            "add that tenant to additionally_allowed_tenants if cross-tenant access is intended",
            conn_type=CONN_TYPE,
        )
    if "timed out" in text.lower() or "no response" in text.lower() or "connection" in text.lower():
        return TransientError(
            f"token request ({identity.describe()})",
            identity.sdk_attempts(),
            text.splitlines()[0][:300],
            endpoint=identity.endpoint(),
        )
    return AccessDenied(
        hop=1,
        hops=1,
        caller=None,
        target=identity.describe(),
        permission="get a token",
        remediation="See the cloud's message above.",
        cloud_code=aadsts or type(error).__name__,
        cloud_message=text.splitlines()[0][:500] if text else "",
        endpoint=identity.authority,
    )


def explain_storage_denied(
    error: Exception, *, token_claims: dict[str, Any], scope: str, role: str = "Storage Blob Data Reader"
) -> str:
    """Remediation for a storage 403: the token's audience and object id, and the role assignment."""
    oid, aud = token_claims.get("oid", "<object id>"), token_claims.get("aud", "?")
    code = getattr(error, "error_code", None) or type(error).__name__
    return "\n".join(
        [
            f"Storage refused object {oid} (token audience {aud}): {code}.",
            "If this access is intended, assign the role at the container or account scope:",
            f"  az role assignment create --assignee-object-id {oid} --assignee-principal-type ServicePrincipal "
            f'--role "{role}" --scope {scope}',
        ]
    )


def _federated_setup(identity: Any) -> Plan:
    """A pod on another cloud: what each side grants, from the LIVE source token's claims (one token request to
    the source cloud if none is cached; none to Entra)."""
    spec = identity.spec
    cloud = _SOURCE_CLOUD_NAMES.get(spec.source, spec.source)
    subject = identity.source.get()  # raises the source side's own error (what to fix there) if it cannot
    claims = dict(subject.claims)
    issuer, sub, audience = subject.issuer, subject.subject, subject.audience or spec.audience
    target = spec.identity_name or str(identity.client_id)
    steps: list[Step] = []
    if spec.source == "aws":
        duration = int(spec.aws_jwt_duration_seconds or 300)
        role = sub if sub.startswith("arn:") else "<the pod's IAM role>"
        steps += [
            Step(
                hop=0,
                title=f"AWS side: outbound identity federation on (once per account; issuer {issuer})",
                kind="command",
                target="the AWS account",
                content="aws iam enable-outbound-web-identity-federation",
            ),
            Step(
                hop=0,
                title=f"AWS side: the pod's role {role} may get tokens for {audience} living at most {duration} s "
                "(sts:GetWebIdentityToken with sts:IdentityTokenAudience and sts:DurationSeconds conditions)",
                kind="identity_statement",
                target=role,
                content=identity.source.statement(),  # federation/aws.py: audience, lifetime, algorithm pinned
            ),
        ]
    steps += [
        Step(
            hop=1,
            title=f"Azure side: trust the {cloud} token (issuer, subject and audience read from the live token)",
            kind="command",
            target=target,
            content=federated_credential_command(
                issuer=issuer,
                subject=sub,
                identity_name=spec.identity_name,
                resource_group=spec.resource_group,
                audience=audience,
            ),
        ),
        Step(
            hop=None,
            title="",
            kind="note",
            target=target,
            content="for an app registration instead: "
            + app_federated_credential_command(
                client_id=str(identity.client_id), issuer=issuer, subject=sub, audience=audience
            ),
        ),
        Step(
            hop=None,
            title="Azure side: grant the identity on the data, e.g.",
            kind="command",
            target=target,
            content=f'az role assignment create --assignee {identity.client_id} --role "Storage Blob Data Reader" '
            "--scope <storage account or container resource id>",
        ),
    ]
    header = [
        f"{cloud} -> Azure: the pod's {subject.principal} signs in as client {identity.client_id} "
        f"(tenant {identity.tenant_id}) with its {cloud} token as the client assertion.",
        f"Token claims Entra checks: iss={issuer} sub={sub} aud={audience}",
    ]
    if claims.get("email"):
        header.append(f"(sub is the unique id of {claims['email']}; Entra matches sub, not the e-mail)")
    return Plan(cloud="azure", source=subject.principal, header=header, steps=steps)


def required_setup(identity: Any) -> Plan:
    """The federated credential (from the projected token's claims), the IMDS attachment, or for a pod on
    another cloud both clouds' sides (from the live source token's claims)."""
    spec = identity.spec
    if identity.mode == "federated":
        return _federated_setup(identity)
    if identity.mode == "workload_identity":
        claims = token_file_claims(identity.token_file)
        issuer = str(claims.get("iss", "<the cluster's OIDC issuer: az aks show --query oidcIssuerProfile.issuerUrl>"))
        subject = str(claims.get("sub", "system:serviceaccount:<namespace>:<service account>"))
        target = spec.identity_name or str(identity.client_id)
        return Plan(
            cloud="azure",
            source=subject,
            header=[f"Workload identity: client {identity.client_id}, tenant {identity.tenant_id}."],
            steps=[
                Step(
                    hop=1,
                    title="1. Trust the pod's service account token (values read from the projected token)",
                    kind="command",
                    target=target,
                    content=federated_credential_command(
                        issuer=issuer,
                        subject=subject,
                        identity_name=spec.identity_name,
                        resource_group=spec.resource_group,
                    ),
                    granted_by="platform",
                ),
                Step(
                    hop=None,
                    title="",
                    kind="note",
                    target=target,
                    content="2. Pod label azure.workload.identity/use=true and service account annotation "
                    f"azure.workload.identity/client-id={identity.client_id}",
                ),
                Step(
                    hop=None,
                    title="3. Grant the identity on the data, e.g.",
                    kind="command",
                    target=target,
                    content=f'az role assignment create --assignee {identity.client_id} --role "Storage Blob Data '
                    'Reader" --scope <storage account or container resource id>',
                ),
            ],
        )
    kind, value = identity.selector
    return Plan(
        cloud="azure",
        source=f"{kind} {value}".strip(),
        header=[f"Managed identity via IMDS ({kind} {value})."],
        steps=[
            Step(
                hop=0,
                title="1. Attach the identity to the node pool's VM scale set",
                kind="command",
                target=spec.resource_id or "<identity resource id>",
                content="az vmss identity assign -g <node resource group> -n <vmss> --identities "
                f"{spec.resource_id or '<identity resource id>'}",
                granted_by="platform",
            ),
            Step(
                hop=None,
                title="2. Grant it on the data, e.g.",
                kind="command",
                target="<scope>",
                content='az role assignment create --assignee <client id> --role "Storage Blob Data Reader" '
                "--scope <scope>",
            ),
        ],
    )


# -- from a laptop: the deployment's identity given on the command line (``--as``), no cloud call ---------------

AS_FIX = (
    "pass the client id of the deployment's managed identity as shown in the Astro UI (Deployment > Details > "
    "Workload Identity) or the Azure portal (Managed Identities > the identity > Overview), a GUID"
)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check_as(identity: str) -> str:
    """``--as`` for Azure: a client id (GUID), else a ``ConfigError`` naming ``--as``."""
    value = identity.strip().lower()
    if not _GUID.fullmatch(value):
        raise ConfigError("--as", "is not a client id (a GUID like 00000000-0000-0000-0000-000000000000)", AS_FIX)
    return value


def _checked(spec: AzureIdentitySpec, identity: str) -> str:
    if spec.is_federated:
        raise ConfigError(
            "--as",
            f"does not apply: this connection's source is {spec.source!r}, so it starts from the pod's "
            f"{spec.source} identity (its token is the client assertion), not from an Azure identity",
            "run 'airflow-workload-identity policy <conn>' inside the deployment: the federated credential is read "
            "from the live token's claims (iss, sub, aud)",
        )
    client_id = check_as(identity)
    if spec.client_id and spec.client_id != client_id:
        raise IdentityMismatch("client_id", (spec.client_id,), client_id)
    return client_id


def plan_as(spec: AzureIdentitySpec, identity: str) -> Plan:
    """What the connection needs, from the spec alone, for the identity ``identity`` (no cloud call).

    Hop 0 (the federated credential that lets the deployment's Kubernetes service account sign in as the
    identity, or for IMDS the identity attached to the nodes) is the platform's; the role assignment is yours."""
    client_id = _checked(spec, identity)
    imds = spec.mode == "managed_identity"
    if imds:
        platform = Step(
            hop=0,
            title="Hop 0: the identity attached to the node pool's VM scale set (IMDS)",
            kind="command",
            target=spec.resource_id or client_id,
            content="az vmss identity assign -g <node resource group> -n <vmss> --identities "
            f"{spec.resource_id or '<identity resource id>'}",
            granted_by="platform",
        )
    else:
        platform = Step(
            hop=0,
            title="Hop 0: the deployment's Kubernetes service account may sign in as the identity (federated "
            "credential)",
            kind="command",
            target=spec.identity_name or client_id,
            content=federated_credential_command(
                issuer="<the cluster's OIDC issuer>",
                subject="system:serviceaccount:<namespace>:<service account>",
                identity_name=spec.identity_name,
                resource_group=spec.resource_group,
            ),
            granted_by="platform",
        )
    tenant = spec.tenant_id or spec.expected_tenant_id or "(AZURE_TENANT_ID in the deployment)"
    return Plan(
        cloud="azure",
        source=client_id,
        header=[
            f"{'Node managed identity via IMDS' if imds else 'Workload identity'}: client {client_id}, "
            f"tenant {tenant} (given with --as; not checked: no cloud call).",
        ],
        steps=[
            platform,
            Step(
                hop=None,
                title='Grant the identity on the data ("Storage Blob Data Reader" is an example: pick the role '
                "your tasks need)",
                kind="command",
                target=client_id,
                content=f'az role assignment create --assignee {client_id} --role "Storage Blob Data Reader" '
                "--scope <storage account or container resource id>",
            ),
        ],
    )


def report_as(spec: AzureIdentitySpec, identity: str, conn_id: str) -> IdentityReport:
    """Who the connection would be, from ``identity`` (planned, not verified)."""
    client_id = _checked(spec, identity)
    mode = "imds" if spec.mode == "managed_identity" else "workload_identity" if spec.mode != "auto" else "auto"
    details: list[tuple[str, str]] = [("mode", mode)]
    if spec.tenant_id:
        details.append(("tenant", spec.tenant_id))
    hop = Hop(
        index=0,
        principal=f"client {client_id}",
        method="the deployment's managed identity, given with --as",
        details=tuple(details),
    )
    notes = ["planned from --as: no cloud call was made; whoami inside the deployment verifies it"]
    if spec.expected_tenant_id:
        notes.append(f"tenant pinned to {spec.expected_tenant_id}")
    return IdentityReport(cloud="azure", conn_id=conn_id, hops=(hop,), notes=tuple(notes))
