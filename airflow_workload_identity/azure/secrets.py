"""Airflow secrets backend on Azure Key Vault, reached as the identity an ``azure_workload_identity``
connection describes (AKS workload identity or the node's managed identity).

``backend_kwargs`` take the connection's identity keys (``client_id``, ``tenant_id``, ``mode``,
``expected_tenant_id``, ...; parsed by :class:`AzureIdentitySpec`) plus the official
``AzureKeyVaultBackend``'s keys with their names and defaults (``vault_url`` is required), so switching
from ``airflow.providers.microsoft.azure.secrets.key_vault.AzureKeyVaultBackend`` changes only the class
path; its ``managed_identity_client_id`` / ``workload_identity_tenant_id`` are read as ``client_id`` /
``tenant_id``. A client secret is refused: the point is to have none::

    [secrets]
    backend = airflow_workload_identity.azure.secrets.KeyVaultBackend
    backend_kwargs = {"vault_url": "https://<vault>.vault.azure.net", "client_id": "<client id>",
                      "tenant_id": "<tenant id>"}

Reads go through ``azure-keyvault-secrets``' ``SecretClient`` (its bearer-challenge policy; requests'
``HTTPS_PROXY``/``NO_PROXY`` and ``REQUESTS_CA_BUNDLE``) with bounded timeouts and retries, on the same
shared credential the hooks use (one token per identity and scope).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from airflow_workload_identity.azure.spec import CONN_TYPE, FORM, AzureIdentitySpec
from airflow_workload_identity.endpoints import SETTING, allowed_endpoint_hosts, check_override, host_allowed
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.report import IdentityReport
from airflow_workload_identity.secrets_common import (
    SecretsAccessDenied,
    WorkloadIdentitySecretsBackend,
    split_kwargs,
    watch_credentials,
)

__all__ = ["KeyVaultBackend"]

VAULT_SCOPE = "https://vault.azure.net/.default"
#: Key Vault's data-plane domains (public, China, US Government, Germany) and Managed HSM.
_VAULT_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{1,22})\.(?:vault\.azure\.net|vault\.azure\.cn|vault\.usgovcloudapi\.net"
    r"|vault\.microsoftazure\.de|managedhsm\.azure\.net)",
    re.ASCII,
)
_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}", re.ASCII)
_BACKEND = "KeyVaultBackend"
#: The official backend's identity keys, read as ours.
_ALIASES = {"managed_identity_client_id": "client_id", "workload_identity_tenant_id": "tenant_id"}
#: (connect, read) seconds and retries for every Key Vault call.
CONNECTION_TIMEOUT = 10
READ_TIMEOUT = 30
RETRY_TOTAL = 3


def _check_vault_url(url: Any) -> tuple[str, bool]:
    """(vault URL, whether it is a Key Vault domain); ``ConfigError`` naming ``vault_url`` otherwise."""
    from airflow_workload_identity.endpoints import parse_endpoint

    field = "vault_url"
    if not url or not isinstance(url, str):
        raise ConfigError(
            field,
            "is required" if not url else f"is a {type(url).__name__}",
            "set it to https://<vault>.vault.azure.net",
        )
    try:
        endpoint = parse_endpoint(url)
    except ValueError as exc:
        raise ConfigError(field, str(exc), "write https://<vault>.vault.azure.net with no path") from None
    if endpoint.scheme != "https":
        raise ConfigError(field, "is not https (Key Vault refuses bearer tokens over http)", "use https://")
    if not endpoint.ip and _VAULT_HOST.fullmatch(endpoint.host) and endpoint.port in (None, 443):
        return url.rstrip("/"), True
    if host_allowed(endpoint.host, "azure", allowed_endpoint_hosts()) and not _VAULT_HOST.fullmatch(endpoint.host):
        return url.rstrip("/"), False
    raise ConfigError(
        field,
        f"points at {endpoint.host}, which is not a Key Vault host (*.vault.azure.net and the sovereign clouds' "
        f"equivalents) and is not allowed by {SETTING}; it would receive the identity's access token",
        f"use https://<vault>.vault.azure.net, or list the host in {SETTING}",
    )


class KeyVaultBackend(WorkloadIdentitySecretsBackend):
    """Connections, variables and config in Azure Key Vault, read as the configured identity.

    Defaults as the official backend: ``connections_prefix="airflow-connections"``,
    ``variables_prefix="airflow-variables"``, ``config_prefix="airflow-config"``, ``sep="-"``; ``_`` in
    names becomes ``sep`` (``smtp_default`` → ``airflow-connections-smtp-default``); a name Key Vault
    cannot hold (other than letters, digits and ``-``, or over 127 characters) is absent without a request.
    """

    defaults: dict[str, Any] = {
        "connections_prefix": "airflow-connections",
        "variables_prefix": "airflow-variables",
        "config_prefix": "airflow-config",
        "sep": "-",
        "vault_url": "",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        if kwargs.get("client_secret"):
            raise ConfigError(
                "client_secret",
                "is a client secret; this backend uses the pod's workload identity",
                "remove it and set client_id and tenant_id of the managed identity",
            )
        kwargs = {k: v for k, v in kwargs.items() if k != "client_secret"}
        for alias, name in _ALIASES.items():
            value = kwargs.pop(alias, None)
            if value in (None, ""):
                continue
            if kwargs.get(name) not in (None, "", value):
                raise ConfigError(alias, f"differs from {name}", f"set only {name}")
            kwargs[name] = value
        identity, self.options = split_kwargs(_BACKEND, kwargs, identity_keys=FORM.names, defaults=self.defaults)
        self.spec = AzureIdentitySpec.from_extra(identity)
        check_override(self.spec.authority_host, field="authority_host", conn_type=CONN_TYPE, cloud="azure")
        self.vault_url, self._key_vault_domain = _check_vault_url(self.options.extra.get("vault_url"))
        self._local = threading.local()

    def _name(self, prefix: str, secret_id: str) -> str | None:
        path = f"{prefix}{self.options.sep}{secret_id}" if prefix else secret_id
        name = path.replace("_", self.options.sep)
        return name if _NAME.fullmatch(name) else None

    def client(self) -> Any:
        """A ``SecretClient`` on the shared credential (one per thread and identity)."""
        from azure.keyvault.secrets import SecretClient

        from airflow_workload_identity.azure.credentials import resolve

        credential = resolve(self.spec)
        watch_credentials(credential)
        self._credential = credential
        cached = getattr(self._local, "client", None)
        if cached is not None and cached[0] is credential:
            return cached[1]
        client = SecretClient(
            self.vault_url,
            credential,
            # the challenge names vault.azure.net; a host the deployment lists (a proxy, a private endpoint
            # name, the sandbox) is not under it, and the deployment vouched for it in the allow-list
            verify_challenge_resource=self._key_vault_domain,
            connection_timeout=CONNECTION_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retry_total=RETRY_TOTAL,
            logging_enable=False,
        )
        self._local.client = (credential, client)
        return client

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Who the backend reads secrets as: a Key Vault token's claims (``verify``: a new token now)."""
        from airflow_workload_identity.azure.credentials import report, resolve

        credential = resolve(self.spec)
        watch_credentials(credential)
        return report(credential, f"[secrets] backend {_BACKEND}", (VAULT_SCOPE,), verify=verify)

    def _read(self, name: str) -> str | None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        client = self.client()
        try:
            secret = client.get_secret(name)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            if error.status_code == 403:
                raise self._denied(name, error) from None
            raise
        return None if secret.value is None else str(secret.value)

    def _denied(self, name: str, error: Any) -> SecretsAccessDenied:
        from airflow_workload_identity.tokens import unverified_claims

        claims: dict[str, Any] = {}
        try:
            claims = unverified_claims(self._credential.get_token_info(VAULT_SCOPE).token)
        except Exception:  # the report works without them
            claims = {}
        object_id = str(claims.get("oid") or self.spec.object_id or "<object id of the identity>")
        vault = self.vault_url.split("//", 1)[1].split(".", 1)[0] if self._key_vault_domain else "<vault name>"
        scope = (
            "/subscriptions/<subscription id>/resourceGroups/<resource group>"
            f"/providers/Microsoft.KeyVault/vaults/{vault}/secrets/{name}"
        )
        remediation = (
            "Assign the identity the Key Vault Secrets User role on the secret (or on the vault, so that a missing "
            "secret reads as absent, not denied):\n"
            f'  az role assignment create --role "Key Vault Secrets User" --assignee-object-id {object_id} '
            f"--assignee-principal-type ServicePrincipal --scope {scope}\n"
            "(a vault using access policies instead of RBAC: az keyvault set-policy --name "
            f"{vault} --object-id {object_id} --secret-permissions get)"
        )
        code = getattr(getattr(error, "error", None), "code", None) or "Forbidden"
        return SecretsAccessDenied(
            hop=1,
            hops=1,
            caller=f"{self.spec.client_id or claims.get('appid') or 'the identity'} (object id {object_id})",
            target=f"{self.vault_url}/secrets/{name}",
            permission="Microsoft.KeyVault/vaults/secrets/getSecret/action",
            remediation=remediation,
            cloud_code=str(code),
            cloud_message=str(getattr(getattr(error, "error", None), "message", "") or "").split("\r\n", 1)[0],
            endpoint=self.vault_url,
        )
