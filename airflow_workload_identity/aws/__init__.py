"""AWS: assume a customer's role (or a chain of roles) from the pod's ambient identity.

``from airflow_workload_identity.aws import AwsWorkloadIdentityHook`` imports the hook (and so Airflow and
botocore) lazily, so that importing the spec or the field declaration stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook
    from airflow_workload_identity.aws.spec import AwsIdentitySpec

__all__ = ["AwsIdentitySpec", "AwsWorkloadIdentityHook"]


def __getattr__(name: str) -> Any:
    if name == "AwsWorkloadIdentityHook":
        from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook

        return AwsWorkloadIdentityHook
    if name == "AwsIdentitySpec":
        from airflow_workload_identity.aws.spec import AwsIdentitySpec

        return AwsIdentitySpec
    raise AttributeError(name)
