"""A faithful local Azure on 127.0.0.1 for workload-identity tests: a fake IMDS (http), a fake Microsoft
Entra token endpoint (https, test CA), and Azurite's Blob service (https, ``--oauth basic``) behind an
RBAC proxy, seeded with an AKS workload-identity scenario.

    with AzureSandbox.start() as sb:
        token_file = sb.write_sa_token()
        env = {**sb.env_tls(), **sb.env_workload_identity(token_file)}

What azure-identity 1.27 needs to reach the fakes (all read at request time unless noted):

* Workload identity: ``AZURE_AUTHORITY_HOST=https://127.0.0.1:<p>`` (or ``authority=``; https only) plus
  ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_FEDERATED_TOKEN_FILE``. No instance discovery.
* IMDS: ``AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:<p>``. It is the only redirect that reaches
  both paths: the sync credential asks MSAL (``msal.managed_identity._obtain_token_on_azure_vm`` reads
  the variable, default ``http://169.254.169.254``), the async one and the DefaultAzureCredential probe
  use ``azure.identity._credentials.imds._get_request`` (the variable, else the module constant
  ``IMDS_AUTHORITY``). Patching ``IMDS_AUTHORITY`` alone redirects the probe and async only: the sync
  token request would still go to 169.254.169.254. When the variable is set at credential construction
  the probe is skipped (``_endpoint_available = True``); to exercise the probe, build the credential
  without it and set it before ``get_token`` (see :meth:`AzureSandbox.env_imds`).
* TLS: ``REQUESTS_CA_BUNDLE`` (sync, requests, read per request) and ``SSL_CERT_FILE`` (async: aiohttp
  builds its default SSL context when ``aiohttp.connector`` is imported, so the variable must be set
  before that import; in-process use :meth:`AzureSandbox.trust_ca_in_aiohttp` or ``connection_verify``).

Runs in-process (tests) or as its own process (``python -m dev.sandbox start --clouds azure``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from . import _azure_keyvault, _azure_tls, _fed_azure
from ._azure_azurite import ACCOUNT_KEY, ACCOUNT_NAME, AzuriteBlob
from ._azure_http import LoopbackServer, QuietHandler
from ._azure_storage import READER, StorageProxyHandler, StorageRbac
from .faults import Fault, FaultInjector, FaultKind, Reply, answer_fault
from .oidc import DEFAULT_SUBJECT, OidcIssuer, foreign_issuer_for

log = logging.getLogger(__name__)

TENANT_ID = "11111111-1111-1111-1111-111111111111"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
OTHER_TENANT_ID = "22222222-2222-2222-2222-222222222222"
OTHER_TENANT_DOMAIN = "fabrikam.onmicrosoft.com"
SUBSCRIPTION_ID = "33333333-3333-3333-3333-333333333333"
AKS_ISSUER_URL = f"https://oidc.aks.local-sandbox.example/{TENANT_ID}/sandbox-cluster"
WI_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
STORAGE_RESOURCE = "https://storage.azure.com"
IMDS_TOKEN_PATH = "/metadata/identity/oauth2/token"
ENTRA_TOKEN_TTL = 3599
IMDS_TOKEN_TTL = 86399
# Entra tolerates clock skew on client assertions (assumed 5 min, as Microsoft.IdentityModel's default)
ASSERTION_CLOCK_SKEW = 300
MAX_FEDERATED_CREDENTIALS = 20

# Every variable through which azure-identity (or MSAL) could find an ambient identity or endpoint:
# what a test should clear before applying one of the env_* dicts below.
AMBIENT_AZURE_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    "AZURE_ADDITIONALLY_ALLOWED_TENANTS",
    "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH",
    "AZURE_KUBERNETES_SNI_NAME",
    "AZURE_KUBERNETES_TOKEN_PROXY",
    "AZURE_KUBERNETES_CA_FILE",
    "AZURE_KUBERNETES_CA_DATA",
    "AZURE_CONFIG_DIR",
    "AZURE_STORAGE_CONNECTION_STRING",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@dataclass(frozen=True)
class AzureScenario:
    """Names and GUIDs of everything the sandbox seeds. Resource ids are properties: all are attributes."""

    tenant_id: str = TENANT_ID
    tenant_domain: str = TENANT_DOMAIN
    tenant_name: str = "Contoso"
    other_tenant_id: str = OTHER_TENANT_ID
    other_tenant_domain: str = OTHER_TENANT_DOMAIN
    other_tenant_name: str = "Fabrikam"
    subscription_id: str = SUBSCRIPTION_ID
    resource_group: str = "airflow-rg"
    issuer_url: str = AKS_ISSUER_URL
    federated_audience: str = WI_AUDIENCE
    service_account_namespace: str = "airflow"
    service_account_name: str = "airflow-worker"
    service_account_subject: str = DEFAULT_SUBJECT  # system:serviceaccount:airflow:airflow-worker
    wrong_subject: str = "system:serviceaccount:other:intruder"
    # user-assigned managed identity used through AKS workload identity
    workload_identity_name: str = "airflow-wi"
    workload_client_id: str = "a1f0e7d2-0c1b-4a5e-9f3d-1b2c3d4e5f60"
    workload_object_id: str = "b2e1f8c3-1d2c-4b6f-8e4a-2c3d4e5f6071"
    federated_credential_name: str = "airflow-worker"
    # user-assigned managed identity attached to the node (reachable through IMDS)
    node_identity_name: str = "node-mi"
    node_client_id: str = "c3d2a9b4-2e3d-4c7a-9f5b-3d4e5f607182"
    node_object_id: str = "d4e3b0c5-3f4e-4d8b-8a6c-4e5f60718293"
    # a multi-tenant app registration (home: tenant), provisioned in other_tenant, same federated credential
    multitenant_app_name: str = "airflow-multitenant"
    multitenant_client_id: str = "e5f4c1d6-4a5f-4e9c-9b7d-5f6071829304"
    multitenant_object_id: str = "f6a5d2e7-5b6a-4fad-8c8e-607182930415"
    multitenant_other_object_id: str = "07b6e3f8-6c7b-4abe-9d9f-718293041526"
    # storage (Azurite's dev account)
    storage_account: str = ACCOUNT_NAME
    storage_resource: str = STORAGE_RESOURCE
    container_a: str = "container-a"
    blob_a_name: str = "reports/hello.txt"
    blob_a_body: bytes = b"hello from container A\n"
    container_b: str = "container-b"
    blob_b_name: str = "secret.txt"
    blob_b_body: bytes = b"secret in container B\n"

    def _uami(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )

    @property
    def workload_resource_id(self) -> str:
        return self._uami(self.workload_identity_name)

    @property
    def node_resource_id(self) -> str:
        return self._uami(self.node_identity_name)

    @property
    def storage_scope(self) -> str:
        return f"{self.storage_resource}/.default"

    @property
    def access_token_issuer(self) -> str:
        """v1 issuer of access tokens for ``tenant_id`` (the only kind Azurite accepts)."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.decode() if isinstance(value, bytes) else str(value)
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), property):
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class FederatedCredential:
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (WI_AUDIENCE,)


