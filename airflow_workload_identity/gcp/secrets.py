"""Airflow secrets backend on Google Secret Manager, reached as the service account a
``gcp_workload_identity`` connection would impersonate.

``backend_kwargs`` take the connection's identity keys (``impersonation_chain``, ``expected_principal``,
``lifetime_seconds``, ``project_id``, ...; parsed by :class:`GcpIdentitySpec`) plus the official
``CloudSecretManagerBackend``'s keys with their names and defaults, so switching from
``airflow.providers.google.cloud.secrets.secret_manager.CloudSecretManagerBackend`` changes only the class
path (key files are not accepted: the point is to have none)::

    [secrets]
    backend = airflow_workload_identity.gcp.secrets.SecretManagerBackend
    backend_kwargs = {"connections_prefix": "airflow-connections", "variables_prefix": "airflow-variables",
                      "project_id": "<project>", "impersonation_chain": "<service account>"}

Reads are one ``GET {endpoint}/v1/projects/{project}/secrets/{id}/versions/latest:access`` each, through
``requests`` (``HTTPS_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``) on the same shared, refreshing token
the hooks use; every call has a timeout. ``secret_manager_endpoint_url`` moves the endpoint to a regional
or Private Service Connect one, or to a host the deployment lists in ``[workload_identity]
allowed_endpoint_hosts``: the request carries the service account's token.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from typing import Any

from airflow_workload_identity.endpoints import (
    SETTING,
    allowed_endpoint_hosts,
    check_override,
    host_allowed,
    parse_endpoint,
)
from airflow_workload_identity.errors import ConfigError, TransientError, WorkloadIdentityError
from airflow_workload_identity.gcp.spec import CONN_TYPE, FORM, GcpIdentitySpec
from airflow_workload_identity.report import IdentityReport
from airflow_workload_identity.secrets_common import (
    SecretsAccessDenied,
    WorkloadIdentitySecretsBackend,
    split_kwargs,
    watch_credentials,
)

__all__ = ["SecretManagerBackend"]

ENDPOINT = "https://secretmanager.googleapis.com"
#: (connect, read) seconds for every Secret Manager call.
HTTP_TIMEOUT = (5.0, 30.0)
#: The secret ids Secret Manager accepts (the official backend's pattern, with the API's length limit).
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}", re.ASCII)
#: Google's Secret Manager hosts: global, regional (``secretmanager.<region>.rep.googleapis.com``), mTLS,
#: Private Google Access and Private Service Connect (``secretmanager-<endpoint>.p.googleapis.com``).
_GOOGLE_HOSTS = re.compile(
    r"secretmanager(?:\.mtls)?\.googleapis\.com|secretmanager\.[a-z]+-[a-z]+[0-9]{1,2}\.rep\.googleapis\.com"
    r"|private\.googleapis\.com|restricted\.googleapis\.com|secretmanager-[a-z][a-z0-9]{0,19}\.p\.googleapis\.com",
    re.ASCII,
)
_BACKEND = "SecretManagerBackend"
_KEYFILE_KEYS = ("gcp_keyfile_dict", "gcp_key_path", "gcp_credential_config_file", "gcp_scopes")


def _check_endpoint(url: Any) -> str:
    """The Secret Manager endpoint to use; ``ConfigError`` on a host that is neither Google's nor listed."""
    if url is None or url == "":
        return ENDPOINT
    field = "secret_manager_endpoint_url"
    if not isinstance(url, str):
        raise ConfigError(field, f"is a {type(url).__name__}, not a URL", "write the URL as a string")
    try:
        endpoint = parse_endpoint(url)
    except ValueError as exc:
        raise ConfigError(field, str(exc), f"write {ENDPOINT} or https://<listed host>[:port]") from None
    google = not endpoint.ip and bool(_GOOGLE_HOSTS.fullmatch(endpoint.host))
    if google and endpoint.scheme == "https" and endpoint.port in (None, 443):
        return url.rstrip("/")
    if host_allowed(endpoint.host, "gcp", allowed_endpoint_hosts()) and not google:
        return url.rstrip("/")
    raise ConfigError(
        field,
        f"points at {endpoint.host}, which is not a Secret Manager endpoint over https on 443 and is not allowed by "
        f"{SETTING}; it would receive the service account's access token",
        f"use {ENDPOINT} (or a regional or Private Service Connect endpoint), or list the host in {SETTING}",
    )


