"""The package's hook for a connection id, whatever its cloud (for the CLI, the operator, diagnostics)."""

from __future__ import annotations

import os
from typing import Any

from airflow_workload_identity.errors import ConfigError

__all__ = ["CONN_TYPES", "hook_for", "tested_where", "whoami"]

#: connection type → (module, hook class, connection-id keyword)
CONN_TYPES: dict[str, tuple[str, str, str]] = {
    "aws_workload_identity": ("airflow_workload_identity.aws.hook", "AwsWorkloadIdentityHook", "aws_conn_id"),
    "gcp_workload_identity": ("airflow_workload_identity.gcp.hook", "GcpWorkloadIdentityHook", "gcp_conn_id"),
    "azure_workload_identity": ("airflow_workload_identity.azure.hook", "AzureWorkloadIdentityHook", "azure_conn_id"),
}


def hook_for(conn_id: str, conn_type: str | None = None) -> Any:
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
    return getattr(importlib.import_module(module), name)(**{keyword: conn_id})


def whoami(hook: Any, *, verify: bool) -> Any:
    """``hook.whoami``, with one live verification call where the cloud's hook offers it (AWS, GCP)."""
    import inspect

    if verify and "verify" in inspect.signature(hook.whoami).parameters:
        return hook.whoami(verify=True)
    return hook.whoami()


def tested_where() -> str:
    """Where a connection test ran: Airflow's Test button runs in the API server, not on a worker."""
    import socket

    return (
        f"[tested in process {os.getpid()} on {socket.gethostname()}; the UI's Test runs in the API server, whose "
        "identity may differ from the workers': check on a worker with WorkloadIdentityCheckOperator or "
        "'airflow-workload-identity whoami']"
    )
