"""AWS as the SOURCE of a cross-cloud federation: the pod's AWS identity, presented to another cloud.

Two forms, both fed from this package's shared ambient AWS credentials (IRSA web identity, EKS Pod
Identity or botocore's default chain: :func:`~airflow_workload_identity.aws.sources.resolve_source`, the same
shared, single-flight, host-cached credentials the AWS connections use; never the EC2 metadata server):

- :func:`aws_web_identity_token_source`: a JWT from STS ``GetWebIdentityToken`` (AWS outbound identity
  federation), signed by the account's outbound issuer ``https://<uuid>.tokens.sts.global.api.aws``, ``sub``
  the caller's role ARN, ``aud`` the audience asked for. Served by regional STS endpoints only. The caller
  needs ``sts:GetWebIdentityToken`` (conditions ``sts:IdentityTokenAudience``, ``sts:DurationSeconds``):
  :func:`web_identity_token_statement`. A verifier (Entra, Google's STS) trusts the issuer.
- :func:`aws_credentials_supplier`: a ``google.auth.aws.AwsSecurityCredentialsSupplier`` for google-auth's
  AWS external-account credentials (Google's STS verifies a signed ``GetCallerIdentity`` request).

No Airflow imports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from collections.abc import Hashable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from google.auth import aws as google_aws

from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.sources import Source, resolve_source
from airflow_workload_identity.aws.spec import AwsIdentitySpec
from airflow_workload_identity.aws.sts import (
    STS_ATTEMPT_SECONDS,
    STS_MAX_ATTEMPTS,
    StsEndpoint,
    sdk_transient,
    sts_client,
    with_http_details,
)
from airflow_workload_identity.cache import MODES, host_layer
from airflow_workload_identity.core import Minted, RefreshingToken
from airflow_workload_identity.errors import AccessDenied, ConfigError, RejectedValue, WorkloadIdentityError
from airflow_workload_identity.federation import CODEC, SubjectToken, source_hop, subject_token
from airflow_workload_identity.registry import REGISTRY, Registry
from airflow_workload_identity.report import Hop
from airflow_workload_identity.tokens import unverified_claims

__all__ = [
    "AWS_SOURCES",
    "AwsWebIdentityTokenSource",
    "SharedAwsCredentialsSupplier",
    "aws_credentials_supplier",
    "aws_web_identity_token_source",
    "put_role_policy_command",
    "web_identity_token_statement",
]

#: The pod's own AWS identity: what ``aws_workload_identity``'s ``source`` field means.
AWS_SOURCES = ("auto", "web_identity", "pod_identity", "default_chain")
SIGNING_ALGORITHMS = ("RS256", "ES384")
MIN_DURATION, MAX_DURATION, DEFAULT_DURATION = 60, 3600, 300
_AUDIENCE = re.compile(r"^[!-~]{1,1000}$")
_REGION = re.compile(r"^[a-z]{2,4}(?:-[a-z]{2,10}){1,3}-\d{1,2}$")
OPERATION = "sts:GetWebIdentityToken"


def _named(field_names: Mapping[str, str] | None, name: str) -> str:
    return (field_names or {}).get(name, name)


def _validate(
    *,
    region: str | None,
    source: object,
    sts_endpoint_url: str | None,
    cache: object,
    field_names: Mapping[str, str] | None,
) -> None:
    if region is not None and (not isinstance(region, str) or not _REGION.match(region)):
        raise ConfigError(
            _named(field_names, "region"),
            "is not an AWS region name",
            "use the pod's region, e.g. eu-west-1 (STS answers these calls on regional endpoints only)",
        )
    if source not in AWS_SOURCES:
        raise ConfigError(
            _named(field_names, "source"),
            f"{source!r} is not one of {', '.join(AWS_SOURCES)}",
            "use auto, web_identity (IRSA), pod_identity (EKS Pod Identity) or default_chain",
        )
    if cache is not None and cache not in MODES:
        raise ConfigError(
            _named(field_names, "credential_cache"),
            f"{cache!r} is not one of {', '.join(MODES)}",
            "use host, process or off",
        )
    if sts_endpoint_url is not None and not isinstance(sts_endpoint_url, str):
        raise ConfigError(_named(field_names, "sts_endpoint_url"), "is not a URL", "write an https:// URL")


def _resolve(
    *,
    region: str | None,
    source: str,
    sts_endpoint_url: str | None,
    cache: str | None,
    env: Mapping[str, str] | None,
    registry: Registry,
    context: RunContext | None,
    field_names: Mapping[str, str] | None,
) -> tuple[Source, StsEndpoint, str]:
    """The shared ambient AWS identity and the regional STS endpoint it is used with."""
    _validate(region=region, source=source, sts_endpoint_url=sts_endpoint_url, cache=cache, field_names=field_names)
    environ = os.environ if env is None else env
    spec = AwsIdentitySpec(
        source=source,  # type: ignore[arg-type]
        region_name=region,
        sts_endpoint_url=sts_endpoint_url.rstrip("/") if sts_endpoint_url else None,
        credential_cache=cache,
    )
    endpoint = StsEndpoint.resolve(spec, environ)
    if endpoint.region is None:
        raise ConfigError(
            _named(field_names, "region"),
            "is not set and neither is AWS_REGION / AWS_DEFAULT_REGION; the call is signed for a region and STS "
            "serves it on regional endpoints only",
            "set the pod's AWS region, e.g. eu-west-1",
        )
    run = context or RunContext(conn_id="", hostname=socket.gethostname().split(".")[0])
    return resolve_source(spec, environ, endpoint, run, registry), endpoint, endpoint.region


# -- GetWebIdentityToken --------------------------------------------------------------------------------------


def web_identity_token_statement(
    audience: str, duration_seconds: int, signing_algorithm: str = "RS256"
) -> dict[str, Any]:
    """The IAM identity-policy statement that lets a role mint this token (audience and lifetime pinned)."""
    return {
        "Effect": "Allow",
        "Action": OPERATION,
        "Resource": "*",
        "Condition": {
            "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": [audience]},
            "NumericLessThanEquals": {"sts:DurationSeconds": str(duration_seconds)},
            "StringEquals": {"sts:SigningAlgorithm": signing_algorithm},
        },
    }


def put_role_policy_command(role_arn: str, statement: Mapping[str, Any], policy_name: str) -> str:
    """``aws iam put-role-policy`` adding ``statement`` to the role (the role name from its ARN)."""
    role_name = role_arn.rsplit("/", 1)[-1]
    document = json.dumps({"Version": "2012-10-17", "Statement": [statement]}, separators=(",", ":"))
    return f"aws iam put-role-policy --role-name {role_name} --policy-name {policy_name} --policy-document '{document}'"


def _role_of(arn: str) -> str:
    """``arn:aws:sts::A:assumed-role/R/S`` → ``arn:aws:iam::A:role/R`` (other ARNs unchanged)."""
    match = re.match(r"^arn:(?P<p>[\w-]+):sts::(?P<a>\d{12}):assumed-role/(?P<r>[^/]+)/", arn)
    return f"arn:{match['p']}:iam::{match['a']}:role/{match['r']}" if match else arn


class AwsWebIdentityTokenSource:
    """JWTs from STS ``GetWebIdentityToken`` for one audience: a
    :class:`~airflow_workload_identity.federation.SubjectTokenSource`. Obtain it with
    :func:`aws_web_identity_token_source` (shared per key in the process); no call until :meth:`get`."""

    source_cloud = "aws"

    def __init__(
        self,
        source: Source,
        endpoint: StsEndpoint,
        *,
        audience: str,
        duration_seconds: int,
        signing_algorithm: str,
        key: tuple[Hashable, ...],
        cache: str | None,
    ) -> None:
        self.source = source
        self.endpoint = endpoint
        self.audience = audience
        self.duration_seconds = duration_seconds
        self.signing_algorithm = signing_algorithm
        self._key = key
        store, store_key = host_layer(key, cache) if source.host_cacheable else (None, None)
        self.core: RefreshingToken[SubjectToken] = RefreshingToken(
            self._mint,
            describe=f"AWS web identity token for {audience} ({source.description})",
            codec=CODEC,
            store=store,
            store_key=store_key,
            max_attempts=STS_MAX_ATTEMPTS,
            attempt_timeout=STS_ATTEMPT_SECONDS,
        )

    def key(self) -> tuple[Hashable, ...]:
        """The ambient AWS identity, the STS endpoint, the audience, the lifetime and the algorithm."""
        return self._key

    def add_listener(self, listener: Any) -> None:
        """Call ``listener`` with every new token (``redaction.watch``)."""
        self.core.add_listener(lambda value: listener(value.token))

    def statement(self) -> dict[str, Any]:
        return web_identity_token_statement(self.audience, self.duration_seconds, self.signing_algorithm)

    def _denied(self, error: ClientError) -> WorkloadIdentityError:
        err = error.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", ""))
        caller = self.source.principal or self.source.caller_arn() or "the pod's AWS identity"
        if code == "ValidationError":
            return RejectedValue(
                "duration_seconds" if "duration" in message.lower() else "audience",
                f"STS refused the request ({message})",
                f"use an audience of 1-1000 printable characters and a lifetime of {MIN_DURATION}-{MAX_DURATION} s",
                cloud_code=code,
            )
        role = _role_of(caller)
        statement = self.statement()
        remediation = (
            "The AWS side refused: the pod's role may not mint web identity tokens for this audience. Add this "
            "statement to its identity policy (and enable outbound identity federation for the account once: "
            "aws iam enable-outbound-web-identity-federation):\n"
            f"{json.dumps(statement, indent=2)}\n"
            f"{put_role_policy_command(role, statement, 'outbound-web-identity')}"
        )
        return AccessDenied(
            hop=0,
            hops=0,
            caller=caller,
            target=f"a web identity token for {self.audience}",
            permission=OPERATION,
            remediation=remediation,
            cloud_code=code,
            cloud_message=message,
            endpoint=self.endpoint.describe(),
        )

    def _mint(self) -> Minted[SubjectToken]:
        client = sts_client(self.source.credentials, self.endpoint)
        try:
            response = client.get_web_identity_token(
                Audience=[self.audience],
                DurationSeconds=self.duration_seconds,
                SigningAlgorithm=self.signing_algorithm,
            )
        except ClientError as error:  # a 429/5xx is transient whatever its code (with_http_details)
            raise with_http_details(self._denied(error), error, self.endpoint.describe()) from error
        except (BotoCoreError, ResponseParserError) as error:
            raise sdk_transient(OPERATION, error, self.endpoint.describe()) from error
        token = str(response["WebIdentityToken"])
        expiration = response.get("Expiration")
        expires_at = expiration.timestamp() if isinstance(expiration, dt.datetime) else None
        subject = str(unverified_claims(token).get("sub") or "")
        principal = subject or _role_of(self.source.principal or "") or "(unknown AWS principal)"
        value = subject_token(token, source_cloud="aws", principal=principal, expires_at=expires_at, owner=self)
        return Minted(value, value.expires_at)

    def get(self) -> SubjectToken:
        """A current token (the shared one while fresh; one ``GetWebIdentityToken`` in flight otherwise)."""
        return self.core.get()

    async def aget(self) -> SubjectToken:
        """:meth:`get` for the event loop: no thread while fresh; a refresh runs off the loop."""
        return await self.core.aget()

    def describe(self) -> Hop:
        """The source hop for ``whoami``: the role and the claims a target checks (from a live token)."""
        token = self.get()
        hop = source_hop(token, method=f"{OPERATION} ({self.source.description})", endpoint=self.endpoint.describe())
        caller = self.source.principal
        details = hop.details + ((("AWS session", caller),) if caller else ())
        return Hop(
            index=hop.index,
            principal=hop.principal,
            method=hop.method,
            expiry=hop.expiry,
            endpoint=hop.endpoint,
            details=(*details, ("token lifetime", f"{self.duration_seconds}s"), ("signing", self.signing_algorithm)),
        )

    def __repr__(self) -> str:  # never the token
        return f"<AwsWebIdentityTokenSource {self.source.description} audience={self.audience!r}>"


def aws_web_identity_token_source(
    audience: str,
    *,
    region: str | None = None,
    duration_seconds: int = DEFAULT_DURATION,
    signing_algorithm: str = "RS256",
    source: str = "auto",
    sts_endpoint_url: str | None = None,
    cache: str | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    context: RunContext | None = None,
    field_names: Mapping[str, str] | None = None,
) -> AwsWebIdentityTokenSource:
    """The shared source of STS ``GetWebIdentityToken`` JWTs for ``audience``. No network call happens here.

    :param audience: the ``aud`` the target trusts (``api://AzureADTokenExchange`` for Entra, the pool
        provider's allowed audience for Google).
    :param region: the regional STS endpoint to call (default ``AWS_REGION`` / ``AWS_DEFAULT_REGION``);
        ``sts_endpoint_url`` overrides the URL (``AWS_ENDPOINT_URL_STS`` too).
    :param duration_seconds: the token's lifetime, 60-3600 (default 300); refreshed ahead of expiry.
    :param signing_algorithm: ``RS256`` or ``ES384``.
    :param source: the pod's AWS identity: ``auto``, ``web_identity`` (IRSA), ``pod_identity``, ``default_chain``.
    :param cache: the connection's ``credential_cache`` (``host``/``process``/``off``; None: the deployment's).
    :param field_names: the caller's connection field per keyword, so a ``ConfigError`` names what the user typed.
    :raises ConfigError: a malformed value, before any network call.
    """
    if not isinstance(audience, str) or not _AUDIENCE.match(audience):
        raise ConfigError(
            _named(field_names, "audience"),
            "must be 1-1000 printable ASCII characters without spaces",
            "use the audience the target trusts, e.g. api://AzureADTokenExchange",
        )
    if (
        not isinstance(duration_seconds, int)
        or isinstance(duration_seconds, bool)
        or not MIN_DURATION <= duration_seconds <= MAX_DURATION
    ):
        raise ConfigError(
            _named(field_names, "duration_seconds"),
            f"must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}",
            f"use e.g. {DEFAULT_DURATION} (the token is refreshed ahead of expiry)",
        )
    if signing_algorithm not in SIGNING_ALGORITHMS:
        raise ConfigError(
            _named(field_names, "signing_algorithm"),
            f"{signing_algorithm!r} is not one of {', '.join(SIGNING_ALGORITHMS)}",
            "use RS256 (every verifier supports it) or ES384",
        )
    aws_source, endpoint, _region = _resolve(
        region=region,
        source=source,
        sts_endpoint_url=sts_endpoint_url,
        cache=cache,
        env=env,
        registry=registry,
        context=context,
        field_names=field_names,
    )
    key: tuple[Hashable, ...] = (
        "fed-aws-web-identity-token",
        aws_source.key,
        endpoint,
        audience,
        duration_seconds,
        signing_algorithm,
    )
    return registry.get_or_create(
        key,
        lambda: AwsWebIdentityTokenSource(
            aws_source,
            endpoint,
            audience=audience,
            duration_seconds=duration_seconds,
            signing_algorithm=signing_algorithm,
            key=key,
            cache=cache,
        ),
    )


# -- google-auth's AWS supplier ----------------------------------------------------------------------------


class SharedAwsCredentialsSupplier(google_aws.AwsSecurityCredentialsSupplier):
    """google-auth's AWS credentials supplier over the package's shared AWS credentials: each call hands out
    the current (refreshed ahead of expiry, single flight) keys; never the EC2 metadata server."""

    def __init__(self, source: Source, region: str, key: tuple[Hashable, ...]) -> None:
        self.source = source
        self.region = region
        self._key = key

    def key(self) -> tuple[Hashable, ...]:
        return self._key

    def get_aws_security_credentials(self, context: Any, request: Any) -> google_aws.AwsSecurityCredentials:
        frozen = self.source.credentials.get_frozen_credentials()
        return google_aws.AwsSecurityCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def get_aws_region(self, context: Any, request: Any) -> str:
        return self.region

    def principal(self) -> str | None:
        """The caller ARN (``GetCallerIdentity`` if the source does not know it yet)."""
        return self.source.caller_arn()

    def expires_at(self) -> float | None:
        """When the current AWS credentials expire (epoch seconds), if they do."""
        expiry = getattr(self.source.credentials, "_expiry_time", None)
        return expiry.timestamp() if isinstance(expiry, dt.datetime) else None

    def describe(self) -> Hop:
        """The source hop for ``whoami``: the AWS caller and its credentials' expiry."""
        self.source.credentials.get_frozen_credentials()
        expiry = self.expires_at()
        return Hop(
            index=0,
            principal=self.principal() or "(unknown: GetCallerIdentity failed)",
            method=f"AWS credentials ({self.source.description}), a signed sts:GetCallerIdentity request",
            expiry=dt.datetime.fromtimestamp(expiry, dt.UTC) if expiry else None,
            endpoint=f"https://sts.{self.region}.amazonaws.com",
            details=(("source cloud", "aws"), ("region", self.region)),
        )

    def __repr__(self) -> str:  # never the keys
        return f"<SharedAwsCredentialsSupplier {self.source.description} region={self.region}>"


def aws_credentials_supplier(
    region: str | None = None,
    *,
    source: str = "auto",
    sts_endpoint_url: str | None = None,
    cache: str | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    context: RunContext | None = None,
    field_names: Mapping[str, str] | None = None,
) -> SharedAwsCredentialsSupplier:
    """The shared supplier of the pod's AWS credentials for google-auth's ``aws.Credentials``
    (``aws_security_credentials_supplier=``). ``region`` (default ``AWS_REGION``) is the region the
    ``GetCallerIdentity`` request is signed for. No network call happens here."""
    aws_source, _endpoint, region_name = _resolve(
        region=region,
        source=source,
        sts_endpoint_url=sts_endpoint_url,
        cache=cache,
        env=env,
        registry=registry,
        context=context,
        field_names=field_names,
    )
    key: tuple[Hashable, ...] = ("fed-aws-supplier", aws_source.key, region_name)
    return registry.get_or_create(key, lambda: SharedAwsCredentialsSupplier(aws_source, region_name, key))
