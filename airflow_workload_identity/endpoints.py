"""Endpoint overrides in connections are a security boundary.

Whoever can edit a connection could point its STS, IAM Credentials or Entra endpoint at a host they
control and collect the deployment's web identity token or source access token. So an override set in a
connection (``sts_endpoint_url``, ``iam_endpoint_url``, ``authority_host``) is honoured only for the
clouds' own public endpoints and for hosts the deployment allows in its Airflow configuration::

    [workload_identity]
    allowed_endpoint_hosts = sts.internal.example.com, *.vpce.amazonaws.com, 127.0.0.1

(comma-separated hosts or ``*.suffix`` patterns; loopback only when listed). Endpoints set by the
deployment's own environment (``AWS_ENDPOINT_URL_STS``, ``GCE_METADATA_HOST``, ``AZURE_AUTHORITY_HOST``)
are not connection data and are trusted as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from airflow_workload_identity.errors import ConfigError

__all__ = ["PUBLIC_SUFFIXES", "SETTING", "allowed_endpoint_hosts", "check_override", "host_allowed"]

SETTING = "[workload_identity] allowed_endpoint_hosts"
ENV = "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS"

#: The clouds' own endpoints: always allowed (a host equal to a suffix or under it).
PUBLIC_SUFFIXES: dict[str, tuple[str, ...]] = {
    "aws": ("amazonaws.com", "amazonaws.com.cn", "api.aws"),
    "gcp": ("googleapis.com",),
    "azure": (
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    ),
}


def allowed_endpoint_hosts() -> tuple[str, ...]:
    """The deployment's allow-list, from Airflow's configuration (environment first, as Airflow does)."""
    raw: str | None = os.environ.get(ENV)
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("workload_identity", "allowed_endpoint_hosts", fallback="")
        except ImportError:  # pragma: no cover - outside Airflow
            raw = ""
    return tuple(part.strip().lower() for part in (raw or "").split(",") if part.strip())


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def host_allowed(host: str, cloud: str, allowed: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    if any(host == suffix or host.endswith("." + suffix) for suffix in PUBLIC_SUFFIXES[cloud]):
        return True
    return any(_matches(host, pattern) for pattern in allowed)


def check_override(url: str | None, *, field: str, conn_type: str, cloud: str) -> None:
    """Refuse a connection's endpoint override unless its host is public for ``cloud`` or allow-listed."""
    if not url:
        return
    host = urlsplit(url).hostname or ""
    if host_allowed(host, cloud, allowed_endpoint_hosts()):
        return
    raise ConfigError(
        field,
        f"points at {host}, which is neither a public {cloud} endpoint nor allowed by {SETTING} (an endpoint "
        "override in a connection could otherwise collect the deployment's identity tokens)",
        f"if the deployment trusts {host}, add it to {SETTING} ({ENV}); otherwise remove the override",
        conn_type=conn_type,
    )
