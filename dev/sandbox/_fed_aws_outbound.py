"""AWS outbound identity federation in the sandbox: STS ``GetWebIdentityToken`` (moto lacks it).

What real STS does (IAM outbound web identity federation), reproduced for sandbox requests only:

* a signed call (SigV4, any IAM role session or user) asks for a JWT: ``Audience.member.N`` (1-10),
  ``DurationSeconds`` (60-3600, default 300), ``SigningAlgorithm`` (``RS256`` or ``ES384``), ``Tags``;
* the caller's identity policy must allow ``sts:GetWebIdentityToken``, evaluated with the condition keys
  ``sts:IdentityTokenAudience`` (multi-valued), ``sts:DurationSeconds`` and ``sts:SigningAlgorithm``
  (numeric operators included); otherwise ``AccessDenied`` in AWS's wording;
* the JWT is signed by the account's outbound issuer ``https://<uuid>.tokens.sts.global.api.aws``:
  ``sub`` is the caller's role ARN (a session's role, never the session), ``aud`` the audiences,
  ``https://sts.amazonaws.com/`` the AWS context (account, source region, principal id);
* the issuer's JWKS and OIDC discovery document are served on the sandbox's loopback port under
  :data:`PATH_PREFIX` (``/_awi/outbound/<account>/.well-known/...``), the way a verifier (the Google STS
  or Entra fakes) fetches them: :func:`jwks_url`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import _patches, _policy

__all__ = [
    "ACTION",
    "PATH_PREFIX",
    "Outbound",
    "allow_web_identity_token",
    "authorize",
    "install",
    "issuer_url",
    "jwks_url",
    "outbound_of",
    "serve",
]

ACTION = "GetWebIdentityToken"
PATH_PREFIX = "/_awi/outbound/"
DEFAULT_DURATION = 300
MIN_DURATION, MAX_DURATION = 60, 3600
ALGORITHMS = ("RS256", "ES384")
AWS_CONTEXT_CLAIM = "https://sts.amazonaws.com/"


@dataclass
class _Issuer:
    account: str
    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    rsa_kid: str
    ec_kid: str

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid=self.rsa_kid, alg="RS256", use="sig")
        ec_jwk.update(kid=self.ec_kid, alg="ES384", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}


@dataclass
class Outbound:
    """One sandbox's outbound issuers (one per account) and what they issued."""

    issuers: dict[str, _Issuer] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def issuer(self, account: str) -> _Issuer:
        with self.lock:
            found = self.issuers.get(account)
            if found is None:
                found = _Issuer(
                    account=account,
                    url=f"https://{uuid.uuid4()}.tokens.sts.global.api.aws",
                    rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    ec_key=ec.generate_private_key(ec.SECP384R1()),
                    rsa_kid=f"rsa-{uuid.uuid4().hex[:16]}",
                    ec_kid=f"ec-{uuid.uuid4().hex[:16]}",
                )
                self.issuers[account] = found
            return found

    def mint(
        self, *, account: str, subject: str, audiences: list[str], duration: int, algorithm: str, region: str
    ) -> tuple[str, float]:
        issuer = self.issuer(account)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer.url,
            "sub": subject,
            "aud": audiences[0] if len(audiences) == 1 else audiences,
            "iat": now,
            "nbf": now,
            "exp": now + duration,
            "jti": str(uuid.uuid4()),
            AWS_CONTEXT_CLAIM: {"aws_account": account, "source_region": region, "principal_id": subject},
        }
        if algorithm == "ES384":
            token = jwt.encode(claims, issuer.ec_key, algorithm="ES384", headers={"kid": issuer.ec_kid})
        else:
            token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": issuer.rsa_kid})
        with self.lock:
            self.issued.append(token)
        return token, float(now + duration)


_BY_STATE: dict[str, Outbound] = {}
_by_state_lock = threading.Lock()


def _outbound_for_state(state: _patches.ServerState) -> Outbound:
    with _by_state_lock:
        return _BY_STATE.setdefault(state.name, Outbound())


def outbound_of(sandbox: Any) -> Outbound:
    """The outbound issuers of an :class:`~dev.sandbox.aws.AwsSandbox`."""
    return _outbound_for_state(sandbox._state)


def issuer_url(sandbox: Any, account: str | None = None) -> str:
    """The account's outbound issuer URL (``https://<uuid>.tokens.sts.global.api.aws``)."""
    return outbound_of(sandbox).issuer(account or sandbox.scenario.platform_account).url


