"""Another cloud as the source of a ``gcp_workload_identity`` connection: Google's workload identity federation.

The pod's identity on AWS or Azure becomes a Google federated access token through Google's Security Token
Service (``sts.googleapis.com/v1/token``), with google-auth's own external-account credentials (no token
exchange or SigV4 signing here):

- AWS, ``aws_proof: signed_request`` (default): ``google.auth.aws.Credentials`` with an
  ``aws_security_credentials_supplier`` fed from this package's shared AWS credentials
  (:func:`~airflow_workload_identity.federation.aws.aws_credentials_supplier`; never the EC2 metadata server):
  Google verifies a signed ``sts:GetCallerIdentity`` request; the provider maps the caller ARN.
- AWS, ``web_identity_token``: ``google.auth.identity_pool.Credentials`` with a ``subject_token_supplier``
  returning the JWT of STS ``GetWebIdentityToken`` (an OIDC provider trusting the account's outbound issuer).
- Azure: the same with the pod's Entra token (:func:`~airflow_workload_identity.federation.azure.entra_token_source`).

The federated token is hop 1 and a :class:`~airflow_workload_identity.gcp.credentials.SharedToken` (single
flight, refreshed ahead of expiry, host cache), so every later hop is the existing machinery: the
impersonation chain (``roles/iam.workloadIdentityUser`` for the federated principal on the first account) or,
with no chain, the federated token itself (direct resource access for ``principal://``). The other cloud's
token is refreshed from that cloud's shared credentials whenever the federated token is (never on its own).

No Airflow imports.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth.credentials
from google.auth import aws as google_aws
from google.auth import identity_pool

from airflow_workload_identity.cache import host_layer
from airflow_workload_identity.errors import AccessDenied, TransientError, WorkloadIdentityError
from airflow_workload_identity.federation import claim_details
from airflow_workload_identity.gcp.credentials import SharedToken, Source
from airflow_workload_identity.gcp.spec import CLOUD_PLATFORM, GOOGLE_STS, GcpIdentitySpec
from airflow_workload_identity.plan import Plan, Step
from airflow_workload_identity.registry import Registry
from airflow_workload_identity.report import Hop

__all__ = [
    "AWS4_REQUEST",
    "JWT_TOKEN",
    "WORKLOAD_IDENTITY_USER",
    "FederatedSource",
    "explain_sts_error",
    "federated_source",
    "pool_of",
    "provider_command",
]

AWS4_REQUEST = "urn:ietf:params:aws:token-type:aws4_request"
JWT_TOKEN = "urn:ietf:params:oauth:token-type:jwt"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
_PROVIDER = re.compile(
    r"^projects/(?P<number>\d+)/locations/global/workloadIdentityPools/(?P<pool>[^/]+)/providers/(?P<provider>[^/]+)$"
)


def _parts(provider: str) -> tuple[str, str, str]:
    match = _PROVIDER.match(provider)
    assert match is not None  # the spec validated it
    return match["number"], match["pool"], match["provider"]


def pool_of(provider: str) -> str:
    """``projects/N/locations/global/workloadIdentityPools/P`` of a provider resource name."""
    return provider.rsplit("/providers/", 1)[0]


def _aws_role(arn: str) -> str:
    """Google's default ``attribute.aws_role``: ``arn:aws:sts::A:assumed-role/R`` for a session ARN."""
    match = re.match(r"^(arn:[\w-]+:sts::\d{12}:)assumed-role/([^/]+)/", arn)
    return f"{match[1]}assumed-role/{match[2]}" if match else arn


class _SubjectSupplier(identity_pool.SubjectTokenSupplier):
    """google-auth's subject-token supplier over a cross-cloud source (the other cloud's shared token)."""

    def __init__(self, get: Callable[[], str]) -> None:
        self._get = get

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._get()


