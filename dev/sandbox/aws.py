"""A faithful local AWS on 127.0.0.1: moto (IAM enforced, patched where it is not AWS) plus a fake
EKS Pod Identity agent, seeded with a two-account workload-identity scenario.

    with AwsSandbox.start() as sb:
        token_file = sb.write_web_identity_token()
        env = {**sb.env_isolation(), **sb.env_irsa(token_file)}

Runs in-process (tests) or as its own process (``python -m dev.sandbox start``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import jwt
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from . import _aws_secrets, _fed_aws_outbound, _patches
from .faults import (
    DropConnection,
    Fault,
    FaultInjector,
    FaultKind,
    Reply,
    abort_connection,
    answer_fault,
    client_gone,
)
from .oidc import DEFAULT_AUDIENCE, DEFAULT_ISSUER_URL, DEFAULT_SUBJECT, OidcIssuer, foreign_issuer_for

log = logging.getLogger(__name__)

PLATFORM_ACCOUNT = "111111111111"
CUSTOMER_ACCOUNT = "222222222222"
OTHER_ACCOUNT = "333333333333"
REGION = "eu-west-1"
POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
EKS_POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
OIDC_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"

# Every variable through which botocore could find an ambient identity or endpoint: what a test should
# clear before applying one of the env_* dicts below.
AMBIENT_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
)

_STS_ACTIONS_UNSIGNED = {"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"}
_STS_ERROR_CODES = {500: "InternalFailure", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
# A 200 whose XML body stops mid-element (an injected "malformed" fault).
_STS_TRUNCATED = (
    '<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n  <{action}Result>\n'
    "    <Credentials>\n      <AccessKeyId>ASIA"
)
_POD_IDENTITY_TRUNCATED = Reply(200, "application/json", b'{"AccessKeyId":"ASIA')
_INTERNAL_HEADER = "X-Awi-Sandbox-Internal"
# botocore's "max_attempts" counts retries; "total_max_attempts" counts requests (1 = no retry).
_CLIENT_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


_ASSUME_ACTIONS = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]


@dataclass(frozen=True)
class AwsScenario:
    """Names and ARNs of everything the sandbox seeds. ARNs are properties, so all are attributes."""

    region: str = REGION
    platform_account: str = PLATFORM_ACCOUNT
    customer_account: str = CUSTOMER_ACCOUNT
    other_account: str = OTHER_ACCOUNT
    issuer_url: str = DEFAULT_ISSUER_URL
    oidc_client_id: str = DEFAULT_AUDIENCE
    service_account_sub: str = DEFAULT_SUBJECT
    pod_base_role_name: str = "pod-base"
    platform_user_name: str = "platform-user"
    pod_identity_agent_user_name: str = "sandbox-eks-pod-identity"
    admin_user_name: str = "sandbox-admin"
    customer_reader_role_name: str = "customer-reader"
    customer_hop_role_name: str = "customer-hop"
    customer_reader_chained_role_name: str = "customer-reader-chained"
    customer_external_role_name: str = "customer-external"
    customer_untrusting_role_name: str = "customer-untrusting"
    external_id: str = "ext-7f3a9c"
    bucket_a: str = "customer-bucket-a"
    bucket_a_key: str = "reports/hello.txt"
    bucket_a_body: bytes = b"hello from bucket A\n"
    bucket_b: str = "customer-bucket-b"
    bucket_b_key: str = "secret.txt"
    bucket_b_body: bytes = b"secret in bucket B\n"
    eks_cluster_name: str = "sandbox"
    pod_namespace: str = "airflow"
    pod_service_account: str = "airflow-worker"
    pod_name: str = "airflow-worker-0"
    pod_uid: str = "7c1e2a9b-3f4d-4e5a-8b6c-0d1e2f3a4b5c"
    pod_identity_audience: str = POD_IDENTITY_AUDIENCE

    def _role(self, account: str, name: str) -> str:
        return f"arn:aws:iam::{account}:role/{name}"

    @property
    def oidc_provider_id(self) -> str:
        """The issuer without ``https://``: the provider's name and the condition-key prefix."""
        return self.issuer_url.removeprefix("https://")

    @property
    def oidc_provider_arn(self) -> str:
        return f"arn:aws:iam::{self.platform_account}:oidc-provider/{self.oidc_provider_id}"

    @property
    def pod_base_role_arn(self) -> str:
        return self._role(self.platform_account, self.pod_base_role_name)

    @property
    def platform_user_arn(self) -> str:
        return f"arn:aws:iam::{self.platform_account}:user/{self.platform_user_name}"

    @property
    def customer_reader_role_arn(self) -> str:
        return self._role(self.customer_account, self.customer_reader_role_name)

    @property
    def customer_hop_role_arn(self) -> str:
        return self._role(self.customer_account, self.customer_hop_role_name)

    @property
    def customer_reader_chained_role_arn(self) -> str:
        return self._role(self.customer_account, self.customer_reader_chained_role_name)

    @property
    def customer_external_role_arn(self) -> str:
        return self._role(self.customer_account, self.customer_external_role_name)

    @property
    def customer_untrusting_role_arn(self) -> str:
        return self._role(self.customer_account, self.customer_untrusting_role_name)

    @property
    def untrusting_principal(self) -> str:
        """The only principal ``customer-untrusting`` trusts (another account entirely)."""
        return f"arn:aws:iam::{self.other_account}:root"

    @property
    def eks_cluster_arn(self) -> str:
        return f"arn:aws:eks:{self.region}:{self.platform_account}:cluster/{self.eks_cluster_name}"

    @property
    def pod_identity_session_name(self) -> str:
        return f"eks-{self.eks_cluster_name}-{self.pod_name}-{self.pod_uid[:8]}"[:64]

    def session_arn(self, role_arn: str, session_name: str) -> str:
        """``arn:aws:sts::<acct>:assumed-role/<role>/<session>`` for a role ARN and a session name."""
        account = role_arn.split(":")[4]
        return f"arn:aws:sts::{account}:assumed-role/{role_arn.rsplit('/', 1)[-1]}/{session_name}"

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.decode() if isinstance(value, bytes) else str(value)
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), property):
                out[name] = getattr(self, name)
        return out


