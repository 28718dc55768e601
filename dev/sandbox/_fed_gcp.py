"""Google workload identity federation in the sandbox: pools, providers and the STS token exchange.

``POST /v1/token`` (``https://sts.googleapis.com/v1/token``, RFC 8693 form) as Google answers it:

* ``audience`` names a provider: ``//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/
  P/providers/X``; unknown or disabled → 400 ``invalid_target``;
* ``subject_token_type`` ``urn:ietf:params:aws:token-type:aws4_request`` (AWS providers): the subject token is
  the URL-encoded JSON of a SigV4-signed ``GetCallerIdentity`` request. Like Google, the fake checks its URL
  (``https://sts[.<region>].amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15``) and its
  ``x-goog-cloud-target-resource`` header, then REPLAYS it, headers and signature unchanged, against AWS (the
  AWS sandbox's moto over loopback: :meth:`Federation.trust_aws`), and maps the caller ARN it answered;
* ``urn:ietf:params:oauth:token-type:jwt`` / ``id_token`` (OIDC providers): the JWT is checked against the
  issuer's JWKS fetched over loopback (:meth:`Federation.add_oidc_provider` names it): signature, ``iss``
  (the provider's issuer), ``aud`` (the provider's allowed audiences, default
  ``https://iam.googleapis.com/<provider>``), ``exp``, ``sub``;
* the attribute mapping (``google.subject`` required, ``attribute.*``) and the attribute condition
  (a CEL subset: ``a == 'v'``, ``a.startsWith('v')``, joined with ``&&``) decide the federated principal
  ``principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/<subject>``,
  member of ``principalSet://.../P/attribute.<name>/<value>`` and ``principalSet://.../P/*``.

The access token it returns is accepted by the GCS front (bindings on any of those members) and by the IAM
Credentials fake (``roles/iam.workloadIdentityUser`` granted to one of them: :meth:`Federation.allow_impersonation`).
Errors are Google's OAuth shapes: ``{"error": "invalid_grant" | "invalid_target" | "unauthorized_client" |
"invalid_request", "error_description": ...}``.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt

__all__ = [
    "AWS_TOKEN_TYPE",
    "DEFAULT_AWS_MAPPING",
    "DEFAULT_OIDC_MAPPING",
    "JWT_TOKEN_TYPES",
    "Federation",
    "Provider",
    "StsHandler",
]

AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
JWT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
#: Google's default mapping for AWS providers (the role form of an assumed-role ARN as ``aws_role``).
AWS_ROLE_EXPRESSION = (
    "assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + "
    "'assumed-role/' + assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
)
DEFAULT_AWS_MAPPING = {"google.subject": "assertion.arn", "attribute.aws_role": AWS_ROLE_EXPRESSION}
DEFAULT_OIDC_MAPPING = {"google.subject": "assertion.sub"}
_PROVIDER = re.compile(
    r"^projects/(?P<number>\d+)/locations/global/workloadIdentityPools/(?P<pool>[a-z0-9-]{4,32})"
    r"/providers/(?P<provider>[a-z0-9-]{4,32})$"
)
_AWS_STS_HOST = re.compile(r"^sts(?:\.[a-z]{2,4}(?:-[a-z]{2,10}){1,3}-\d{1,2})?\.amazonaws\.com$")
_CONDITION_TERM = re.compile(
    r"^\s*(?P<attr>[A-Za-z_][\w.]*)\s*(?:==\s*'(?P<eq>[^']*)'|\.startsWith\('(?P<prefix>[^']*)'\))\s*$"
)
JWKS_CACHE_SECONDS = 300
MAX_SUBJECT_BYTES = 127


@dataclass
class Provider:
    """A workload identity pool provider; ``resource`` is
    ``projects/N/locations/global/workloadIdentityPools/P/providers/X``."""

    resource: str
    kind: str  # "aws" | "oidc"
    mapping: dict[str, str]
    condition: str | None = None
    aws_account_id: str | None = None
    issuer_uri: str | None = None
    jwks_uri: str | None = None
    allowed_audiences: tuple[str, ...] = ()
    disabled: bool = False
    cafile: str | None = None  # the CA of an https JWKS on loopback (the Azure sandbox's Entra)

    @property
    def pool(self) -> str:
        """``projects/N/locations/global/workloadIdentityPools/P``."""
        return self.resource.rsplit("/providers/", 1)[0]

    def audiences(self) -> tuple[str, ...]:
        return self.allowed_audiences or (f"https://iam.googleapis.com/{self.resource}",)


class _Refused(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _lookup(assertion: dict[str, Any], path: str) -> str:
    value: Any = assertion
    for part in path.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value)


def _aws_role(arn: str) -> str:
    match = re.match(r"^(?P<account_arn>arn:[\w-]+:sts::\d{12}:)assumed-role/(?P<role_name>[^/]+)/", arn)
    if match is None:
        return arn
    return f"{match['account_arn']}assumed-role/{match['role_name']}"


def evaluate(expression: str, assertion: dict[str, Any]) -> str:
    """One attribute-mapping expression: ``assertion.<path>`` or Google's default ``aws_role`` expression."""
    if expression == AWS_ROLE_EXPRESSION:
        return _aws_role(str(assertion.get("arn", "")))
    if re.fullmatch(r"assertion(?:\.[\w-]+)+", expression):
        return _lookup(assertion, expression)
    raise ValueError(f"the sandbox does not evaluate the mapping expression {expression!r}")