def jwks_url(sandbox: Any, account: str | None = None) -> str:
    """Where the account's issuer keys are served on loopback (what a verifier fetches)."""
    return f"{sandbox.endpoint_url}{PATH_PREFIX}{account or sandbox.scenario.platform_account}/.well-known/jwks.json"


def allow_web_identity_token(
    sandbox: Any,
    role_name: str | None = None,
    *,
    audiences: list[str] | None = None,
    max_duration: int | None = None,
    account: str | None = None,
    policy_name: str = "outbound-web-identity",
) -> dict[str, Any]:
    """Give a role (default the pod's base role) an identity policy allowing ``sts:GetWebIdentityToken``
    for ``audiences`` (any, if ``None``) up to ``max_duration``; returns the statement. ``audiences=[]``
    removes the policy."""
    iam = sandbox.admin_client("iam", account or sandbox.scenario.platform_account)
    role = role_name or sandbox.scenario.pod_base_role_name
    if audiences == []:
        if policy_name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role, PolicyName=policy_name)
        return {}
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:GetWebIdentityToken", "Resource": "*"}
    condition: dict[str, Any] = {}
    if audiences is not None:
        condition["ForAllValues:StringEquals"] = {"sts:IdentityTokenAudience": audiences}
    if max_duration is not None:
        condition["NumericLessThanEquals"] = {"sts:DurationSeconds": str(max_duration)}
    if condition:
        statement["Condition"] = condition
    document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=document)
    return statement


# --- policy evaluation with numeric operators ---------------------------------------------------------

_NUMERIC = {
    "NumericEquals": lambda a, e: a == e,
    "NumericNotEquals": lambda a, e: a != e,
    "NumericLessThan": lambda a, e: a < e,
    "NumericLessThanEquals": lambda a, e: a <= e,
    "NumericGreaterThan": lambda a, e: a > e,
    "NumericGreaterThanEquals": lambda a, e: a >= e,
}


def _conditions(condition: dict[str, Any] | None, context: dict[str, list[str]]) -> bool:
    if not condition:
        return True
    ctx = {k.lower(): v for k, v in context.items()}
    rest: dict[str, Any] = {}
    for operator, pairs in condition.items():
        base = operator.removesuffix("IfExists")
        test = _NUMERIC.get(base)
        if test is None:
            rest[operator] = pairs
            continue
        if not isinstance(pairs, dict):
            return False
        for key, expected in pairs.items():
            actual = ctx.get(key.lower())
            if actual is None:
                if operator.endswith("IfExists"):
                    continue
                return False
            try:
                values = [float(e) for e in _policy._as_list(expected)]
                if not all(any(test(float(a), e) for e in values) for a in actual):
                    return False
            except ValueError:
                return False
    return _policy.conditions_match(rest, context)


def _identity_allows(access_key: Any, action: str, context: dict[str, list[str]]) -> bool:
    allowed = False
    for document in access_key.collect_policies():
        policy = _policy.load_policy(document)
        for statement in _policy._as_list(policy.get("Statement")):
            if not isinstance(statement, dict) or not _policy._action_matches(statement, action):
                continue
            if not _conditions(statement.get("Condition"), context):
                continue
            if statement.get("Effect") == "Deny":
                return False
            if statement.get("Effect") == "Allow":
                allowed = True
    return allowed


# --- the STS action --------------------------------------------------------------------------------------


def _caller(resp: Any, iam_request: Any | None) -> tuple[Any, str, str]:
    """(moto access key, caller ARN, the ARN the token is about: the role of a session, else the caller)."""
    if iam_request is None:  # enforcement off (seeding): still a signed request naming its key
        from moto.iam.access_control import IAMRequest

        iam_request = IAMRequest(
            account_id=resp.current_account,
            method=resp.method,
            path=resp.raw_path,
            data=resp.data,
            body=resp.raw_body,
            headers=resp.headers,
            action=ACTION,
        )
    access_key = iam_request._access_key
    caller_arn: str = access_key.arn
    subject = caller_arn
    if ":assumed-role/" in caller_arn:
        session = _patches._session_of(access_key.account_id, access_key._access_key_id)
        if session is not None:
            subject = session.role_arn
    return access_key, caller_arn, subject