# --- seeding (process-wide: moto's backends are module globals shared by every server in a process) ----


@dataclass
class _Seed:
    admin_keys: dict[str, tuple[str, str]]
    user_keys: tuple[str, str]
    agent_keys: tuple[str, str]
    issuer_url: str


_seed_lock = threading.Lock()
_seed: _Seed | None = None


def _seed_intact(seed: _Seed | None, scenario: AwsScenario) -> bool:
    """Is moto's state still the one we seeded? A reset (``mock_aws``, ``/moto-api/reset``) drops every
    access key, so the admin keys tell; a test deleting one role of its own does not count."""
    if seed is None or seed.issuer_url != scenario.issuer_url:
        return False
    try:
        return all(
            seed.admin_keys[account][0] in _patches._iam_backend(account).access_keys
            for account in (scenario.platform_account, scenario.customer_account)
        )
    except Exception:
        return False


def _seed_scenario(endpoint_url: str, scenario: AwsScenario) -> _Seed:
    """Create the scenario through moto's public API (auth still off for this sandbox)."""

    def client(service: str, account: str) -> Any:
        c = boto3.session.Session(
            aws_access_key_id="AKIASANDBOXSEEDING00",
            aws_secret_access_key="seeding",  # auth is off while seeding
            region_name=scenario.region,
        ).client(service, endpoint_url=endpoint_url, config=_CLIENT_CONFIG)

        def _account_header(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        c.meta.events.register("before-send", _account_header)
        return c

    sc = scenario
    admin_keys: dict[str, tuple[str, str]] = {}
    for account in (sc.platform_account, sc.customer_account):
        iam = client("iam", account)
        iam.create_user(UserName=sc.admin_user_name)
        iam.put_user_policy(
            UserName=sc.admin_user_name,
            PolicyName="admin",
            PolicyDocument=_policy({"Effect": "Allow", "Action": "*", "Resource": "*"}),
        )
        key = iam.create_access_key(UserName=sc.admin_user_name)["AccessKey"]
        admin_keys[account] = (key["AccessKeyId"], key["SecretAccessKey"])

    # --- platform account: OIDC provider, pod-base, platform-user, the Pod Identity stand-in
    iam = client("iam", sc.platform_account)
    iam.create_open_id_connect_provider(
        Url=sc.issuer_url, ClientIDList=[sc.oidc_client_id], ThumbprintList=[OIDC_THUMBPRINT]
    )
    pod_base_trust = _policy(
        {
            "Effect": "Allow",
            "Principal": {"Federated": sc.oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{sc.oidc_provider_id}:sub": sc.service_account_sub,
                    f"{sc.oidc_provider_id}:aud": sc.oidc_client_id,
                }
            },
        },
        {
            "Effect": "Allow",
            "Principal": {"Service": EKS_POD_IDENTITY_SERVICE},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        },
    )
    iam.create_role(RoleName=sc.pod_base_role_name, AssumeRolePolicyDocument=pod_base_trust)
    assume_anything = _policy({"Effect": "Allow", "Action": _ASSUME_ACTIONS, "Resource": "*"})
    iam.put_role_policy(
        RoleName=sc.pod_base_role_name, PolicyName="assume-customer-roles", PolicyDocument=assume_anything
    )
    iam.create_user(UserName=sc.platform_user_name)
    iam.put_user_policy(
        UserName=sc.platform_user_name, PolicyName="assume-customer-roles", PolicyDocument=assume_anything
    )
    key = iam.create_access_key(UserName=sc.platform_user_name)["AccessKey"]
    user_keys = (key["AccessKeyId"], key["SecretAccessKey"])
    iam.create_user(UserName=sc.pod_identity_agent_user_name)
    iam.put_user_policy(
        UserName=sc.pod_identity_agent_user_name,
        PolicyName="eks-auth",
        PolicyDocument=_policy(
            {"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": sc.pod_base_role_arn}
        ),
    )
    key = iam.create_access_key(UserName=sc.pod_identity_agent_user_name)["AccessKey"]
    agent_keys = (key["AccessKeyId"], key["SecretAccessKey"])

    # --- customer account: roles and buckets
    iam = client("iam", sc.customer_account)
    read_a = _policy(
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{sc.bucket_a}"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{sc.bucket_a}/*"},
    )

    def trust(*principals: str, actions: Any = _ASSUME_ACTIONS, condition: dict[str, Any] | None = None) -> str:
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"AWS": list(principals) if len(principals) > 1 else principals[0]},
            "Action": actions,
        }
        if condition:
            statement["Condition"] = condition
        return _policy(statement)

    roles: list[tuple[str, str, str, int]] = [
        (sc.customer_reader_role_name, trust(sc.pod_base_role_arn, sc.platform_user_arn), read_a, 43200),
        (
            sc.customer_hop_role_name,
            trust(sc.pod_base_role_arn),
            _policy({"Effect": "Allow", "Action": _ASSUME_ACTIONS, "Resource": sc.customer_reader_chained_role_arn}),
            3600,
        ),
        (sc.customer_reader_chained_role_name, trust(sc.customer_hop_role_arn), read_a, 43200),
        (
            sc.customer_external_role_name,
            trust(
                sc.pod_base_role_arn,
                actions="sts:AssumeRole",  # no sts:TagSession: sending session tags to it is refused
                condition={"StringEquals": {"sts:ExternalId": sc.external_id}},
            ),
            read_a,
            3600,
        ),
        (sc.customer_untrusting_role_name, trust(sc.untrusting_principal, actions="sts:AssumeRole"), read_a, 3600),
    ]
    for name, trust_doc, permissions, max_session in roles:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_doc, MaxSessionDuration=max_session)
        iam.put_role_policy(RoleName=name, PolicyName="permissions", PolicyDocument=permissions)
    # secrets backends: the reader role reads secrets and parameters under airflow/ only (_aws_secrets.py)
    iam.put_role_policy(
        RoleName=sc.customer_reader_role_name,
        PolicyName="secrets",
        PolicyDocument=_aws_secrets.prefix_policy(sc.customer_account, "airflow/"),
    )

    s3 = client("s3", sc.customer_account)
    for bucket, key_name, body in (
        (sc.bucket_a, sc.bucket_a_key, sc.bucket_a_body),
        (sc.bucket_b, sc.bucket_b_key, sc.bucket_b_body),
    ):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": sc.region})
        s3.put_object(Bucket=bucket, Key=key_name, Body=body)
    return _Seed(admin_keys=admin_keys, user_keys=user_keys, agent_keys=agent_keys, issuer_url=sc.issuer_url)


