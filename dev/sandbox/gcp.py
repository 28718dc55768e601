"""A faithful local Google Cloud on 127.0.0.1: a fake GKE metadata server, a fake IAM Credentials API and
a token-checking front over ``gcp_storage_emulator``, seeded with a two-project impersonation scenario.

    with GcpSandbox.start() as sb, sb.patch_google_auth():
        os.environ.update(sb.env())            # or monkeypatch.setenv for each item
        source = google.auth.compute_engine.Credentials()
        reader = sb.scenario.reader_sa
        target = impersonated_credentials.Credentials(
            source, reader, [CLOUD_PLATFORM_SCOPE], iam_endpoint_override=sb.iam_url(reader)
        )

What google-auth needs to reach the fakes (REFERENCE 3.1/3.2):

* ``GCE_METADATA_HOST`` (metadata base URL) is read **once, at import** of ``google.auth.compute_engine._metadata``
  into ``_GCE_METADATA_HOST``; ``NO_GCE_CHECK`` likewise into ``_NO_GCE_CHECK``. Either set :meth:`GcpSandbox.env`
  before anything imports google-auth, or patch the constants (:meth:`GcpSandbox.patch_google_auth_metadata_host`).
* ``GCE_METADATA_IP`` (the ``GET /`` ping of ``google.auth.default()``) is read per call: the env is enough.
* No env var moves the IAM Credentials endpoint: ``impersonated_credentials.Credentials(iam_endpoint_override=
  sb.iam_url(target))`` covers ``generateAccessToken`` only; ``sign_bytes``, ``IDTokenCredentials`` and the DWD
  ``signJwt`` read ``google.auth.iam._IAM_SIGN_ENDPOINT`` / ``_IAM_IDTOKEN_ENDPOINT`` / ``_IAM_SIGNJWT_ENDPOINT``
  (and ``_IAM_ENDPOINT`` without an override) per call: :meth:`GcpSandbox.patch_google_auth_iam_endpoints`.
* google-cloud-storage: ``client_options={"api_endpoint": sb.storage_host}`` or ``STORAGE_EMULATOR_HOST`` (explicit
  credentials are still sent either way; without explicit credentials the env var makes the client anonymous).

Runs in-process (tests) or as its own process (``python -m dev.sandbox start --clouds gcp``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import json
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gcp_storage_emulator.handlers import buckets as emulator_buckets
from gcp_storage_emulator.handlers import objects as emulator_objects
from gcp_storage_emulator.storage import Storage

from . import _fed_gcp, _gcp_secretmanager, _gcp_storage
from . import _gcp_wire as wire
from ._gcp_wire import (
    CLOUD_PLATFORM_SCOPE,
    DEVSTORAGE_FULL_CONTROL_SCOPE,
    DEVSTORAGE_READ_ONLY_SCOPE,
    DEVSTORAGE_READ_WRITE_SCOPE,
    GOOGLE_ISSUER,
    IAM_SCOPE,
    USERINFO_EMAIL_SCOPE,
)
from .faults import Fault, FaultInjector, FaultKind, Reply, answer_fault

log = logging.getLogger(__name__)

__all__ = [
    "AMBIENT_GCP_VARIABLES",
    "CALL_KINDS",
    "CLOUD_PLATFORM_SCOPE",
    "DEVSTORAGE_FULL_CONTROL_SCOPE",
    "DEVSTORAGE_READ_ONLY_SCOPE",
    "DEVSTORAGE_READ_WRITE_SCOPE",
    "IAM_METHODS",
    "IAM_SCOPE",
    "USERINFO_EMAIL_SCOPE",
    "GcpSandbox",
    "GcpScenario",
]

# Every variable through which google-auth / google-cloud-storage could find an ambient identity, project or
# endpoint: what a test should clear before applying GcpSandbox.env().
AMBIENT_GCP_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_AUTH_ACCESS_TOKEN",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "GOOGLE_CLOUD_QUOTA_PROJECT",
    "GOOGLE_CLOUD_UNIVERSE_DOMAIN",
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
    "GCE_METADATA_TIMEOUT",
    "GCE_METADATA_DETECT_RETRIES",
    "GCE_METADATA_MTLS_MODE",
    "NO_GCE_CHECK",
    "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    "GOOGLE_API_USE_MTLS_ENDPOINT",
    "GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED",
    "STORAGE_EMULATOR_HOST",
    "API_ENDPOINT_OVERRIDE",
)

IAM_METHODS = ("generateAccessToken", "generateIdToken", "signBlob", "signJwt")
_IAM_PERMISSIONS = {
    "generateAccessToken": "iam.serviceAccounts.getAccessToken",
    "generateIdToken": "iam.serviceAccounts.getOpenIdToken",
    "signBlob": "iam.serviceAccounts.signBlob",
    "signJwt": "iam.serviceAccounts.signJwt",
}
_IAM_CONSTANTS = {
    "generateAccessToken": "_IAM_ENDPOINT",
    "generateIdToken": "_IAM_IDTOKEN_ENDPOINT",
    "signBlob": "_IAM_SIGN_ENDPOINT",
    "signJwt": "_IAM_SIGNJWT_ENDPOINT",
}
CALL_KINDS = (
    "metadata_token",
    "metadata_identity",
    "metadata_other",
    *IAM_METHODS,
    "iam_other",
    "storage",
)
_GROUPS = {
    "metadata": ("metadata_token", "metadata_identity", "metadata_other"),
    "iam": (*IAM_METHODS, "iam_other"),
}
_CALLER_SCOPES = frozenset({CLOUD_PLATFORM_SCOPE, IAM_SCOPE})  # what IAM Credentials accepts from a caller
DEFAULT_LIFETIME = 3600
MAX_LIFETIME = 43200
_MAX_TOKENS = 10000
METADATA_REMINT_BEFORE = 300  # the metadata server hands out its cached token until 5 min before expiry
_LIFETIME_RE = re.compile(r"^(\d+)(?:\.(\d{1,9}))?s$")
_IAM_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/:]+):(?P<method>[A-Za-z]+)$")
_DELEGATE = re.compile(r"^projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/]+)$")
_METADATA_PREFIX = "/computeMetadata/v1/"


@dataclass(frozen=True)
class GcpScenario:
    """Names of everything the sandbox seeds; relations are properties, so all are attributes."""

    platform_project: str = "platform-proj"
    platform_project_number: str = "100000000001"
    customer_project: str = "customer-proj"
    customer_project_number: str = "200000000002"
    source_sa: str = "airflow-gke@platform-proj.iam.gserviceaccount.com"
    reader_sa: str = "reader@customer-proj.iam.gserviceaccount.com"
    hop_sa: str = "hop@customer-proj.iam.gserviceaccount.com"
    chained_reader_sa: str = "chained-reader@customer-proj.iam.gserviceaccount.com"
    long_lived_sa: str = "long-lived@customer-proj.iam.gserviceaccount.com"
    no_creator_sa: str = "no-creator@customer-proj.iam.gserviceaccount.com"
    missing_sa: str = "missing@customer-proj.iam.gserviceaccount.com"
    bucket_a: str = "customer-bucket-a"
    bucket_a_key: str = "reports/hello.txt"
    bucket_a_body: bytes = b"hello from bucket A\n"
    bucket_b: str = "customer-bucket-b"
    bucket_b_key: str = "secret.txt"
    bucket_b_body: bytes = b"secret in bucket B\n"
    # what the GKE metadata server reports for the pod's GSA (and mints when no ?scopes= is given)
    source_scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE, USERINFO_EMAIL_SCOPE)
    universe_domain: str | None = "googleapis.com"  # None: the metadata server answers 404 (old servers)
    cluster_name: str = "sandbox"
    cluster_location: str = "europe-west1"
    zone: str = "europe-west1-b"
    pod_namespace: str = "airflow"
    pod_service_account: str = "airflow-worker"

    @property
    def workload_pool(self) -> str:
        return f"{self.platform_project}.svc.id.goog"

    @property
    def workload_identity_member(self) -> str:
        """The member bound with ``roles/iam.workloadIdentityUser`` on the source GSA (REFERENCE 6.2)."""
        return f"serviceAccount:{self.workload_pool}[{self.pod_namespace}/{self.pod_service_account}]"

    @property
    def service_accounts(self) -> tuple[str, ...]:
        """Every service account that exists (``missing_sa`` does not)."""
        return (
            self.source_sa,
            self.reader_sa,
            self.hop_sa,
            self.chained_reader_sa,
            self.long_lived_sa,
            self.no_creator_sa,
        )

    @property
    def token_creator_bindings(self) -> tuple[tuple[str, str], ...]:
        """(caller, target): caller holds ``roles/iam.serviceAccountTokenCreator`` on target."""
        return (
            (self.source_sa, self.reader_sa),
            (self.source_sa, self.hop_sa),
            (self.hop_sa, self.chained_reader_sa),
            (self.source_sa, self.long_lived_sa),
        )

    @property
    def lifetime_extension_allowlist(self) -> tuple[str, ...]:
        """SAs in ``constraints/iam.allowServiceAccountCredentialLifetimeExtension`` (up to 43200 s)."""
        return (self.long_lived_sa,)

    @property
    def bucket_grants(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """(principal, bucket, roles/permissions) on the GCS front; nobody but the admin reaches bucket B."""
        read = ("roles/storage.objectViewer", "storage.buckets.get")
        return (
            (self.reader_sa, self.bucket_a, read),
            (self.chained_reader_sa, self.bucket_a, read),
            (self.long_lived_sa, self.bucket_a, read),
        )

    @property
    def objects(self) -> tuple[tuple[str, str, bytes], ...]:
        return (
            (self.bucket_a, self.bucket_a_key, self.bucket_a_body),
            (self.bucket_b, self.bucket_b_key, self.bucket_b_body),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), property):
                value = getattr(self, name)
                out[name] = json.loads(json.dumps(value, default=lambda v: v.decode() if isinstance(v, bytes) else v))
        return out


@dataclass
class _Token:
    principal: str
    scopes: frozenset[str]
    expires_at: float
    origin: str  # "metadata" | "generateAccessToken" | "minted"


@dataclass
class _ServiceAccount:
    email: str
    unique_id: str
    key: rsa.RSAPrivateKey | None = None
    key_id: str = ""


@dataclass
class _State:
    """Mutable sandbox state (guarded by ``GcpSandbox._lock``)."""

    tokens: dict[str, _Token] = field(default_factory=dict)
    metadata_cache: dict[frozenset[str], str] = field(default_factory=dict)
    accounts: dict[str, _ServiceAccount] = field(default_factory=dict)
    token_creators: set[tuple[str, str]] = field(default_factory=set)
    lifetime_allowlist: set[str] = field(default_factory=set)
    bucket_acl: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    token_ttl: int | None = None
    metadata_scopes: tuple[str, ...] | None = None
    id_tokens: list[str] = field(default_factory=list)  # every ID token issued (read by issued_secrets())


def _unique_id(email: str) -> str:
    """A stable 21-digit numeric id, like the ``uniqueId``/``sub`` of a real service account."""
    return "1" + str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- HTTP plumbing -------------------------------------------------------------------------------------


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    sandbox: GcpSandbox

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes | str, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# --- the fake GKE metadata server ------------------------------------------------------------------------


class _MetadataHandler(_JsonHandler):
    """``http://metadata.google.internal`` as the GKE metadata server answers a Workload Identity pod."""

    server_version = "GKE Metadata Server"
    sys_version = ""

    def _reply(self, status: int, body: bytes | str | dict[str, Any] | list[Any]) -> None:
        if isinstance(body, dict | list):
            self._send(status, json.dumps(body), "application/json", {"Metadata-Flavor": "Google"})
        else:
            self._send(status, body, "application/text", {"Metadata-Flavor": "Google"})

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:  # bound-token requests (Agent Identity) POST a certificate chain
        self._read_body()
        self._handle()

    def _handle(self) -> None:
        sb = self.sandbox
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path.endswith("/token"):
            kind = "metadata_token"
        elif path.endswith("/identity"):
            kind = "metadata_identity"
        else:
            kind = "metadata_other"
        if answer_fault(self, sb.faults, sb._take(kind), error=_metadata_error, malformed=_METADATA_TRUNCATED):
            return
        if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
            self._reply(403, 'Missing required header "Metadata-Flavor": "Google"\n')
            return
        if path == "/":
            self._reply(200, "computeMetadata/\n")
            return
        if not path.startswith(_METADATA_PREFIX):
            self._reply(404, "Not Found\n")
            return
        status, body = sb._metadata(path[len(_METADATA_PREFIX) :], query)
        self._reply(status, body)


