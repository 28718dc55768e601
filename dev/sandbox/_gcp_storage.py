"""The token-checking GCS front: ``gcp_storage_emulator``'s own ``RequestHandler`` (in-process, on a
``Storage(use_memory_fs=True)``) wrapped so that every request first passes what GCS checks and the
emulator does not: a valid bearer token, its OAuth scopes and the caller's permission on the bucket.

Private to ``dev.sandbox.gcp``. Rejections carry GCS's JSON (or, on XML API paths, XML) error bodies.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from dataclasses import dataclass
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gcp_storage_emulator.server import RequestHandler, Router, _parse_batch_item, _read_raw_data

from . import _gcp_wire as wire

if TYPE_CHECKING:
    from .gcp import GcpSandbox

log = logging.getLogger(__name__)

READ_SCOPES = frozenset(
    {
        wire.CLOUD_PLATFORM_SCOPE,
        wire.CLOUD_PLATFORM_READ_ONLY_SCOPE,
        wire.DEVSTORAGE_READ_ONLY_SCOPE,
        wire.DEVSTORAGE_READ_WRITE_SCOPE,
        wire.DEVSTORAGE_FULL_CONTROL_SCOPE,
    }
)
WRITE_SCOPES = frozenset(
    {wire.CLOUD_PLATFORM_SCOPE, wire.DEVSTORAGE_READ_WRITE_SCOPE, wire.DEVSTORAGE_FULL_CONTROL_SCOPE}
)
FULL_CONTROL_SCOPES = frozenset({wire.CLOUD_PLATFORM_SCOPE, wire.DEVSTORAGE_FULL_CONTROL_SCOPE})

_OBJECT_PERMISSIONS = ("get", "list", "create", "delete", "update", "restore", "getIamPolicy", "setIamPolicy")
_BUCKET_PERMISSIONS = ("get", "list", "create", "delete", "update", "getIamPolicy", "setIamPolicy")
ALL_STORAGE_PERMISSIONS = frozenset(
    [f"storage.objects.{p}" for p in _OBJECT_PERMISSIONS] + [f"storage.buckets.{p}" for p in _BUCKET_PERMISSIONS]
)
# predefined roles, as far as the sandbox needs them (a role name expands to its permissions)
STORAGE_ROLES: dict[str, frozenset[str]] = {
    "roles/storage.objectViewer": frozenset({"storage.objects.get", "storage.objects.list"}),
    "roles/storage.legacyBucketReader": frozenset({"storage.buckets.get", "storage.objects.list"}),
    "roles/storage.objectCreator": frozenset({"storage.objects.create"}),
    "roles/storage.objectUser": frozenset(
        {f"storage.objects.{p}" for p in ("get", "list", "create", "delete", "update", "restore")}
    ),
    "roles/storage.objectAdmin": frozenset(f"storage.objects.{p}" for p in _OBJECT_PERMISSIONS),
    "roles/storage.admin": ALL_STORAGE_PERMISSIONS,
}


def expand_permissions(names: tuple[str, ...] | list[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name in STORAGE_ROLES:
            out |= STORAGE_ROLES[name]
        elif name.startswith("storage."):
            out.add(name)
        else:
            raise ValueError(f"not a storage permission or known role: {name!r}")
    return out


@dataclass(frozen=True)
class Need:
    """One permission a request needs: on ``bucket`` (None: project level), reported as ``resource``."""

    permission: str
    bucket: str | None
    resource: str  # "object" | "bucket" | "project"


_B = r"(?P<b>[-.\w]+)"
_O = r"(?P<o>.*[^/]+)"
_JSON_ROUTES: tuple[tuple[re.Pattern[str], dict[str, tuple[tuple[str, str], ...]]], ...] = tuple(
    (re.compile(pattern), routes)
    for pattern, routes in (
        (r"^/b$", {"GET": (("buckets.list", "project"),), "POST": (("buckets.create", "project"),)}),
        (
            rf"^/b/{_B}/iam$",
            {"GET": (("buckets.getIamPolicy", "bucket"),), "PUT": (("buckets.setIamPolicy", "bucket"),)},
        ),
        (rf"^/b/{_B}/(?:acl|defaultObjectAcl)$", {"*": (("buckets.getIamPolicy", "bucket"),)}),
        (
            rf"^/b/{_B}$",
            {
                "GET": (("buckets.get", "bucket"),),
                "DELETE": (("buckets.delete", "bucket"),),
                "PATCH": (("buckets.update", "bucket"),),
                "PUT": (("buckets.update", "bucket"),),
            },
        ),
        (
            rf"^/b/{_B}/o$",
            {
                "GET": (("objects.list", "bucket"),),
                "POST": (("objects.create", "object"),),
                "PUT": (("objects.create", "object"),),
            },
        ),
        (rf"^/b/{_B}/o/{_O}/compose$", {"*": (("objects.get", "object"), ("objects.create", "object"))}),
        (
            rf"^/b/{_B}/o/{_O}/acl$",
            {"GET": (("objects.getIamPolicy", "object"),), "*": (("objects.setIamPolicy", "object"),)},
        ),
        (rf"^/b/{_B}/o/{_O}/restore$", {"*": (("objects.restore", "object"),)}),
        (
            rf"^/b/{_B}/o/{_O}$",
            {
                "GET": (("objects.get", "object"),),
                "DELETE": (("objects.delete", "object"),),
                "PATCH": (("objects.update", "object"),),
                "PUT": (("objects.update", "object"),),
            },
        ),
    )
)
_JSON_PREFIX = re.compile(r"^(?:/upload|/download)?(?:/storage/v1)?(?P<rest>/b(?:/.*)?)$")
_COPY = re.compile(rf"^/b/{_B}/o/{_O}/(?:copyTo|rewriteTo)/b/(?P<d>[-.\w]+)/o/(?P<do>.*[^/]+)$")
_TEST_PERMISSIONS = re.compile(rf"^/b/{_B}/iam/testPermissions$")
_XML_OBJECT = re.compile(rf"^/{_B}/{_O}$")
BATCH_PATH = "/batch/storage/v1"


def classify(method: str, path: str) -> tuple[list[Need] | None, bool]:
    """(permissions the request needs, is it the XML API). None: not a GCS resource path."""
    match = _JSON_PREFIX.match(path)
    if match:
        rest = match["rest"]
        copy = _COPY.match(rest)
        if copy:
            return [
                Need("storage.objects.get", copy["b"], "object"),
                Need("storage.objects.create", copy["d"], "object"),
            ], False
        for pattern, routes in _JSON_ROUTES:
            m = pattern.match(rest)
            if m:
                wanted = routes.get(method) or routes.get("*") or ()
                bucket = m.groupdict().get("b")
                return [Need(f"storage.{perm}", bucket, res) for perm, res in wanted], False
        return None, False
    xml = _XML_OBJECT.match(path)
    if xml and method in ("GET", "PUT", "DELETE"):
        perm = {"GET": "get", "PUT": "create", "DELETE": "delete"}[method]
        return [Need(f"storage.objects.{perm}", xml["b"], "object")], True
    return None, False


def classify_batch(body: bytes, content_type: str) -> list[Need]:
    """The permissions of every request in a JSON API batch (parsed as the emulator parses it)."""
    msg = BytesParser().parsebytes(b"Content-Type:" + content_type.encode() + b"\r\n" + body)
    needs: list[Need] = []
    payload = msg.get_payload()
    for item in payload if isinstance(payload, list) else []:
        params = _parse_batch_item(item)
        method, bucket = params.get("method", "GET").upper(), params.get("bucket_name")
        if not bucket:
            continue
        if params.get("dest_bucket_name"):
            needs.append(Need("storage.objects.get", bucket, "object"))
            needs.append(Need("storage.objects.create", params["dest_bucket_name"], "object"))
        elif params.get("object_id"):
            perm = {"GET": "get", "DELETE": "delete"}.get(method, "update")
            needs.append(Need(f"storage.objects.{perm}", bucket, "object"))
        else:
            perm = {"GET": "get", "DELETE": "delete"}.get(method, "update")
            needs.append(Need(f"storage.buckets.{perm}", bucket, "bucket"))
    return needs


def scopes_allow(scopes: frozenset[str], needs: list[Need]) -> bool:
    for need in needs:
        verb = need.permission.rsplit(".", 1)[1]
        if verb in ("getIamPolicy", "setIamPolicy"):
            allowed = FULL_CONTROL_SCOPES
        elif verb in ("get", "list"):
            allowed = READ_SCOPES
        else:
            allowed = WRITE_SCOPES
        if not scopes & allowed:
            return False
    return True


class StorageFrontHandler(RequestHandler):
    """The emulator's handler behind the checks; one instance per request (HTTP/1.0, like the emulator)."""

    disable_nagle_algorithm = True
    sandbox: GcpSandbox

    def __init__(self, *args: Any) -> None:
        super().__init__(self.sandbox._storage, *args)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._front("GET")

    def do_POST(self) -> None:
        self._front("POST")

    def do_PUT(self) -> None:
        self._front("PUT")

    def do_PATCH(self) -> None:
        self._front("PATCH")

    def do_DELETE(self) -> None:
        self._front("DELETE")

    # --- plumbing

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drain(self) -> None:
        """Read an unread request body, so that closing the socket does not reset the connection."""
        with contextlib.suppress(OSError, ValueError):
            _read_raw_data(self)

    def _reject(self, status: int, body: dict[str, Any], xml: bool, headers: dict[str, str] | None = None) -> None:
        self._drain()
        if xml:
            error = body["error"]
            code = {401: "AuthenticationRequired", 403: "AccessDenied"}.get(status, "InternalError")
            message = {401: "Authentication required.", 403: "Access denied."}.get(status, "Internal error.")
            self._send(status, wire.gcs_xml_error(code, message, error["message"]), "application/xml; charset=UTF-8")
        else:
            self._send(status, wire.dumps(body), wire.JSON_UTF8, headers)

    # --- the front

    def _front(self, method: str) -> None:
        sb = self.sandbox
        fault = sb._on_request("storage")
        if fault is not None:
            self._drain()
            status, html, message = fault
            if html:
                self._send(status, wire.google_html_error(status), "text/html; charset=UTF-8")
            else:
                self._send(status, wire.dumps(wire.gcs_fault(status, message)), wire.JSON_UTF8)
            return
        effective = (self.headers.get("x-http-method-override") or method).upper()
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/" and effective == "GET":  # the emulator's health check
            self._dispatch(method)
            return
        if path == "/wipe":  # the emulator's internal reset: not part of GCS
            self._reject(404, wire.gcs_error(404, "Not Found", "notFound"), False)
            return
        xml = False
        if path == BATCH_PATH:
            raw = _read_raw_data(self) or b""
            needs: list[Need] | None = classify_batch(raw, self.headers.get("Content-Type", ""))
            # hand the emulator the body we consumed
            self.rfile = io.BytesIO(raw)
            del self.headers["Transfer-Encoding"]
            del self.headers["Content-Length"]
            self.headers["Content-Length"] = str(len(raw))
        else:
            needs, xml = classify(effective, path)
        first = (needs or [Need("storage.objects.get", None, "object")])[0]

        token, reason = sb._authenticate(self.headers.get("Authorization"))
        if token is None:
            if reason == "CREDENTIALS_MISSING":
                self._reject(401, wire.gcs_anonymous(first.permission, first.resource), xml)
            else:
                self._reject(401, wire.gcs_invalid_credentials(), xml, {"WWW-Authenticate": wire.BEARER_REALM})
            return
        test = _TEST_PERMISSIONS.match(_JSON_PREFIX.match(path)["rest"]) if _JSON_PREFIX.match(path) else None
        if test is not None:
            self._drain()
            asked = parse_qs(parts.query).get("permissions", [])
            held = sb._storage_permissions(token.principal, test["b"])
            body = {"kind": "storage#testIamPermissionsResponse", "permissions": [p for p in asked if p in held]}
            self._send(200, json.dumps(body).encode(), wire.JSON_UTF8)
            return
        if needs and not scopes_allow(token.scopes, needs):
            self._reject(403, wire.gcs_scope_insufficient(), xml)
            return
        for need in needs or []:
            if not sb._storage_allowed(token.principal, need.bucket, need.permission):
                self._reject(403, wire.gcs_forbidden(token.principal, need.permission, need.resource), xml)
                return
        self._dispatch(method)

    def _dispatch(self, method: str) -> None:
        sb = self.sandbox
        try:
            with sb._storage_lock:
                Router(self).handle(method)
        except Exception as exc:  # the emulator raised: answer like a GCS backend error
            log.warning("gcs emulator failed on %s %s: %s", method, self.path, exc)
            self._send(500, wire.dumps(wire.gcs_fault(500, f"Backend Error: {exc}")), wire.JSON_UTF8)
