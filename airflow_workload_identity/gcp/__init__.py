"""Google Cloud: impersonate a service account (or a chain of them) from the pod's ambient credentials.

``from airflow_workload_identity.gcp import GcpWorkloadIdentityHook`` imports the hook (and so Airflow and
google-auth) lazily, so that importing the spec or the field declaration stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook
    from airflow_workload_identity.gcp.spec import GcpIdentitySpec

__all__ = ["GcpIdentitySpec", "GcpWorkloadIdentityHook"]


def __getattr__(name: str) -> Any:
    if name == "GcpWorkloadIdentityHook":
        from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook

        return GcpWorkloadIdentityHook
    if name == "GcpIdentitySpec":
        from airflow_workload_identity.gcp.spec import GcpIdentitySpec

        return GcpIdentitySpec
    raise AttributeError(name)
