"""Demo DAG: a customer's bucket read through an ``aws_workload_identity`` connection.

Run by ``bash dev/demo.sh`` (``airflow dags test wi_aws_demo``) against the local sandbox. Each task
prints what it did; a task fails if the identity does not behave as a real deployment should.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_workload_identity.operators import WorkloadIdentityCheckOperator

BUCKET_A = "customer-bucket-a"
BUCKET_B = "customer-bucket-b"
KEY_A = "reports/hello.txt"
KEY_B = "secret.txt"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["demo"])
def wi_aws_demo() -> None:
    # First: prove on the worker that the connection reaches the intended role (fails the run otherwise).
    check = WorkloadIdentityCheckOperator(
        task_id="check_identity_on_the_worker",
        conn_id="customer_reader",
        expected_principal="arn:aws:sts::222222222222:assumed-role/customer-reader/*",
    )

    @task
    def whoami() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        print(AwsWorkloadIdentityHook(aws_conn_id="customer_reader").whoami().render())
        print(AwsWorkloadIdentityHook(aws_conn_id="customer_chain").whoami().render())

    @task
    def read_bucket_a_with_the_hook() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        s3 = AwsWorkloadIdentityHook(aws_conn_id="customer_reader").get_client("s3")
        body = s3.get_object(Bucket=BUCKET_A, Key=KEY_A)["Body"].read().decode()
        print(f"hook read s3://{BUCKET_A}/{KEY_A}: {body!r}")

    @task
    def read_bucket_a_with_the_official_s3hook() -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        body = S3Hook(aws_conn_id="customer_reader").read_key(KEY_A, bucket_name=BUCKET_A)
        print(f"official S3Hook read s3://{BUCKET_A}/{KEY_A}: {body!r}")

    @task
    def read_bucket_a_through_a_role_chain() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        s3 = AwsWorkloadIdentityHook(aws_conn_id="customer_chain").get_client("s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET_A).get("Contents", [])]
        print(f"two-hop chain listed s3://{BUCKET_A}: {keys}")

    @task
    def bucket_b_is_denied() -> None:
        from botocore.exceptions import ClientError

        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        hook = AwsWorkloadIdentityHook(aws_conn_id="customer_reader")
        try:
            hook.get_client("s3").get_object(Bucket=BUCKET_B, Key=KEY_B)
        except ClientError as error:
            print(hook.explain_access_denied(error, resource=f"arn:aws:s3:::{BUCKET_B}/{KEY_B}"))
        else:
            raise RuntimeError(f"s3://{BUCKET_B}/{KEY_B} was readable: the role has more access than intended")

    @task
    def untrusted_role_is_refused_with_the_fix() -> None:
        from airflow_workload_identity.aws import AwsWorkloadIdentityHook

        ok, message = AwsWorkloadIdentityHook(aws_conn_id="customer_untrusting").test_connection()
        print(message)
        if ok:
            raise RuntimeError("a role that does not trust the pod was assumed")

    (
        check
        >> whoami()
        >> [
            read_bucket_a_with_the_hook(),
            read_bucket_a_with_the_official_s3hook(),
            read_bucket_a_through_a_role_chain(),
        ]
        >> bucket_b_is_denied()
        >> untrusted_role_is_refused_with_the_fix()
    )


wi_aws_demo()
