"""The official Amazon provider's hooks on ``aws_workload_identity`` connections via ``[aws] session_factory``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

pytest.importorskip("airflow.providers.amazon", reason="the official Amazon provider is not installed")

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.aws.interop import WorkloadIdentitySessionFactory
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

FACTORY = "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory"


@pytest.fixture
def configured_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``[aws] session_factory`` does at import of ``base_aws``, resolved from the real config."""
    from airflow.providers.amazon.aws.hooks import base_aws

    monkeypatch.setenv("AIRFLOW__AWS__SESSION_FACTORY", FACTORY)
    resolved = base_aws.resolve_session_factory()
    assert resolved is WorkloadIdentitySessionFactory
    monkeypatch.setattr(base_aws, "SessionFactory", resolved)
    return


def test_s3hook_reads_as_the_assumed_role_and_shares_credentials(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], configured_factory: None
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("customer_reader", role_arn=sc.customer_reader_role_arn)
    s3hook = S3Hook(aws_conn_id=conn)
    assert s3hook.read_key(sc.bucket_a_key, bucket_name=sc.bucket_a) == sc.bucket_a_body.decode()
    # Our hook and the official one, any number of times: one AssumeRole, one web identity call.
    for _ in range(3):
        S3Hook(aws_conn_id=conn).check_for_key(sc.bucket_a_key, bucket_name=sc.bucket_a)
    AwsWorkloadIdentityHook(aws_conn_id=conn).get_client("s3").head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    assert aws_sandbox.calls("AssumeRole") == 1
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    # GetCallerIdentity through the official hook's session says who it is.
    assert (
        ":assumed-role/customer-reader/"
        in S3Hook(aws_conn_id=conn).get_session().client("sts").get_caller_identity()["Arn"]
    )


def test_s3hook_is_denied_bucket_b(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], configured_factory: None
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("customer_reader", role_arn=sc.customer_reader_role_arn)
    with pytest.raises(ClientError) as err:
        S3Hook(aws_conn_id=conn).read_key(sc.bucket_b_key, bucket_name=sc.bucket_b)
    assert err.value.response["Error"]["Code"] in ("AccessDenied", "403")


def test_s3hook_deferrable_path_uses_the_shared_credentials(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], configured_factory: None
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("customer_reader", role_arn=sc.customer_reader_role_arn)

    async def read() -> list[bytes]:
        async def one() -> bytes:
            async with await S3Hook(aws_conn_id=conn).get_async_conn() as client:
                response = await client.get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
                async with response["Body"] as body:
                    return bytes(await body.read())

        return list(await asyncio.gather(*(one() for _ in range(5))))

    assert asyncio.run(read()) == [sc.bucket_a_body] * 5
    assert aws_sandbox.calls("AssumeRole") == 1


def test_other_connection_types_keep_the_providers_behaviour(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], configured_factory: None
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    sc = aws_sandbox.scenario
    pod.default_chain()
    conn = connection("plain_aws", conn_type="aws", role_arn=sc.customer_reader_role_arn)
    assert S3Hook(aws_conn_id=conn).read_key(sc.bucket_a_key, bucket_name=sc.bucket_a) == sc.bucket_a_body.decode()


def test_session_factory_setting_works_in_a_fresh_process(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    connection("customer_reader", role_arn=sc.customer_reader_role_arn)
    code = textwrap.dedent(
        f"""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        print(S3Hook(aws_conn_id="customer_reader").read_key({sc.bucket_a_key!r}, bucket_name={sc.bucket_a!r}))
        """
    )
    env = {**os.environ, "AIRFLOW__AWS__SESSION_FACTORY": FACTORY}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == sc.bucket_a_body.decode().strip()
    # The provider warns about every non-"aws" connection type; the factory silences that for ours.
    assert "expected connection type" not in out.stderr
    assert aws_sandbox.calls("AssumeRole") == 1
