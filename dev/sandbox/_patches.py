"""Faithfulness patches to moto, active only for requests that reach a sandbox server.

Installed once per process (idempotent). Every patched function first asks :func:`current_state`: the
sandbox's WSGI middleware sets it, in the request's own thread, for the duration of each request. With
no state (moto's decorators, another moto server in the same process) moto's own code runs unchanged.

What they change, for sandbox requests only:

* IAM enforcement is a per-sandbox switch (``/moto-api/reset-auth`` is intercepted by the middleware),
  not moto's process-wide ``settings.INITIAL_NO_AUTH_ACTION_COUNT``.
* ``AssumeRoleWithWebIdentity`` verifies the JWT (RS256 key of a registered issuer, ``iss`` = an IAM OIDC
  provider of the role's account, ``exp``/``nbf``, ``aud`` in the provider's client ids, the trust
  policy's ``Federated`` principal and its ``<issuer>:sub``/``:aud`` conditions) instead of moto's 500.
* ``AssumeRole`` evaluates identity policy and trust policy as AWS does: a role ARN principal covers its
  sessions, ``:root`` the account; conditions fail closed (a missing ``sts:ExternalId`` is refused);
  ``sts:TagSession`` / ``sts:SetSourceIdentity`` are required when tags / a source identity are sent;
  cross-account and non-existent roles are checked (moto skips both). The AccessDenied message names
  the resource.
* Input validation with AWS's wording (session name, duration, external id, source identity, tags),
  the 1-hour role-chaining cap and the role's MaxSessionDuration.
* Responses: real ``AssumedRoleId``/``SourceIdentity``/web-identity fields; optional forced lifetime.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast
from xml.sax.saxutils import escape

import jwt
from werkzeug.exceptions import HTTPException

from . import _fed_aws_trust, _policy

_STS_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
_ROLE_ARN = re.compile(r"^arn:(?P<partition>aws[\w-]*):iam::(?P<account>\d{12}):role/(?P<path_name>.+)$")

MSG_NO_VERIFICATION_KEY = (
    "Couldn't retrieve verification key from your identity provider,  please reference "
    "AssumeRoleWithWebIdentity documentation for requirements"
)
MSG_TOKEN_NOT_VALIDATED = (
    "The web identity token that was passed could not be validated by AWS. Get a new identity token "
    "from the identity provider and then retry the request."
)


def aws_error_xml(code: str, message: str, *, sender: bool = True, request_id: str | None = None) -> str:
    """The body AWS query services (STS, IAM) send with an error."""
    return (
        f'<ErrorResponse xmlns="{_STS_XMLNS}">\n'
        f"  <Error>\n    <Type>{'Sender' if sender else 'Receiver'}</Type>\n"
        f"    <Code>{escape(code)}</Code>\n    <Message>{escape(message)}</Message>\n  </Error>\n"
        f"  <RequestId>{request_id or uuid.uuid4()}</RequestId>\n</ErrorResponse>\n"
    )


class StsError(HTTPException):
    """An STS error as AWS sends it; raised from the patched auth step or response methods."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__()
        self.code = status
        self.error_code = error_code
        self.message = message
        self.description = aws_error_xml(error_code, message, sender=status < 500)

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", "text/xml")]


def access_denied(message: str) -> StsError:
    return StsError(403, "AccessDenied", message)


def validation_error(message: str) -> StsError:
    return StsError(400, "ValidationError", message)


def invalid_identity_token(message: str) -> StsError:
    return StsError(400, "InvalidIdentityToken", message)


@dataclass
class ServerState:
    """Per-sandbox switches the patches consult; one per running sandbox server."""

    name: str
    no_auth_limit: float = float("inf")
    no_auth_count: int = 0
    # issuer URL -> kid -> RSA public key: the keys STS trusts, per issuer (no JWKS fetch)
    issuer_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    # caller ARN -> service principal it stands for (the sandbox's EKS Pod Identity stand-in)
    service_principals: dict[str, str] = field(default_factory=dict)
    credential_ttl: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset_auth(self, limit: float) -> float:
        with self.lock:
            previous, self.no_auth_limit, self.no_auth_count = self.no_auth_limit, limit, 0
        return previous

    def enforcing(self) -> bool:
        """moto's semantics: the first ``no_auth_limit`` requests pass unchecked, the rest are checked."""
        with self.lock:
            if self.no_auth_count >= self.no_auth_limit:
                return True
            self.no_auth_count += 1
            return False

    @property
    def enforcement_on(self) -> bool:
        return self.no_auth_count >= self.no_auth_limit


