"""Demo DAG: across clouds, a customer's S3 bucket read as the pod's Google service account.

Run by ``bash dev/demo.sh`` (``airflow dags test wi_cross_cloud_demo``) against the local sandbox. The
connection ``customer_s3_from_gke`` is an ``aws_workload_identity`` connection with ``source: "gcp"``: the
GKE metadata server's ID token for the pod's service account is the web identity of the customer's role
(whose trust policy names ``accounts.google.com`` and the account's unique id). No AWS identity of the pod
and no key is involved (docs/cross-cloud.md).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

BUCKET_A = "customer-bucket-a"
KEY_A = "reports/hello.txt"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["demo"])
def wi_cross_cloud_demo() -> None:
    @task
    def whoami_across_clouds() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        print(AwsWorkloadIdentityHook(aws_conn_id="customer_s3_from_gke").whoami().render())

    @task
    def read_s3_as_the_gke_service_account() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        s3 = AwsWorkloadIdentityHook(aws_conn_id="customer_s3_from_gke").get_client("s3")
        body = s3.get_object(Bucket=BUCKET_A, Key=KEY_A)["Body"].read().decode()
        print(f"read s3://{BUCKET_A}/{KEY_A} as the GKE service account: {body!r}")

    @task
    def read_s3_with_the_official_s3hook() -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        body = S3Hook(aws_conn_id="customer_s3_from_gke").read_key(KEY_A, BUCKET_A)
        print(f"official S3Hook read s3://{BUCKET_A}/{KEY_A} across clouds: {body!r}")

    whoami_across_clouds() >> read_s3_as_the_gke_service_account() >> read_s3_with_the_official_s3hook()


wi_cross_cloud_demo()
