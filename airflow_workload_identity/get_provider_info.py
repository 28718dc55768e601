"""The ``apache_airflow_provider`` entry point: static data, cheap to call.

Airflow calls this from nearly every CLI command, the scheduler, workers and the api-server, so it
imports neither Airflow nor a cloud SDK: only the pure-Python field declarations of each connection type.
"""

from __future__ import annotations

from typing import Any

from airflow_workload_identity import __version__
from airflow_workload_identity.aws.spec import FORM as AWS_FORM
from airflow_workload_identity.azure.spec import FORM as AZURE_FORM
from airflow_workload_identity.gcp.spec import FORM as GCP_FORM

__all__ = ["get_provider_info"]

FORMS = (AWS_FORM, GCP_FORM, AZURE_FORM)


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-workload-identity",
        "name": "Workload Identity",
        "description": (
            "Connections and hooks that reach AWS, Google Cloud and Azure through the workload identity "
            "of the pod Airflow runs in (IRSA, EKS Pod Identity, GKE Workload Identity, AKS workload "
            "identity), with no stored secret."
        ),
        "versions": [__version__],
        "connection-types": [form.provider_connection_type() for form in FORMS],
    }
