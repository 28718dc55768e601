"""A Key Vault (secrets, data plane) for the Azure sandbox: ``GET {vault}/secrets/{name}[/{version}]``.

https with the sandbox's CA, the bearer challenge, and RBAC per secret, as Key Vault answers:

* no ``Authorization``: 401 with ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/
  {tenant}", resource="https://vault.azure.net"`` (what azure-keyvault's challenge policy starts from);
* a token the sandbox did not sign, expired, or for another audience: 401 ``Unauthorized`` (``AKV10022``...);
* no role assignment ("Key Vault Secrets User", on the vault, on the secret, or on a name prefix) for the
  token's ``oid``: 403 ``Forbidden`` / ``ForbiddenByRbac`` with Key Vault's caller/action/resource text;
* allowed but absent: 404 ``SecretNotFound``; else 200 ``{"value", "id", "attributes", "tags"}``.

Every request is recorded by status (:meth:`KeyVaultFake.calls_by_status`). Private to ``dev.sandbox.azure``.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import jwt

from ._azure_http import QuietHandler

if TYPE_CHECKING:
    from .azure import AzureSandbox

__all__ = ["SECRETS_USER", "VAULT_RESOURCE", "KeyVaultFake", "KeyVaultHandler"]

VAULT_RESOURCE = "https://vault.azure.net"
SECRETS_USER = "Key Vault Secrets User"
_PATH = re.compile(r"^/secrets/(?P<name>[^/]+)(?:/(?P<version>[0-9a-f]{32}))?/?$")
_ACTION = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


@dataclass
class _Version:
    version: str
    value: str
    created: int


class KeyVaultFake:
    """The vault's secrets and role assignments, in memory."""

    def __init__(self, sandbox: AzureSandbox, name: str = "airflow-kv") -> None:
        self.sandbox = sandbox
        self.name = name
        self._lock = threading.Lock()
        self._secrets: dict[str, list[_Version]] = {}
        #: (object id, secret name | "prefix*" | "*")
        self._assignments: set[tuple[str, str]] = set()
        self._calls: Counter[str] = Counter()
        self.url = ""  # set when the server starts
        self.seed()

    def seed(self) -> None:
        """The scenario's secrets (the demo reads them): the workload identity may read ``airflow-*``;
        ``restricted-*`` exists and is not assigned."""
        self.set_secret("airflow-variables-greeting", "hello from Key Vault")
        self.set_secret("restricted-variables-greeting", "not for the reader")
        self.grant(self.sandbox.scenario.workload_object_id, "airflow-*")

    @property
    def resource_id(self) -> str:
        sc = self.sandbox.scenario
        return (
            f"/subscriptions/{sc.subscription_id}/resourceGroups/{sc.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    def set_secret(self, name: str, value: str) -> str:
        """A new version (the current one) of ``name``; returns its version id."""
        version = secrets.token_hex(16)
        with self._lock:
            self._secrets.setdefault(name.lower(), []).append(_Version(version, value, int(time.time())))
        return version

    def grant(self, object_id: str, secret: str = "*") -> None:
        """ "Key Vault Secrets User" for ``object_id`` on one secret, on names starting with a prefix
        (``"prefix*"``: one assignment per secret in real Key Vault, or the vault) or on the vault (``"*"``)."""
        with self._lock:
            self._assignments.add((object_id, secret.lower()))

    def revoke_all(self) -> None:
        with self._lock:
            self._assignments.clear()

    def calls(self) -> int:
        with self._lock:
            return sum(self._calls.values())

    def calls_by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _allowed(self, object_id: str, name: str) -> bool:
        with self._lock:
            return any(
                oid == object_id
                and (what == "*" or what == name or (what.endswith("*") and name.startswith(what[:-1])))
                for oid, what in self._assignments
            )

    def get(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, body, headers = self._get(path, authorization)
        with self._lock:
            self._calls[str(status)] += 1
        return status, body, headers

    def _get(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        tenant = self.sandbox.scenario.tenant_id
        challenge = {
            "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{tenant}", '
            f'resource="{VAULT_RESOURCE}"'
        }
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."), challenge
        try:
            claims = self.sandbox.verify_access_token(token.strip())
        except jwt.ExpiredSignatureError:
            return 401, _error("Unauthorized", "AKV10032: Token expired."), challenge
        except jwt.PyJWTError:
            return 401, _error("Unauthorized", "AKV10016: Token validation failed."), challenge
        audience = str(claims.get("aud", "")).rstrip("/")
        if audience != VAULT_RESOURCE:
            message = f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {claims.get('aud')}."
            return 401, _error("Unauthorized", message), challenge
        match = _PATH.match(unquote(urlsplit(path).path))
        if match is None:
            return 400, _error("BadParameter", "The request URI contains an invalid name: " + path), {}
        name = match["name"].lower()
        object_id = str(claims.get("oid", ""))
        if not self._allowed(object_id, name):
            message = (
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed recently, please observe "
                "propagation time.\r\n"
                f"Caller: appid={claims.get('appid')};oid={object_id};iss={claims.get('iss')}\r\n"
                f"Action: '{_ACTION}'\r\n"
                f"Resource: '{self.resource_id.lower()}/secrets/{name}'\r\n"
                "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n"
                f"Vault: {self.name};location=westeurope\r\n"
            )
            return (
                403,
                {"error": {"code": "Forbidden", "message": message, "innererror": {"code": "ForbiddenByRbac"}}},
                {},
            )
        with self._lock:
            versions = list(self._secrets.get(name, []))
        chosen = next((v for v in versions if v.version == match["version"]), None) if match["version"] else None
        if match["version"] is None and versions:
            chosen = versions[-1]
        if chosen is None:
            message = (
                f"A secret with (name/id) {match['name']} was not found in this key vault. If you recently deleted "
                "this secret you may be able to recover it using the correct recovery command. For help resolving "
                "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            )
            return 404, _error("SecretNotFound", message), {}
        return (
            200,
            {
                "value": chosen.value,
                "id": f"{self.url}/secrets/{match['name']}/{chosen.version}",
                "attributes": {
                    "enabled": True,
                    "created": chosen.created,
                    "updated": chosen.created,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            },
            {},
        )


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class KeyVaultHandler(QuietHandler):
    """``https://<vault>.vault.azure.net`` on loopback."""

    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    vault: KeyVaultFake

    def do_GET(self) -> None:
        status, body, headers = self.vault.get(self.path, self.headers.get("Authorization"))
        headers = {**headers, "x-ms-keyvault-service-version": "1.9.2000.1", "x-ms-keyvault-region": "westeurope"}
        self.send_json(status, body, headers)

    def do_POST(self) -> None:
        self.read_body()
        status, body, headers = self.vault.get(self.path, self.headers.get("Authorization"))
        if status == 200:
            status, body = 405, _error("BadParameter", "The method is not supported by this fake.")
        self.send_json(status, body, headers)