def condition_holds(condition: str, values: dict[str, str]) -> bool:
    """The CEL subset: ``attribute.x == 'v'``, ``assertion.x.startsWith('v')``, terms joined by ``&&``."""
    for term in condition.split("&&"):
        match = _CONDITION_TERM.match(term)
        if match is None:
            raise ValueError(f"the sandbox does not evaluate the condition term {term.strip()!r}")
        actual = values.get(match["attr"], "")
        if match["eq"] is not None and actual != match["eq"]:
            return False
        if match["prefix"] is not None and not actual.startswith(match["prefix"]):
            return False
    return True


@dataclass
class Federation:
    """The fake's pools, providers and trust (one per :class:`~dev.sandbox.gcp.GcpSandbox`)."""

    sandbox: Any
    providers: dict[str, Provider] = field(default_factory=dict)
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # principal:// -> its principalSet:// members
    calls: Counter[str] = field(default_factory=Counter)
    aws_sts_url: str | None = None
    endpoint: str = ""
    _jwks: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- configuration (what gcloud iam workload-identity-pools ... does)

    def _checked(self, resource: str) -> str:
        if not _PROVIDER.match(resource):
            raise ValueError(f"not a provider resource name: {resource!r}")
        return resource

    def add_aws_provider(
        self,
        resource: str,
        *,
        account_id: str,
        mapping: dict[str, str] | None = None,
        condition: str | None = None,
    ) -> Provider:
        """``gcloud iam workload-identity-pools providers create-aws`` (default AWS attribute mapping)."""
        provider = Provider(
            self._checked(resource), "aws", dict(mapping or DEFAULT_AWS_MAPPING), condition, aws_account_id=account_id
        )
        with self.lock:
            self.providers[resource] = provider
        return provider

    def add_oidc_provider(
        self,
        resource: str,
        *,
        issuer_uri: str,
        jwks_uri: str,
        allowed_audiences: tuple[str, ...] | list[str] = (),
        mapping: dict[str, str] | None = None,
        condition: str | None = None,
        cafile: str | None = None,
    ) -> Provider:
        """``create-oidc``; ``jwks_uri`` is where the issuer's keys are served on loopback (the real service
        reads ``<issuer>/.well-known/openid-configuration``; the sandbox issuers are not on DNS)."""
        provider = Provider(
            self._checked(resource),
            "oidc",
            dict(mapping or DEFAULT_OIDC_MAPPING),
            condition,
            issuer_uri=issuer_uri.rstrip("/") if not issuer_uri.endswith(".windows.net/") else issuer_uri,
            jwks_uri=jwks_uri,
            allowed_audiences=tuple(allowed_audiences),
            cafile=cafile,
        )
        with self.lock:
            self.providers[resource] = provider
        return provider

    def trust_aws(self, sts_url: str) -> None:
        """Where ``sts.<region>.amazonaws.com`` is (the AWS sandbox's moto endpoint): the signed requests in
        AWS subject tokens are replayed there."""
        self.aws_sts_url = sts_url.rstrip("/")

    def allow_impersonation(self, member: str, service_account: str) -> None:
        """``roles/iam.workloadIdentityUser`` for a ``principal://`` / ``principalSet://`` member on an SA."""
        self.sandbox.grant_token_creator(member, service_account)

    def reset(self) -> None:
        with self.lock:
            self.providers.clear()
            self.members.clear()
            self.calls.clear()
            self._jwks.clear()

    def member_sets(self, principal: str) -> tuple[str, ...]:
        """The ``principalSet://`` members a federated ``principal://`` belongs to (none for others)."""
        with self.lock:
            return self.members.get(principal, ())

    # --- the exchange

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.calls["token"] += 1
        try:
            return 200, self._exchange(form)
        except _Refused as refused:
            self.calls[f"refused:{refused.error}"] += 1
            return refused.status, {"error": refused.error, "error_description": refused.description}

    def _exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != EXCHANGE_GRANT:
            raise _Refused("unsupported_grant_type", f"Unsupported grant_type: {form.get('grant_type')}")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise _Refused("invalid_request", "Invalid requested_token_type.")
        audience = form.get("audience", "")
        resource = audience.removeprefix("https:").removeprefix("//iam.googleapis.com/")
        with self.lock:
            provider = self.providers.get(resource) if audience.startswith(("//", "https://")) else None
        if provider is None or provider.disabled:
            raise _Refused(
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This might either be '
                "because the pool or provider is disabled or deleted or because it doesn't exist.",
            )
        token_type = form.get("subject_token_type", "")
        subject_token = form.get("subject_token", "")
        if not subject_token:
            raise _Refused("invalid_request", "The subject_token is missing.")
        if token_type == AWS_TOKEN_TYPE:
            if provider.kind != "aws":
                raise _Refused("invalid_request", f"Invalid subject_token_type for an OIDC provider: {token_type}.")
            assertion, expires_in = self._aws_assertion(provider, audience, subject_token), 3600
        elif token_type in JWT_TOKEN_TYPES:
            if provider.kind != "oidc":
                raise _Refused("invalid_request", f"Invalid subject_token_type for an AWS provider: {token_type}.")
            assertion = self._oidc_assertion(provider, subject_token)
            expires_in = 3600
        else:
            raise _Refused("invalid_request", f"Invalid value for subject_token_type: {token_type}.")
        subject, attributes = self._map(provider, assertion)
        principal = f"principal://iam.googleapis.com/{provider.pool}/subject/{subject}"
        sets = tuple(f"principalSet://iam.googleapis.com/{provider.pool}/{k}/{v}" for k, v in attributes.items())
        sets += (f"principalSet://iam.googleapis.com/{provider.pool}/*",)
        scopes = frozenset((form.get("scope") or "https://www.googleapis.com/auth/cloud-platform").split())
        access_token, _ = self.sandbox._mint(principal, scopes, expires_in, "sts")
        with self.lock:
            self.members[principal] = sets
        return {
            "access_token": access_token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }

    def _map(self, provider: Provider, assertion: dict[str, Any]) -> tuple[str, dict[str, str]]:
        values: dict[str, str] = {}
        for target, expression in provider.mapping.items():
            values[target] = evaluate(expression, assertion)
        subject = values.get("google.subject", "")
        if not subject:
            raise _Refused("invalid_grant", "The mapped attribute google.subject must not be empty.")
        if len(subject.encode()) > MAX_SUBJECT_BYTES:
            raise _Refused(
                "invalid_grant",
                f"The size of mapped attribute google.subject exceeds the {MAX_SUBJECT_BYTES} bytes limit.",
            )
        if provider.condition:
            context = dict(values)
            for key, value in assertion.items():
                if isinstance(value, str):
                    context[f"assertion.{key}"] = value
            if not condition_holds(provider.condition, context):
                raise _Refused("unauthorized_client", "The given credential is rejected by the attribute condition.")
        attributes = {k: v for k, v in values.items() if k.startswith("attribute.") and v}
        return subject, attributes

    # --- AWS: replay the signed GetCallerIdentity

    def _aws_assertion(self, provider: Provider, audience: str, subject_token: str) -> dict[str, Any]:
        try:
            signed = json.loads(urllib.parse.unquote(subject_token))
            url = urllib.parse.urlsplit(str(signed["url"]))
            method = str(signed["method"])
            headers = {str(h["key"]): str(h["value"]) for h in signed["headers"]}
        except (ValueError, KeyError, TypeError):
            raise _Refused("invalid_grant", "The subject token is not a valid serialized AWS request.") from None
        query = urllib.parse.parse_qs(url.query)
        if (
            url.scheme != "https"
            or not _AWS_STS_HOST.match(url.hostname or "")
            or query.get("Action") != ["GetCallerIdentity"]
            or method != "POST"
        ):
            raise _Refused(
                "invalid_grant", "The AWS request in the subject token is not an STS GetCallerIdentity call."
            )
        lowered = {k.lower(): v for k, v in headers.items()}
        target = lowered.get("x-goog-cloud-target-resource", "")
        if target.removeprefix("https:") != audience.removeprefix("https:"):
            raise _Refused(
                "invalid_grant",
                "The x-goog-cloud-target-resource header in the AWS request does not match the audience.",
            )
        if self.aws_sts_url is None:
            raise _Refused("invalid_grant", "AWS is not reachable from this sandbox (trust_aws was not called).")
        replay = urllib.request.Request(
            f"{self.aws_sts_url}{url.path or '/'}?{url.query}", data=b"", method="POST", headers=headers
        )
        replay.add_header("Host", url.netloc)
        try:
            with urllib.request.urlopen(replay, timeout=10) as answer:  # loopback only
                body = answer.read()
        except urllib.error.HTTPError as error:
            code, message = _aws_error(error.read())
            raise _Refused(
                "invalid_grant", f"Received invalid AWS response of type {code} with error message: {message}"
            ) from None
        except OSError as error:
            raise _Refused("server_error", f"AWS could not be reached: {error}", status=503) from None
        ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
        root = ET.fromstring(body)
        arn = root.findtext(".//s:Arn", default="", namespaces=ns)
        account = root.findtext(".//s:Account", default="", namespaces=ns)
        userid = root.findtext(".//s:UserId", default="", namespaces=ns)
        if provider.aws_account_id and account != provider.aws_account_id:
            raise _Refused(
                "invalid_grant",
                f"The AWS account ID {account} of the caller does not match the account configured on the provider.",
            )
        return {"arn": arn, "account": account, "userid": userid}

    # --- OIDC

    def _keys(self, provider: Provider, refresh: bool = False) -> dict[str, Any]:
        uri = provider.jwks_uri or ""
        with self.lock:
            cached = self._jwks.get(uri)
        if cached is not None and not refresh and time.time() - cached[0] < JWKS_CACHE_SECONDS:
            return cached[1]
        try:
            context = ssl.create_default_context(cafile=provider.cafile) if provider.cafile else None
            with urllib.request.urlopen(uri, timeout=10, context=context) as answer:  # loopback only
                jwks = json.load(answer)
        except (OSError, ValueError) as error:
            raise _Refused("invalid_grant", f"Unable to fetch the JWKS of the issuer: {error}") from None
        with self.lock:
            self._jwks[uri] = (time.time(), jwks)
        return dict(jwks)

    def _oidc_assertion(self, provider: Provider, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Refused("invalid_grant", "Invalid JWT: the subject token is not a JWT.") from None
        issuer = str(unverified.get("iss", ""))
        if issuer != provider.issuer_uri and issuer.rstrip("/") != (provider.issuer_uri or "").rstrip("/"):
            raise _Refused(
                "invalid_grant",
                f"The issuer in ID Token {issuer} does not match the expected ones: {provider.issuer_uri}",
            )
        key = None
        for refresh in (False, True):  # a kid not in the cached set: fetch again (key rotation)
            keys = jwt.PyJWKSet.from_dict(self._keys(provider, refresh)).keys
            key = next((k for k in keys if k.key_id == header.get("kid")), None)
            if key is not None:
                break
        if key is None:
            raise _Refused("invalid_grant", "Invalid JWT signature: no key in the issuer's JWKS matches the kid.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "ES256", "ES384"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise _Refused("invalid_grant", "Invalid JWT signature.") from None
        now = time.time()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
            raise _Refused("invalid_grant", "ID Token expired.")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not set(map(str, audiences)) & set(provider.audiences()):
            raise _Refused(
                "invalid_grant",
                f"The audience in ID Token [{','.join(map(str, audiences))}] does not match the expected audience.",
            )
        if not claims.get("sub"):
            raise _Refused("invalid_grant", "The ID Token has no sub claim.")
        return dict(claims)


def _aws_error(body: bytes) -> tuple[str, str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "UnknownError", body[:200].decode("utf-8", "replace")
    code = next((e.text for e in root.iter() if e.tag.endswith("Code")), None) or "UnknownError"
    message = next((e.text for e in root.iter() if e.tag.endswith("Message")), None) or ""
    return code, message


class StsHandler(BaseHTTPRequestHandler):
    """``https://sts.googleapis.com``: ``POST /v1/token`` only."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "ESF"
    sys_version = ""
    sandbox: Any  # the GcpSandbox (its ``federation``)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if urllib.parse.urlsplit(self.path).path != "/v1/token":
            self._send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
            return
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                form = {str(k): str(v) for k, v in json.loads(raw or b"{}").items()}
            except (ValueError, AttributeError):
                self._send(400, {"error": "invalid_request", "error_description": "Invalid JSON payload received."})
                return
        else:
            form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
        status, body = self.sandbox.federation.exchange(form)
        self._send(status, body)