_local = threading.local()


def current_state() -> ServerState | None:
    state: ServerState | None = getattr(_local, "state", None)
    return state


def set_current_state(state: ServerState | None) -> None:
    _local.state = state


# --- helpers over moto's models ---------------------------------------------------------------------


def _iam_backend(account: str, partition: str = "aws") -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account][partition]


def _sts_backend(account: str, partition: str = "aws") -> Any:
    from moto.sts.models import sts_backends

    return sts_backends[account][partition]


def _find_role(role_arn: str) -> Any | None:
    match = _ROLE_ARN.match(role_arn or "")
    if not match:
        return None
    from moto.iam.exceptions import NotFoundException

    try:
        return _iam_backend(match["account"], match["partition"]).get_role_by_arn(role_arn)
    except NotFoundException:
        return None


def _session_of(account: str, access_key_id: str) -> Any | None:
    for session in list(_sts_backend(account).assumed_roles):
        if session.access_key_id == access_key_id:
            return session
    return None


def _params(resp: Any, *names: str) -> dict[str, Any]:
    return {name: resp._get_param(name) for name in names}


def _apply_ttl(state: ServerState, session: Any) -> None:
    if state.credential_ttl is not None:
        from moto.core.utils import utcnow

        session.expiration = utcnow() + timedelta(seconds=state.credential_ttl)


# --- the auth step ------------------------------------------------------------------------------------

_ASSUME_PARAMS = (
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
    "Policy",
    "ExternalId",
    "SourceIdentity",
    "Tags",
    "TransitiveTagKeys",
)