@dataclass
class FederatedSource(Source):
    """Hop 0 on the other cloud and hop 1 the Google federated principal; ``token`` is the federated token."""

    spec: GcpIdentitySpec | None = None
    upstream: Any = None  # SharedAwsCredentialsSupplier | AwsWebIdentityTokenSource | EntraTokenSource
    sts_endpoint: str = GOOGLE_STS
    host_cacheable: bool = False
    _live: dict[str, str] = field(default_factory=dict)

    def email(self) -> str | None:
        return None  # a federated principal is not a service account

    @property
    def provider(self) -> str:
        assert self.spec is not None and self.spec.workload_identity_provider
        return self.spec.workload_identity_provider

    @property
    def signed_request(self) -> bool:
        return self.kind == "aws" and self.spec is not None and self.spec.aws_proof == "signed_request"

    def live(self) -> dict[str, str]:
        """What the other cloud presents now, read from its live credentials (a token's ``iss``/``sub``/``aud``,
        or the AWS caller ARN and account): what the provider's trust and attribute mapping see."""
        if self.signed_request:
            arn = self.upstream.principal() or ""
            self._live = {"arn": arn, "account": arn.split(":")[4] if arn.count(":") >= 5 else "", "sub": arn}
        else:
            token = self.upstream.get()
            self._live = {
                "iss": token.issuer,
                "sub": token.subject,
                "aud": token.audience,
                "principal": token.principal,
            }
        return self._live

    def principal(self, live: Mapping[str, str] | None = None) -> str:
        """The federated principal under the default attribute mapping (``google.subject`` = the caller ARN for
        AWS providers, the token's ``sub`` for OIDC providers)."""
        values = live if live is not None else (self._live or self.live())
        return f"principal://iam.googleapis.com/{pool_of(self.provider)}/subject/{values.get('sub', '')}"

    def members(self, live: Mapping[str, str] | None = None) -> list[str]:
        """The members a binding can name: the principal, and for AWS the role's ``principalSet``."""
        values = live if live is not None else (self._live or self.live())
        members = [self.principal(values)]
        if self.signed_request and values.get("arn"):
            pool = pool_of(self.provider)
            members.append(f"principalSet://iam.googleapis.com/{pool}/attribute.aws_role/{_aws_role(values['arn'])}")
        return members

    def report_hops(self) -> list[Hop]:
        """Hop 0 (the other cloud's identity, with the claims Google checks) and hop 1 (the federated principal)."""
        source = self.upstream.describe()
        live = self.live()
        expiry = self.token.expiry
        details: list[tuple[str, str]] = [
            ("provider", self.provider),
            ("subject token type", AWS4_REQUEST if self.signed_request else JWT_TOKEN),
        ]
        if self.signed_request:
            details.append(("attribute.aws_role", _aws_role(live.get("arn", ""))))
        else:
            details.extend(claim_details({k: live[k] for k in ("iss", "sub", "aud") if live.get(k)}))
        details.append(("google.subject (default mapping)", live.get("sub", "")))
        federated = Hop(
            index=1,
            principal=self.principal(live),
            method="Google STS token exchange (workload identity federation)",
            expiry=expiry.replace(tzinfo=dt.UTC) if expiry else None,
            endpoint=f"{self.sts_endpoint}/v1/token",
            details=tuple(details),
        )
        return [source, federated]

    # -- remediation ------------------------------------------------------------------------------------------

    def provider_command(self, live: Mapping[str, str] | None = None, *, verb: str = "create") -> str:
        values = live if live is not None else (self._live or {})
        return provider_command(self, values, verb=verb)

    def impersonation_command(self, target: str, live: Mapping[str, str] | None = None) -> str:
        member = self.members(live)[-1]
        return (
            f"gcloud iam service-accounts add-iam-policy-binding {target} --role={WORKLOAD_IDENTITY_USER} "
            f'--member="{member}"'
        )

    def impersonation_denied(self, error: AccessDenied, target: str, hops: int) -> AccessDenied:
        """The first impersonation refused: the federated principal lacks workloadIdentityUser on ``target``."""
        live = self._live or self._safe_live()
        principal = self.principal(live)
        return AccessDenied(
            hop=2,
            hops=hops + 1,
            caller=principal,
            target=target,
            permission=error.permission,
            remediation=(
                f"The Google Cloud side refused: the federated identity may not impersonate {target}. Grant it "
                f"{WORKLOAD_IDENTITY_USER} there (the principalSet covers every session of the AWS role), as an owner "
                f"of {target}:\n  {self.impersonation_command(target, live)}"
            ),
            cloud_code=error.cloud_code,
            cloud_message=error.cloud_message,
            endpoint=error.endpoint,
        )

    def _safe_live(self) -> dict[str, str]:
        try:
            return self.live()
        except WorkloadIdentityError:
            return {}

    def explain(self, error: Exception) -> WorkloadIdentityError:
        return explain_sts_error(error, self)

    def plan(self, project: str | None) -> Plan:
        """What each side must grant, from what the other cloud presents now (a live token or caller)."""
        from airflow_workload_identity.gcp.policy import EXAMPLE_ROLE, token_creator_command

        assert self.spec is not None
        live = self._safe_live()
        _, pool, _ = _parts(self.provider)
        cloud = "AWS" if self.kind == "aws" else "Azure"
        who = live.get("arn") or live.get("principal") or live.get("sub") or f"(the pod's {cloud} identity: unknown)"
        principal = self.principal(live)
        member = self.members(live)[-1]
        header = [
            f"Source identity on {cloud}: {who}.",
            f"Google federated principal (default attribute mapping): {principal}.",
        ]
        if not self.signed_request:
            header.append(
                f"Token presented: iss={live.get('iss', '?')} sub={live.get('sub', '?')} aud={live.get('aud', '?')}."
            )
        plan = Plan(cloud="gcp", source=who, header=header)
        if self.kind == "aws" and not self.signed_request:
            from airflow_workload_identity.federation.aws import put_role_policy_command

            statement = self.upstream.statement()
            role = self.upstream.source.principal or ""
            role_arn = re.sub(r"^arn:([\w-]+):sts::(\d{12}):assumed-role/([^/]+)/.*$", r"arn:\1:iam::\2:role/\3", role)
            plan.steps.append(
                Step(
                    hop=0,
                    title=f"AWS side: the pod's role may mint web identity tokens for {self.spec.subject_audience}",
                    kind="identity_statement",
                    target=role_arn or "<the pod's IAM role>",
                    content=statement,
                )
            )
            plan.steps.append(
                Step(
                    hop=0,
                    title="AWS side, once per account: outbound identity federation on (its issuer is the token's iss)",
                    kind="command",
                    target="AWS account",
                    content="aws iam enable-outbound-web-identity-federation\n"
                    + (put_role_policy_command(role_arn, statement, "outbound-web-identity") if role_arn else ""),
                )
            )
        elif self.kind == "azure":
            plan.steps.append(
                Step(
                    hop=0,
                    title="Azure side: the Entra app whose Application ID URI is the token's audience",
                    kind="note",
                    target=self.spec.subject_audience,
                    content=(
                        f"an Entra app registration with Application ID URI {self.spec.subject_audience} in the pod's "
                        "tenant (az ad app create --display-name gcp-federation --identifier-uris "
                        f"{self.spec.subject_audience}); the pod's identity requests a token for it"
                    ),
                )
            )
        plan.steps.append(
            Step(
                hop=1,
                title="Google side: the workload identity pool and the provider that trusts what the pod presents",
                kind="command",
                target=self.provider,
                content=(
                    f"gcloud iam workload-identity-pools create {pool} --location=global\n{self.provider_command(live)}"
                ),
            )
        )
        chain = self.spec.impersonation_chain
        if not chain:
            plan.steps.append(
                Step(
                    hop=None,
                    title=f"Grant the federated identity a role directly ({EXAMPLE_ROLE} is an example)",
                    kind="command",
                    target=member,
                    content=(
                        f'gcloud projects add-iam-policy-binding {project or "<project>"} --member="{member}" '
                        f"--role={EXAMPLE_ROLE}"
                    ),
                )
            )
            return plan
        plan.steps.append(
            Step(
                hop=2,
                title=f"Hop 2: the federated identity may impersonate {chain[0]}",
                kind="command",
                target=chain[0],
                content=self.impersonation_command(chain[0], live),
            )
        )
        for position, (caller, account) in enumerate(itertools.pairwise(chain), start=3):
            plan.steps.append(
                Step(
                    hop=position,
                    title=f"Hop {position}: {caller} -> {account}",
                    kind="command",
                    target=account,
                    content=token_creator_command(caller, account),
                )
            )
        return plan


