"""Azure workload identity and managed identity over loopback: real azure-identity and azure-storage-blob."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

pytest.importorskip("azure.storage.blob", reason="the Azure SDKs are not installed")

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from airflow_workload_identity.azure import AzureWorkloadIdentityHook
from airflow_workload_identity.errors import AccessDenied, ConfigError, IdentityUnavailable
from dev.sandbox import AzureSandbox
from tests.fixtures_azure import Aks

STORAGE = "https://storage.azure.com/.default"


def blobs(hook: AzureWorkloadIdentityHook, sb: AzureSandbox) -> BlobServiceClient:
    return BlobServiceClient(sb.blob_account_url, credential=hook.get_credential(), retry_total=0)


def read(hook: AzureWorkloadIdentityHook, sb: AzureSandbox, container: str, name: str) -> bytes:
    return bytes(blobs(hook, sb).get_blob_client(container, name).download_blob().readall())


@pytest.mark.smoke
def test_workload_identity_reads_container_a_and_is_denied_b(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    sc = azure_sandbox.scenario
    aks.workload_identity()
    hook = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("wi", scopes=[STORAGE]))
    assert read(hook, azure_sandbox, sc.container_a, sc.blob_a_name) == sc.blob_a_body
    with pytest.raises(HttpResponseError) as err:
        read(hook, azure_sandbox, sc.container_b, sc.blob_b_name)
    assert err.value.status_code == 403
    text = hook.explain_access_denied(err.value, scope="<container b>")
    assert sc.workload_object_id in text and "az role assignment create" in text
    report = hook.whoami()
    assert report.final.principal == f"object {sc.workload_object_id} in tenant {sc.tenant_id}"
    assert report.hops[0].principal == sc.service_account_subject
    assert ("audience (aud)", "https://storage.azure.com") in report.final.details
    assert azure_sandbox.calls("entra") == 1


@pytest.mark.parametrize(
    ("extra_attr", "field"),
    [("node_client_id", "client_id"), ("node_object_id", "object_id"), ("node_resource_id", "resource_id")],
)
def test_managed_identity_by_client_object_and_resource_id(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str], extra_attr: str, field: str
) -> None:
    sc = azure_sandbox.scenario
    conn = azure_connection("mi", mode="managed_identity", scopes=[STORAGE], **{field: getattr(sc, extra_attr)})
    hook = AzureWorkloadIdentityHook(azure_conn_id=conn)
    assert read(hook, azure_sandbox, sc.container_a, sc.blob_a_name) == sc.blob_a_body
    assert hook.whoami().final.principal == f"object {sc.node_object_id} in tenant {sc.tenant_id}"
    assert azure_sandbox.calls("imds") == 1


def test_wrong_subject_prints_the_federated_credential_command(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    sc = azure_sandbox.scenario
    aks.workload_identity(sub=sc.wrong_subject)
    hook = AzureWorkloadIdentityHook(
        azure_conn_id=azure_connection("wi", identity_name="airflow-wi", resource_group="airflow-rg")
    )
    with pytest.raises(AccessDenied) as err:
        hook.get_token(STORAGE)
    assert err.value.cloud_code == "AADSTS70021"
    assert (
        "az identity federated-credential create --name other-intruder --identity-name airflow-wi "
        f"--resource-group airflow-rg --issuer {sc.issuer_url} --subject {sc.wrong_subject} "
        "--audience api://AzureADTokenExchange" in err.value.remediation
    )
    assert "at most 20 federated credentials" in err.value.remediation


def test_wrong_client_id_unknown_tenant_and_expired_assertion(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    aks.workload_identity()
    wrong = AzureWorkloadIdentityHook(
        azure_conn_id=azure_connection("c1", client_id="99999999-9999-9999-9999-999999999999")
    )
    with pytest.raises(ConfigError) as err:
        wrong.get_token(STORAGE)
    assert err.value.field == "client_id" and "AADSTS700016" in str(err.value)
    tenant = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("c2", tenant_id="nowhere.example.com"))
    with pytest.raises(ConfigError) as err:
        tenant.get_token(STORAGE)
    assert err.value.field == "tenant_id"
    token_file = aks.workload_identity(exp=time.time() - 900, iat=time.time() - 4000)  # beyond the 5-minute skew
    expired = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("c3", scopes=[STORAGE]))
    before = azure_sandbox.calls("entra")
    with pytest.raises(IdentityUnavailable) as stale:  # a stale projected file: no request (Entra: AADSTS700024)
        expired.get_token()
    assert str(token_file) in str(stale.value) and "AZURE_FEDERATED_TOKEN_FILE" in str(stale.value)
    assert azure_sandbox.calls("entra") == before


def test_identity_not_found_on_the_node(aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]):
    conn = azure_connection("mi", mode="managed_identity", client_id="88888888-8888-8888-8888-888888888888")
    with pytest.raises(IdentityUnavailable) as err:
        AzureWorkloadIdentityHook(azure_conn_id=conn).get_token(STORAGE)
    assert "az vmss identity assign" in str(err.value)


def test_mode_ignored_fields_and_missing_variables_fail_before_any_request(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    with pytest.raises(IdentityUnavailable) as err:
        AzureWorkloadIdentityHook(azure_conn_id=azure_connection("x", mode="workload_identity")).get_credential()
    assert "AZURE_FEDERATED_TOKEN_FILE" in str(err.value)
    aks.workload_identity()
    conn = azure_connection("y", object_id=azure_sandbox.scenario.node_object_id)  # auto → workload identity
    with pytest.raises(ConfigError) as cfg:
        AzureWorkloadIdentityHook(azure_conn_id=conn).get_credential()
    assert cfg.value.field == "object_id"
    assert azure_sandbox.calls() == 0


def test_cross_tenant_refused_unless_allowed(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    sc = azure_sandbox.scenario
    aks.workload_identity()
    refused = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("t1", client_id=sc.multitenant_client_id))
    with pytest.raises((ConfigError, AccessDenied)):
        refused.get_credential().get_token(STORAGE, tenant_id=sc.other_tenant_id)
    assert azure_sandbox.calls("entra") == 0
    allowed = AzureWorkloadIdentityHook(
        azure_conn_id=azure_connection(
            "t2", client_id=sc.multitenant_client_id, additionally_allowed_tenants=[sc.other_tenant_id]
        )
    )
    token = allowed.get_credential().get_token(STORAGE, tenant_id=sc.other_tenant_id).token
    from airflow_workload_identity.tokens import unverified_claims

    assert unverified_claims(token)["tid"] == sc.other_tenant_id


def test_token_file_rotation_is_picked_up(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    sc = azure_sandbox.scenario
    azure_sandbox.force_token_ttl(6)
    aks.workload_identity()
    hook = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("wi", scopes=[STORAGE]))
    hook.get_token()
    time.sleep(0.05)
    aks.workload_identity(sub=sc.wrong_subject)  # the file changes: the next request must send the new one
    deadline = time.monotonic() + 10
    error: AccessDenied | None = None
    while time.monotonic() < deadline and error is None:
        try:
            hook.get_token()
        except AccessDenied as exc:
            error = exc
        time.sleep(0.1)
    assert error is not None and error.cloud_code == "AADSTS70021"


def test_refresh_before_expiry_and_one_request_per_key(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    aks.workload_identity()
    conn = azure_connection("wi", scopes=[STORAGE])
    barrier = threading.Barrier(12)
    tokens: list[str] = []

    def worker() -> None:
        barrier.wait()
        for _ in range(3):
            tokens.append(AzureWorkloadIdentityHook(azure_conn_id=conn).get_token())

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 36 and len(set(tokens)) == 1
    assert azure_sandbox.calls("entra") == 1

    azure_sandbox.force_token_ttl(6)
    # Same identity, another scope: a separate cached token, now short-lived.
    short = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("short"))
    azure_sandbox.reset_calls()
    deadline = time.monotonic() + 8
    calls = 0
    while time.monotonic() < deadline:
        short.get_token()
        calls += 1
        time.sleep(0.05)
    assert calls > 50
    assert 2 <= azure_sandbox.calls("entra") <= 4


def test_async_callers_share_one_request_and_never_block(
    aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    aks.workload_identity()
    conn = azure_connection("wi")

    async def scenario() -> set[str]:
        async with AzureWorkloadIdentityHook(azure_conn_id=conn).get_async_credential() as credential:
            tokens = await asyncio.gather(*(credential.get_token(STORAGE) for _ in range(10)))
        more = [await AzureWorkloadIdentityHook(azure_conn_id=conn).get_async_credential().get_token(STORAGE)]
        return {t.token for t in [*tokens, *more]}

    assert len(asyncio.run(scenario())) == 1
    assert azure_sandbox.calls("entra") == 1


def test_hanging_imds_fails_in_seconds(aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]):
    azure_sandbox.hang_imds()
    conn = azure_connection("mi", mode="managed_identity", client_id=azure_sandbox.scenario.node_client_id)
    started = time.monotonic()
    ok, message = AzureWorkloadIdentityHook(azure_conn_id=conn).test_connection()
    elapsed = time.monotonic() - started
    assert not ok
    assert elapsed < 20, elapsed  # two attempts of 5 s, not azure-identity's minutes
    assert "Error" in message


def test_test_connection_and_policy(aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]):
    sc = azure_sandbox.scenario
    aks.workload_identity()
    hook = AzureWorkloadIdentityHook(
        azure_conn_id=azure_connection(
            "wi", identity_name="airflow-wi", resource_group="airflow-rg", expected_object_id=sc.workload_object_id
        )
    )
    ok, message = hook.test_connection()
    assert ok, message
    assert f"object {sc.workload_object_id}" in message
    assert f"--issuer {sc.issuer_url} --subject {sc.service_account_subject}" in hook.policy()
    pinned = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("pinned", expected_object_id=sc.node_object_id))
    ok, message = pinned.test_connection()
    assert not ok and "IdentityMismatch" in message
