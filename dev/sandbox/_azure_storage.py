"""The Azure sandbox's storage front door: an https reverse proxy in front of Azurite that does what
Azurite does not, i.e. check the bearer token's signature and tenant and apply Azure RBAC data roles
(by the token's ``oid``), answering refusals the way Azure Storage does (XML error, ``x-ms-error-code``).

Everything else (shared key, SAS, anonymous requests, and bearer tokens Azurite itself refuses: no
``iat``/``nbf``/``exp``, expired, v2 issuer, wrong audience) is forwarded untouched, so Azurite's own
errors reach the client.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import jwt

from ._azure_http import QuietHandler

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

READER = "Storage Blob Data Reader"
CONTRIBUTOR = "Storage Blob Data Contributor"
OWNER = "Storage Blob Data Owner"
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    READER: frozenset({"read"}),
    CONTRIBUTOR: frozenset({"read", "write"}),
    OWNER: frozenset({"read", "write"}),
}
# Azurite's accepted issuers (v1 only); tokens with another issuer are Azurite's to refuse
V1_ISSUER_PREFIXES = (
    "https://sts.windows.net/",
    "https://sts.microsoftonline.de/",
    "https://sts.chinacloudapi.cn/",
    "https://sts.windows-ppe.net",
)
STORAGE_RESOURCE = "https://storage.azure.com"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class RoleAssignment:
    """``principal_id`` (an object id) holds ``role`` on one container, or on the account (``container=None``)."""

    principal_id: str
    role: str
    container: str | None = None

    @property
    def scope(self) -> str:
        return "/" if self.container is None else f"/blobServices/default/containers/{self.container}"


@dataclass(frozen=True)
class StorageDenial:
    status: int
    code: str
    message: str
    detail: str | None = None
    challenge_tenant: str | None = None


class StorageRbac:
    """Role assignments on the sandbox storage account and the authorization decision."""

    def __init__(self, tenant_id: str, account: str, public_key: Any) -> None:
        self.tenant_id = tenant_id
        self.account = account
        self.public_key = public_key
        self._lock = threading.Lock()
        self._assignments: list[RoleAssignment] = []

    def grant(self, principal_id: str, role: str = READER, container: str | None = None) -> RoleAssignment:
        if role not in ROLE_ACTIONS:
            raise ValueError(f"unknown role {role!r}; one of {sorted(ROLE_ACTIONS)}")
        assignment = RoleAssignment(principal_id.lower(), role, container)
        with self._lock:
            if assignment not in self._assignments:
                self._assignments.append(assignment)
        return assignment

    def revoke(self, principal_id: str, role: str | None = None, container: str | None = None) -> int:
        """Remove matching assignments (``role=None``: any role on that scope); returns how many."""
        with self._lock:
            keep = [
                a
                for a in self._assignments
                if not (
                    a.principal_id == principal_id.lower()
                    and a.container == container
                    and (role is None or a.role == role)
                )
            ]
            removed = len(self._assignments) - len(keep)
            self._assignments = keep
        return removed

    def assignments(self) -> list[RoleAssignment]:
        with self._lock:
            return list(self._assignments)

    def allowed(self, principal_id: str, container: str | None, action: str) -> bool:
        with self._lock:
            return any(
                a.principal_id == principal_id.lower()
                and (a.container is None or a.container == container)
                and action in ROLE_ACTIONS[a.role]
                for a in self._assignments
            )

    def decide(self, method: str, target: str, authorization: str) -> tuple[StorageDenial | None, dict[str, Any]]:
        """(denial or None to forward, token claims when a bearer token was read)."""
        if authorization[:7].lower() != "bearer ":
            return None, {}
        token = authorization[7:].strip()
        try:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, {}
        now = time.time()
        if not all(k in claims for k in ("iat", "nbf", "exp", "iss", "aud")):
            return None, claims
        if not isinstance(claims["nbf"], int | float) or not isinstance(claims["exp"], int | float):
            return None, claims
        if now < claims["nbf"] or now > claims["exp"]:
            return None, claims
        if not str(claims["iss"]).startswith(V1_ISSUER_PREFIXES):
            return None, claims
        try:
            jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return (
                StorageDenial(
                    401,
                    "InvalidAuthenticationInfo",
                    "Server failed to authenticate the request. Please refer to the information in the "
                    "www-authenticate header.",
                    "Signature validation failed. Signature verification failed.",
                    self.tenant_id,
                ),
                claims,
            )
        if str(claims.get("tid", "")).lower() != self.tenant_id.lower():
            return (
                StorageDenial(
                    401,
                    "InvalidAuthenticationInfo",
                    "Server failed to authenticate the request. Please refer to the information in the "
                    "www-authenticate header.",
                    "Issuer validation failed. Issuer did not match.",
                    self.tenant_id,
                ),
                claims,
            )
        parts = urlsplit(target)
        segments = parts.path.lstrip("/").split("/")
        if segments[0] != self.account:
            return None, claims  # Azurite answers for accounts it does not have
        container = segments[1] if len(segments) > 1 and segments[1] else None
        query = parse_qs(parts.query)
        read = method in ("GET", "HEAD", "OPTIONS") or (method == "POST" and query.get("comp") == ["userdelegationkey"])
        if self.allowed(str(claims.get("oid", "")), container, "read" if read else "write"):
            return None, claims
        return (
            StorageDenial(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            ),
            claims,
        )


def storage_error_xml(code: str, message: str, request_id: str, detail: str | None = None) -> str:
    """The error body Azure Storage sends (Message carries RequestId and Time on extra lines)."""
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    extra = f"<AuthenticationErrorDetail>{escape(detail)}</AuthenticationErrorDetail>" if detail else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}\nRequestId:{request_id}\nTime:{when}</Message>"
        f"{extra}</Error>"
    )


class StorageProxyHandler(QuietHandler):
    """Forwards to Azurite over https unless :class:`StorageRbac` refuses the request."""

    server_version = "Windows-Azure-Blob/1.0"
    sys_version = "Microsoft-HTTPAPI/2.0"
    rbac: StorageRbac
    upstream: tuple[str, int]
    upstream_context: ssl.SSLContext
    on_request: Callable[[dict[str, Any]], None]
    _local = threading.local()

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        body = self.read_body()
        denial, claims = self.rbac.decide(self.command, self.path, self.headers.get("Authorization", ""))
        record: dict[str, Any] = {
            "method": self.command,
            "path": urlsplit(self.path).path,
            "query": urlsplit(self.path).query,
            "oid": claims.get("oid"),
            "appid": claims.get("appid"),
            "tid": claims.get("tid"),
        }
        if denial is not None:
            record.update(status=denial.status, error=denial.code)
            self.on_request(record)
            self._refuse(denial)
            return
        try:
            status, reason, headers, data = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("storage proxy: Azurite unreachable: %s", exc)
            record.update(status=502, error="BadGateway")
            self.on_request(record)
            self.send_body(502, f"Azurite unreachable: {exc}\n", "text/plain; charset=utf-8")
            return
        record.update(status=status, error=next((v for k, v in headers if k.lower() == "x-ms-error-code"), None))
        self.on_request(record)
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() not in ("content-length", "server", "date"):
                self.send_header(name, value)
        if self.command == "HEAD":
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        if body or self.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None or (conn.host, conn.port) != self.upstream:
                conn = http.client.HTTPSConnection(*self.upstream, context=self.upstream_context, timeout=60)
                self._local.conn = conn
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    self._local.conn = None
                return response.status, response.reason, response.getheaders(), data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _refuse(self, denial: StorageDenial) -> None:
        request_id = str(uuid.uuid4())
        headers = {
            "x-ms-request-id": request_id,
            "x-ms-error-code": denial.code,
            "x-ms-version": self.headers.get("x-ms-version", "2026-02-06"),
        }
        if self.headers.get("x-ms-client-request-id"):
            headers["x-ms-client-request-id"] = self.headers["x-ms-client-request-id"]
        if denial.challenge_tenant:
            headers["WWW-Authenticate"] = (
                f"Bearer authorization_uri=https://login.microsoftonline.com/{denial.challenge_tenant}/oauth2/authorize"
                f" resource_id={STORAGE_RESOURCE}"
            )
        body = storage_error_xml(denial.code, denial.message, request_id, denial.detail)
        self.send_body(denial.status, body, "application/xml", headers, reason=_REASONS.get(denial.code))


_REASONS = {
    "AuthorizationPermissionMismatch": (
        "This request is not authorized to perform this operation using this permission."
    ),
    "InvalidAuthenticationInfo": (
        "Server failed to authenticate the request. Please refer to the information in the www-authenticate header."
    ),
}
