"""Demo DAG: a customer's blob container read through an ``azure_workload_identity`` connection.

Run by ``bash dev/demo.sh`` against the local sandbox (fake Entra over https, Azurite behind an RBAC
check). The official ``WasbHook`` shares the package's credential through
``airflow_workload_identity.azure.interop.install()``, called from ``airflow_local_settings.py``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

CONTAINER_A = "container-a"
CONTAINER_B = "container-b"
BLOB_A = "reports/hello.txt"
BLOB_B = "secret.txt"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["demo"])
def wi_azure_demo() -> None:
    @task
    def whoami() -> None:
        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        print(AzureWorkloadIdentityHook(azure_conn_id="customer_blob").whoami().render())

    @task
    def read_container_a_with_the_hook() -> None:
        from azure.storage.blob import BlobServiceClient

        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        hook = AzureWorkloadIdentityHook(azure_conn_id="customer_blob")
        blobs = BlobServiceClient(hook.account_url, credential=hook.get_credential(), retry_total=0)
        body = blobs.get_blob_client(CONTAINER_A, BLOB_A).download_blob().readall().decode()
        print(f"hook read {CONTAINER_A}/{BLOB_A}: {body!r}")

    @task
    def read_container_a_with_the_official_wasbhook() -> None:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        body = WasbHook(wasb_conn_id="customer_blob").read_file(CONTAINER_A, BLOB_A)
        print(f"official WasbHook read {CONTAINER_A}/{BLOB_A}: {body!r}")

    @task
    def container_b_is_denied() -> None:
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobServiceClient

        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        hook = AzureWorkloadIdentityHook(azure_conn_id="customer_blob")
        blobs = BlobServiceClient(hook.account_url, credential=hook.get_credential(), retry_total=0)
        try:
            blobs.get_blob_client(CONTAINER_B, BLOB_B).download_blob().readall()
        except HttpResponseError as error:
            print(
                hook.explain_access_denied(
                    error, scope=f"<storage account id>/blobServices/default/containers/{CONTAINER_B}"
                )
            )
        else:
            raise RuntimeError(f"{CONTAINER_B}/{BLOB_B} was readable: the identity has more access than intended")

    @task
    def wrong_client_id_is_refused_with_the_fix() -> None:
        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        ok, message = AzureWorkloadIdentityHook(azure_conn_id="customer_blob_wrong_client").test_connection()
        print(message)
        if ok:
            raise RuntimeError("an unknown client id got a token")

    (
        whoami()
        >> [read_container_a_with_the_hook(), read_container_a_with_the_official_wasbhook()]
        >> container_b_is_denied()
        >> wrong_client_id_is_refused_with_the_fix()
    )


wi_azure_demo()