@dataclass
class Principal:
    """An app registration or user-assigned managed identity, with its service principal per tenant."""

    name: str
    client_id: str
    home_tenant: str
    object_ids: dict[str, str]
    resource_id: str | None = None  # managed identities only
    federated_credentials: list[FederatedCredential] = field(default_factory=list)

    @property
    def object_id(self) -> str:
        return self.object_ids[self.home_tenant]


@dataclass(frozen=True)
class _Tenant:
    tenant_id: str
    domain: str
    name: str


_IMDS_FAULT_BODIES: dict[int, dict[str, str]] = {
    404: {"error": "not_found", "error_description": "Injected fault (sandbox): IMDS is updating"},
    410: {"error": "gone", "error_description": "Injected fault (sandbox): IMDS is updating"},
    429: {"error": "too_many_requests", "error_description": "Injected fault (sandbox): too many requests"},
}
_SIGNATURE_ONLY = {
    "verify_aud": False,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
}
_ENTRA_FAULT_ERRORS = {429: "temporarily_unavailable", 503: "temporarily_unavailable"}
_JSON = "application/json; charset=utf-8"
_IMDS_TRUNCATED = Reply(200, _JSON, b'{"access_token":"eyJ0eXAiOiJKV1Qi')
_ENTRA_TRUNCATED = Reply(200, _JSON, b'{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_tok')


def _json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, _JSON, json.dumps(payload, separators=(",", ":")).encode(), headers)


def _imds_error(fault: Fault) -> Reply:
    payload = (
        fault.body
        if fault.body is not None
        else _IMDS_FAULT_BODIES.get(
            fault.status, {"error": "unknown", "error_description": f"Injected fault (sandbox): HTTP {fault.status}"}
        )
    )
    return _json_reply(fault.status, payload)


def _entra_error(fault: Fault, correlation: str | None) -> Reply:
    payload = (
        fault.body
        if fault.body is not None
        else {
            "error": _ENTRA_FAULT_ERRORS.get(fault.status, "server_error"),
            "error_description": f"Injected fault (sandbox): HTTP {fault.status}",
        }
    )
    headers = (("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache"))
    return _json_reply(
        fault.status, payload, (*headers, *((("client-request-id", correlation),) if correlation else ()))
    )


def _record_fault(record: dict[str, Any], fault: Fault | None) -> None:
    if fault is not None and fault.kind is not FaultKind.SLOW:
        record["fault"] = fault.kind.value
        if fault.kind in (FaultKind.ERROR, FaultKind.THROTTLE, FaultKind.MALFORMED):
            record["status"] = fault.status