class SecretManagerBackend(WorkloadIdentitySecretsBackend):
    """Connections, variables and config in Google Secret Manager, read as the impersonated account.

    Defaults as the official backend: ``connections_prefix="airflow-connections"``,
    ``variables_prefix="airflow-variables"``, ``config_prefix="airflow-config"``, ``sep="-"``;
    ``project_id`` defaults to the target service account's project (``<name>@<project>.iam...``), then
    ``GOOGLE_CLOUD_PROJECT``.
    """

    defaults: dict[str, Any] = {
        "connections_prefix": "airflow-connections",
        "variables_prefix": "airflow-variables",
        "config_prefix": "airflow-config",
        "sep": "-",
        "secret_manager_endpoint_url": None,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for key in _KEYFILE_KEYS:
            if kwargs.get(key) not in (None, ""):
                raise ConfigError(
                    key,
                    "is a key-file setting of the official backend; this backend uses the pod's workload identity",
                    "remove it and set impersonation_chain to the service account to read the secrets as",
                )
        kwargs = {k: v for k, v in kwargs.items() if k not in _KEYFILE_KEYS}
        identity, self.options = split_kwargs(_BACKEND, kwargs, identity_keys=FORM.names, defaults=self.defaults)
        self.spec = GcpIdentitySpec.from_extra(identity)
        check_override(self.spec.iam_endpoint_url, field="iam_endpoint_url", conn_type=CONN_TYPE, cloud="gcp")
        check_override(self.spec.sts_endpoint_url, field="sts_endpoint_url", conn_type=CONN_TYPE, cloud="gcp_sts")
        self.endpoint = _check_endpoint(self.options.extra.get("secret_manager_endpoint_url"))
        project = self.spec.resolved_project(os.environ)
        if not project:
            raise ConfigError(
                "project_id",
                f"is not set and cannot be derived from {self.spec.target}",
                "set project_id to the project that holds the secrets",
            )
        self.project_id = project
        for key in ("connections_prefix", "variables_prefix", "config_prefix"):
            prefix = getattr(self.options, key)
            if prefix and not re.fullmatch(r"[A-Za-z0-9_-]*", prefix + self.options.sep):
                raise ConfigError(
                    key,
                    "with the separator is not a valid secret id start",
                    "use letters, digits, '-' and '_' only in the prefix and sep",
                )
        self._local = threading.local()

    def _name(self, prefix: str, secret_id: str) -> str | None:
        name = self.build_path(prefix, secret_id, self.options.sep) if prefix else secret_id
        return name if SECRET_ID.fullmatch(name) else None  # the API would answer 400: no request

    def session(self) -> Any:
        """An ``AuthorizedSession`` on the shared target token (one per thread and identity)."""
        from google.auth.transport.requests import AuthorizedSession

        from airflow_workload_identity.gcp.credentials import resolve

        chain = resolve(self.spec)
        watch_credentials(chain.token, chain.source.token)
        self._chain = chain
        cached = getattr(self._local, "session", None)
        if cached is not None and cached[0] is chain.token:
            return cached[1]
        session = AuthorizedSession(chain.token)
        self._local.session = (chain.token, session)
        return session

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Who the backend reads secrets as: the source, each delegate, the target (``verify``: one
        generateIdToken call now)."""
        from airflow_workload_identity.gcp.credentials import resolve

        chain = resolve(self.spec)
        watch_credentials(chain.token, chain.source.token)
        return chain.report(f"[secrets] backend {_BACKEND}", verify=verify)

    def _read(self, name: str) -> str | None:
        import requests

        from airflow_workload_identity.gcp.policy import parse_error_body

        url = f"{self.endpoint}/v1/projects/{self.project_id}/secrets/{name}/versions/latest:access"
        try:
            response = self.session().get(url, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise TransientError("Secret Manager access", 1, type(exc).__name__, endpoint=self.endpoint) from None
        if response.status_code == 200:
            body = response.json()
            data = base64.b64decode(body["payload"]["data"])
            expected = body["payload"].get("dataCrc32c")
            if expected is not None:
                import google_crc32c

                if str(google_crc32c.value(data)) != str(expected):
                    raise TransientError(
                        "Secret Manager access", 1, "payload failed its CRC32C check", endpoint=self.endpoint
                    )
            return data.decode("utf-8")
        if response.status_code == 404:
            return None
        parsed = parse_error_body(response.text) or {}
        if response.status_code == 403:
            raise self._denied(name, parsed) from None
        if response.status_code in (429,) or response.status_code >= 500:
            raise TransientError(
                "Secret Manager access",
                1,
                str(parsed.get("message") or response.reason),
                endpoint=self.endpoint,
                status=response.status_code,
            )
        raise WorkloadIdentityError(
            f"Secret Manager answered {response.status_code} for secret {name!r} in project {self.project_id}: "
            f"{parsed.get('status', '')} {parsed.get('message', '')}".rstrip()
        )

    def _denied(self, name: str, parsed: dict[str, Any]) -> SecretsAccessDenied:
        target = self.spec.target
        if self.spec.is_direct:  # the pod's own service account: its e-mail, known once its token is
            chain = getattr(self, "_chain", None)
            target = (chain.source.email() if chain is not None else None) or target
        hops = len(self.spec.impersonation_chain)
        prefix = next(
            (
                p
                for p in (self.options.connections_prefix, self.options.variables_prefix, self.options.config_prefix)
                if p and name.startswith(p + self.options.sep)
            ),
            None,
        )
        lines = [
            f"Grant {target} read access to the secret:",
            f"  gcloud secrets add-iam-policy-binding {name} --project={self.project_id} "
            f"--member=serviceAccount:{target} --role=roles/secretmanager.secretAccessor",
        ]
        if prefix:
            start = f"{prefix}{self.options.sep}"
            condition = f'resource.name.startsWith("projects/<project number>/secrets/{start}")'
            lines += [
                f"or to every secret under {start} (a missing one then reads as absent, not denied):",
                f"  gcloud projects add-iam-policy-binding {self.project_id} --member=serviceAccount:{target} "
                "--role=roles/secretmanager.secretAccessor "
                f"--condition='expression={condition},title=airflow-{prefix}'",
            ]
        if parsed.get("reason") == "ACCESS_TOKEN_SCOPE_INSUFFICIENT":
            lines = ["The token lacks the cloud-platform scope: add it to the backend's scopes."]
        return SecretsAccessDenied(
            hop=hops,
            hops=hops,
            caller=target,
            target=f"projects/{self.project_id}/secrets/{name}",
            permission="secretmanager.versions.access",
            remediation="\n".join(lines),
            cloud_code=str(parsed.get("status") or "PERMISSION_DENIED"),
            cloud_message=str(parsed.get("message") or ""),
            endpoint=self.endpoint,
        )
