"""The official Azure provider's WasbHook (sync and async) on ``azure_workload_identity`` connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("airflow.providers.microsoft.azure", reason="the official Azure provider is not installed")

from airflow_workload_identity.azure import AzureWorkloadIdentityHook
from airflow_workload_identity.azure.interop import install, uninstall
from dev.sandbox import AzureSandbox
from tests.fixtures_azure import Aks


@pytest.fixture
def interop() -> Iterator[None]:
    install()
    yield
    uninstall()


def test_wasbhook_reads_container_a_and_shares_the_token(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    sc = azure_sandbox.scenario
    aks.workload_identity()
    conn = azure_connection("customer_blob")
    for _ in range(3):
        hook = WasbHook(wasb_conn_id=conn)
        assert hook.read_file(sc.container_a, sc.blob_a_name) == sc.blob_a_body.decode()
        assert hook.check_for_blob(sc.container_a, sc.blob_a_name)
    AzureWorkloadIdentityHook(azure_conn_id=conn).get_token("https://storage.azure.com/.default")
    assert azure_sandbox.calls("entra") == 1


def test_wasbhook_is_denied_container_b_fast(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from azure.core.exceptions import HttpResponseError

    sc = azure_sandbox.scenario
    aks.workload_identity()
    hook = WasbHook(wasb_conn_id=azure_connection("customer_blob"))
    started = time.monotonic()
    with pytest.raises(HttpResponseError) as err:
        hook.read_file(sc.container_b, sc.blob_b_name)
    assert err.value.status_code == 403
    assert time.monotonic() - started < 30


def test_misconfigured_identity_fails_once_and_fast(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from azure.core.exceptions import ClientAuthenticationError

    from airflow_workload_identity.errors import AccessDenied

    sc = azure_sandbox.scenario
    aks.workload_identity(sub=sc.wrong_subject)
    hook = WasbHook(wasb_conn_id=azure_connection("customer_blob"))
    started = time.monotonic()
    with pytest.raises((AccessDenied, ClientAuthenticationError)) as err:
        hook.check_for_blob(sc.container_a, sc.blob_a_name)
    assert time.monotonic() - started < 10
    assert "AADSTS70021" in str(err.value) or "AADSTS70021" in str(err.value.__cause__)


def test_async_wasbhook_uses_the_shared_credential(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook

    sc = azure_sandbox.scenario
    aks.workload_identity()
    conn = azure_connection("customer_blob")

    async def check() -> list[bool]:
        results = []
        for _ in range(3):
            hook = WasbAsyncHook(wasb_conn_id=conn)
            client = await hook.get_async_conn()
            async with client:
                results.append(await hook.check_for_blob_async(sc.container_a, sc.blob_a_name))
        return results

    assert asyncio.run(check()) == [True, True, True]
    assert azure_sandbox.calls("entra") == 1
