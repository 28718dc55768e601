"""GCP Secret Manager backend against the sandbox's Secret Manager API (IAM per secret and per prefix)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

pytest.importorskip("google.cloud.storage", reason="the Google SDKs are not installed")

from google.api_core.exceptions import Forbidden

from airflow_workload_identity.errors import AccessDenied, ConfigError
from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
from airflow_workload_identity.gcp.secrets import SecretManagerBackend
from dev.sandbox import GcpSandbox

URI = "postgresql://scott:tiger-gcp-123@db.example.com:5432/sales"
PROJECT = "customer-proj"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@pytest.fixture
def secrets(gke: GcpSandbox) -> Iterator[GcpSandbox]:
    """Secrets in the customer project; the reader may read airflow-* (a project binding with a name
    condition), one secret outside it is not granted."""
    fake = gke.secret_manager
    sc = gke.scenario
    fake.add_secret(PROJECT, "airflow-connections-pg_uri", URI)
    fake.add_secret(
        PROJECT,
        "airflow-connections-pg_json",
        json.dumps({"conn_type": "postgres", "host": "db.example.com", "login": "scott", "password": "tiger-json-7"}),
    )
    fake.add_secret(PROJECT, "airflow-variables-greeting", "old value")
    fake.add_secret(PROJECT, "airflow-variables-greeting", "hello from secret manager")  # latest wins
    fake.add_secret(PROJECT, "airflow-config-sql_alchemy_conn", "sqlite:////tmp/x.db")
    fake.add_secret(PROJECT, "restricted-connections-pg_uri", URI)
    fake.grant(sc.reader_sa, PROJECT, "airflow-*")
    fake.reset_calls()
    yield gke
    fake.revoke_all()


def _backend(sb: GcpSandbox, **kwargs: Any) -> SecretManagerBackend:
    kwargs.setdefault("impersonation_chain", sb.scenario.reader_sa)
    return SecretManagerBackend(
        iam_endpoint_url=sb.iam_endpoint, secret_manager_endpoint_url=sb.secret_manager_endpoint, **kwargs
    )


def test_reads_connections_variables_config(secrets: GcpSandbox) -> None:
    backend = _backend(secrets)
    assert backend.project_id == PROJECT  # from the target's e-mail
    conn = backend.get_connection("pg_uri")
    assert (conn.conn_type, conn.login, conn.password, conn.port) == ("postgres", "scott", "tiger-gcp-123", 5432)
    conn = backend.get_connection("pg_json")
    assert (conn.login, conn.password) == ("scott", "tiger-json-7")
    assert backend.get_variable("greeting") == "hello from secret manager"
    assert backend.get_config("sql_alchemy_conn") == "sqlite:////tmp/x.db"
    assert secrets.secret_manager.calls_by_status() == {"200": 4}
    assert secrets.calls("generateAccessToken") == 1


def test_missing_secret_is_none_after_one_request(secrets: GcpSandbox) -> None:
    backend = _backend(secrets)
    assert backend.get_variable("absent") is None
    assert secrets.secret_manager.calls_by_status() == {"404": 1}
    assert backend.get_variable("not a valid id") is None  # the API would refuse the name: no request
    assert secrets.secret_manager.calls() == 1


def test_denied_secret_raises_access_denied_with_the_binding(secrets: GcpSandbox) -> None:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    backend = _backend(secrets, connections_prefix="restricted-connections")
    with pytest.raises(AccessDenied) as caught:
        backend.get_connection("pg_uri")
    error = caught.value
    assert isinstance(error, AirflowSecretsBackendAccessDenied)
    assert error.cloud_code == "PERMISSION_DENIED"
    assert error.target == f"projects/{PROJECT}/secrets/restricted-connections-pg_uri"
    assert (
        f"gcloud secrets add-iam-policy-binding restricted-connections-pg_uri --project={PROJECT} "
        f"--member=serviceAccount:{secrets.scenario.reader_sa} --role=roles/secretmanager.secretAccessor"
    ) in error.remediation
    assert secrets.secret_manager.calls_by_status() == {"403": 1}


def test_backend_and_hook_share_one_token(secrets: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = secrets.scenario
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("reader", impersonation_chain=[sc.reader_sa]))
    hook.get_access_token()
    assert _backend(secrets).get_variable("greeting")
    assert secrets.calls("generateAccessToken") == 1
    assert secrets.calls("metadata_token") == 1


def test_construction_validates_without_network(secrets: GcpSandbox) -> None:
    secrets.reset_calls()
    with pytest.raises(ConfigError) as caught:
        _backend(secrets, gcp_key_path="/keys/sa.json")
    assert caught.value.field == "gcp_key_path"
    with pytest.raises(ConfigError) as caught:
        _backend(secrets, impersonation_chain="not-an-email")
    assert caught.value.field == "impersonation_chain"
    with pytest.raises(ConfigError) as caught:
        SecretManagerBackend(
            impersonation_chain=secrets.scenario.reader_sa, secret_manager_endpoint_url="https://evil.example.com"
        )
    assert caught.value.field == "secret_manager_endpoint_url"
    with pytest.raises(ConfigError) as caught:
        _backend(secrets, impersonation_chain="sa@developer.gserviceaccount.com")
    assert caught.value.field == "project_id"
    assert _backend(secrets, variables_prefix=None).get_variable("greeting") is None
    assert secrets.calls() == 0 and secrets.secret_manager.calls() == 0


def test_official_backend_reads_the_same_sandbox(secrets: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official backend through google-cloud-secret-manager's REST transport (same wire format).

    The official backend builds ``SecretManagerServiceClient(credentials=..., client_info=...)``: gRPC to
    secretmanager.googleapis.com, with no knob for the endpoint or the transport. The one patch here gives
    that constructor ``transport="rest"`` and the sandbox's endpoint; everything else is the official code.
    """
    import functools

    from airflow.providers.google.cloud._internal_client import secret_manager_client as module
    from airflow.providers.google.cloud.secrets.secret_manager import CloudSecretManagerBackend
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

    monkeypatch.setattr(
        module,
        "SecretManagerServiceClient",
        functools.partial(
            SecretManagerServiceClient,
            transport="rest",
            client_options={"api_endpoint": secrets.secret_manager_endpoint},
        ),
    )
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    sc = secrets.scenario
    with secrets.patch_google_auth_iam_endpoints():
        official = CloudSecretManagerBackend(project_id=PROJECT, impersonation_chain=sc.reader_sa, gcp_scopes=SCOPE)
        assert official.get_conn_value("pg_uri") == URI
        assert official.get_variable("greeting") == "hello from secret manager"
        assert official.get_variable("absent") is None
        # A denial: over gRPC the official backend catches PermissionDenied and returns None ("absent": Airflow
        # moves on to the next backend); over REST the same 403 surfaces as Forbidden, which it does not catch.
        official_denied = CloudSecretManagerBackend(
            project_id=PROJECT,
            impersonation_chain=sc.reader_sa,
            gcp_scopes=SCOPE,
            connections_prefix="restricted-connections",
        )
        with pytest.raises(Forbidden, match=r"secretmanager\.versions\.access"):
            official_denied.get_conn_value("pg_uri")


def test_whoami_reports_the_backend_identity(secrets: GcpSandbox) -> None:
    report = _backend(secrets).whoami()
    assert report.hops[0].principal == secrets.scenario.source_sa
    assert report.final.principal == secrets.scenario.reader_sa


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain HTTP forward proxy (absolute-form request targets), recording what passes through it."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = _forward


def test_requests_go_through_the_configured_proxy(secrets: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY is honoured like any requests-based SDK (NO_PROXY would exempt hosts)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _ForwardProxy.seen.clear()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        assert _backend(secrets).get_variable("greeting") == "hello from secret manager"
    finally:
        server.shutdown()
        server.server_close()
    access = f"{secrets.secret_manager_endpoint}/v1/projects/{PROJECT}/secrets/airflow-variables-greeting"
    assert any(url.startswith(access) for url in _ForwardProxy.seen), _ForwardProxy.seen
