"""One refreshing credential per identity per process: sharing, refresh windows, rotation, async."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.errors import AccessDenied
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod


@pytest.mark.smoke
def test_n_hooks_by_m_threads_make_one_assume_role_per_key(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conns = [
        connection("reader_one", role_arn=sc.customer_reader_role_arn),
        connection("reader_two", role_arn=sc.customer_reader_role_arn),
    ]
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def worker(conn_id: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                hook = AwsWorkloadIdentityHook(aws_conn_id=conn_id)
                hook.get_client("s3").head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(conns[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # Two connections with different session names: two keys. One pod identity: one web identity call.
    assert aws_sandbox.calls("AssumeRole") == 2
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1


def test_short_sessions_are_not_refreshed_per_request(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(
        aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn, duration_seconds=900)
    )
    s3 = hook.get_client("s3")
    for _ in range(20):
        s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    for _ in range(5):
        AwsWorkloadIdentityHook(aws_conn_id="r").get_client("s3").head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    assert aws_sandbox.calls("AssumeRole") == 1
    advisory, mandatory = hook.get_credentials().windows
    assert 140 < advisory <= 180 and mandatory == pytest.approx(90, abs=1)


def test_credentials_refresh_before_they_expire(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    aws_sandbox.force_credential_ttl(6)
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    creds = hook.get_credentials()
    refreshes: list[tuple[dt.datetime, dt.datetime | None]] = []
    creds.add_listener(lambda data: refreshes.append((dt.datetime.now(dt.UTC), creds.expiry)))
    s3 = hook.get_client("s3")
    requests = 0
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
        requests += 1
        time.sleep(0.05)
    assert requests > 50
    assert 2 <= aws_sandbox.calls("AssumeRole") <= 4, aws_sandbox.calls_by_action()
    for when, previous_expiry in refreshes[1:]:
        assert previous_expiry is not None and when < previous_expiry


def test_token_file_is_reread_on_refresh_and_old_credentials_serve_meanwhile(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    sc = aws_sandbox.scenario
    aws_sandbox.force_credential_ttl(5)
    token_file = pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    s3 = hook.get_client("s3")
    s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    # Kubelet "rotates" the file to a token STS refuses: the next refresh must read it (and fail).
    token_file.write_text(aws_sandbox.issuer.mint(exp=time.time() - 10, iat=time.time() - 100))
    failure: AccessDenied | None = None
    served_after_rotation = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and failure is None:
        try:
            s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
            served_after_rotation += 1
        except AccessDenied as exc:
            failure = exc
        time.sleep(0.05)
    assert failure is not None and failure.cloud_code == "ExpiredTokenException"
    assert served_after_rotation > 0
    advisory = [r for r in caplog.records if r.getMessage().startswith("Advisory refresh of")]
    assert advisory and "keeping the current credentials" in advisory[0].getMessage()
    assert advisory[0].exc_info is None
    # A fresh token in the file: the next refresh reads it and works again.
    aws_sandbox.write_web_identity_token(token_file)
    s3.head_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") >= 3


@pytest.mark.smoke
def test_async_callers_share_one_assume_role_and_never_block_the_loop(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    conn = connection("r", role_arn=sc.customer_reader_role_arn)
    aws_sandbox.set_sts_latency(1.0)

    async def scenario() -> tuple[list[bytes], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def reader() -> bytes:
            session = AwsWorkloadIdentityHook(aws_conn_id=conn).get_async_session()
            async with session.create_client("s3", endpoint_url=aws_sandbox.endpoint_url) as s3:
                response = await s3.get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)
                async with response["Body"] as body:
                    return bytes(await body.read())

        tick_task = asyncio.create_task(ticker())
        bodies = await asyncio.gather(*(reader() for _ in range(10)))
        stop.set()
        await tick_task
        return list(bodies), ticks

    started = time.monotonic()
    bodies, ticks = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert bodies == [sc.bucket_a_body] * 10
    assert aws_sandbox.calls("AssumeRole") == 1
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    # Two STS calls of 1 s each happened while the loop kept ticking (a blocked loop would not tick).
    assert elapsed >= 2.0
    assert ticks > 50


def test_async_credentials_reuse_fresh_sync_credentials_without_sts(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    frozen = hook.get_credentials().get_frozen_credentials()

    async def read() -> Any:
        return await hook.get_async_credentials().get_frozen_credentials()

    assert asyncio.run(read()).access_key == frozen.access_key
    assert aws_sandbox.calls("AssumeRole") == 1


def test_derived_secrets_are_masked_and_never_in_reprs(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    from airflow_workload_identity.redaction import redact

    sc = aws_sandbox.scenario
    pod.irsa()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("r", role_arn=sc.customer_reader_role_arn))
    creds = hook.get_credentials()
    frozen = creds.get_frozen_credentials()
    assert redact(f"token={frozen.token}") == "token=***"
    assert redact(frozen.secret_key) == "***"
    text = repr(creds) + repr(hook.whoami().to_dict()) + hook.whoami().render()
    assert frozen.secret_key not in text and frozen.token not in text
