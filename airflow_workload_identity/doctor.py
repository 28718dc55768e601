"""``doctor``: which ambient identities this environment has, which endpoints answer, which connections
of the package's types are valid. Claims of projected tokens are shown (issuer, subject, audience,
expiry), never the tokens. Only endpoints named by the environment are probed, with short timeouts;
link-local defaults (169.254.169.254, metadata.google.internal) only with ``probe_defaults``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_workload_identity.tokens import unverified_claims

__all__ = ["Finding", "ambient_identities", "check_connections", "metadata_db_unavailable", "secrets_backend"]

TIMEOUT = 2.0


@dataclass
class Finding:
    name: str
    present: bool
    detail: str
    token: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    reachable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _claims(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = unverified_claims(handle.read())
    except OSError:
        data = {}
    if not data:
        return {"error": f"cannot read a JWT from {path}"}
    out: dict[str, Any] = {k: data.get(k) for k in ("iss", "sub", "aud") if k in data}
    if "exp" in data:
        out["exp"] = dt.datetime.fromtimestamp(int(data["exp"]), dt.UTC).isoformat()
        out["expired"] = int(data["exp"]) < dt.datetime.now(dt.UTC).timestamp()
    return out


def _probe(url: str, headers: Mapping[str, str] | None = None) -> bool:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 (http(s) URLs from the env)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ambient_identities(env: Mapping[str, str] | None = None, *, probe_defaults: bool = False) -> list[Finding]:
    env = os.environ if env is None else env
    findings: list[Finding] = []
    irsa = bool(env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE"))
    findings.append(
        Finding(
            "AWS IRSA (web identity)",
            irsa,
            f"role {env.get('AWS_ROLE_ARN')}, token file {env.get('AWS_WEB_IDENTITY_TOKEN_FILE')}"
            if irsa
            else "AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE not set",
            token=_claims(env.get("AWS_WEB_IDENTITY_TOKEN_FILE")) if irsa else {},
            endpoint=env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL"),
        )
    )
    pod_uri = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    pod = Finding(
        "AWS EKS Pod Identity",
        bool(pod_uri),
        f"agent {pod_uri}" if pod_uri else "AWS_CONTAINER_CREDENTIALS_FULL_URI not set",
        token=_claims(env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) if pod_uri else {},
        endpoint=pod_uri,
    )
    if pod_uri:
        pod.reachable = _probe(pod_uri)
    findings.append(pod)
    static = bool(env.get("AWS_ACCESS_KEY_ID"))
    findings.append(
        Finding(
            "AWS static keys (default chain)",
            static,
            "AWS_ACCESS_KEY_ID set (a long-term secret in the environment)" if static else "not set",
        )
    )
    meta_host = env.get("GCE_METADATA_HOST") or ("metadata.google.internal" if probe_defaults else None)
    gke = Finding(
        "GKE metadata server",
        False,
        "GCE_METADATA_HOST not set (pass --probe-defaults to try metadata.google.internal)",
        endpoint=meta_host,
    )
    if meta_host:
        gke.reachable = _probe(
            f"http://{meta_host}/computeMetadata/v1/instance/service-accounts/default/email",
            {"Metadata-Flavor": "Google"},
        )
        gke.present = bool(gke.reachable)
        gke.detail = f"metadata server at {meta_host} {'answers' if gke.reachable else 'does not answer'}"
    findings.append(gke)
    adc = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    findings.append(Finding("Google Application Default Credentials file", bool(adc), adc or "not set"))
    wi = all(env.get(v) for v in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"))
    findings.append(
        Finding(
            "Azure AKS workload identity",
            wi,
            f"client {env.get('AZURE_CLIENT_ID')}, tenant {env.get('AZURE_TENANT_ID')}"
            if wi
            else "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_FEDERATED_TOKEN_FILE not all set",
            token=_claims(env.get("AZURE_FEDERATED_TOKEN_FILE")) if wi else {},
            endpoint=env.get("AZURE_AUTHORITY_HOST"),
        )
    )
    imds = env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or ("http://169.254.169.254" if probe_defaults else None)
    azure_imds = Finding(
        "Azure IMDS (managed identity)",
        False,
        "not probed (pass --probe-defaults to try 169.254.169.254)",
        endpoint=imds,
    )
    if imds:
        azure_imds.reachable = _probe(
            f"{imds.rstrip('/')}/metadata/instance?api-version=2021-02-01", {"Metadata": "true"}
        )
        azure_imds.present = bool(azure_imds.reachable)
        azure_imds.detail = f"IMDS at {imds} {'answers' if azure_imds.reachable else 'does not answer'}"
    findings.append(azure_imds)
    return findings


_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


def metadata_db_unavailable(url: str, *, timeout: float = TIMEOUT) -> str | None:
    """Why the metadata database at ``url`` (``[database] sql_alchemy_conn``) is not worth trying, or ``None``.

    Asked before the doctor opens a session: a SQLite file that does not exist (opening it would create an
    empty database), or a database server that does not accept a TCP connection within ``timeout``
    seconds (instead of the driver's own connect timeout and Airflow's retries). The URL's password is
    never part of the answer.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "[database] sql_alchemy_conn is not a database URL"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None if database.startswith("file:") else "[database] sql_alchemy_conn is an in-memory SQLite"
        return None if os.path.isfile(database) else f"no SQLite database at {database}"
    host = parsed.host
    if not host:  # a local socket: the driver's own (fast) answer
        return None
    port = parsed.port or _DEFAULT_PORTS.get(backend)
    if port is None:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError:
        return f"{backend} at {host}:{port} did not accept a connection within {timeout:g} s"