# --- the moto server, wrapped ----------------------------------------------------------------------------


class _QuietMotoHandler(MotoRequestHandler):
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            log.warning("moto server: " + message, *args)

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        if isinstance(error, DropConnection):  # an injected reset or an abandoned hang: RST, no response
            abort_connection(self)


class _SandboxMiddleware:
    """WSGI middleware in front of moto: per-sandbox reset-auth, STS call counting, faults, latency,
    and the thread-local state that turns the moto patches on for this sandbox's requests."""

    def __init__(self, app: Any, sandbox: AwsSandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    @staticmethod
    def _classify(environ: dict[str, Any]) -> tuple[str | None, str | None]:
        """(service, action) of a query-protocol request; reads and restores the body if it is a form."""
        action = None
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            body = environ["wsgi.input"].read(length) if length > 0 else b""
            environ["wsgi.input"] = io.BytesIO(body)
            action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [None])[0]
        if action is None:
            action = (parse_qs(environ.get("QUERY_STRING", "")).get("Action") or [None])[0]
        auth = environ.get("HTTP_AUTHORIZATION", "")
        service = None
        if "Credential=" in auth:
            scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
            service = scope[3].lower() if len(scope) >= 5 else None
        elif action in _STS_ACTIONS_UNSIGNED:
            service = "sts"
        return service, action

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sb = self.sandbox
        path = environ.get("PATH_INFO", "")
        if path == "/moto-api/reset-auth" and environ.get("REQUEST_METHOD") == "POST":
            return self._reset_auth(environ, start_response)
        if path.startswith(_fed_aws_outbound.PATH_PREFIX):  # the outbound issuers' JWKS / discovery
            return _fed_aws_outbound.serve(sb, environ, start_response)
        service, action = self._classify(environ)
        internal = environ.get("HTTP_" + _INTERNAL_HEADER.upper().replace("-", "_")) == sb._internal_secret
        if service == "sts" and action and not internal:
            fault = sb._on_sts_request(action)
            answered = self._fault(environ, start_response, fault, action) if fault is not None else None
            if answered is not None:
                return answered
        if service is None and action and sb._state.enforcement_on:
            # an unsigned query-protocol call (moto would hand it to S3): what STS/IAM answer
            return self._error(
                start_response, 403, "MissingAuthenticationToken", "Request is missing Authentication Token"
            )
        _patches.set_current_state(sb._state)
        try:
            return self.app(environ, start_response)
        finally:
            _patches.set_current_state(None)

    def _fault(self, environ: dict[str, Any], start_response: Any, fault: Fault, action: str) -> list[bytes] | None:
        """Apply an injected fault to an STS request; None: give the real answer (slow, or a released hang)."""
        if fault.kind is FaultKind.SLOW:
            time.sleep(fault.seconds)
            return None
        if fault.kind is FaultKind.HANG:
            if self.sandbox.faults.hold(fault) and not client_gone(environ["werkzeug.socket"]):
                return None
            raise DropConnection("injected hang (sandbox)")
        if fault.kind is FaultKind.RESET:
            raise DropConnection("injected reset (sandbox)")
        if fault.kind is FaultKind.MALFORMED:
            body = _STS_TRUNCATED.format(action=action).encode()
            start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
            return [body]
        throttle = fault.kind is FaultKind.THROTTLE
        code = fault.code or ("Throttling" if throttle else _STS_ERROR_CODES.get(fault.status, "InternalFailure"))
        message = fault.message or ("Rate exceeded" if throttle else f"Injected fault: {code}")
        retry_after = fault.retry_after if fault.retry_after is not None else (1 if throttle else None)
        headers = [("Retry-After", f"{retry_after:g}")] if retry_after is not None else []
        return self._error(start_response, fault.status, code, message, headers)

    @staticmethod
    def _error(
        start_response: Any, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        body = _patches.aws_error_xml(code, message, sender=status < 500).encode()
        start_response(
            f"{status} {code}",
            [
                ("Content-Type", "text/xml"),
                ("Content-Length", str(len(body))),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                *(headers or []),
            ],
        )
        return [body]

    def _reset_auth(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            limit = float(raw.decode())
        except ValueError:
            body = json.dumps({"status": "error", "message": f"body must be a number, got {raw!r}"}).encode()
            start_response(
                "400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        previous = self.sandbox._state.reset_auth(limit)
        body = json.dumps({"status": "ok", "PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT": str(previous)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


class _SandboxMotoServer(ThreadedMotoServer):
    """moto's ThreadedMotoServer with the sandbox middleware in front; binds in the caller's thread so
    that a bind failure raises instead of hanging."""

    def __init__(self, sandbox: AwsSandbox, ip_address: str, port: int) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self._sandbox = sandbox

    def start(self) -> None:
        app = _SandboxMiddleware(DomainDispatcherApplication(create_backend_app), self._sandbox)
        try:
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=_QuietMotoHandler)
        except SystemExit as exc:  # werkzeug exits the process when the port is taken
            raise OSError(f"cannot listen on {self._ip_address}:{self._port} (in use?)") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-sandbox-moto", daemon=True)
        self._thread.start()
        self._server_ready_event.set()

    def stop(self) -> None:
        self._server_ready_event.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --- the fake EKS Pod Identity agent --------------------------------------------------------------------


class _PodIdentityHandler(BaseHTTPRequestHandler):
    """``GET /v1/credentials`` as eks-pod-identity-agent answers it (errors are Go's ``http.Error``)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "eks-pod-identity-agent"
    sandbox: AwsSandbox

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if content_type.startswith("text/plain"):
            self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        sb = self.sandbox
        fault = sb._on_pod_identity_request()
        if urlsplit(self.path).path != "/v1/credentials":
            self._send(404, "404 page not found\n")
            return
        if answer_fault(self, sb.faults, fault, error=_pod_identity_error, malformed=_POD_IDENTITY_TRUNCATED):
            return
        token = self.headers.get("Authorization", "")
        if not token:
            self._send(400, "Service account token cannot be empty\n")
            return
        try:
            jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            self._send(400, f"Service account token cannot be parsed: token is malformed: {exc}\n")
            return
        if not secrets.compare_digest(token, sb._pod_identity_token):
            self._send(
                400,
                f"[{uuid.uuid4()}]: (InvalidTokenException): The specified Kubernetes service account token "
                "is invalid., fault: client\n",
            )
            return
        try:
            creds = sb._pod_identity_credentials()
        except Exception as exc:  # the agent reports EKS Auth failures as 500
            log.warning("pod identity agent: %s", exc)
            self._send(500, f"{exc}\n")
            return
        self._send(200, json.dumps(creds), "application/json")


def _pod_identity_error(fault: Fault) -> Reply:
    """The agent's errors are Go's ``http.Error``: the message as text/plain."""
    message = fault.message or ("Too Many Requests" if fault.status == 429 else "Internal Server Error")
    return Reply(
        fault.status, "text/plain; charset=utf-8", f"{message}\n".encode(), (("X-Content-Type-Options", "nosniff"),)
    )


# --- the sandbox ---------------------------------------------------------------------------------------


class AwsSandbox:
    """Local AWS for workload-identity tests. Create with :meth:`start`; stop with :meth:`stop` or ``with``."""

    region = REGION

    def __init__(self, *, scenario: AwsScenario | None = None) -> None:
        self.scenario = scenario or AwsScenario()
        self.issuer = OidcIssuer(self.scenario.issuer_url)
        self.foreign_issuer = foreign_issuer_for(self.issuer)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="awi-aws-sandbox-"))
        self.pod_identity_token_file = self.tmp_dir / "eks-pod-identity-token"
        self._endpoint = ""
        self.pod_identity_url = ""
        self._internal_secret = secrets.token_hex(16)
        self._state = _patches.ServerState(name=f"aws-sandbox-{id(self):x}")
        self._state.issuer_keys[self.issuer.issuer_url] = {self.issuer.kid: self.issuer.public_key}
        # calls signed with the agent user's keys are evaluated as the EKS Pod Identity service principal
        agent_arn = f"arn:aws:iam::{self.scenario.platform_account}:user/{self.scenario.pod_identity_agent_user_name}"
        self._state.service_principals[agent_arn] = EKS_POD_IDENTITY_SERVICE
        self._lock = threading.Lock()
        self._sts_calls: Counter[str] = Counter()
        #: Fault switches of the ``sts`` and ``pod_identity`` endpoints (see :mod:`dev.sandbox.faults`).
        self.faults = FaultInjector(("sts", "pod_identity"))
        self._pod_identity_calls = 0
        self._pod_identity_token = ""
        self._moto: _SandboxMotoServer | None = None
        self._agent: ThreadingHTTPServer | None = None
        self._agent_thread: threading.Thread | None = None
        self._agent_sts: tuple[str, Any] | None = None
        self._stopped = False

    # --- lifecycle

    @classmethod
    def start(cls, port: int = 0, pod_identity_port: int = 0, *, scenario: AwsScenario | None = None) -> AwsSandbox:
        sb = cls(scenario=scenario)
        try:
            sb._start(port, pod_identity_port)
        except BaseException:
            sb.stop()
            raise
        return sb

    def _start(self, port: int, pod_identity_port: int) -> None:
        _patches.install()
        _aws_secrets.install()
        _fed_aws_outbound.install()
        self._moto = _SandboxMotoServer(self, "127.0.0.1", port)
        self._moto.start()
        host, bound = self._moto.get_host_and_port()
        self._endpoint = f"http://{host}:{bound}"

        handler = type("PodIdentityHandler", (_PodIdentityHandler,), {"sandbox": self})
        self._agent = ThreadingHTTPServer(("127.0.0.1", pod_identity_port), handler)
        self._agent.daemon_threads = True
        self._agent_thread = threading.Thread(
            target=self._agent.serve_forever, name="aws-sandbox-pod-identity", daemon=True
        )
        self._agent_thread.start()
        self.pod_identity_url = f"http://127.0.0.1:{self._agent.server_address[1]}/v1/credentials"
        self.rotate_pod_identity_token()

        self.ensure_seeded()
        self._reset_auth(b"0")
        if not self._state.enforcement_on:
            raise RuntimeError("IAM enforcement did not turn on")

    def ensure_seeded(self) -> bool:
        """(Re)create the scenario if moto's state lacks it (e.g. after a ``mock_aws`` reset in this
        process). Returns True if it seeded. Sessions issued before a reset are gone and the IAM users'
        keys change (read them again from this object). Shared by every sandbox of the process."""
        global _seed
        with _seed_lock:
            if _seed_intact(_seed, self.scenario):
                return False
            previous = self._state.reset_auth(float("inf"))
            try:
                _seed = _seed_scenario(self._endpoint, self.scenario)
            finally:
                self._state.reset_auth(previous)
            return True

    def _heal(self) -> None:
        """Re-seed if moto's process-wide state lost the scenario (``mock_aws`` resets every backend)."""
        if self.running and not _seed_intact(_seed, self.scenario) and self.ensure_seeded():
            log.warning("moto's state had lost the AWS sandbox scenario (a mock_aws reset?): re-seeded it")

    @property
    def _current_seed(self) -> _Seed:
        self._heal()
        if _seed is None:
            raise RuntimeError("the sandbox is not seeded (not started?)")
        return _seed

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the moto server (re-seeds first if a moto reset lost the scenario)."""
        self._heal()
        return self._endpoint

    def _agent_client(self) -> Any:
        """STS client of the sandbox's EKS Pod Identity stand-in (evaluated as pods.eks.amazonaws.com)."""
        seed = self._current_seed
        with self._lock:
            if self._agent_sts is None or self._agent_sts[0] != seed.agent_keys[0]:
                sts = boto3.session.Session(
                    aws_access_key_id=seed.agent_keys[0],
                    aws_secret_access_key=seed.agent_keys[1],
                    region_name=self.region,
                ).client("sts", endpoint_url=self._endpoint, config=_CLIENT_CONFIG)
                secret = self._internal_secret

                def _mark_internal(request: Any, **_: Any) -> None:
                    request.headers[_INTERNAL_HEADER] = secret

                sts.meta.events.register("before-send", _mark_internal)
                self._agent_sts = (seed.agent_keys[0], sts)
            return self._agent_sts[1]

    def _reset_auth(self, body: bytes) -> dict[str, Any]:
        request = urllib.request.Request(f"{self._endpoint}/moto-api/reset-auth", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def stop(self) -> None:
        """Stop both servers and delete the temp dir. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.faults.close()
        if self._agent is not None:
            self._agent.shutdown()
            self._agent.server_close()
            if self._agent_thread is not None:
                self._agent_thread.join(timeout=10)
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> AwsSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._endpoint) and not self._stopped

    @property
    def enforcement_on(self) -> bool:
        return self._state.enforcement_on

    # --- identities

    @property
    def user_access_key_id(self) -> str:
        return self._current_seed.user_keys[0]

    @property
    def user_secret_access_key(self) -> str:
        return self._current_seed.user_keys[1]

    def admin_keys(self, account: str | None = None) -> tuple[str, str]:
        return self._current_seed.admin_keys[account or self.scenario.customer_account]

    def admin_client(self, service: str, account: str | None = None, **kwargs: Any) -> Any:
        """A boto3 client for ``account`` (default: customer) with full rights, for seeding/inspection."""
        key_id, secret = self.admin_keys(account)
        return self.client(service, {"AccessKeyId": key_id, "SecretAccessKey": secret}, **kwargs)

    def client(self, service: str, credentials: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """A boto3 client pointed at the sandbox with explicit credentials (an STS ``Credentials`` dict)."""
        creds = credentials or {}
        session = boto3.session.Session(
            aws_access_key_id=creds.get("AccessKeyId", "AKIAUNKNOWNUNKNOWN00"),
            aws_secret_access_key=creds.get("SecretAccessKey", "unknown"),
            aws_session_token=creds.get("SessionToken") or creds.get("Token"),
            region_name=self.region,
        )
        kwargs.setdefault("config", _CLIENT_CONFIG)
        return session.client(service, endpoint_url=self.endpoint_url, **kwargs)

    def write_web_identity_token(self, path: str | os.PathLike[str] | None = None, **mint_kwargs: Any) -> Path:
        """Mint a token with the good issuer and write it (atomically) to ``path`` or the sandbox dir."""
        target = Path(path) if path is not None else self.tmp_dir / "eks.amazonaws.com" / "serviceaccount" / "token"
        _write_atomic(target, self.issuer.mint(**mint_kwargs))
        return target

    def trust_issuer(self, issuer_url: str, jwks_url: str, *, ca_file: str | os.PathLike[str] | None = None) -> None:
        """Let STS verify web identity tokens of another issuer (the Google or Entra sandbox) with the JWKS it
        serves at ``jwks_url`` on loopback (fetched on first use, cached): ``_fed_aws_trust.py``."""
        from . import _fed_aws_trust

        _fed_aws_trust.trust_issuer(self._state, issuer_url, jwks_url, ca_file=str(ca_file) if ca_file else None)

    def rotate_pod_identity_token(self) -> str:
        """Write a new Pod Identity token; from now on only it is accepted by the agent."""
        token = self.issuer.mint(
            sub=self.scenario.service_account_sub, aud=self.scenario.pod_identity_audience, ttl=86400
        )
        with self._lock:
            _write_atomic(self.pod_identity_token_file, token)
            self._pod_identity_token = token
        return token

    # --- environments a pod would have

    def env_irsa(
        self, token_path: str | os.PathLike[str], role_arn: str | None = None, session_name: str | None = None
    ) -> dict[str, str]:
        env = {
            "AWS_ROLE_ARN": role_arn or self.scenario.pod_base_role_arn,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_path),
        }
        if session_name:
            env["AWS_ROLE_SESSION_NAME"] = session_name
        return env

    def env_pod_identity(self) -> dict[str, str]:
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.pod_identity_url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(self.pod_identity_token_file),
        }

    def env_default_chain(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.user_access_key_id, "AWS_SECRET_ACCESS_KEY": self.user_secret_access_key}

    def env_isolation(self) -> dict[str, str]:
        return {
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,  # botocore's client region reads only this one
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    # --- counters, faults, latency, lifetimes

    def calls(self, action: str | None = None) -> int:
        """STS requests received (by action name, or all), including those answered with a fault."""
        with self._lock:
            return self._sts_calls[action] if action else sum(self._sts_calls.values())

    def calls_by_action(self) -> dict[str, int]:
        with self._lock:
            return dict(self._sts_calls)

    def api_calls(self) -> dict[str, int]:
        """Secrets Manager / Parameter Store requests received, by operation (``ssm:GetParameter``)."""
        return _aws_secrets.calls(self._state.name)

    def reset_api_calls(self) -> None:
        _aws_secrets.reset_calls(self._state.name)

    def reset_calls(self) -> None:
        with self._lock:
            self._sts_calls.clear()
            self._pod_identity_calls = 0

    @property
    def pod_identity_calls(self) -> int:
        with self._lock:
            return self._pod_identity_calls

    def inject_sts_fault(
        self,
        action: str | None = "AssumeRole",
        status: int = 503,
        code: str = "ServiceUnavailable",
        times: int = 2,
        message: str | None = None,
    ) -> None:
        """The next ``times`` STS requests for ``action`` (None or ``"*"``: any) fail with an AWS error
        (shorthand for ``faults.inject("sts", Fault.error(...), match=action)``)."""
        self.faults.inject(
            "sts",
            Fault.error(status, times=times, code=code, message=message or f"Injected fault: {code}"),
            match=None if action in (None, "*") else action,
        )

    def clear_faults(self) -> None:
        """Disarm every fault of STS and the Pod Identity agent (held requests are released)."""
        self.faults.clear()

    def inject_pod_identity_fault(
        self, status: int = 500, times: int = 1, message: str = "Internal Server Error"
    ) -> None:
        self.faults.inject("pod_identity", Fault.error(status, times=times, message=message))

    def set_sts_latency(self, seconds: float, action: str | None = None) -> None:
        """Delay every STS request (or those for ``action``) by ``seconds``; 0 to clear."""
        self.faults.set_latency("sts", seconds, match=action)

    def force_credential_ttl(self, seconds: int | None) -> None:
        """AssumeRole*/Pod Identity credentials say they expire ``seconds`` from issue (None: normal)."""
        self._state.credential_ttl = seconds

    def _on_sts_request(self, action: str) -> Fault | None:
        with self._lock:
            self._sts_calls[action] += 1
        return self.faults.take("sts", action)

    def _on_pod_identity_request(self) -> Fault | None:
        with self._lock:
            self._pod_identity_calls += 1
        return self.faults.take("pod_identity")

    def _pod_identity_credentials(self) -> dict[str, str]:
        sc = self.scenario
        ttl = self._state.credential_ttl
        response = self._agent_client().assume_role(
            RoleArn=sc.pod_base_role_arn,
            RoleSessionName=sc.pod_identity_session_name,
            DurationSeconds=3600 if ttl is None else min(max(ttl, 900), 3600),
            Tags=[
                {"Key": "eks-cluster-arn", "Value": sc.eks_cluster_arn},
                {"Key": "eks-cluster-name", "Value": sc.eks_cluster_name},
                {"Key": "kubernetes-namespace", "Value": sc.pod_namespace},
                {"Key": "kubernetes-service-account", "Value": sc.pod_service_account},
                {"Key": "kubernetes-pod-name", "Value": sc.pod_name},
                {"Key": "kubernetes-pod-uid", "Value": sc.pod_uid},
            ],
        )
        creds = response["Credentials"]
        expiration: datetime = creds["Expiration"]
        return {
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "AccountId": sc.platform_account,
            "Expiration": expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # --- description (for the CLI's state file)

    def describe(self) -> dict[str, Any]:
        token_file = self.tmp_dir / "eks.amazonaws.com" / "serviceaccount" / "token"
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "pod_identity_url": self.pod_identity_url,
            "pod_identity_token_file": str(self.pod_identity_token_file),
            "web_identity_token_file": str(token_file),
            "issuer_url": self.issuer.issuer_url,
            "user_access_key_id": self.user_access_key_id,
            "user_secret_access_key": self.user_secret_access_key,
            "admin_keys": {acct: list(keys) for acct, keys in self._current_seed.admin_keys.items()},
            "scenario": self.scenario.to_dict(),
            "env": {
                "isolation": self.env_isolation(),
                "irsa": self.env_irsa(token_file),
                "pod_identity": self.env_pod_identity(),
                "default_chain": self.env_default_chain(),
            },
        }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
