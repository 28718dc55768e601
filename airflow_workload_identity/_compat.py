"""Airflow 2.11 / 3.x import shims, in one place (imported only by hooks and adapters)."""

from __future__ import annotations

import functools
import sys
from typing import Any

# The package's connection types: a contract (stored connections, provider info), never renamed.
_OUR_TYPES = frozenset({"aws_workload_identity", "gcp_workload_identity", "azure_workload_identity"})
_QUIET_MARK = "_awi_quiet_uri_scheme"


def quiet_uri_scheme_warning() -> None:
    """Keep Airflow's "Connection schemes (type: ...) shall not contain '_'" warning off our three types.

    Airflow turns every connection it reads into a URI (``Connection.get_connection_from_secrets`` caches
    it as one, in the CLI, the execution API serving tasks, and ``connections get``), and ``get_uri()``
    warns when the type holds ``_``. For our types the warning is wrong: ``get_uri()`` writes the scheme
    with ``-`` (``aws-workload-identity://``) and Airflow's URI parser maps it back to the same type, so
    the round trip is lossless. The check reads the type the connection was parsed from
    (``_prenormalized_conn_type``, set by Airflow itself for a connection read from a URI); giving our
    connections that same, already-hyphenated value makes the check pass and leaves the URI unchanged.
    Other types (and every other warning) are untouched. Idempotent; a no-op without Airflow's core model.
    """
    try:
        from airflow.models.connection import Connection
    except ImportError:  # pragma: no cover - a task-SDK-only environment has no core model to quiet
        return
    original = Connection.get_uri
    if getattr(original, _QUIET_MARK, False):
        return

    @functools.wraps(original)
    def get_uri(self: Any) -> str:
        if self.conn_type in _OUR_TYPES and "_prenormalized_conn_type" not in vars(self):
            self._prenormalized_conn_type = str(self.conn_type).replace("_", "-")
        return str(original(self))

    setattr(get_uri, _QUIET_MARK, True)
    Connection.get_uri = get_uri  # type: ignore[method-assign]


# Defined above the Airflow import: importing Airflow runs airflow_local_settings.py, whose interop
# install() calls quiet_uri_scheme_warning() while this module is still being imported.
try:  # Airflow 3.x
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.11
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined,unused-ignore]

# Secrets are kept out of logs by ``redaction.py``, not by registering each token with Airflow's secrets
# masker (which keeps every value forever): see docs/security.md, "Logs".

__all__ = ["BaseHook", "connection_of_type", "get_connection", "quiet_uri_scheme_warning"]

if "airflow.models.connection" in sys.modules:  # a process that serves connections (api-server, dags test)
    quiet_uri_scheme_warning()


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
        quiet_uri_scheme_warning()  # Airflow caches what it reads as a URI
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
