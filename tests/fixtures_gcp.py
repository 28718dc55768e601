"""Fixtures for tests against the local Google Cloud sandbox (fake GKE metadata, IAM Credentials, GCS)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the sandbox needs this cloud's SDKs, which the older-Airflow matrix legs lack
    from dev.sandbox import GcpSandbox


@pytest.fixture(scope="session")
def gcp_sandbox() -> Iterator[GcpSandbox]:
    from dev.sandbox import GcpSandbox

    sandbox = GcpSandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def gke(gcp_sandbox: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcpSandbox]:
    """The test process as a GKE pod with Workload Identity: env set, google-auth pointed at the fakes."""
    gcp_sandbox.reset()
    gcp_sandbox.reset_calls()
    for name, value in gcp_sandbox.env().items():
        monkeypatch.setenv(name, value)
    for module, attribute, value in gcp_sandbox.google_auth_patches():
        monkeypatch.setattr(importlib.import_module(module), attribute, value)
    yield gcp_sandbox
    gcp_sandbox.reset()


@pytest.fixture
def gcp_connection(monkeypatch: pytest.MonkeyPatch, gcp_sandbox: GcpSandbox) -> Callable[..., str]:
    """An ``AIRFLOW_CONN_<ID>`` JSON connection; the IAM endpoint defaults to the sandbox's."""

    def define(conn_id: str, conn_type: str = "gcp_workload_identity", **extra: Any) -> str:
        if conn_type == "gcp_workload_identity":
            extra.setdefault("iam_endpoint_url", gcp_sandbox.iam_endpoint)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, "extra": extra}))
        return conn_id

    return define
