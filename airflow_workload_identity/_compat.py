"""Airflow 2.11 / 3.x import shims, in one place (imported only by hooks and adapters)."""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.x
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.11
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined,unused-ignore]

# Secrets are kept out of logs by ``redaction.py``, not by registering each token with Airflow's secrets
# masker (which keeps every value forever): see docs/security.md, "Logs".

__all__ = ["BaseHook", "connection_of_type", "get_connection"]


def get_connection(conn_id: str) -> Any:
    """The connection ``conn_id``, wherever this process can read it.

    Inside a task (and wherever ``AIRFLOW_CONN_*`` or a secrets backend holds it) through the hook API;
    outside a task on Airflow 3, where the task SDK cannot read the metadata database, through the core
    model (our CLI on a scheduler or api-server pod).
    """
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as sdk_error:
        try:
            from airflow.models.connection import Connection
        except ImportError:  # pragma: no cover - a task-SDK-only environment
            raise sdk_error from None
        try:
            return Connection.get_connection_from_secrets(conn_id)
        except Exception:
            raise sdk_error from None


def connection_of_type(conn_id: str, conn_type: str) -> Any:
    """The connection ``conn_id``, refused with a ``ConfigError`` if it has another type."""
    from airflow_workload_identity.errors import ConfigError

    conn = get_connection(conn_id)
    if conn.conn_type and conn.conn_type != conn_type:
        raise ConfigError(
            "conn_type",
            f"connection {conn_id!r} has type {conn.conn_type!r}",
            f"use a connection of type {conn_type!r} with this hook",
            conn_type=conn_type,
        )
    return conn
