"""Let the official Azure provider's ``WasbHook`` (sync and async) run on ``azure_workload_identity``
connections.

The official hook builds a ``DefaultAzureCredential`` per ``get_conn()`` and spends its retries before a
credential problem surfaces. :func:`install` makes ``WasbHook.get_conn`` and ``WasbAsyncHook.get_async_conn``
return blob clients for the connection's account URL (its *host* field) signed by this package's shared
credential when the connection's type is ``azure_workload_identity``; other connections are untouched.
Call it once per process, e.g. in ``airflow_local_settings.py``.
"""

from __future__ import annotations

from typing import Any

from airflow_workload_identity import redaction
from airflow_workload_identity.azure.spec import CONN_TYPE
from airflow_workload_identity.errors import ConfigError

__all__ = ["install", "installed", "uninstall"]

_MARK = "_awi_original"


def _classes() -> tuple[Any, Any]:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook, WasbHook

    return WasbHook, WasbAsyncHook


def installed() -> bool:
    return hasattr(_classes()[0], _MARK)


def _ours(hook: Any) -> Any:
    from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook

    ours = AzureWorkloadIdentityHook(azure_conn_id=hook.conn_id)
    if not ours.account_url:
        raise ConfigError(
            "host",
            "is empty, so WasbHook has no storage account URL",
            "put https://<account>.blob.core.windows.net in the connection's host field",
            conn_type=CONN_TYPE,
        )
    return ours


def install() -> None:
    """Route ``WasbHook`` / ``WasbAsyncHook`` on ``azure_workload_identity`` connections through the
    shared credential."""
    wasb, wasb_async = _classes()
    from airflow_workload_identity._compat import quiet_uri_scheme_warning  # lazily: Airflow may be importing

    redaction.install()
    quiet_uri_scheme_warning()  # Airflow's URI-scheme warning, wrong for our types (_compat.py)
    if installed():
        return
    original_sync, original_async = wasb.get_conn, wasb_async.get_async_conn

    def get_conn(self: Any) -> Any:
        if self.get_connection(self.conn_id).conn_type != CONN_TYPE:
            return original_sync(self)
        from azure.storage.blob import BlobServiceClient

        ours = _ours(self)
        return BlobServiceClient(account_url=ours.account_url, credential=ours.get_credential())

    async def get_async_conn(self: Any) -> Any:
        from asgiref.sync import sync_to_async

        conn = await sync_to_async(self.get_connection)(self.conn_id)
        if conn.conn_type != CONN_TYPE:
            return await original_async(self)
        from azure.storage.blob.aio import BlobServiceClient

        ours = await sync_to_async(_ours)(self)
        self.blob_service_client = BlobServiceClient(
            account_url=ours.account_url, credential=ours.get_async_credential()
        )
        return self.blob_service_client

    setattr(wasb, _MARK, (original_sync, original_async))
    wasb.get_conn = get_conn
    wasb_async.get_async_conn = get_async_conn


def uninstall() -> None:
    wasb, wasb_async = _classes()
    if installed():
        original_sync, original_async = getattr(wasb, _MARK)
        wasb.get_conn, wasb_async.get_async_conn = original_sync, original_async
        delattr(wasb, _MARK)
