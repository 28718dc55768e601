"""A refused endpoint override costs no request, on every path that starts from a connection.

Each override below is a spelling of the sandbox's own loopback address that the deployment did not list
(the tests list ``127.0.0.1`` only): ``localhost``, the decimal and short numeric forms, a trailing dot,
user info, a path. Each would reach the sandbox if it were honoured, which the positive controls show by
listing ``localhost``; refused, the sandbox counts zero requests of any kind (the ambient source's
metadata / IMDS / web identity calls included).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from airflow_workload_identity.cli import main
from airflow_workload_identity.endpoints import ENV
from airflow_workload_identity.errors import ConfigError
from tests.fixtures_aws import Pod

if TYPE_CHECKING:  # the GCP and Azure sandboxes need their SDKs, which the older-Airflow legs lack
    from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks

needs_gcp = pytest.mark.skipif(
    importlib.util.find_spec("google.cloud") is None, reason="the Google SDKs are not installed"
)
needs_azure = pytest.mark.skipif(importlib.util.find_spec("azure") is None, reason="the Azure SDKs are not installed")


def spellings(base: str) -> list[str]:
    """Unlisted spellings of ``base`` (``<scheme>://127.0.0.1:<port>``) that still reach it."""
    parts = urlsplit(base)
    scheme, port = parts.scheme, parts.port
    return [
        f"{scheme}://localhost:{port}",
        f"{scheme}://2130706433:{port}",
        f"{scheme}://127.1:{port}",
        f"{scheme}://0x7f000001:{port}",
        f"{scheme}://127.0.0.1.:{port}",
        f"{scheme}://attacker@127.0.0.1:{port}",
        f"{scheme}://127.0.0.1:{port}/evil",
        f"{scheme}://LOCALHOST:{port}",
    ]


def localhost(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://localhost:{parts.port}"


# -- AWS ---------------------------------------------------------------------------------------------------


@pytest.fixture
def aws_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[aws] session_factory`` pointed at the package's factory, as the official provider resolves it."""
    pytest.importorskip("airflow.providers.amazon")
    from airflow.providers.amazon.aws.hooks import base_aws

    monkeypatch.setenv(
        "AIRFLOW__AWS__SESSION_FACTORY", "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory"
    )
    monkeypatch.setattr(base_aws, "SessionFactory", base_aws.resolve_session_factory())


def test_aws_refused_overrides_make_no_request(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    pod.irsa()
    role = aws_sandbox.scenario.customer_reader_role_arn
    for n, url in enumerate(spellings(aws_sandbox.endpoint_url)):
        hook = AwsWorkloadIdentityHook(aws_conn_id=connection(f"evil{n}", role_arn=role, sts_endpoint_url=url))
        with pytest.raises(ConfigError) as err:
            hook.get_credentials().get_frozen_credentials()
        assert err.value.field == "sts_endpoint_url", url
    assert aws_sandbox.calls() == 0


def test_aws_every_path_refuses_before_any_request(
    pod: Pod,
    aws_sandbox: AwsSandbox,
    connection: Callable[..., str],
    aws_factory: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    pod.irsa()
    sc = aws_sandbox.scenario
    conn = connection(
        "evil", role_arn=sc.customer_reader_role_arn, sts_endpoint_url=localhost(aws_sandbox.endpoint_url)
    )
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    for call in (hook.get_session, lambda: hook.get_client("s3"), hook.whoami, hook.get_async_session):
        with pytest.raises(ConfigError):
            call()

    async def in_a_trigger() -> None:
        AwsWorkloadIdentityHook(aws_conn_id=conn).get_async_credentials()

    with pytest.raises(ConfigError):
        asyncio.run(in_a_trigger())
    ok, message = hook.test_connection()
    assert not ok and "sts_endpoint_url" in message
    with pytest.raises(ConfigError):  # the official provider's hook through [aws] session_factory
        S3Hook(aws_conn_id=conn).read_key(sc.bucket_a_key, bucket_name=sc.bucket_a)
    assert main(["whoami", conn]) != 0
    assert "sts_endpoint_url" in capsys.readouterr().err
    assert aws_sandbox.calls() == 0


def test_aws_control_the_same_override_reaches_the_sandbox_once_listed(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    monkeypatch.setenv(ENV, "127.0.0.1, localhost")
    pod.irsa()
    role = aws_sandbox.scenario.customer_reader_role_arn
    conn = connection("listed", role_arn=role, sts_endpoint_url=localhost(aws_sandbox.endpoint_url))
    assert AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials().get_frozen_credentials().token
    assert aws_sandbox.calls() > 0


# -- GCP ---------------------------------------------------------------------------------------------------


@needs_gcp
def test_gcp_refused_overrides_make_no_request(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    reader = gke.scenario.reader_sa
    for n, url in enumerate(spellings(gke.iam_endpoint)):
        hook = GcpWorkloadIdentityHook(
            gcp_conn_id=gcp_connection(f"evil{n}", impersonation_chain=[reader], iam_endpoint_url=url)
        )
        with pytest.raises(ConfigError) as err:
            hook.get_access_token()
        assert err.value.field == "iam_endpoint_url", url
    assert gke.calls() == 0


@needs_gcp
def test_gcp_every_path_refuses_before_any_request(
    gke: GcpSandbox, gcp_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("airflow.providers.google")
    from airflow.providers.google.cloud.hooks.gcs import GCSAsyncHook, GCSHook

    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
    from airflow_workload_identity.gcp.interop import install, uninstall

    sc = gke.scenario
    conn = gcp_connection("evil", impersonation_chain=[sc.reader_sa], iam_endpoint_url=localhost(gke.iam_endpoint))
    hook = GcpWorkloadIdentityHook(gcp_conn_id=conn)
    for call in (hook.get_credentials, lambda: hook.get_id_token("https://example.com"), hook.whoami):
        with pytest.raises(ConfigError):
            call()
    with pytest.raises(ConfigError):
        asyncio.run(GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token_async())
    ok, message = hook.test_connection()
    assert not ok and "iam_endpoint_url" in message
    install()
    try:
        with pytest.raises(ConfigError):
            GCSHook(gcp_conn_id=conn).download(sc.bucket_a, sc.bucket_a_key)

        async def deferred() -> None:
            token = await GCSAsyncHook(gcp_conn_id=conn).get_token()
            await token.get()

        with pytest.raises(ConfigError):
            asyncio.run(deferred())
    finally:
        uninstall()
    assert main(["whoami", conn]) != 0
    assert "iam_endpoint_url" in capsys.readouterr().err
    assert gke.calls() == 0


@needs_gcp
def test_gcp_control_the_same_override_reaches_the_sandbox_once_listed(
    gke: GcpSandbox, gcp_connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    monkeypatch.setenv(ENV, "127.0.0.1, localhost")
    conn = gcp_connection(
        "listed", impersonation_chain=[gke.scenario.reader_sa], iam_endpoint_url=localhost(gke.iam_endpoint)
    )
    assert GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert gke.calls("generateAccessToken") == 1


# -- Azure -------------------------------------------------------------------------------------------------


STORAGE = "https://storage.azure.com/.default"


@needs_azure
def test_azure_refused_overrides_make_no_request(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    from airflow_workload_identity.azure import AzureWorkloadIdentityHook

    aks.workload_identity()
    for n, url in enumerate(spellings(azure_sandbox.authority_host)):
        hook = AzureWorkloadIdentityHook(
            azure_conn_id=azure_connection(f"evil{n}", authority_host=url, scopes=[STORAGE])
        )
        with pytest.raises(ConfigError) as err:
            hook.get_token()
        assert err.value.field == "authority_host", url
    assert azure_sandbox.calls() == 0


@needs_azure
def test_azure_every_path_refuses_before_any_request(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("airflow.providers.microsoft.azure")
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook, WasbHook

    from airflow_workload_identity.azure import AzureWorkloadIdentityHook
    from airflow_workload_identity.azure.interop import install, uninstall

    aks.workload_identity()
    sc = azure_sandbox.scenario
    conn = azure_connection("evil", authority_host=localhost(azure_sandbox.authority_host), scopes=[STORAGE])
    hook = AzureWorkloadIdentityHook(azure_conn_id=conn)
    for call in (hook.get_credential, hook.get_token_provider, hook.whoami):
        with pytest.raises(ConfigError):
            call()

    async def in_a_trigger() -> None:
        credential = AzureWorkloadIdentityHook(azure_conn_id=conn).get_async_credential()
        await credential.get_token(STORAGE)

    with pytest.raises(ConfigError):
        asyncio.run(in_a_trigger())
    ok, message = hook.test_connection()
    assert not ok and "authority_host" in message
    install()
    try:
        with pytest.raises(ConfigError):
            WasbHook(wasb_conn_id=conn).check_for_blob(sc.container_a, sc.blob_a_name)

        async def deferred() -> None:
            async_hook = WasbAsyncHook(wasb_conn_id=conn)
            client = await async_hook.get_async_conn()
            async with client:
                await async_hook.check_for_blob_async(sc.container_a, sc.blob_a_name)

        with pytest.raises(ConfigError):
            asyncio.run(deferred())
    finally:
        uninstall()
    assert main(["whoami", conn]) != 0
    assert "authority_host" in capsys.readouterr().err
    assert azure_sandbox.calls() == 0


@needs_azure
def test_azure_control_the_same_override_reaches_the_sandbox_once_listed(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workload_identity.azure import AzureWorkloadIdentityHook

    monkeypatch.setenv(ENV, "127.0.0.1, localhost")
    aks.workload_identity()
    conn = azure_connection("listed", authority_host=localhost(azure_sandbox.authority_host), scopes=[STORAGE])
    assert AzureWorkloadIdentityHook(azure_conn_id=conn).get_token()
    assert azure_sandbox.calls("entra") == 1
