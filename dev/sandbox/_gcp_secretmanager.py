"""A Secret Manager API (REST, v1) for the GCP sandbox: ``projects/*/secrets/*/versions/*:access``.

Checks what Secret Manager checks: a bearer token the sandbox issued (metadata or IAM Credentials), not
expired, with the ``cloud-platform`` scope, and ``secretmanager.versions.access`` for the token's
principal on the secret: granted on one secret (``gcloud secrets add-iam-policy-binding``), on the
project, or on the project with a name-prefix condition (``resource.name.startsWith(...)``, how a
deployment limits an identity to ``airflow-connections-*``). Answers in the real wire format:

    200 {"name": "projects/<number>/secrets/<id>/versions/<n>",
         "payload": {"data": "<base64>", "dataCrc32c": "<decimal int64>"}}
    403 {"error": {"code": 403, "message": "Permission 'secretmanager.versions.access' denied for resource
         'projects/<p>/secrets/<id>/versions/latest' (or it may not exist).", "status": "PERMISSION_DENIED",
         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
         "domain": "secretmanager.googleapis.com", "metadata": {"permission": "secretmanager.versions.access",
         "resource": "projects/<p>/secrets/<id>/versions/latest"}}]}}
    404 {"error": {"code": 404, "message": "Secret [projects/<number>/secrets/<id>] not found or has no
         versions.", "status": "NOT_FOUND"}}
    401 the ESF ``UNAUTHENTICATED`` body with ``WWW-Authenticate: Bearer realm="https://accounts.google.com/"``

so that google-cloud-secret-manager's REST transport (what the official ``CloudSecretManagerBackend``
builds on) reads it too. Private to ``dev.sandbox.gcp``.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import google_crc32c

from . import _gcp_wire as wire

if TYPE_CHECKING:
    from .gcp import GcpSandbox

__all__ = ["ACCESSOR_ROLE", "SecretManagerFake", "SecretManagerHandler"]

ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"
PERMISSION = "secretmanager.versions.access"
_ACCESS = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/(?:locations/(?P<location>[^/]+)/)?secrets/(?P<secret>[^/]+)"
    r"/versions/(?P<version>[^/:]+):access$"
)
_ACCESS_SCOPES = frozenset({wire.CLOUD_PLATFORM_SCOPE})


@dataclass
class _Secret:
    versions: list[bytes] = field(default_factory=list)


class SecretManagerFake:
    """The secrets and their IAM, in memory; the handler below serves them."""

    def __init__(self, sandbox: GcpSandbox, projects: dict[str, str]) -> None:
        self.sandbox = sandbox
        #: project id -> project number (the API answers with numbers, accepts either)
        self.projects = dict(projects)
        self._lock = threading.Lock()
        self._secrets: dict[tuple[str, str], _Secret] = {}
        #: (principal, project, secret id or "prefix*" or "*")
        self._grants: set[tuple[str, str, str]] = set()
        self._calls: Counter[str] = Counter()
        self.seed()

    def seed(self) -> None:
        """The scenario's secrets (the demo reads them): the reader may read ``airflow-*`` of the customer
        project (a conditional project binding); ``restricted-*`` exists and is not granted."""
        sc = self.sandbox.scenario
        self.add_secret(sc.customer_project, "airflow-variables-greeting", "hello from Secret Manager")
        self.add_secret(sc.customer_project, "restricted-variables-greeting", "not for the reader")
        self.grant(sc.reader_sa, sc.customer_project, "airflow-*")

    # -- administration (what a test or the demo seeds) ------------------------------------------------------

    def _project_id(self, project: str) -> str | None:
        if project in self.projects:
            return project
        return next((pid for pid, number in self.projects.items() if number == project), None)

    def add_secret(self, project: str, secret_id: str, value: str | bytes) -> int:
        """Add a version (the new ``latest``) to ``secret_id``; returns its version number."""
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            secret = self._secrets.setdefault((project, secret_id), _Secret())
            secret.versions.append(data)
            return len(secret.versions)

    def delete_secret(self, project: str, secret_id: str) -> None:
        with self._lock:
            self._secrets.pop((project, secret_id), None)

    def grant(self, principal: str, project: str, secret: str = "*") -> None:
        """``roles/secretmanager.secretAccessor`` for ``principal``: on one secret, on every secret whose id
        starts with ``prefix`` (``secret="prefix*"``: a project binding with a name condition) or on the
        whole project (``"*"``)."""
        with self._lock:
            self._grants.add((principal.lower(), project, secret))

    def revoke_all(self) -> None:
        with self._lock:
            self._grants.clear()

    def calls(self) -> int:
        """``:access`` requests received (answered or refused)."""
        with self._lock:
            return sum(self._calls.values())

    def calls_by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _allowed(self, principal: str, project: str, secret_id: str) -> bool:
        with self._lock:
            for who, where, what in self._grants:
                if who != principal.lower() or where != project:
                    continue
                if what == "*" or what == secret_id or (what.endswith("*") and secret_id.startswith(what[:-1])):
                    return True
        return False

    # -- the API ---------------------------------------------------------------------------------------------

    def access(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        match = _ACCESS.match(unquote(urlsplit(path).path))
        if match is None:
            return 404, wire.esf_error(404, "Method not found."), {}
        token, reason = self.sandbox._authenticate(authorization)
        if token is None:
            self._count(401)
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project."
            )
            body = wire.esf_error(401, message, [wire.error_info(reason)])
            return 401, body, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
        if not (token.scopes & _ACCESS_SCOPES):
            self._count(403)
            body = wire.esf_error(
                403,
                "Request had insufficient authentication scopes.",
                [wire.error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT")],
            )
            return (
                403,
                body,
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="insufficient_scope"'},
            )
        project, secret_id, version = match["project"], match["secret"], match["version"]
        resource = f"projects/{project}/secrets/{secret_id}/versions/{version}"
        project_id = self._project_id(project)
        if project_id is None or not self._allowed(token.principal, project_id, secret_id):
            self._count(403)
            body = wire.esf_error(
                403,
                f"Permission '{PERMISSION}' denied for resource '{resource}' (or it may not exist).",
                [
                    wire.error_info(
                        "IAM_PERMISSION_DENIED",
                        "secretmanager.googleapis.com",
                        {"permission": PERMISSION, "resource": resource},
                    )
                ],
            )
            return 403, body, {}
        number = self.projects[project_id]
        with self._lock:
            secret = self._secrets.get((project_id, secret_id))
            versions = list(secret.versions) if secret else []
        index = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
        if not versions or not 1 <= index <= len(versions):
            self._count(404)
            if not versions:
                message = f"Secret [projects/{number}/secrets/{secret_id}] not found or has no versions."
            else:
                message = f"Secret Version [projects/{number}/secrets/{secret_id}/versions/{version}] not found."
            return 404, wire.esf_error(404, message), {}
        data = versions[index - 1]
        self._count(200)
        return (
            200,
            {
                "name": f"projects/{number}/secrets/{secret_id}/versions/{index}",
                "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))},
            },
            {},
        )

    def _count(self, status: int) -> None:
        with self._lock:
            self._calls[str(status)] += 1


class SecretManagerHandler(BaseHTTPRequestHandler):
    """``https://secretmanager.googleapis.com`` on loopback (plain http, like the other GCP fakes)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    sandbox: GcpSandbox

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake: SecretManagerFake = self.sandbox.secret_manager
        status, body, headers = fake.access(self.path, self.headers.get("Authorization"))
        self._send(status, wire.dumps(body), headers)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        self._send(404, wire.dumps(wire.esf_error(404, "Method not found.")))
