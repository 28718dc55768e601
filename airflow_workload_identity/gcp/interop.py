"""Let the official Google provider's hooks and operators run on ``gcp_workload_identity`` connections.

The official ``GoogleBaseHook`` already honours the connection's ``impersonation_chain`` (same key, same
order) and ``quota_project_id`` on its own, through Application Default Credentials. :func:`install`
goes further: every ``GoogleBaseHook`` (``GCSHook``, ``BigQueryHook``, ... and the async hooks of
deferrable operators, which build their tokens from the sync hook) whose connection has type
``gcp_workload_identity`` gets this package's shared, single-flight credentials and the connection's
project instead, so the IAM endpoint override, the retries, the diagnostics and the one-mint-per-key
sharing apply to them too. Connections of other types are untouched.

Call it once per Airflow process, e.g. in ``airflow_local_settings.py`` (read by every component)::

    from airflow_workload_identity.gcp.interop import install

    install()
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from airflow_workload_identity import redaction
from airflow_workload_identity.gcp.spec import CONN_TYPE, normalise_account

__all__ = ["install", "installed", "uninstall"]

_ORIGINAL = "_awi_original_get_credentials_and_project_id"


def _hook_class() -> Any:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    return GoogleBaseHook


def installed() -> bool:
    return hasattr(_hook_class(), _ORIGINAL)


def install() -> None:
    """Route official Google hooks on ``gcp_workload_identity`` connections through the shared chain."""
    hook_class = _hook_class()
    from airflow_workload_identity._compat import quiet_uri_scheme_warning  # lazily: Airflow may be importing

    redaction.install()
    quiet_uri_scheme_warning()  # Airflow's URI-scheme warning, wrong for our types (_compat.py)
    if installed():
        return
    original = hook_class.get_credentials_and_project_id

    def get_credentials_and_project_id(self: Any) -> tuple[Any, str | None]:
        if self._cached_credentials is not None:
            return self._cached_credentials, self._cached_project_id
        conn = self.get_connection(self.gcp_conn_id)
        if conn.conn_type != CONN_TYPE:
            credentials, project_id = original(self)
            return credentials, project_id
        from airflow_workload_identity.gcp.credentials import resolve
        from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook

        ours = GcpWorkloadIdentityHook(gcp_conn_id=self.gcp_conn_id)
        spec = ours.spec
        if self.impersonation_chain:  # an operator's impersonation_chain replaces the connection's
            chain = self.impersonation_chain
            entries = [c.strip() for c in chain.split(",")] if isinstance(chain, str) else list(chain)
            spec = dataclasses.replace(spec, impersonation_chain=tuple(normalise_account(e) for e in entries))
            spec.validate()
        if self.quota_project_id:
            spec = dataclasses.replace(spec, quota_project_id=self.quota_project_id)
        chain = resolve(spec)
        credentials = chain.token
        redaction.watch(credentials)  # keeps the chain's tokens out of every log (redaction.py)
        redaction.watch(chain.source.token)
        project = spec.resolved_project(os.environ)
        self._cached_credentials, self._cached_project_id = credentials, project
        return credentials, project

    setattr(hook_class, _ORIGINAL, original)
    hook_class.get_credentials_and_project_id = get_credentials_and_project_id


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    hook_class = _hook_class()
    if installed():
        hook_class.get_credentials_and_project_id = getattr(hook_class, _ORIGINAL)
        delattr(hook_class, _ORIGINAL)
