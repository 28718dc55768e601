"""Azure Key Vault backend against the sandbox's Key Vault (https, bearer challenge, RBAC per secret)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("azure.keyvault.secrets", reason="the Azure SDKs are not installed")

from airflow_workload_identity.azure import AzureWorkloadIdentityHook
from airflow_workload_identity.azure.secrets import KeyVaultBackend
from airflow_workload_identity.errors import AccessDenied, ConfigError
from dev.sandbox import AzureSandbox
from tests.fixtures_azure import Aks

URI = "postgresql://scott:tiger-azure-123@db.example.com:5432/sales"


@pytest.fixture
def vault(aks: Aks, azure_sandbox: AzureSandbox) -> Iterator[AzureSandbox]:
    """The workload identity may read airflow-* secrets; restricted-* exist but are not assigned."""
    kv = azure_sandbox.key_vault
    kv.set_secret("airflow-connections-pg-uri", URI)
    kv.set_secret(
        "airflow-connections-pg-json",
        json.dumps({"conn_type": "postgres", "host": "db.example.com", "login": "scott", "password": "tiger-kv-9"}),
    )
    kv.set_secret("airflow-variables-greeting", "hello from key vault")
    kv.set_secret("airflow-config-sql-alchemy-conn", "sqlite:////tmp/x.db")
    kv.set_secret("restricted-connections-pg-uri", URI)
    kv.grant(azure_sandbox.scenario.workload_object_id, "airflow-*")
    aks.workload_identity()
    kv.reset_calls()
    yield azure_sandbox
    kv.revoke_all()


def _backend(sb: AzureSandbox, **kwargs: Any) -> KeyVaultBackend:
    sc = sb.scenario
    kwargs.setdefault("client_id", sc.workload_client_id)
    kwargs.setdefault("tenant_id", sc.tenant_id)
    return KeyVaultBackend(vault_url=sb.key_vault.url, **kwargs)


def test_reads_connections_variables_config_over_the_challenge(vault: AzureSandbox) -> None:
    backend = _backend(vault)
    conn = backend.get_connection("pg_uri")  # pg_uri -> airflow-connections-pg-uri, as the official backend
    assert (conn.conn_type, conn.login, conn.password) == ("postgres", "scott", "tiger-azure-123")
    assert backend.get_connection("pg_json").password == "tiger-kv-9"
    assert backend.get_variable("greeting") == "hello from key vault"
    assert backend.get_config("sql_alchemy_conn") == "sqlite:////tmp/x.db"
    # at most one bearer challenge (azure-keyvault caches it per vault and process), one request per read
    counts = vault.key_vault.calls_by_status()
    assert counts.pop("401", 0) <= 1
    assert counts == {"200": 4}
    assert vault.calls("entra") == 1


def test_missing_secret_is_none_after_one_request(vault: AzureSandbox) -> None:
    backend = _backend(vault)
    assert backend.get_variable("greeting")
    vault.key_vault.reset_calls()
    assert backend.get_variable("absent") is None
    assert vault.key_vault.calls_by_status() == {"404": 1}
    assert backend.get_variable("not.valid") is None  # Key Vault cannot hold the name: no request
    assert vault.key_vault.calls() == 1


def test_denied_secret_raises_access_denied_with_the_role_assignment(vault: AzureSandbox) -> None:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    sc = vault.scenario
    backend = _backend(vault, connections_prefix="restricted-connections")
    with pytest.raises(AccessDenied) as caught:
        backend.get_connection("pg_uri")
    error = caught.value
    assert isinstance(error, AirflowSecretsBackendAccessDenied)
    assert error.cloud_code == "Forbidden"
    assert error.target.endswith("/secrets/restricted-connections-pg-uri")
    assert (
        f'az role assignment create --role "Key Vault Secrets User" --assignee-object-id {sc.workload_object_id}'
        in error.remediation
    )
    counts = vault.key_vault.calls_by_status()
    assert counts.pop("401", 0) <= 1
    assert counts == {"403": 1}


def test_backend_and_hook_share_the_credential(vault: AzureSandbox, azure_connection: Callable[..., str]) -> None:
    sc = vault.scenario
    hook = AzureWorkloadIdentityHook(
        azure_conn_id=azure_connection("kv", client_id=sc.workload_client_id, tenant_id=sc.tenant_id)
    )
    backend = _backend(vault)
    assert backend.get_variable("greeting")
    assert hook.get_credential() is backend._credential  # one credential object per identity per process
    assert hook.get_token("https://vault.azure.net/.default")
    backend.get_variable("greeting")
    assert vault.calls("entra") == 1


def test_official_keys_and_construction_without_network(vault: AzureSandbox) -> None:
    sc = vault.scenario
    vault.reset_calls()
    vault.key_vault.reset_calls()
    official_style = KeyVaultBackend(
        vault_url=vault.key_vault.url,
        managed_identity_client_id=sc.workload_client_id,
        workload_identity_tenant_id=sc.tenant_id,
    )
    assert (official_style.spec.client_id, official_style.spec.tenant_id) == (sc.workload_client_id, sc.tenant_id)
    for kwargs, field in (
        ({"vault_url": ""}, "vault_url"),
        ({"vault_url": "https://evil.example.com"}, "vault_url"),
        ({"vault_url": "http://myvault.vault.azure.net"}, "vault_url"),
        ({"vault_url": vault.key_vault.url, "client_secret": "s3cr3t-value"}, "client_secret"),
        ({"vault_url": vault.key_vault.url, "client_id": "not-a-guid"}, "client_id"),
        ({"vault_url": vault.key_vault.url, "vault_name": "x"}, "vault_name"),
    ):
        with pytest.raises(ConfigError) as caught:
            KeyVaultBackend(**kwargs)
        assert caught.value.field == field
        assert "s3cr3t-value" not in str(caught.value)
    assert KeyVaultBackend(vault_url="https://myvault.vault.azure.net").vault_url == "https://myvault.vault.azure.net"
    assert vault.calls() == 0 and vault.key_vault.calls() == 0


def test_official_backend_reads_the_same_vault(vault: AzureSandbox) -> None:
    """The official backend (DefaultAzureCredential through the workload identity environment) reads the
    same sandbox; its only extra is SecretClient's ``verify_challenge_resource=False``, which the official
    backend passes through (the sandbox's host is 127.0.0.1, not *.vault.azure.net)."""
    from airflow.providers.microsoft.azure.secrets.key_vault import AzureKeyVaultBackend

    sc = vault.scenario
    official = AzureKeyVaultBackend(
        vault_url=vault.key_vault.url,
        managed_identity_client_id=sc.workload_client_id,
        workload_identity_tenant_id=sc.tenant_id,
        verify_challenge_resource=False,
    )
    assert official.get_conn_value("pg_uri") == URI
    assert official.get_variable("greeting") == "hello from key vault"
    assert official.get_variable("absent") is None


def test_whoami_reports_the_backend_identity(vault: AzureSandbox) -> None:
    sc = vault.scenario
    report = _backend(vault).whoami()
    assert report.final.principal == f"object {sc.workload_object_id} in tenant {sc.tenant_id}"
    assert ("audience (aud)", "https://vault.azure.net") in report.final.details