def authorize(resp: Any, state: _patches.ServerState, iam_request: Any | None) -> dict[str, Any]:
    """The auth step of ``GetWebIdentityToken``: input validation, then the identity policy with the
    action's condition keys. Returns what the response needs."""
    query = resp.querystring  # Audience.member.N, as the query protocol numbers list members
    numbered = sorted((int(k.rsplit(".", 1)[1]), k) for k in query if k.startswith("Audience.member."))
    audiences = [str(query[k][0]) for _, k in numbered]
    raw_duration = resp._get_param("DurationSeconds")
    algorithm = resp._get_param("SigningAlgorithm")
    errors: list[str] = []
    if algorithm is None:
        errors.append("Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null")
    if not audiences:
        errors.append("Value null at 'audience' failed to satisfy constraint: Member must not be null")
    elif len(audiences) > 10:
        errors.append(
            "Value at 'audience' failed to satisfy constraint: Member must have length less than or equal to 10"
        )
    duration = DEFAULT_DURATION
    if raw_duration is not None:
        try:
            duration = int(raw_duration)
        except ValueError:
            duration = -1
        if not MIN_DURATION <= duration <= MAX_DURATION:
            errors.append(
                f"Value '{raw_duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value "
                f"{'greater than or equal to 60' if duration < MIN_DURATION else 'less than or equal to 3600'}"
            )
    elif algorithm not in ALGORITHMS:
        errors.append(
            f"Value '{algorithm}' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum "
            "value set: [RS256, ES384]"
        )
    if errors:
        count = len(errors)
        raise _patches.validation_error(
            f"{count} validation error{'s' if count > 1 else ''} detected: {'; '.join(errors)}"
        )
    access_key, caller_arn, subject = _caller(resp, iam_request)
    context = {
        "sts:IdentityTokenAudience": audiences,
        "sts:DurationSeconds": [str(duration)],
        "sts:SigningAlgorithm": [algorithm],
        "aws:PrincipalArn": [subject],
        "aws:PrincipalAccount": [access_key.account_id],
    }
    if state.enforcement_on and not _identity_allows(access_key, "sts:GetWebIdentityToken", context):
        raise _patches.access_denied(
            f"User: {caller_arn} is not authorized to perform: sts:GetWebIdentityToken because no identity-based "
            "policy allows the sts:GetWebIdentityToken action"
        )
    return {
        "account": access_key.account_id,
        "subject": subject,
        "audiences": audiences,
        "duration": duration,
        "algorithm": algorithm,
    }


def _response(token: str, expires_at: float) -> str:
    expiration = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n'
        f"  <GetWebIdentityTokenResult>\n"
        f"    <WebIdentityToken>{escape(token)}</WebIdentityToken>\n"
        f"    <Expiration>{expiration}</Expiration>\n"
        f"  </GetWebIdentityTokenResult>\n"
        f"  <ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>\n"
        f"</GetWebIdentityTokenResponse>\n"
    )


_install_lock = threading.Lock()


def install() -> None:
    """Give moto's STS responses a ``get_web_identity_token`` (sandbox requests only; idempotent)."""
    from moto.sts.responses import TokenResponse

    with _install_lock:
        if getattr(TokenResponse, "get_web_identity_token", None) is not None:
            return

        def get_web_identity_token(self: Any) -> str:
            state = _patches.current_state()
            if state is None:  # not a sandbox server's request: answer as unpatched moto does (its own message)
                raise NotImplementedError("The get_web_identity_token action has not been implemented")
            info = getattr(self, "_awi_outbound", None) or authorize(self, state, None)
            token, expires_at = _outbound_for_state(state).mint(
                account=info["account"],
                subject=info["subject"],
                audiences=info["audiences"],
                duration=info["duration"],
                algorithm=info["algorithm"],
                region=self.region,
            )
            return _response(token, expires_at)

        TokenResponse.get_web_identity_token = get_web_identity_token  # type: ignore[attr-defined]


def serve(sandbox: Any, environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``GET /_awi/outbound/<account>/.well-known/{jwks.json,openid-configuration}`` on the moto port."""
    rest = environ.get("PATH_INFO", "")[len(PATH_PREFIX) :]
    account, _, leaf = rest.partition("/")
    outbound = outbound_of(sandbox)
    status, body = "404 Not Found", {"message": "Not Found"}
    if account.isdigit() and len(account) == 12 and environ.get("REQUEST_METHOD") == "GET":
        issuer = outbound.issuer(account)
        if leaf == ".well-known/jwks.json":
            status, body = "200 OK", issuer.jwks()
        elif leaf == ".well-known/openid-configuration":
            status = "200 OK"
            body = {
                "issuer": issuer.url,
                "jwks_uri": jwks_url(sandbox, account),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": list(ALGORITHMS),
            }
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
