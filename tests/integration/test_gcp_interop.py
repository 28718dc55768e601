"""The official Google provider's hooks on ``gcp_workload_identity`` connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("airflow.providers.google", reason="the official Google provider is not installed")

from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
from airflow_workload_identity.gcp.interop import install, uninstall
from dev.sandbox import GcpSandbox


@pytest.fixture
def interop() -> Iterator[None]:
    install()
    yield
    uninstall()


def test_gcshook_reads_as_the_impersonated_account_and_shares_the_token(
    gke: GcpSandbox, gcp_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    sc = gke.scenario
    conn = gcp_connection("customer_gcs", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    for _ in range(3):
        assert GCSHook(gcp_conn_id=conn).download(sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    assert GCSHook(gcp_conn_id=conn).exists(sc.bucket_a, sc.bucket_a_key)
    assert GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token()
    assert GCSHook(gcp_conn_id=conn).project_id == "customer-proj"
    assert gke.calls("generateAccessToken") == 1
    assert gke.calls("metadata_token") == 1


def test_gcshook_is_denied_bucket_b(gke: GcpSandbox, gcp_connection: Callable[..., str], interop: None) -> None:
    from airflow.providers.google.cloud.hooks.gcs import GCSHook
    from google.api_core.exceptions import Forbidden

    sc = gke.scenario
    conn = gcp_connection("customer_gcs", impersonation_chain=[sc.reader_sa])
    with pytest.raises(Forbidden) as err:
        GCSHook(gcp_conn_id=conn).download(sc.bucket_b, sc.bucket_b_key)
    assert sc.reader_sa in str(err.value)


def test_operator_impersonation_chain_replaces_the_connections(
    gke: GcpSandbox, gcp_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    sc = gke.scenario
    conn = gcp_connection("customer_gcs", impersonation_chain=[sc.no_creator_sa])
    hook = GCSHook(gcp_conn_id=conn, impersonation_chain=[sc.reader_sa])
    assert hook.download(sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body


def test_async_hook_of_deferrable_operators_uses_the_shared_token(
    gke: GcpSandbox, gcp_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.google.cloud.hooks.gcs import GCSAsyncHook

    sc = gke.scenario
    conn = gcp_connection("customer_gcs", impersonation_chain=[sc.reader_sa])

    async def tokens() -> list[str]:
        out = []
        for _ in range(3):
            token = await GCSAsyncHook(gcp_conn_id=conn).get_token()
            out.append(await token.get())
        return out

    values = asyncio.run(tokens())
    assert len(set(values)) == 1
    assert gke.calls("generateAccessToken") == 1


def test_other_connection_types_keep_the_providers_behaviour(
    gke: GcpSandbox, gcp_connection: Callable[..., str], interop: None
) -> None:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    conn = gcp_connection("plain", conn_type="google_cloud_platform", impersonation_chain=gke.scenario.reader_sa)
    credentials, _ = GoogleBaseHook(gcp_conn_id=conn).get_credentials_and_project_id()
    assert type(credentials).__module__.startswith("google.auth")