def check_connections(connections: Mapping[str, tuple[str, Any]]) -> list[dict[str, Any]]:
    """Validate each connection's spec (no network call); ``connections``: id → (type, extra)."""
    from airflow_workload_identity.aws.spec import AwsIdentitySpec
    from airflow_workload_identity.azure.spec import AzureIdentitySpec
    from airflow_workload_identity.endpoints import check_override
    from airflow_workload_identity.errors import ConfigError
    from airflow_workload_identity.gcp.spec import GcpIdentitySpec

    parsers = {
        "aws_workload_identity": AwsIdentitySpec.from_extra,
        "gcp_workload_identity": GcpIdentitySpec.from_extra,
        "azure_workload_identity": AzureIdentitySpec.from_extra,
    }
    results = []
    overrides = {  # the endpoint overrides each type's hook checks before any request (endpoints.py)
        "aws_workload_identity": (("sts_endpoint_url", "aws"),),
        "gcp_workload_identity": (("iam_endpoint_url", "gcp"), ("sts_endpoint_url", "gcp_sts")),
        "azure_workload_identity": (("authority_host", "azure"),),
    }
    for conn_id, (conn_type, extra) in sorted(connections.items()):
        try:
            spec = parsers[conn_type](extra)
            for field, cloud in overrides[conn_type]:
                check_override(getattr(spec, field), field=field, conn_type=conn_type, cloud=cloud)
            results.append({"conn_id": conn_id, "conn_type": conn_type, "valid": True, "error": None})
        except ConfigError as exc:
            results.append({"conn_id": conn_id, "conn_type": conn_type, "valid": False, "error": str(exc)})
    return results


def _reads_as(spec: Any) -> str:
    """Who a backend's spec reads secrets as, from the spec alone (no token is requested)."""
    roles = getattr(spec, "roles", None)
    if roles is not None:  # AWS
        return " -> ".join(("the pod's own identity", *roles)) if roles else "the pod's own identity (no role_arn)"
    chain = getattr(spec, "impersonation_chain", None)
    if chain is not None:  # GCP
        own = "the pod's own service account"
        return " -> ".join((own, *chain)) if chain else f"{own} (no impersonation_chain)"
    mode = "imds" if spec.mode == "managed_identity" else spec.mode
    return f"Azure {mode} identity, client {spec.client_id or '(AZURE_CLIENT_ID)'}"


def secrets_backend() -> dict[str, Any] | None:
    """The deployment's ``[secrets] backend`` when it is one of the package's: its class, who it reads
    secrets as (from ``backend_kwargs``, validated: a bad kwarg is reported, not raised) and its prefixes.
    ``None`` when another backend (or none) is configured. No network call."""
    from airflow.configuration import conf

    from airflow_workload_identity.errors import ConfigError
    from airflow_workload_identity.secrets_common import BACKENDS, configured_backend

    path = (conf.get("secrets", "backend", fallback="") or "").strip()
    if path not in BACKENDS:
        return {"backend": path, "package": False} if path else None
    try:
        backend: Any = configured_backend()
    except ConfigError as exc:
        return {"backend": path, "package": True, "valid": False, "error": str(exc)}
    options = backend.options
    return {
        "backend": path,
        "package": True,
        "valid": True,
        "error": None,
        "reads_as": _reads_as(backend.spec),
        "connections_prefix": options.connections_prefix,
        "variables_prefix": options.variables_prefix,
        "config_prefix": options.config_prefix,
    }