def provider_command(source: FederatedSource, live: Mapping[str, str], *, verb: str = "create") -> str:
    """``gcloud iam workload-identity-pools providers create-aws|create-oidc`` (or ``update-*``) for what the
    other cloud presents now."""
    _, pool, provider = _parts(source.provider)
    head = (
        f"gcloud iam workload-identity-pools providers {verb}-{{kind}} {provider} --location=global "
        f"--workload-identity-pool={pool}"
    )
    if source.signed_request:
        account = live.get("account") or "<the AWS account id>"
        mapping = (
            "google.subject=assertion.arn,attribute.aws_role=\"assertion.arn.contains('assumed-role') ? "
            "assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + "
            "assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn\""
        )
        return head.format(kind="aws") + f" --account-id={account} --attribute-mapping={mapping}"
    issuer = live.get("iss") or "<the issuer>"
    audience = live.get("aud") or (source.spec.subject_audience if source.spec else "<audience>")
    return (
        head.format(kind="oidc")
        + f' --issuer-uri="{issuer}" --allowed-audiences="{audience}" --attribute-mapping=google.subject=assertion.sub'
    )


def _oauth_error(error: Exception) -> dict[str, str] | None:
    body = error.args[1] if len(error.args) > 1 else ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return {"error": data["error"], "description": str(data.get("error_description", ""))}
    return None