# --- servers ----------------------------------------------------------------------------------------------


class _ImdsHandler(QuietHandler):
    """``GET /metadata/identity/oauth2/token`` as the Azure Instance Metadata Service answers it."""

    server_version = "IMDS/150.870.65.1854"
    sys_version = ""
    sandbox: AzureSandbox

    def do_GET(self) -> None:
        sb = self.sandbox
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        record: dict[str, Any] = {"method": "GET", "path": parts.path, "params": params}
        fault = sb._begin("imds", record)
        if answer_fault(self, sb.faults, fault, error=_imds_error, malformed=_IMDS_TRUNCATED):
            _record_fault(record, fault)
            return
        status, payload = sb._imds_token(parts.path, params, self.headers.get("Metadata"))
        self._finish(record, status, payload)

    def do_POST(self) -> None:
        self.read_body()
        record: dict[str, Any] = {"method": "POST", "path": urlsplit(self.path).path, "params": {}}
        self.sandbox._begin("imds", record)
        self._finish(record, 405, {"error": "invalid_request", "error_description": "Method not allowed"})

    def _finish(self, record: dict[str, Any], status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        record["status"] = status
        if isinstance(payload, dict) and "error" in payload:
            record["error"] = payload.get("error_description") or payload["error"]
        self.send_json(status, payload, headers)


class _EntraHandler(QuietHandler):
    """``POST /{tenant}/oauth2/v2.0/token`` (client credentials with a federated client assertion), plus the
    tenant's OIDC metadata and signing keys (for verifying the access tokens it issues)."""

    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    sandbox: AzureSandbox

    def do_POST(self) -> None:
        sb = self.sandbox
        body = self.read_body()
        path = urlsplit(self.path).path
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        record: dict[str, Any] = {
            "method": "POST",
            "path": path,
            "client_id": form.get("client_id"),
            "scope": form.get("scope"),
            "grant_type": form.get("grant_type"),
        }
        fault = sb._begin("entra", record)
        correlation = self.headers.get("client-request-id") or self.headers.get("x-ms-client-request-id")
        if answer_fault(
            self, sb.faults, fault, error=lambda f: _entra_error(f, correlation), malformed=_ENTRA_TRUNCATED
        ):
            _record_fault(record, fault)
            return
        status, payload = sb._entra_token(path, form, self.headers.get("Content-Type", ""), correlation)
        headers: dict[str, str] = {}
        record["status"] = status
        if isinstance(payload, dict) and payload.get("error_codes"):
            record["error"] = f"AADSTS{payload['error_codes'][0]}"
        elif isinstance(payload, dict) and "error" in payload:
            record["error"] = payload["error"]
        headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", **headers}
        if correlation:
            headers["client-request-id"] = correlation
        self.send_json(status, payload, headers)

    def do_GET(self) -> None:
        sb = self.sandbox
        segments = urlsplit(self.path).path.strip("/").split("/")
        tenant = sb._tenant(segments[0]) if segments and segments[0] else None
        if tenant is not None and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            self.send_json(200, sb._openid_configuration(tenant))
        elif tenant is not None and segments[1:] in (["discovery", "v2.0", "keys"], ["discovery", "keys"]):
            self.send_json(200, sb.token_jwks())
        else:
            self.send_json(404, {"error": "not_found", "error_description": f"no such endpoint: {self.path}"})


# --- the sandbox ------------------------------------------------------------------------------------------


class AzureSandbox:
    """Local Azure for workload-identity tests. Create with :meth:`start`; stop with :meth:`stop` or ``with``."""

    def __init__(self, *, scenario: AzureScenario | None = None, issuer: OidcIssuer | None = None) -> None:
        self.scenario = sc = scenario or AzureScenario()
        self.issuer = issuer or OidcIssuer(sc.issuer_url)
        self.foreign_issuer = foreign_issuer_for(self.issuer)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="awi-azure-sandbox-"))
        self.tls = _azure_tls.generate(self.tmp_dir / "tls")
        self.ca_bundle = self.tls.ca_cert
        self.token_file = self.tmp_dir / "var" / "run" / "secrets" / "azure" / "tokens" / "azure-identity-token"
        self.imds_url = ""
        self.authority_host = ""
        self.blob_account_url = ""
        self._token_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._token_kid = secrets.token_urlsafe(20)
        self._lock = threading.Lock()
        self._issued: list[str] = []  # every access token issued and assertion presented (issued_secrets())
        self._log: list[dict[str, Any]] = []
        #: Fault switches of ``imds`` and ``entra`` (see :mod:`dev.sandbox.faults`).
        self.faults = FaultInjector(("imds", "entra"))
        self._token_ttl: int | None = None
        self._stopped = False
        self._imds: LoopbackServer | None = None
        self._entra: LoopbackServer | None = None
        self._proxy: LoopbackServer | None = None
        self.azurite: AzuriteBlob | None = None
        self.issuer_keys: dict[str, list[tuple[str, Any]]] = {
            self.issuer.issuer_url: [(self.issuer.kid, self.issuer.public_key)]
        }
        #: Other clouds' issuers, verified with keys fetched from their JWKS over loopback (_fed_azure.py).
        self.remote_issuers = _fed_azure.RemoteIssuers()

        self.tenants = {
            t.tenant_id: t
            for t in (
                _Tenant(sc.tenant_id, sc.tenant_domain, sc.tenant_name),
                _Tenant(sc.other_tenant_id, sc.other_tenant_domain, sc.other_tenant_name),
            )
        }
        fic = FederatedCredential(
            sc.federated_credential_name, self.issuer.issuer_url, sc.service_account_subject, (sc.federated_audience,)
        )
        self.principals = {
            p.client_id: p
            for p in (
                Principal(
                    sc.workload_identity_name,
                    sc.workload_client_id,
                    sc.tenant_id,
                    {sc.tenant_id: sc.workload_object_id},
                    sc.workload_resource_id,
                    [fic],
                ),
                Principal(
                    sc.node_identity_name,
                    sc.node_client_id,
                    sc.tenant_id,
                    {sc.tenant_id: sc.node_object_id},
                    sc.node_resource_id,
                ),
                Principal(
                    sc.multitenant_app_name,
                    sc.multitenant_client_id,
                    sc.tenant_id,
                    {sc.tenant_id: sc.multitenant_object_id, sc.other_tenant_id: sc.multitenant_other_object_id},
                    None,
                    [fic],
                ),
            )
        }
        self.imds_identities: list[str] = [sc.node_client_id]  # client ids attached to the node
        self.rbac = StorageRbac(sc.tenant_id, sc.storage_account, self._token_key.public_key())
        self.rbac.grant(sc.workload_object_id, READER, sc.container_a)
        self.rbac.grant(sc.node_object_id, READER, sc.container_a)

    # --- lifecycle

    @classmethod
    def start(
        cls,
        *,
        scenario: AzureScenario | None = None,
        issuer: OidcIssuer | None = None,
        imds_port: int = 0,
        entra_port: int = 0,
        blob_port: int = 0,
        azurite: bool = True,
    ) -> AzureSandbox:
        """Start the fakes (and Azurite + RBAC proxy unless ``azurite=False``) on 127.0.0.1."""
        sb = cls(scenario=scenario, issuer=issuer)
        try:
            sb._start(imds_port, entra_port, blob_port, azurite)
        except BaseException:
            sb.stop()
            raise
        return sb

    def _start(self, imds_port: int, entra_port: int, blob_port: int, azurite: bool) -> None:
        self._imds = LoopbackServer(type("ImdsHandler", (_ImdsHandler,), {"sandbox": self}), imds_port)
        self._imds.start("azure-sandbox-imds")
        self.imds_url = f"http://127.0.0.1:{self._imds.port}"
        self._entra = LoopbackServer(
            type("EntraHandler", (_EntraHandler,), {"sandbox": self}), entra_port, self.tls.server_context()
        )
        self._entra.start("azure-sandbox-entra")
        self.authority_host = f"https://127.0.0.1:{self._entra.port}"
        # Key Vault (secrets backends): secrets and RBAC live in the fake (_azure_keyvault.py)
        self.key_vault = _azure_keyvault.KeyVaultFake(self)
        vault_handler = type("KeyVaultHandler", (_azure_keyvault.KeyVaultHandler,), {"vault": self.key_vault})
        self._key_vault_server = LoopbackServer(vault_handler, 0, self.tls.server_context())
        self._key_vault_server.start("azure-sandbox-keyvault")
        self.key_vault.url = f"https://127.0.0.1:{self._key_vault_server.port}"
        if azurite:
            self.azurite = AzuriteBlob(self.tls, self.tmp_dir / "azurite")
            self.azurite.start()
            self._seed_storage()
            handler = type(
                "StorageProxy",
                (StorageProxyHandler,),
                {
                    "rbac": self.rbac,
                    "upstream": ("127.0.0.1", self.azurite.port),
                    "upstream_context": self.tls.client_context(),
                    "on_request": self._on_storage_request,
                },
            )
            self._proxy = LoopbackServer(handler, blob_port, self.tls.server_context())
            self._proxy.start("azure-sandbox-storage-proxy")
            self.blob_account_url = f"https://127.0.0.1:{self._proxy.port}/{self.scenario.storage_account}"

    def _seed_storage(self) -> None:
        sc = self.scenario
        client = self.admin_blob_service_client()
        with client:
            for container, name, body in (
                (sc.container_a, sc.blob_a_name, sc.blob_a_body),
                (sc.container_b, sc.blob_b_name, sc.blob_b_body),
            ):
                client.create_container(container)
                client.get_blob_client(container, name).upload_blob(body, overwrite=True)

    def admin_blob_service_client(self, **kwargs: Any) -> Any:
        """A BlobServiceClient on Azurite itself (not the RBAC proxy) with the well-known dev account key:
        seeding and inspection only."""
        if self.azurite is None:
            raise RuntimeError("the sandbox was started without Azurite")
        from azure.storage.blob import BlobServiceClient

        kwargs.setdefault("connection_verify", str(self.ca_bundle))
        kwargs.setdefault("retry_total", 0)
        return BlobServiceClient(
            self.azurite.account_url,
            credential={"account_name": self.scenario.storage_account, "account_key": ACCOUNT_KEY},
            **kwargs,
        )

    def stop(self) -> None:
        """Stop the servers and Azurite, delete the temp dir. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.faults.close()
        for server in (self._proxy, self._entra, self._imds, getattr(self, "_key_vault_server", None)):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        if self.azurite is not None:
            self.azurite.stop()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> AzureSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self.imds_url) and not self._stopped

    @property
    def tenant_id(self) -> str:
        return self.scenario.tenant_id

    @property
    def azurite_account_url(self) -> str:
        """Azurite itself, without the RBAC proxy (seeding and inspection only)."""
        return self.azurite.account_url if self.azurite is not None else ""

    # --- service-account tokens and environments

    def mint_sa_token(self, **mint_kwargs: Any) -> str:
        """A projected service-account token as AKS writes it (``aud`` = [api://AzureADTokenExchange])."""
        sc = self.scenario
        mint_kwargs.setdefault("sub", sc.service_account_subject)
        mint_kwargs.setdefault("aud", [sc.federated_audience])
        mint_kwargs.setdefault(
            "extra_claims",
            {
                "kubernetes.io": {
                    "namespace": sc.service_account_namespace,
                    "serviceaccount": {"name": sc.service_account_name, "uid": str(uuid.uuid4())},
                }
            },
        )
        return self.issuer.mint(**mint_kwargs)

    def write_sa_token(self, path: str | os.PathLike[str] | None = None, **mint_kwargs: Any) -> Path:
        """Mint a token (see :meth:`mint_sa_token`; e.g. ``sub=scenario.wrong_subject``, ``exp=...``) and write
        it atomically to ``path`` or the AKS-like default path in the sandbox dir."""
        target = Path(path) if path is not None else self.token_file
        _write_atomic(target, self.mint_sa_token(**mint_kwargs))
        return target

    def env_workload_identity(
        self,
        token_path: str | os.PathLike[str] | None = None,
        *,
        client_id: str | None = None,
        tenant_id: str | None = None,
    ) -> dict[str, str]:
        """What the AKS workload-identity webhook injects (pointing at the fake Entra)."""
        return {
            "AZURE_CLIENT_ID": client_id or self.scenario.workload_client_id,
            "AZURE_TENANT_ID": tenant_id or self.scenario.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_path or self.token_file),
            "AZURE_AUTHORITY_HOST": self.authority_host,
        }

    def env_imds(self) -> dict[str, str]:
        """Redirects ManagedIdentityCredential's IMDS requests (sync via MSAL, async, and the
        DefaultAzureCredential probe) to the fake IMDS. With the variable present when the credential is
        built, azure-identity skips the probe; build it first and set the variable afterwards to keep it."""
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_url}

    def env_tls(self) -> dict[str, str]:
        """Trust the test CA: ``REQUESTS_CA_BUNDLE`` for the sync SDK (requests), ``SSL_CERT_FILE`` for the
        async SDK (aiohttp; must be set before ``aiohttp`` is imported) and anything on ssl's defaults."""
        return {"REQUESTS_CA_BUNDLE": str(self.ca_bundle), "SSL_CERT_FILE": str(self.ca_bundle)}

    def env_isolation(self) -> dict[str, str]:
        """Keeps az CLI / azd state out (DefaultAzureCredential's developer credentials) and trusts the CA."""
        config_dir = self.tmp_dir / "azure-config"
        config_dir.mkdir(exist_ok=True)
        return {**self.env_tls(), "AZURE_CONFIG_DIR": str(config_dir)}

    def trust_ca_in_aiohttp(self) -> bool:
        """Add the test CA to aiohttp's default verified SSL context (built at import, so ``SSL_CERT_FILE``
        set later is ignored). Process-wide and additive. Returns False if aiohttp has no such context."""
        try:
            from aiohttp import connector
        except ImportError:
            return False
        ctx = getattr(connector, "_SSL_CONTEXT_VERIFIED", None)
        if ctx is None:
            return False
        ctx.load_verify_locations(cafile=str(self.ca_bundle))
        return True

    # --- directory: identities, federated credentials, IMDS attachment, RBAC

    def add_federated_credential(
        self,
        client_id: str,
        subject: str,
        *,
        issuer: str | None = None,
        audience: str = WI_AUDIENCE,
        name: str | None = None,
    ) -> FederatedCredential:
        """Like ``az identity federated-credential create`` (at most 20 per identity/app)."""
        principal = self.principals[client_id]
        cred = FederatedCredential(
            name or f"fic-{len(principal.federated_credentials)}",
            issuer or self.issuer.issuer_url,
            subject,
            (audience,),
        )
        with self._lock:
            if len(principal.federated_credentials) >= MAX_FEDERATED_CREDENTIALS:
                raise ValueError(
                    f"{principal.name} already has {MAX_FEDERATED_CREDENTIALS} federated identity credentials "
                    "(the limit)"
                )
            principal.federated_credentials.append(cred)
        return cred

    def remove_federated_credential(self, client_id: str, name: str) -> None:
        principal = self.principals[client_id]
        with self._lock:
            principal.federated_credentials[:] = [c for c in principal.federated_credentials if c.name != name]

    def trust_issuer(self, issuer: OidcIssuer | str, jwks_url: str | None = None) -> None:
        """Let Entra verify assertions from another OIDC issuer (e.g. a second cluster), or from another
        cloud's issuer URL whose keys Entra fetches from ``jwks_url`` on loopback (_fed_azure.py)."""
        if isinstance(issuer, str):
            if not jwks_url:
                raise ValueError("an issuer given by URL needs the jwks_url its keys are fetched from")
            self.remote_issuers.trust(issuer, jwks_url)
            return
        with self._lock:
            self.issuer_keys.setdefault(issuer.issuer_url, []).append((issuer.kid, issuer.public_key))

    def attach_imds_identity(self, client_id: str) -> None:
        """``az vmss identity assign``: make a user-assigned identity reachable through the node's IMDS."""
        if client_id not in self.principals or self.principals[client_id].resource_id is None:
            raise ValueError(f"{client_id} is not a user-assigned managed identity of the sandbox")
        with self._lock:
            if client_id not in self.imds_identities:
                self.imds_identities.append(client_id)

    def detach_imds_identity(self, client_id: str) -> None:
        with self._lock:
            self.imds_identities[:] = [c for c in self.imds_identities if c != client_id]

    def grant(self, object_id: str, role: str = READER, container: str | None = None) -> None:
        """Role assignment on one container (or the account with ``container=None``)."""
        self.rbac.grant(object_id, role, container)

    def revoke(self, object_id: str, role: str | None = None, container: str | None = None) -> int:
        return self.rbac.revoke(object_id, role, container)

    # --- counters, faults, lifetimes

    def calls(self, kind: str | None = None) -> int:
        """Requests received by ``kind`` (``"imds"``, ``"entra"``, ``"storage"``) or all, faults included."""
        with self._lock:
            return sum(1 for r in self._log if kind is None or r["kind"] == kind)

    def call_log(self, kind: str | None = None) -> list[dict[str, Any]]:
        """One dict per request (kind, method, path, params/client_id/scope, status, error)."""
        with self._lock:
            return [dict(r) for r in self._log if kind is None or r["kind"] == kind]

    def reset_calls(self) -> None:
        with self._lock:
            self._log.clear()

    def inject_imds_fault(self, status: int = 500, times: int = 1, body: Any = None) -> None:
        """The next ``times`` IMDS requests answer ``status`` (e.g. 500, 429, 410, 404) with a JSON error."""
        self.faults.inject("imds", Fault.error(status, times=times, body=body))

    def inject_entra_fault(
        self, status: int = 500, times: int = 1, body: Any = None, retry_after: int | float | None = None
    ) -> None:
        """The next ``times`` token requests to Entra answer ``status`` (e.g. 429 with ``retry_after``, 500)."""
        self.faults.inject("entra", Fault.error(status, times=times, body=body, retry_after=retry_after))

    def hang_imds(self, seconds: float | None = math.inf) -> None:
        """IMDS accepts connections and reads requests but answers only after ``seconds`` (``math.inf``:
        until ``hang_imds(None)``, :meth:`stop` or ``faults.HANG_LIMIT``); ``None`` ends the hang and
        releases held requests (they are answered)."""
        if seconds is None:
            self.faults.clear("imds", kinds=(FaultKind.HANG, FaultKind.SLOW))
        elif math.isinf(seconds):
            self.faults.inject("imds", Fault.hang(times=None))
        else:
            self.faults.inject("imds", Fault.slow(float(seconds), times=None))

    def clear_faults(self) -> None:
        """Disarm every fault of IMDS and Entra (held requests are released and answered)."""
        self.faults.clear()

    def force_token_ttl(self, seconds: int | None) -> None:
        """Access tokens from IMDS and Entra say they expire ``seconds`` after issue (None: 86399 / 3599)."""
        with self._lock:
            self._token_ttl = None if seconds is None else int(seconds)

    def _begin(self, kind: str, record: dict[str, Any]) -> Fault | None:
        record.update(kind=kind, time=time.time())
        with self._lock:
            self._log.append(record)
        return self.faults.take(kind)

    def _on_storage_request(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(record | {"kind": "storage", "time": time.time()})

    # --- access tokens

    def token_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public key that signs the sandbox's access tokens (Entra's ``discovery/v2.0/keys``)."""
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._token_key.public_key()))
        return {"keys": [{**key, "kid": self._token_kid, "use": "sig", "alg": "RS256"}]}

    def verify_access_token(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """Decode an access token the sandbox issued (signature, lifetime, optional audience)."""
        return jwt.decode(
            token,
            self._token_key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            options={"verify_aud": audience is not None},
        )

    def mint_access_token(
        self,
        principal: Principal | str,
        resource: str = STORAGE_RESOURCE,
        *,
        tenant_id: str | None = None,
        ttl: int | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> tuple[str, int, int]:
        """(token, issued_at, expires_on) of a v1 access token for ``principal`` (object or client id),
        as Entra/IMDS issue them and Azurite accepts them. ``extra_claims`` may override any claim."""
        p = self.principals[principal] if isinstance(principal, str) else principal
        tid = tenant_id or p.home_tenant
        now = int(time.time())
        lifetime = ttl if ttl is not None else ENTRA_TOKEN_TTL
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": secrets.token_urlsafe(32),
            "appid": p.client_id,
            "appidacr": "2",
            "idp": f"https://sts.windows.net/{tid}/",
            "idtyp": "app",
            "oid": p.object_ids[tid],
            "rh": secrets.token_urlsafe(24),
            "sub": p.object_ids[tid],
            "tid": tid,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if p.resource_id:
            claims["xms_mirid"] = p.resource_id
        claims.update(extra_claims or {})
        headers = {"kid": self._token_kid, "x5t": self._token_kid}
        token = jwt.encode(claims, self._token_key, algorithm="RS256", headers=headers)
        with self._lock:
            self._issued.append(token)
        return token, now, int(claims["exp"])

    def issued_secrets(self) -> list[str]:
        """Every access token issued (IMDS, Entra) and client assertion presented so far (secrets tests)."""
        with self._lock:
            return list(self._issued)

    # --- IMDS logic

    def _imds_token(self, path: str, params: dict[str, str], metadata: str | None) -> tuple[int, dict[str, Any]]:
        def bad(description: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": "invalid_request", "error_description": description}

        if path.rstrip("/") != IMDS_TOKEN_PATH:
            return 404, {"error": "not_found", "error_description": f"{path} is not a supported endpoint"}
        if (metadata or "").strip().lower() != "true":
            return bad("Required metadata header not specified")
        if not params.get("api-version"):
            return bad("Required query variable 'api-version' is missing")
        resource = params.get("resource", "")
        if not resource:
            return bad("Required audience parameter not specified")
        with self._lock:
            attached = [self.principals[c] for c in self.imds_identities]
            ttl = self._token_ttl
        selector = [
            (key, params[key].lower())
            for key in ("client_id", "object_id", "msi_res_id", "mi_res_id")
            if params.get(key)
        ]
        if selector:
            key, value = selector[0]
            matches = [
                p
                for p in attached
                if (key == "client_id" and p.client_id.lower() == value)
                or (key == "object_id" and p.object_id.lower() == value)
                or (key in ("msi_res_id", "mi_res_id") and (p.resource_id or "").lower() == value)
            ]
        else:  # no selector: the only user-assigned identity (the node has no system-assigned one)
            if len(attached) > 1:
                return bad(
                    "Multiple user assigned identities exist, please specify the clientId / resourceId of the "
                    "identity in the token request"
                )
            matches = attached
        if not matches:
            return bad("Identity not found")
        principal = matches[0]
        lifetime = ttl if ttl is not None else IMDS_TOKEN_TTL
        token, issued, expires = self.mint_access_token(principal, resource, ttl=lifetime)
        return 200, {
            "access_token": token,
            "client_id": principal.client_id,
            "expires_in": str(lifetime),
            "expires_on": str(expires),
            "ext_expires_in": str(lifetime),
            "not_before": str(issued),
            "resource": resource,
            "token_type": "Bearer",
        }

    # --- Entra logic

    def _tenant(self, tenant: str) -> _Tenant | None:
        wanted = tenant.lower()
        return next((t for t in self.tenants.values() if wanted in (t.tenant_id, t.domain.lower())), None)

    def _openid_configuration(self, tenant: _Tenant) -> dict[str, Any]:
        base = f"{self.authority_host}/{tenant.tenant_id}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.authority_host}/{tenant.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"https://login.microsoftonline.com/{tenant.tenant_id}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    def _aad_error(
        self, status: int, error: str, code: int, description: str, correlation: str | None
    ) -> tuple[int, dict[str, Any]]:
        trace_id = str(uuid.uuid4())
        correlation_id = correlation or str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return status, {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
                f"Timestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.authority_host}/error?code={code}",
        }

    def _entra_token(
        self, path: str, form: dict[str, str], content_type: str, correlation: str | None
    ) -> tuple[int, dict[str, Any]]:
        def err(error: str, code: int, description: str, status: int = 400) -> tuple[int, dict[str, Any]]:
            return self._aad_error(status, error, code, description, correlation)

        segments = path.strip("/").split("/")
        if len(segments) != 4 or segments[1:] != ["oauth2", "v2.0", "token"]:
            return 404, {"error": "not_found", "error_description": f"no such endpoint: {path}"}
        tenant = self._tenant(segments[0])
        if tenant is None:
            return err(
                "invalid_request",
                90002,
                f"Tenant '{segments[0]}' not found. Check to make sure you have the correct tenant ID and are signing "
                "into the correct cloud. Check with your subscription administrator, this may happen if there are no "
                "active subscriptions for the tenant.",
            )
        if not content_type.lower().startswith("application/x-www-form-urlencoded"):
            return err(
                "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                return err(
                    "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
                )
        if form["grant_type"] != "client_credentials":
            return err(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form['grant_type']}'.",
            )
        client_id = form["client_id"]
        with self._lock:
            principal = self.principals.get(client_id.lower())
            if principal is not None and tenant.tenant_id not in principal.object_ids:
                principal = None
            fics = list(principal.federated_credentials) if principal else []
            issuer_keys = {k: list(v) for k, v in self.issuer_keys.items()}
            ttl = self._token_ttl
        if principal is None:
            return err(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant.name}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented to "
                "by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        assertion = form.get("client_assertion", "")
        if assertion:
            with self._lock:
                self._issued.append(assertion)
        if not assertion:
            return err(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                401,
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            return err(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            )
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
            if not all(isinstance(claims.get(k), str) for k in ("iss", "sub")) or "exp" not in claims:
                raise jwt.InvalidTokenError("missing iss/sub/exp")
            exp = int(claims["exp"])
            nbf = int(claims.get("nbf", claims.get("iat", 0)))
        except (jwt.PyJWTError, TypeError, ValueError):
            return err("invalid_request", 50027, "JWT token is invalid or malformed.")
        iss, sub = claims["iss"], claims["sub"]
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        keys = issuer_keys.get(iss)
        if keys is None:  # another cloud's issuer: keys fetched from its JWKS over loopback, if trusted
            keys = self.remote_issuers.keys(iss, header.get("kid"))
        if keys is not None:
            candidates = [k for kid, k in keys if kid == header.get("kid")] or [k for _, k in keys]
            verified = False
            for key in candidates:
                try:
                    jwt.decode(assertion, key, algorithms=["RS256", "ES384"], options=_SIGNATURE_ONLY)
                    verified = True
                    break
                except jwt.PyJWTError:
                    continue
            if not verified:
                return err(
                    "invalid_client",
                    700027,
                    "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of "
                    f"key used by client: '{header.get('kid', '')}']",
                    401,
                )
        now = time.time()
        if now > exp + ASSERTION_CLOCK_SKEW or now < nbf - ASSERTION_CLOCK_SKEW:
            return err(
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {_aad_time(now)}, assertion valid "
                f"from {_aad_time(nbf)}, expiry time of assertion {_aad_time(exp)}. Review the documentation at "
                "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                401,
            )
        matched = [
            c
            for c in fics
            if c.issuer == iss and c.subject == sub and len(audiences) == 1 and audiences[0] in c.audiences
        ]
        if not matched:
            return err(
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{','.join(audiences)}'. "
                "https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
            )
        if keys is None:
            return err(
                "invalid_client",
                700027,
                f"Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key "
                f"used by client: '{header.get('kid', '')}']",
                401,
            )
        scopes = form["scope"].split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return err(
                "invalid_scope",
                1002012,
                f"The provided value for scope {form['scope']} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scopes[0].removesuffix("/.default")
        lifetime = ttl if ttl is not None else ENTRA_TOKEN_TTL
        token, _, _ = self.mint_access_token(principal, resource, tenant_id=tenant.tenant_id, ttl=lifetime)
        return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    # --- description (for the CLI's state file)

    def describe(self) -> dict[str, Any]:
        return {
            "imds_url": self.imds_url,
            "authority_host": self.authority_host,
            "blob_account_url": self.blob_account_url,
            "azurite_account_url": self.azurite_account_url,
            "key_vault_url": self.key_vault.url,
            "ca_bundle": str(self.ca_bundle),
            "tenant_id": self.scenario.tenant_id,
            "issuer_url": self.issuer.issuer_url,
            "token_file": str(self.token_file),
            "storage_account_key": ACCOUNT_KEY,
            "scenario": self.scenario.to_dict(),
            "env": {
                "tls": self.env_tls(),
                "workload_identity": self.env_workload_identity(self.token_file),
                "imds": self.env_imds(),
            },
        }


def _aad_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


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
