"""``AzureWorkloadIdentityHook``: the DAG author's entry point for ``azure_workload_identity`` connections.

Thin on purpose: the connection id becomes a spec, the spec the shared credential (``credentials.py``),
and the hook hands out azure-core credentials usable by any Azure SDK client, bare tokens and reports.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from airflow_workload_identity import redaction
from airflow_workload_identity._compat import BaseHook, connection_of_type
from airflow_workload_identity.azure.credentials import (
    AsyncSharedTokenCredential,
    SharedTokenCredential,
    report,
    resolve,
)
from airflow_workload_identity.azure.spec import CONN_TYPE, FORM, AzureIdentitySpec
from airflow_workload_identity.endpoints import check_override
from airflow_workload_identity.hooks import tested_where
from airflow_workload_identity.plan import Plan
from airflow_workload_identity.report import IdentityReport
from airflow_workload_identity.tokens import unverified_claims

__all__ = ["AzureWorkloadIdentityHook"]


class AzureWorkloadIdentityHook(BaseHook):
    """Reach Azure as the pod's workload identity or the node's managed identity.

    :param azure_conn_id: an ``azure_workload_identity`` connection.
    """

    conn_name_attr = "azure_conn_id"
    default_conn_name = "azure_workload_identity_default"
    conn_type = CONN_TYPE
    hook_name = FORM.hook_name

    def __init__(self, azure_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.azure_conn_id = azure_conn_id

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return FORM.legacy_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return FORM.legacy_ui_field_behaviour()

    @cached_property
    def connection(self) -> Any:
        return connection_of_type(self.azure_conn_id, CONN_TYPE)

    @cached_property
    def spec(self) -> AzureIdentitySpec:
        """The connection's validated spec (raises ``ConfigError`` before any network call)."""
        spec = AzureIdentitySpec.from_connection(self.connection)
        check_override(spec.authority_host, field="authority_host", conn_type=CONN_TYPE, cloud="azure")
        return spec

    @property
    def account_url(self) -> str | None:
        """The storage account URL in the connection's host field (used by the official WasbHook too)."""
        host = self.connection.host
        return str(host).rstrip("/") if host else None

    def get_credential(self) -> SharedTokenCredential:
        """An azure-core ``TokenCredential`` (shared per process) for any Azure SDK client."""
        credential = resolve(self.spec)
        redaction.watch(credential)  # keeps its tokens out of every log (redaction.py)
        return credential

    def get_async_credential(self) -> AsyncSharedTokenCredential:
        """An azure-core ``AsyncTokenCredential``; it owns no HTTP session, so closing it leaks nothing."""
        return AsyncSharedTokenCredential(self.get_credential())

    def get_token(self, *scopes: str) -> str:
        """A bearer token for ``scopes`` (default: the connection's scopes)."""
        scopes = scopes or self.spec.default_scopes()
        return self.get_credential().get_token_info(*scopes).token

    def get_token_provider(self, *scopes: str) -> Callable[[], str]:
        """A zero-argument callable returning a current bearer token, for libraries that want one (database
        OAuth, HTTP clients). Each call returns the shared token, refreshed as needed."""
        credential = self.get_credential()
        scopes = scopes or self.spec.default_scopes()
        return lambda: credential.get_token_info(*scopes).token

    def get_conn(self) -> SharedTokenCredential:
        return self.get_credential()

    def get_credentials(self) -> SharedTokenCredential:
        """The shared credential (:meth:`get_credential`), under the name the three hooks share."""
        return self.get_credential()

    def whoami(self, *scopes: str, verify: bool = False) -> IdentityReport:
        """Acquire a token and say who it is: mode, client id, tenant, object id and audience (claims).

        ``verify=True`` asks for a new token now instead of reporting the cached one."""
        return report(self.get_credential(), self.azure_conn_id, scopes or self.spec.default_scopes(), verify=verify)

    def policy_plan(self) -> Plan:
        """The federated credential / IMDS attachment and the role assignment this connection needs."""
        from airflow_workload_identity.azure.policy import required_setup

        return required_setup(self.get_credential().identity)

    def explain_access_denied(
        self,
        error: Exception,
        *,
        resource: str | None = None,
        scope: str | None = None,
        role: str = "Storage Blob Data Reader",
    ) -> str:
        """Remediation for a storage 403: the token's audience and object id, and the role assignment.

        ``resource`` (or its Azure name ``scope``) is the role-assignment scope that was refused."""
        from airflow_workload_identity.azure.policy import explain_storage_denied

        claims = unverified_claims(self.get_token("https://storage.azure.com/.default"))
        where = resource or scope or "<the storage account or container>"
        return explain_storage_denied(error, token_claims=claims, scope=where, role=role)

    def policy(self) -> str:
        """:meth:`policy_plan` as text for people."""
        return self.policy_plan().text()

    def test_connection(self) -> tuple[bool, str]:
        """Acquire a token now and say who it is."""
        try:
            return True, self.whoami().one_line() + " " + tested_where()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
