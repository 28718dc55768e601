"""Fixtures for tests against the local Azure sandbox (fake IMDS, Entra over https, Azurite + RBAC)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the sandbox needs this cloud's SDKs, which the older-Airflow matrix legs lack
    from dev.sandbox import AzureSandbox

_AMBIENT = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture(scope="session")
def azure_sandbox() -> Iterator[AzureSandbox]:
    from dev.sandbox import AzureSandbox

    sandbox = AzureSandbox.start()
    sandbox.trust_ca_in_aiohttp()
    try:
        yield sandbox
    finally:
        sandbox.stop()


class Aks:
    """The test process as an AKS pod (workload identity) or a VM node (managed identity)."""

    def __init__(self, sandbox: AzureSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.sandbox = sandbox
        self.monkeypatch = monkeypatch
        self.token_file = tmp_path / "azure-identity-token"
        for name in _AMBIENT:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**sandbox.env_isolation(), **sandbox.env_imds()}.items():
            monkeypatch.setenv(name, value)

    def workload_identity(self, **mint: Any) -> Path:
        self.sandbox.write_sa_token(self.token_file, **mint)
        for name, value in self.sandbox.env_workload_identity(self.token_file).items():
            self.monkeypatch.setenv(name, value)
        return self.token_file


@pytest.fixture
def aks(azure_sandbox: AzureSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aks]:
    azure_sandbox.clear_faults()
    azure_sandbox.force_token_ttl(None)
    azure_sandbox.reset_calls()
    yield Aks(azure_sandbox, monkeypatch, tmp_path)
    azure_sandbox.clear_faults()
    azure_sandbox.hang_imds(None)
    azure_sandbox.force_token_ttl(None)


@pytest.fixture
def azure_connection(monkeypatch: pytest.MonkeyPatch, azure_sandbox: AzureSandbox) -> Callable[..., str]:
    """An ``AIRFLOW_CONN_<ID>`` JSON connection whose host is the sandbox's storage account URL."""

    def define(conn_id: str, conn_type: str = "azure_workload_identity", **extra: Any) -> str:
        body = {"conn_type": conn_type, "host": azure_sandbox.blob_account_url, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return define