def _sandbox_authenticate(resp: Any, state: ServerState, iam_request_cls: type, resource: str) -> None:
    """moto's auth step for a sandbox request: SigV4 check, then input validation, then authorization."""
    from moto.core.authorization import ActionAuthenticatorMixin

    service = getattr(resp, "service_name", None)
    action = resp._get_action()
    web_identity = service == "sts" and action == "AssumeRoleWithWebIdentity"
    enforced = state.enforcing()
    if enforced and resp.headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
        enforced = False
    iam_request = None
    if enforced and not web_identity:
        if "Authorization" not in resp.headers:
            if service == "s3":
                from moto.s3.exceptions import S3AccessDeniedError

                raise S3AccessDeniedError()
            raise StsError(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        # moto's own sequence (core/authorization.py): build the request, check the SigV4 signature
        from urllib.parse import urlparse

        path = resp.raw_path
        query = urlparse(resp.uri).query
        if query:
            path += "?" + query
        iam_request = iam_request_cls(
            account_id=resp.current_account,
            method=resp.method,
            path=path,
            # a signed POST whose parameters are all in the query (Google's replay of GetCallerIdentity) signs an
            # empty payload: moto would sign its parsed query string as the body instead (_fed_gcp.py); a
            # form-encoded POST (every SDK call) has its parameters in form_data and an empty raw_body
            data=resp.data if resp.raw_body or resp.form_data or resp.method != "POST" else b"",
            body=resp.raw_body,
            headers=resp.headers,
            action=action,
        )
        iam_request.check_signature()
    if service == "sts" and action in ("AssumeRole", "AssumeRoleWithWebIdentity"):
        message = _policy.validate_assume_params(action, _params(resp, *_ASSUME_PARAMS))
        if message:
            raise validation_error(message)
    if not enforced:
        return
    if web_identity:
        resp._awi_web_identity = _verify_web_identity(resp, state)
    elif service == "sts" and action == "GetWebIdentityToken":  # outbound federation (_fed_aws_outbound.py)
        from . import _fed_aws_outbound

        resp._awi_outbound = _fed_aws_outbound.authorize(resp, state, iam_request)
    elif service == "sts" and action == "AssumeRole":
        resp._awi_assume_role = _authorize_assume_role(resp, state, iam_request)
    else:  # everything else moto's way
        assert iam_request is not None
        iam_request.check_action_permitted(resource)


def _identity_allows(access_key: Any, action: str, resource: str) -> bool:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    permitted = False
    for policy in access_key.collect_policies():
        result = IAMPolicy(policy).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return False
        if result == PermissionResult.PERMITTED:
            permitted = True
    return permitted


def _authorize_assume_role(resp: Any, state: ServerState, iam_request: Any) -> dict[str, Any]:
    p = _params(resp, *_ASSUME_PARAMS)
    role_arn: str = p["RoleArn"]
    access_key = iam_request._access_key
    caller_arn: str = access_key.arn
    caller_account: str = access_key.account_id

    session = None
    caller_role_arn = None
    if ":assumed-role/" in caller_arn:
        session = _session_of(caller_account, access_key._access_key_id)
        caller_role_arn = session.role_arn if session is not None else None
        if caller_role_arn is not None:
            role = _find_role(caller_role_arn)
            caller_role_arn = role.arn if role is not None else caller_role_arn
    service = state.service_principals.get(caller_arn)
    if service is not None:
        who = _policy.Principal(service=service)
    else:
        who = _policy.Principal(arn=caller_arn, account=caller_account, role_arn=caller_role_arn)

    inherited = getattr(session, "_awi_source_identity", None) if session is not None else None
    source_identity = p["SourceIdentity"] or inherited
    tags = p["Tags"] or []
    context: dict[str, list[str]] = {
        "sts:RoleSessionName": [p["RoleSessionName"]],
        "aws:PrincipalAccount": [caller_account],
    }
    if service is None:
        context["aws:PrincipalArn"] = [caller_role_arn or caller_arn]
    if p["ExternalId"] is not None:
        context["sts:ExternalId"] = [p["ExternalId"]]
    if source_identity:
        context["sts:SourceIdentity"] = [source_identity]
    if tags:
        context["aws:TagKeys"] = [str(t.get("Key")) for t in tags]
        for tag in tags:
            context[f"aws:RequestTag/{tag.get('Key')}"] = [str(tag.get("Value", ""))]
    if p["TransitiveTagKeys"]:
        context["sts:TransitiveTagKeys"] = [str(k) for k in p["TransitiveTagKeys"]]

    required = ["sts:AssumeRole"]
    if tags or p["TransitiveTagKeys"]:
        required.append("sts:TagSession")
    if source_identity:
        required.append("sts:SetSourceIdentity")

    role = _find_role(role_arn)
    for action in required:
        allowed = (
            role is not None
            and _identity_allows(access_key, action, role_arn)
            and _policy.trust_allows(role.assume_role_policy_document, action, who, context)
        )
        if not allowed:
            raise access_denied(f"User: {caller_arn} is not authorized to perform: {action} on resource: {role_arn}")

    assert role is not None
    duration = p["DurationSeconds"]
    if duration is not None:
        if session is not None and int(duration) > _policy.CHAINED_SESSION_LIMIT:
            raise validation_error(_policy.CHAINING_MESSAGE)
        if int(duration) > int(role.max_session_duration or 3600):
            raise validation_error(_policy.MAX_SESSION_MESSAGE)
    return {"source_identity": source_identity, "chained": session is not None}


def _verify_web_identity(resp: Any, state: ServerState) -> dict[str, Any]:
    p = _params(resp, "RoleArn", "WebIdentityToken", "DurationSeconds", "RoleSessionName")
    role_arn: str = p["RoleArn"]
    token: str = p["WebIdentityToken"] or ""
    match = _ROLE_ARN.match(role_arn or "")
    denied = access_denied("Not authorized to perform sts:AssumeRoleWithWebIdentity")
    if not match:
        raise denied
    account, partition = match["account"], match["partition"]
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise invalid_identity_token(MSG_TOKEN_NOT_VALIDATED) from exc
    issuer = str(unverified.get("iss", ""))
    # Google is built in (Federated "accounts.google.com"); other issuers need an IAM OIDC provider, whose URL
    # (the issuer without https://, Entra's v1 trailing slash kept) prefixes the condition keys (_fed_aws_trust.py)
    builtin = _fed_aws_trust.builtin_provider(issuer)
    provider = (
        None if builtin else _fed_aws_trust.find_provider(_iam_backend(account, partition), partition, account, issuer)
    )
    if (provider is None and builtin is None) or not issuer.startswith("https://"):
        raise invalid_identity_token(f"No OpenIDConnect provider found in your account for {issuer}")
    provider_id = builtin or str(provider.url)
    provider_arn = builtin or str(provider.arn)
    kid = str(header.get("kid"))
    key = state.issuer_keys.get(issuer.rstrip("/"), {}).get(kid) or _fed_aws_trust.jwks_key(state, issuer, kid)
    if key is None or header.get("alg") != "RS256":
        raise invalid_identity_token(MSG_NO_VERIFICATION_KEY)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise invalid_identity_token(MSG_TOKEN_NOT_VALIDATED) from exc
    now = time.time()
    if "exp" not in claims or float(claims["exp"]) <= now:
        raise StsError(400, "ExpiredTokenException", "Token is expired")
    if "nbf" in claims and float(claims["nbf"]) > now + 300:
        raise invalid_identity_token(MSG_TOKEN_NOT_VALIDATED)
    audiences = [str(a) for a in _policy._as_list(claims.get("aud"))]
    if provider is not None and not set(audiences) & set(provider.client_id_list or []):
        raise invalid_identity_token("Incorrect token audience")
    role = _find_role(role_arn)
    if role is None:
        raise denied
    subject = str(claims.get("sub", ""))
    audience_key = str(claims["azp"]) if "azp" in claims else None
    context = {
        f"{provider_id}:sub": [subject],
        f"{provider_id}:aud": [audience_key] if audience_key else audiences,
        f"{provider_id}:oaud": audiences,
        "sts:RoleSessionName": [p["RoleSessionName"]],
    }
    who = _policy.Principal(federated=provider_arn)
    if not _policy.trust_allows(role.assume_role_policy_document, "sts:AssumeRoleWithWebIdentity", who, context):
        raise denied
    duration = p["DurationSeconds"]
    if duration is not None and int(duration) > int(role.max_session_duration or 3600):
        raise validation_error(_policy.MAX_SESSION_MESSAGE)
    return {"subject": subject, "audience": audiences[0], "provider": issuer}


# --- installation ---------------------------------------------------------------------------------------

_install_lock = threading.Lock()
_MARK = "_awi_sandbox_patch"


def install() -> None:
    """Install the patches into moto (once per process; later calls are no-ops)."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.sts.responses import TokenResponse

    with _install_lock:
        if getattr(ActionAuthenticatorMixin._authenticate_and_authorize_action, _MARK, False):
            return

        original_auth = ActionAuthenticatorMixin._authenticate_and_authorize_action

        def _authenticate_and_authorize_action(self: Any, iam_request_cls: type, resource: str = "*") -> None:
            state = current_state()
            if state is None:
                return original_auth(self, iam_request_cls, resource)
            return _sandbox_authenticate(self, state, iam_request_cls, resource)

        original_assume_role = TokenResponse.assume_role

        def assume_role(self: Any) -> Any:
            state = current_state()
            result = original_assume_role(self)
            if state is None:
                return result
            body = cast(dict[str, Any], result.result)
            session = body["Credentials"]
            info = getattr(self, "_awi_assume_role", None) or {}
            source_identity = info.get("source_identity") or self._get_param("SourceIdentity")
            if source_identity:
                session._awi_source_identity = source_identity
                body["SourceIdentity"] = source_identity
            _apply_ttl(state, session)
            return result

        original_web_identity = TokenResponse.assume_role_with_web_identity

        def assume_role_with_web_identity(self: Any) -> Any:
            state = current_state()
            result = original_web_identity(self)
            if state is None:
                return result
            body = cast(dict[str, Any], result.result)
            session = body["Credentials"]
            body["AssumedRoleUser"]["AssumedRoleId"] = session.user_id
            info = getattr(self, "_awi_web_identity", None)
            if info:
                body["SubjectFromWebIdentityToken"] = info["subject"]
                body["Audience"] = info["audience"]
                body["Provider"] = info["provider"]
            _apply_ttl(state, session)
            return result

        for fn in (_authenticate_and_authorize_action, assume_role, assume_role_with_web_identity):
            setattr(fn, _MARK, True)
        ActionAuthenticatorMixin._authenticate_and_authorize_action = _authenticate_and_authorize_action  # type: ignore[method-assign]
        TokenResponse.assume_role = assume_role  # type: ignore[method-assign]
        TokenResponse.assume_role_with_web_identity = assume_role_with_web_identity  # type: ignore[method-assign]