def explain_sts_error(error: Exception, source: FederatedSource) -> WorkloadIdentityError:
    """Google's STS refused the exchange (the Google Cloud side): what it saw and the provider to fix."""
    endpoint = f"{source.sts_endpoint}/v1/token"
    parsed = _oauth_error(error)
    if parsed is None or parsed["error"] in ("server_error", "temporarily_unavailable"):
        shown = parsed["description"] if parsed else f"{type(error).__name__}: {str(error)[:200]}"
        return TransientError("Google STS token exchange", 1, shown, endpoint=endpoint)
    code, description = parsed["error"], parsed["description"]
    live = source._safe_live()
    presented = (
        f"AWS caller {live.get('arn') or '(unknown)'} (account {live.get('account') or '?'})"
        if source.signed_request
        else f"a token with iss={live.get('iss', '?')!r} sub={live.get('sub', '?')!r} aud={live.get('aud', '?')!r}"
    )
    if code == "invalid_target":
        fix = (
            f"The provider {source.provider} does not exist or is disabled. Create it (and its pool) for what "
            f"the pod presents:\n  {source.provider_command(live)}"
        )
    elif code == "unauthorized_client":
        fix = (
            f"The provider's attribute condition rejects {presented}. Update the condition to admit it, e.g.:\n"
            f"  gcloud iam workload-identity-pools providers update-{'aws' if source.signed_request else 'oidc'} "
            f"{_parts(source.provider)[2]} --location=global --workload-identity-pool={_parts(source.provider)[1]} "
            f"--attribute-condition=\"google.subject == '{live.get('sub', '<subject>')}'\""
        )
    else:  # invalid_grant, invalid_request: the provider does not trust what was presented
        fix = (
            f"The provider does not accept {presented}. Make it trust exactly that (or fix the connection's "
            f"source_audience / the pod's identity):\n  {source.provider_command(live, verb='update')}"
        )
    return AccessDenied(
        hop=1,
        hops=1 + len(source.spec.impersonation_chain if source.spec else ()),
        caller=(live.get("arn") or live.get("principal") or live.get("sub")) or None,
        target=source.provider,
        permission="exchange its credential for a Google federated token",
        remediation=f"The Google Cloud side (workload identity pool provider) refused. {fix}",
        cloud_code=code,
        cloud_message=description,
        endpoint=endpoint,
    )


