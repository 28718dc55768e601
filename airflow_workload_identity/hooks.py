"""The package's hook for a connection id, whatever its cloud (for the CLI, the operator, diagnostics)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow_workload_identity.errors import ConfigError

if TYPE_CHECKING:
    from airflow_workload_identity.plan import Plan
    from airflow_workload_identity.report import IdentityReport

__all__ = ["CONN_TYPES", "WorkloadIdentityHook", "hook_for", "tested_where", "whoami"]


@runtime_checkable
class WorkloadIdentityHook(Protocol):
    """What the three clouds' hooks share: the same names and signatures, so the CLI, the operator and
    diagnostics treat them alike (mypy checks each hook against it below; ``test_hook_protocol`` too).

    A hook may add cloud-specific optional keywords (``explain_access_denied(..., bucket=)`` on GCP) and
    cloud-specific methods; these are the common part."""

    conn_type: str

    def get_credentials(self) -> Any:
        """The shared, refreshing SDK credential object (botocore, google-auth or azure-core)."""
        ...

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Who the connection is at each hop; ``verify``: one live call proving it works now."""
        ...

    def policy_plan(self) -> Plan:
        """What must be granted, hop by hop, for the connection to work."""
        ...

    def explain_access_denied(self, error: Exception, *, resource: str | None = None) -> str:
        """Remediation text for an access-denied error a client of this hook got on ``resource``."""
        ...

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection test: ``(ok, one line)``."""
        ...


if TYPE_CHECKING:
    from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook
    from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook
    from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook

    _CONFORMING: tuple[type[WorkloadIdentityHook], ...] = (
        AwsWorkloadIdentityHook,
        GcpWorkloadIdentityHook,
        AzureWorkloadIdentityHook,
    )

#: connection type → (module, hook class, connection-id keyword)
CONN_TYPES: dict[str, tuple[str, str, str]] = {
    "aws_workload_identity": ("airflow_workload_identity.aws.hook", "AwsWorkloadIdentityHook", "aws_conn_id"),
    "gcp_workload_identity": ("airflow_workload_identity.gcp.hook", "GcpWorkloadIdentityHook", "gcp_conn_id"),
    "azure_workload_identity": ("airflow_workload_identity.azure.hook", "AzureWorkloadIdentityHook", "azure_conn_id"),
}


def hook_for(conn_id: str, conn_type: str | None = None) -> WorkloadIdentityHook:
    """The hook serving ``conn_id`` (its type read from the connection unless given)."""
    import importlib

    if conn_type is None:
        from airflow_workload_identity._compat import get_connection

        conn_type = get_connection(conn_id).conn_type
    if conn_type not in CONN_TYPES:
        raise ConfigError(
            "conn_type",
            f"connection {conn_id!r} has type {conn_type!r}",
            f"use one of {', '.join(CONN_TYPES)}",
        )
    module, name, keyword = CONN_TYPES[conn_type]
    hook: WorkloadIdentityHook = getattr(importlib.import_module(module), name)(**{keyword: conn_id})
    return hook


def whoami(hook: WorkloadIdentityHook, *, verify: bool) -> IdentityReport:
    """``hook.whoami(verify=verify)`` (every hook takes ``verify``)."""
    return hook.whoami(verify=verify)


def tested_where() -> str:
    """Where a connection test ran: Airflow's Test button runs in the API server, not on a worker."""
    import socket

    return (
        f"[tested in process {os.getpid()} on {socket.gethostname()}; the UI's Test runs in the API server, whose "
        "identity may differ from the workers': check on a worker with WorkloadIdentityCheckOperator or "
        "'airflow-workload-identity whoami']"
    )