# --- the fake IAM Credentials API -----------------------------------------------------------------------


class _IamHandler(_JsonHandler):
    """``https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{EMAIL}:{method}``."""

    server_version = "ESF"
    sys_version = ""

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, wire.dumps(body) if status >= 400 else json.dumps(body), wire.JSON_UTF8, headers)

    def do_GET(self) -> None:
        self._read_body()
        self._json(404, wire.esf_error(404, "Method not found."))

    def do_POST(self) -> None:
        sb = self.sandbox
        raw = self._read_body()
        match = _IAM_PATH.match(urlsplit(self.path).path)
        method = match["method"] if match else ""
        kind = method if method in IAM_METHODS else "iam_other"
        if answer_fault(self, sb.faults, sb._take(kind), error=_iam_error, malformed=_IAM_TRUNCATED):
            return
        if match is None or method not in IAM_METHODS:
            self._json(404, wire.esf_error(404, "Method not found."))
            return
        status, body, headers = sb._iam(match["project"], unquote(match["account"]), method, raw, self.headers)
        self._json(status, body, headers)


# --- Google's OIDC discovery and signing keys (accounts.google.com / www.googleapis.com/oauth2/v3/certs) --


class _GoogleKeysHandler(_JsonHandler):
    """What another cloud fetches to verify Google ID tokens: ``/.well-known/openid-configuration`` (issuer
    ``https://accounts.google.com``) and ``/oauth2/v3/certs`` (the JWKS, the ``kid`` the ID tokens carry)."""

    server_version = "ESF"
    sys_version = ""

    def do_GET(self) -> None:
        sb = self.sandbox
        path = urlsplit(self.path).path
        if path == "/oauth2/v3/certs":
            body: dict[str, Any] = sb.google_jwks()
        elif path == "/.well-known/openid-configuration":
            body = {
                "issuer": GOOGLE_ISSUER,
                "jwks_uri": sb.google_jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
                "response_types_supported": ["id_token"],
                "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "sub"],
            }
        else:
            self._send(404, json.dumps({"error": "not_found"}), "application/json")
            return
        self._send(200, json.dumps(body), "application/json; charset=UTF-8", {"Cache-Control": "public, max-age=60"})


