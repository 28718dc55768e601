"""Azure: AKS workload identity (federated token file) or a managed identity (IMDS), no secret.

``from airflow_workload_identity.azure import AzureWorkloadIdentityHook`` imports the hook (and so Airflow and
azure-identity) lazily, so that importing the spec or the field declaration stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook
    from airflow_workload_identity.azure.spec import AzureIdentitySpec

__all__ = ["AzureIdentitySpec", "AzureWorkloadIdentityHook"]


def __getattr__(name: str) -> Any:
    if name == "AzureWorkloadIdentityHook":
        from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook

        return AzureWorkloadIdentityHook
    if name == "AzureIdentitySpec":
        from airflow_workload_identity.azure.spec import AzureIdentitySpec

        return AzureIdentitySpec
    raise AttributeError(name)