def _upstream(spec: GcpIdentitySpec, env: Mapping[str, str], registry: Registry) -> Any:
    field_names = {
        "region": "aws_region",
        "audience": "source_audience",
        "tenant_id": "azure_tenant_id",
        "client_id": "azure_client_id",
    }
    if spec.source == "aws":
        from airflow_workload_identity.federation.aws import aws_credentials_supplier, aws_web_identity_token_source

        if spec.aws_proof == "signed_request":
            return aws_credentials_supplier(
                spec.aws_region, cache=spec.credential_cache, env=env, registry=registry, field_names=field_names
            )
        return aws_web_identity_token_source(
            spec.subject_audience,
            region=spec.aws_region,
            cache=spec.credential_cache,
            env=env,
            registry=registry,
            field_names=field_names,
        )
    from airflow_workload_identity.federation.azure import entra_token_source

    return entra_token_source(
        spec.subject_audience,
        tenant_id=spec.azure_tenant_id,
        client_id=spec.azure_client_id,
        cache=spec.credential_cache,
        env=env,
        registry=registry,
        field_names=field_names,
    )


def federated_source(spec: GcpIdentitySpec, env: Mapping[str, str] | None, registry: Registry) -> FederatedSource:
    """The shared federated token for ``spec`` (source ``aws`` or ``azure``). No network call happens here;
    a malformed source-side setting is a ``ConfigError`` naming the connection field."""
    environ = os.environ if env is None else env
    upstream = _upstream(spec, environ, registry)
    sts = (spec.sts_endpoint_url or GOOGLE_STS).rstrip("/")
    # Direct access: the federated token carries the connection's scopes; impersonation: cloud-platform (IAM).
    scopes = list(spec.scopes) if spec.is_direct else [CLOUD_PLATFORM]
    identity: tuple[Hashable, ...] = (
        "gcp-federated",
        upstream.key(),
        spec.workload_identity_provider,
        spec.aws_proof if spec.source == "aws" else None,
        tuple(scopes),
        sts,
        spec.quota_project_id if spec.is_direct else None,
    )
    # The other cloud's ambient identity is the pod's (AWS IRSA / Pod Identity, AKS): the same for every process.
    cacheable = spec.source == "azure" or bool(getattr(getattr(upstream, "source", None), "host_cacheable", False))
    store, store_key = host_layer(identity, spec.credential_cache) if cacheable else (None, None)
    key = (*identity, store is not None)

    def build() -> FederatedSource:
        common: dict[str, Any] = {
            "audience": spec.provider_audience,
            "token_url": f"{sts}/v1/token",
            "scopes": scopes,
            "quota_project_id": spec.quota_project_id if spec.is_direct else None,
        }
        inner: google.auth.credentials.Credentials
        if spec.source == "aws" and spec.aws_proof == "signed_request":
            inner = google_aws.Credentials(
                subject_token_type=AWS4_REQUEST, aws_security_credentials_supplier=upstream, **common
            )
            described = f"AWS credentials ({upstream.source.description}) via {spec.workload_identity_provider}"
        else:
            inner = identity_pool.Credentials(
                subject_token_type=JWT_TOKEN,
                subject_token_supplier=_SubjectSupplier(lambda: upstream.get().token),
                **common,
            )
            what = "AWS web identity token" if spec.source == "aws" else "Entra token"
            described = f"{what} via {spec.workload_identity_provider}"
        holder: dict[str, FederatedSource] = {}
        token = SharedToken(
            inner,
            describe=f"Google federated token ({described})",
            explain=lambda error: holder["source"].explain(error),
            endpoint=f"{sts}/v1/token",
            store=store,
            store_key=store_key,
        )
        source = FederatedSource(
            kind=spec.source,
            token=token,
            key=key,
            description=f"workload identity federation from {spec.source.upper() if spec.source == 'aws' else 'Azure'}",
            spec=spec,
            upstream=upstream,
            sts_endpoint=sts,
            host_cacheable=cacheable,
        )
        holder["source"] = source
        return source

    return registry.get_or_create(key, build)