# --- injected faults (dev/sandbox/faults.py) -------------------------------------------------------------

_METADATA_TRUNCATED = Reply(200, "application/json", b'{"access_token":"ya29.', (("Metadata-Flavor", "Google"),))
_IAM_TRUNCATED = Reply(200, wire.JSON_UTF8, b'{"accessToken":"ya29.')


def _html(fault: Fault) -> bool:
    """Google's front end answers 502s with an HTML page; other statuses come from the service itself."""
    return fault.html if fault.html is not None else fault.status == 502


def _metadata_error(fault: Fault) -> Reply:
    if _html(fault):
        return Reply(fault.status, "text/html; charset=UTF-8", wire.google_html_error(fault.status))
    text = (fault.message or ("Too many requests" if fault.status == 429 else "Internal Server Error")) + "\n"
    return Reply(fault.status, "application/text", text.encode(), (("Metadata-Flavor", "Google"),))


def _iam_error(fault: Fault) -> Reply:
    if _html(fault):
        return Reply(fault.status, "text/html; charset=UTF-8", wire.google_html_error(fault.status))
    return Reply(fault.status, wire.JSON_UTF8, wire.dumps(wire.esf_fault(fault.status, fault.message)))


# --- the sandbox ---------------------------------------------------------------------------------------


class GcpSandbox:
    """Local Google Cloud for workload-identity tests. Create with :meth:`start`; stop with :meth:`stop` or ``with``."""

    def __init__(self, *, scenario: GcpScenario | None = None) -> None:
        self.scenario = scenario or GcpScenario()
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="awi-gcp-sandbox-"))
        self.gcloud_config_dir = self.tmp_dir / "gcloud"  # empty: no gcloud ADC file to find
        self.gcloud_config_dir.mkdir()
        self._lock = threading.RLock()
        self._state = _State()
        self._storage = Storage(use_memory_fs=True)
        self._storage_lock = threading.Lock()
        self._google_key: rsa.RSAPrivateKey | None = None
        self._google_kid = secrets.token_hex(20)
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
        #: Fault switches of ``metadata``, ``iam`` (and the ``storage`` front); see :mod:`dev.sandbox.faults`.
        self.faults = FaultInjector(("metadata", "iam", "storage"))
        self.metadata_host = ""
        self.iam_endpoint = ""
        self.storage_host = ""
        self.google_keys_url = ""
        #: Workload identity pools and the Google STS token exchange (``_fed_gcp.py``); ``sts_endpoint`` serves it.
        self.federation = _fed_gcp.Federation(self)
        self.sts_endpoint = ""
        self._started = False
        self._stopped = False

    # --- lifecycle

    @classmethod
    def start(
        cls,
        *,
        scenario: GcpScenario | None = None,
        metadata_port: int = 0,
        iam_port: int = 0,
        storage_port: int = 0,
    ) -> GcpSandbox:
        sb = cls(scenario=scenario)
        try:
            sb._start(metadata_port, iam_port, storage_port)
        except BaseException:
            sb.stop()
            raise
        return sb

    def _serve(self, name: str, handler: type[BaseHTTPRequestHandler], port: int) -> int:
        bound = type(handler.__name__, (handler,), {"sandbox": self})
        server = ThreadingHTTPServer(("127.0.0.1", port), bound)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name=f"gcp-sandbox-{name}", daemon=True)
        thread.start()
        self._servers.append((server, thread))
        return int(server.server_address[1])

    def _start(self, metadata_port: int, iam_port: int, storage_port: int) -> None:
        self.seed()
        self.metadata_host = f"127.0.0.1:{self._serve('metadata', _MetadataHandler, metadata_port)}"
        self.iam_endpoint = f"http://127.0.0.1:{self._serve('iam', _IamHandler, iam_port)}"
        self.storage_host = f"http://127.0.0.1:{self._serve('storage', _gcp_storage.StorageFrontHandler, storage_port)}"
        self.sts_endpoint = f"http://127.0.0.1:{self._serve('sts', _fed_gcp.StsHandler, 0)}"
        # Google's signing keys over loopback, for the other clouds' sandboxes to verify Google ID tokens with
        self.google_keys_url = f"http://127.0.0.1:{self._serve('google-keys', _GoogleKeysHandler, 0)}"
        # Secret Manager API (secrets backends): secrets and their IAM live in the fake (_gcp_secretmanager.py)
        sc = self.scenario
        projects = {sc.platform_project: sc.platform_project_number, sc.customer_project: sc.customer_project_number}
        self.secret_manager = _gcp_secretmanager.SecretManagerFake(self, projects)
        self.secret_manager_endpoint = (
            f"http://127.0.0.1:{self._serve('secretmanager', _gcp_secretmanager.SecretManagerHandler, 0)}"
        )
        self._started = True

    def seed(self) -> None:
        """(Re)create the scenario: service accounts, Token Creator bindings, allowlist, buckets and objects.
        Keeps issued tokens and counters; grants made by a test are reset to the scenario's."""
        sc = self.scenario
        with self._lock:
            st = self._state
            for email in sc.service_accounts:
                st.accounts.setdefault(email, _ServiceAccount(email, _unique_id(email)))
            st.token_creators = set(sc.token_creator_bindings)
            st.lifetime_allowlist = set(sc.lifetime_extension_allowlist)
            st.bucket_acl = {}
        for bucket in (sc.bucket_a, sc.bucket_b):
            self.admin_create_bucket(bucket)
        for principal, bucket, grants in sc.bucket_grants:
            self.grant_storage(principal, bucket, *grants)
        for bucket, name, data in sc.objects:
            self.admin_upload(bucket, name, data, content_type="text/plain")

    def stop(self) -> None:
        """Stop the three servers and delete the temp dir. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.faults.close()
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> GcpSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    # --- endpoints

    @property
    def metadata_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the ping URL; the API lives under ``/computeMetadata/v1/``)."""
        return f"http://{self.metadata_host}"

    def iam_url(self, target: str = "{}", method: str = "generateAccessToken") -> str:
        """Full IAM Credentials URL for ``target`` (``iam_endpoint_override``); default: the ``{}`` template."""
        if method not in IAM_METHODS:
            raise ValueError(f"unknown IAM Credentials method {method!r}")
        return f"{self.iam_endpoint}/v1/projects/-/serviceAccounts/{target}:{method}"

    # --- environments

    def env_isolation(self) -> dict[str, str]:
        """Blank out ambient Google identities: no key file, an empty gcloud config dir, no project override."""
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": str(self.gcloud_config_dir),
            "GCE_METADATA_MTLS_MODE": "none",
            "NO_GCE_CHECK": "false",
        }

    def env_gke(self) -> dict[str, str]:
        """What points a GKE pod's google-auth at this metadata server (both variables: REFERENCE 3.1)."""
        return {"GCE_METADATA_HOST": self.metadata_host, "GCE_METADATA_IP": self.metadata_host}

    def env(self, *, storage: bool = True) -> dict[str, str]:
        """Isolation + GKE metadata (+ ``STORAGE_EMULATOR_HOST`` so that clients built elsewhere, e.g. by
        ``GCSHook``, reach the GCS front; they still send their credentials). ``GCE_METADATA_HOST`` only
        works if set before google-auth is imported: otherwise use :meth:`patch_google_auth_metadata_host`."""
        env = {**self.env_isolation(), **self.env_gke()}
        if storage:
            env["STORAGE_EMULATOR_HOST"] = self.storage_host
        return env

    # --- google-auth module constants

    def google_auth_patches(self, *, metadata: bool = True, iam: bool = True) -> list[tuple[str, str, Any]]:
        """(module, attribute, value) to set so that an already-imported google-auth reaches the fakes."""
        patches: list[tuple[str, str, Any]] = []
        if metadata:
            patches.append(("google.auth.compute_engine._metadata", "_GCE_METADATA_HOST", self.metadata_host))
            patches.append(("google.auth.compute_engine._metadata", "_NO_GCE_CHECK", False))
        if iam:
            patches.append(
                ("google.auth.iam", "_IAM_BASE_URL", f"{self.iam_endpoint}/v1/projects/-/serviceAccounts/{{}}")
            )
            for method, constant in _IAM_CONSTANTS.items():
                patches.append(("google.auth.iam", constant, self.iam_url("{}", method)))
        return patches

    @contextlib.contextmanager
    def patch_google_auth(self, *, metadata: bool = True, iam: bool = True) -> Iterator[None]:
        """Set :meth:`google_auth_patches` for the ``with`` block (restored after). Not thread-scoped."""
        saved: list[tuple[Any, str, Any]] = []
        try:
            for module_name, attribute, value in self.google_auth_patches(metadata=metadata, iam=iam):
                module = importlib.import_module(module_name)
                saved.append((module, attribute, getattr(module, attribute)))
                setattr(module, attribute, value)
            yield
        finally:
            for module, attribute, value in reversed(saved):
                setattr(module, attribute, value)

    def patch_google_auth_metadata_host(self) -> contextlib.AbstractContextManager[None]:
        """``_metadata._GCE_METADATA_HOST`` (read at import) → this metadata server; ``_NO_GCE_CHECK`` off."""
        return self.patch_google_auth(iam=False)

    def patch_google_auth_iam_endpoints(self) -> contextlib.AbstractContextManager[None]:
        """``google.auth.iam._IAM_*ENDPOINT`` → this IAM Credentials fake (sign_bytes, ID tokens, signJwt)."""
        return self.patch_google_auth(metadata=False)

    # --- counters, faults, latency, lifetimes

    @staticmethod
    def _kinds(kind: str | None) -> tuple[str, ...]:
        if kind in (None, "*"):
            return CALL_KINDS
        if kind in _GROUPS:
            return _GROUPS[kind]
        if kind in CALL_KINDS:
            return (kind,)
        raise ValueError(f"unknown call kind {kind!r}; one of {CALL_KINDS} or {tuple(_GROUPS)}")

    def calls(self, kind: str | None = None) -> int:
        """Requests received of ``kind`` (a call kind, ``"metadata"``, ``"iam"`` or None: all), faults included."""
        kinds = self._kinds(kind)
        with self._lock:
            return sum(self._state.calls[k] for k in kinds)

    def calls_by_kind(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self._state.calls.items() if v}

    def reset_calls(self) -> None:
        with self._lock:
            self._state.calls.clear()

    def inject_fault(
        self, kind: str | None, status: int = 502, times: int = 1, html: bool = True, message: str | None = None
    ) -> None:
        """The next ``times`` requests of ``kind`` (or group, None: any) fail with ``status``: Google's HTML
        error page (``html``) or the service's JSON error (ESF for IAM, GCS JSON for storage, text for metadata)."""
        endpoint, match = self._fault_target(kind)
        self.faults.inject(endpoint, Fault.error(status, times=times, html=html, message=message), match=match)

    def _fault_target(self, kind: str | None) -> tuple[str | None, str | None]:
        """(endpoint, sub-kind) of the fault switches for a call kind, a group or None/``"*"`` (any)."""
        self._kinds(kind)
        if kind in (None, "*"):
            return None, None
        if kind in _GROUPS or kind == "storage":
            return kind, None
        return next(g for g, members in _GROUPS.items() if kind in members), kind

    def clear_faults(self) -> None:
        """Disarm every fault (held requests are released)."""
        self.faults.clear()

    def set_latency(self, kind: str | None, seconds: float) -> None:
        """Delay every request of ``kind`` (a kind, a group or None: all) by ``seconds``; 0 clears."""
        endpoint, match = self._fault_target(kind)
        self.faults.set_latency(endpoint, seconds, match=match)

    def clear_latency(self) -> None:
        self.faults.clear_latency()

    def reset(self) -> None:
        """Back to the scenario: no faults, latency, forced TTL or fixed metadata scopes; grants, allowlist,
        service accounts and seeded objects as seeded. Issued tokens and counters are kept."""
        self.clear_faults()
        self.clear_latency()
        self.force_token_ttl(None)
        self.set_metadata_scopes(None)
        self.federation.reset()
        with self._lock:
            known = set(self.scenario.service_accounts)
            for email in [e for e in self._state.accounts if e not in known]:
                del self._state.accounts[email]
        self.seed()

    def force_token_ttl(self, seconds: int | None) -> None:
        """Tokens minted from now on (metadata ``expires_in``, ``expireTime``, ID-token ``exp``) live
        ``seconds`` instead of their lifetime (None: normal). Drops the metadata server's token cache."""
        with self._lock:
            self._state.token_ttl = seconds
            self._state.metadata_cache.clear()

    def set_metadata_scopes(self, scopes: list[str] | tuple[str, ...] | None) -> None:
        """Fix the scopes of every metadata token (``?scopes=`` ignored, as on a GCE node with restricted
        access scopes); None: the GKE behaviour (requested scopes, else ``scenario.source_scopes``)."""
        with self._lock:
            self._state.metadata_scopes = tuple(scopes) if scopes is not None else None
            self._state.metadata_cache.clear()

    def _take(self, kind: str) -> Fault | None:
        """Count a request of ``kind`` and return the fault armed for it, if any (after any added latency)."""
        with self._lock:
            self._state.calls[kind] += 1
        endpoint = next((g for g, members in _GROUPS.items() if kind in members), "storage")
        return self.faults.take(endpoint, kind)

    def _on_request(self, kind: str) -> tuple[int, bool, str | None] | None:
        """The storage front's view: ``(status, html, message)`` of an error fault (slow ones just wait)."""
        fault = self._take(kind)
        if fault is None:
            return None
        if fault.kind is FaultKind.SLOW:
            time.sleep(fault.seconds)
            return None
        if fault.kind in (FaultKind.ERROR, FaultKind.THROTTLE):
            return fault.status, _html(fault), fault.message
        return None

    # --- identities and IAM policy

    def grant_token_creator(self, caller: str, target: str) -> None:
        """``caller`` gets ``roles/iam.serviceAccountTokenCreator`` on ``target``."""
        with self._lock:
            self._state.token_creators.add((caller, target))

    def revoke_token_creator(self, caller: str, target: str) -> None:
        with self._lock:
            self._state.token_creators.discard((caller, target))

    def has_token_creator(self, caller: str, target: str) -> bool:
        with self._lock:
            return (caller, target) in self._state.token_creators

    def allow_lifetime_extension(self, email: str, allowed: bool = True) -> None:
        """Add/remove ``email`` to/from the lifetime-extension org-policy allowlist."""
        with self._lock:
            (self._state.lifetime_allowlist.add if allowed else self._state.lifetime_allowlist.discard)(email)

    def add_service_account(self, email: str) -> str:
        """Create a service account (idempotent); returns its unique id."""
        with self._lock:
            account = self._state.accounts.setdefault(email, _ServiceAccount(email, _unique_id(email)))
            return account.unique_id

    def delete_service_account(self, email: str) -> None:
        with self._lock:
            self._state.accounts.pop(email, None)

    def unique_id(self, email: str) -> str:
        with self._lock:
            return self._state.accounts[email].unique_id

    def grant_storage(self, principal: str, bucket: str, *roles_or_permissions: str) -> None:
        """Grant roles (``roles/storage.objectViewer``…) or permissions (``storage.buckets.get``) on a bucket."""
        permissions = _gcp_storage.expand_permissions(roles_or_permissions)
        with self._lock:
            self._state.bucket_acl.setdefault(bucket, {}).setdefault(principal, set()).update(permissions)

    def revoke_storage(self, principal: str, bucket: str, *roles_or_permissions: str) -> None:
        """Revoke the given roles/permissions (none given: everything ``principal`` holds on ``bucket``)."""
        with self._lock:
            held = self._state.bucket_acl.get(bucket, {}).get(principal)
            if held is None:
                return
            if roles_or_permissions:
                held -= _gcp_storage.expand_permissions(roles_or_permissions)
            else:
                held.clear()

    def _storage_permissions(self, principal: str, bucket: str | None) -> set[str]:
        with self._lock:
            if bucket is None:  # project-level permissions: nobody but the admin (not modelled)
                return set()
            acl = self._state.bucket_acl.get(bucket, {})
            members = (principal, *self.federation.member_sets(principal))  # a federated principal's sets too
            return set().union(*(acl.get(member, set()) for member in members))

    def _storage_allowed(self, principal: str, bucket: str | None, permission: str) -> bool:
        return permission in self._storage_permissions(principal, bucket)

    # --- tokens

    def _mint(self, principal: str, scopes: frozenset[str], lifetime: int, origin: str) -> tuple[str, _Token]:
        with self._lock:
            if len(self._state.tokens) > _MAX_TOKENS:  # a long-running demo: forget long-expired tokens
                horizon = time.time() - 3600
                self._state.tokens = {k: v for k, v in self._state.tokens.items() if v.expires_at > horizon}
            ttl = self._state.token_ttl
            token = "ya29.sandbox-" + secrets.token_urlsafe(32)
            record = _Token(principal, scopes, time.time() + (lifetime if ttl is None else ttl), origin)
            self._state.tokens[token] = record
            return token, record

    def mint_token(
        self, principal: str, scopes: list[str] | tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,), ttl: int = 3600
    ) -> str:
        """An access token for ``principal`` the fakes accept (test helper; not counted as a call)."""
        with self._lock:
            token = "ya29.sandbox-" + secrets.token_urlsafe(32)
            self._state.tokens[token] = _Token(principal, frozenset(scopes), time.time() + ttl, "minted")
            return token

    def expire_token(self, token: str) -> None:
        """Make a known token expired now (the fakes then answer 401 for it)."""
        with self._lock:
            record = self._state.tokens.get(token)
            if record is None:
                raise KeyError("unknown token")
            record.expires_at = time.time() - 1
            self._state.metadata_cache = {k: v for k, v in self._state.metadata_cache.items() if v != token}

    def token_info(self, token: str) -> dict[str, Any] | None:
        """What the sandbox knows about ``token``: principal, scopes, expires_at (epoch), origin; None if unknown."""
        with self._lock:
            record = self._state.tokens.get(token)
            if record is None:
                return None
            return {
                "principal": record.principal,
                "scopes": sorted(record.scopes),
                "expires_at": record.expires_at,
                "expired": record.expires_at <= time.time(),
                "origin": record.origin,
            }

    def _authenticate(self, authorization: str | None) -> tuple[_Token | None, str]:
        """(token, "") or (None, reason): CREDENTIALS_MISSING, ACCESS_TOKEN_EXPIRED, ACCESS_TOKEN_TYPE_UNSUPPORTED."""
        if not authorization:
            return None, "CREDENTIALS_MISSING"
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            return None, "CREDENTIALS_MISSING"
        with self._lock:
            record = self._state.tokens.get(value)
        if record is None:
            # an unknown opaque ya29 token looks like a revoked/expired one; anything else is not an access token
            return None, "ACCESS_TOKEN_EXPIRED" if value.startswith("ya29.") else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if record.expires_at <= time.time():
            return None, "ACCESS_TOKEN_EXPIRED"
        return record, ""

    # --- keys and signatures

    def _google_private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._google_key is None:
                self._google_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._google_key

    def google_public_key(self) -> rsa.RSAPublicKey:
        """The key that signs ID tokens (``iss`` https://accounts.google.com); ``kid`` is :attr:`google_kid`."""
        return self._google_private_key().public_key()

    @property
    def google_kid(self) -> str:
        return self._google_kid

    def google_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Google's JWKS (``https://www.googleapis.com/oauth2/v3/certs``): the key ID tokens are signed with."""
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.google_public_key()))
        return {"keys": [{**jwk, "kid": self._google_kid, "alg": "RS256", "use": "sig"}]}

    @property
    def google_jwks_url(self) -> str:
        """Where the JWKS is served on loopback (stands for ``https://www.googleapis.com/oauth2/v3/certs``)."""
        return f"{self.google_keys_url}/oauth2/v3/certs"

    @property
    def google_discovery_url(self) -> str:
        """OIDC discovery of ``https://accounts.google.com`` on loopback (its ``jwks_uri`` is the JWKS above)."""
        return f"{self.google_keys_url}/.well-known/openid-configuration"

    def _account_key(self, email: str) -> tuple[rsa.RSAPrivateKey, str]:
        with self._lock:
            account = self._state.accounts[email]
            if account.key is None:
                account.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                der = account.key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                account.key_id = hashlib.sha1(der).hexdigest()
            return account.key, account.key_id

    def public_key(self, email: str) -> rsa.RSAPublicKey:
        """The Google-managed key of a service account that signs its ``signBlob``/``signJwt`` results."""
        return self._account_key(email)[0].public_key()

    def key_id(self, email: str) -> str:
        return self._account_key(email)[1]

    def _id_token(self, email: str, audience: str, include_email: bool) -> str:
        with self._lock:
            ttl = self._state.token_ttl
            uid = self._state.accounts[email].unique_id
        now = int(time.time())
        claims: dict[str, Any] = {"aud": audience, "azp": uid}
        if include_email:
            claims.update(email=email, email_verified=True)
        claims.update(exp=now + (3600 if ttl is None else ttl), iat=now, iss=GOOGLE_ISSUER, sub=uid)
        token = jwt.encode(claims, self._google_private_key(), algorithm="RS256", headers={"kid": self._google_kid})
        with self._lock:
            self._state.id_tokens.append(token)
        return token

    def issued_secrets(self) -> list[str]:
        """Every access token (metadata and IAM Credentials) and ID token issued so far (secrets tests)."""
        with self._lock:
            return [*self._state.tokens, *self._state.id_tokens]

    def verify_id_token(self, token: str, audience: str) -> dict[str, Any]:
        """Check an ID token minted by the fakes (signature, ``iss``, ``aud``, ``exp``); returns its claims."""
        return jwt.decode(
            token, self.google_public_key(), algorithms=["RS256"], audience=audience, issuer=GOOGLE_ISSUER
        )

    # --- storage administration (bypasses the front)

    def admin_create_bucket(self, bucket: str) -> None:
        with self._storage_lock:
            emulator_buckets.create_bucket(bucket, self._storage)

    def admin_upload(self, bucket: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write an object straight into the emulator (bucket created if missing); no token needed."""
        self.admin_create_bucket(bucket)
        obj = emulator_objects._make_object_resource(
            self.storage_host or "http://127.0.0.1", bucket, name, content_type, str(len(data))
        )
        obj = emulator_objects._checksums(data, obj)
        with self._storage_lock:
            self._storage.create_file(bucket, name, data, obj)

    def admin_download(self, bucket: str, name: str) -> bytes:
        with self._storage_lock:
            return bytes(self._storage.get_file(bucket, name))

    # --- the metadata server's answers

    def _metadata_token(self, requested: str | None) -> dict[str, Any]:
        sc = self.scenario
        with self._lock:
            st = self._state
            if st.metadata_scopes is not None:
                scopes = frozenset(st.metadata_scopes)
            elif requested:
                scopes = frozenset(s.strip() for s in requested.split(",") if s.strip())
            else:
                scopes = frozenset(sc.source_scopes)
            now = time.time()
            cached = st.metadata_cache.get(scopes)
            record = st.tokens.get(cached) if cached else None
            if cached and record is not None and record.expires_at - now > METADATA_REMINT_BEFORE:
                token = cached
            else:
                token, record = self._mint(sc.source_sa, scopes, DEFAULT_LIFETIME, "metadata")
                st.metadata_cache[scopes] = token
            expires_in = max(int(record.expires_at - now) - 1, 0)
        return {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}

    def _metadata_scopes_reported(self) -> list[str]:
        with self._lock:
            scopes = self._state.metadata_scopes
        return list(scopes if scopes is not None else self.scenario.source_scopes)

    def _metadata(self, path: str, query: dict[str, str]) -> tuple[int, str | dict[str, Any]]:
        sc = self.scenario
        simple = {
            "project/project-id": sc.platform_project,
            "project/numeric-project-id": sc.platform_project_number,
            "instance/zone": f"projects/{sc.platform_project_number}/zones/{sc.zone}",
            "instance/attributes/cluster-name": sc.cluster_name,
            "instance/attributes/cluster-location": sc.cluster_location,
            "instance/service-accounts/": f"default/\n{sc.source_sa}/\n",
        }
        if path in simple:
            return 200, simple[path]
        if path == "":
            return 200, "instance/\nproject/\nuniverse/\n"
        if path == "universe/universe-domain":
            return (200, sc.universe_domain) if sc.universe_domain else (404, "Not Found\n")
        match = re.match(r"^instance/service-accounts/(?P<account>[^/]+)(?:/(?P<leaf>.*))?$", path)
        if match is None or match["account"] not in ("default", sc.source_sa):
            return 404, "Not Found\n"
        leaf = match["leaf"] or ""
        if leaf == "":
            if query.get("recursive") == "true":
                return 200, {"aliases": ["default"], "email": sc.source_sa, "scopes": self._metadata_scopes_reported()}
            return 200, "aliases\nemail\nidentity\nscopes\ntoken\n"
        if leaf == "email":
            return 200, sc.source_sa
        if leaf == "aliases":
            return 200, "default\n"
        if leaf == "scopes":
            return 200, "".join(f"{s}\n" for s in self._metadata_scopes_reported())
        if leaf == "token":
            return 200, self._metadata_token(query.get("scopes"))
        if leaf == "identity":
            audience = query.get("audience", "")
            if not audience:
                return 400, "non-empty audience parameter required\n"
            return 200, self._id_token(sc.source_sa, audience, include_email=query.get("format") == "full")
        return 404, "Not Found\n"

    # --- the IAM Credentials API's answers

    def _resolve(self, account: str) -> str | None:
        """An e-mail or unique id → the e-mail of an existing service account (None: no such account)."""
        with self._lock:
            if account in self._state.accounts:
                return account
            return next((a.email for a in self._state.accounts.values() if a.unique_id == account), None)

    def _iam(
        self, project: str, account: str, method: str, raw: bytes, headers: Any
    ) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        token, reason = self._authenticate(headers.get("Authorization"))
        if token is None:
            realm = wire.BEARER_REALM
            if reason != "CREDENTIALS_MISSING":
                realm += ', error="invalid_token"'
            return 401, wire.unauthenticated(reason), {"WWW-Authenticate": realm}
        if not token.scopes & _CALLER_SCOPES:
            scope_header = (
                f'{wire.BEARER_REALM}, error="insufficient_scope", scope="{IAM_SCOPE} {CLOUD_PLATFORM_SCOPE}"'
            )
            return 403, wire.scope_insufficient(), {"WWW-Authenticate": scope_header}
        if project != "-":
            return 400, wire.invalid_argument(), None
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return 400, wire.invalid_argument("Invalid JSON payload received."), None
        delegates: list[str] = []
        for item in body.get("delegates") or []:
            if not isinstance(item, str):
                return 400, wire.invalid_argument(), None
            m = _DELEGATE.match(item)
            if m is not None and m["project"] != "-":
                return 400, wire.invalid_argument(), None
            delegates.append(unquote(m["account"]) if m else item)

        # method-specific arguments
        lifetime = DEFAULT_LIFETIME
        if method == "generateAccessToken":
            scopes = body.get("scope")
            if isinstance(scopes, str):
                scopes = [scopes]
            if not scopes or not all(isinstance(s, str) and s for s in scopes):
                return 400, wire.invalid_argument(), None
            if body.get("lifetime") not in (None, ""):
                m = _LIFETIME_RE.match(str(body["lifetime"]))
                if m is None:
                    message = (
                        "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), "
                        f'"{body["lifetime"]}"'
                    )
                    return 400, wire.invalid_argument(message), None
                lifetime = int(m[1]) or DEFAULT_LIFETIME
        elif method == "generateIdToken":
            if not isinstance(body.get("audience"), str) or not body["audience"]:
                return 400, wire.invalid_argument(), None
        elif not isinstance(body.get("payload"), str) or not body["payload"]:
            return 400, wire.invalid_argument(), None

        # existence of every account on the chain, then Token Creator per hop
        chain: list[str] = []
        for name in [*delegates, account]:
            email = self._resolve(name)
            if email is None:
                return 404, wire.gaia_not_found(name), None
            chain.append(email)
        permission = _IAM_PERMISSIONS[method]
        callers = [token.principal, *chain[:-1]]
        with self._lock:
            for caller, next_hop in zip(callers, chain, strict=True):
                members = (caller, *self.federation.member_sets(caller))  # a federated principal's sets too
                if not any((member, next_hop) in self._state.token_creators for member in members):
                    return 403, wire.iam_permission_denied(permission), None
            allowlisted = chain[-1] in self._state.lifetime_allowlist
        target = chain[-1]

        if method == "generateAccessToken":
            if lifetime > DEFAULT_LIFETIME and not allowlisted:
                return 400, wire.lifetime_too_long(target), None
            if lifetime > MAX_LIFETIME:
                return (
                    400,
                    wire.invalid_argument(
                        f"Access tokens for service account {target} can not have lifetimes of more than 12 hours."
                    ),
                    None,
                )
            access_token, record = self._mint(target, frozenset(scopes), lifetime, "generateAccessToken")
            return 200, {"accessToken": access_token, "expireTime": wire.rfc3339_z(record.expires_at)}, None
        if method == "generateIdToken":
            include_email = bool(body.get("includeEmail"))
            return 200, {"token": self._id_token(target, body["audience"], include_email)}, None
        key, key_id = self._account_key(target)
        if method == "signBlob":
            try:
                payload = base64.b64decode(body["payload"], validate=True)
            except ValueError:
                return (
                    400,
                    wire.invalid_argument("Invalid value at 'payload' (TYPE_BYTES), Base64 decoding failed."),
                    None,
                )
            signature = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
            return 200, {"keyId": key_id, "signedBlob": _b64(signature)}, None
        try:
            claims = json.loads(body["payload"])
            if not isinstance(claims, dict):
                raise ValueError("not an object")
        except ValueError:
            return 400, wire.invalid_argument("Payload is not a valid JSON object."), None
        signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id})
        return 200, {"keyId": key_id, "signedJwt": signed}, None

    # --- description (for the CLI's state file)

    def describe(self) -> dict[str, Any]:
        return {
            "metadata_host": self.metadata_host,
            "metadata_url": self.metadata_url,
            "iam_endpoint": self.iam_endpoint,
            "iam_urls": {method: self.iam_url("{}", method) for method in IAM_METHODS},
            "storage_host": self.storage_host,
            "secret_manager_endpoint": self.secret_manager_endpoint,
            "tmp_dir": str(self.tmp_dir),
            "scenario": self.scenario.to_dict(),
            "google_auth_patches": [
                {"module": module, "attribute": attribute, "value": value}
                for module, attribute, value in self.google_auth_patches()
            ],
            "env": {
                "isolation": self.env_isolation(),
                "gke": self.env_gke(),
                "storage": {"STORAGE_EMULATOR_HOST": self.storage_host},
            },
        }
