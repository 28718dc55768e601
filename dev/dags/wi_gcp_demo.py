"""Demo DAG: a customer's GCS bucket read through a ``gcp_workload_identity`` connection.

Run by ``bash dev/demo.sh`` against the local sandbox (fake GKE metadata server, IAM Credentials and
GCS). The official ``GCSHook`` shares the package's credentials through
``airflow_workload_identity.gcp.interop.install()``, which the demo calls from ``airflow_local_settings.py``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag, task

BUCKET_A = "customer-bucket-a"
BUCKET_B = "customer-bucket-b"
KEY_A = "reports/hello.txt"
KEY_B = "secret.txt"


def _client(hook):  # type: ignore[no-untyped-def]
    from google.cloud import storage

    return storage.Client(
        credentials=hook.get_credentials(),
        project=hook.project_id,
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["demo"])
def wi_gcp_demo() -> None:
    @task
    def whoami() -> None:
        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        print(GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs_chain").whoami().render())

    @task
    def read_bucket_a_with_the_hook() -> None:
        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        hook = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs")
        body = _client(hook).bucket(BUCKET_A).blob(KEY_A).download_as_bytes().decode()
        print(f"hook read gs://{BUCKET_A}/{KEY_A}: {body!r}")

    @task
    def read_bucket_a_with_the_official_gcshook() -> None:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        body = GCSHook(gcp_conn_id="customer_gcs").download(BUCKET_A, KEY_A).decode()
        print(f"official GCSHook read gs://{BUCKET_A}/{KEY_A}: {body!r}")

    @task
    def bucket_b_is_denied() -> None:
        from google.api_core.exceptions import Forbidden

        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        hook = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs")
        try:
            _client(hook).bucket(BUCKET_B).blob(KEY_B).download_as_bytes()
        except Forbidden as error:
            print(hook.explain_access_denied(error, bucket=BUCKET_B))
        else:
            raise RuntimeError(f"gs://{BUCKET_B}/{KEY_B} was readable: the account has more access than intended")

    @task
    def missing_token_creator_is_refused_with_the_fix() -> None:
        from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

        ok, message = GcpWorkloadIdentityHook(gcp_conn_id="customer_gcs_no_creator").test_connection()
        print(message)
        if ok:
            raise RuntimeError("an account without Token Creator was impersonated")

    (
        whoami()
        >> [read_bucket_a_with_the_hook(), read_bucket_a_with_the_official_gcshook()]
        >> bucket_b_is_denied()
        >> missing_token_creator_is_refused_with_the_fix()
    )


wi_gcp_demo()
