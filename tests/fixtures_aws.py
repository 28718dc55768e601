"""Fixtures for tests against the local AWS sandbox (moto server with IAM enforcement, on loopback).

Loaded for every test directory by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.sandbox import AwsSandbox

_AMBIENT = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session")
def aws_sandbox() -> Iterator[AwsSandbox]:
    sandbox = AwsSandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


class Pod:
    """The ambient identity of the test process, set the way EKS sets it (environment variables)."""

    def __init__(self, sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.sandbox = sandbox
        self.monkeypatch = monkeypatch
        self.tmp_path = tmp_path
        self.token_file: Path | None = None
        for name in _AMBIENT:
            monkeypatch.delenv(name, raising=False)
        for name, value in sandbox.env_isolation().items():
            monkeypatch.setenv(name, value)

    def irsa(self, **mint: Any) -> Path:
        self.token_file = self.sandbox.write_web_identity_token(self.tmp_path / "irsa-token", **mint)
        for name, value in self.sandbox.env_irsa(self.token_file).items():
            self.monkeypatch.setenv(name, value)
        return self.token_file

    def pod_identity(self) -> None:
        self.sandbox.rotate_pod_identity_token()
        for name, value in self.sandbox.env_pod_identity().items():
            self.monkeypatch.setenv(name, value)

    def default_chain(self) -> None:
        for name, value in self.sandbox.env_default_chain().items():
            self.monkeypatch.setenv(name, value)


@pytest.fixture
def pod(aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Pod]:
    aws_sandbox.clear_faults()
    aws_sandbox.set_sts_latency(0)
    aws_sandbox.force_credential_ttl(None)
    aws_sandbox.reset_calls()
    yield Pod(aws_sandbox, monkeypatch, tmp_path)
    aws_sandbox.clear_faults()
    aws_sandbox.set_sts_latency(0)
    aws_sandbox.force_credential_ttl(None)


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an Airflow connection the way deployments often do: ``AIRFLOW_CONN_<ID>`` as JSON."""

    def define(conn_id: str, conn_type: str = "aws_workload_identity", **extra: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, "extra": extra}))
        return conn_id

    return define


def sts_calls(sandbox: AwsSandbox) -> dict[str, int]:
    return {k: v for k, v in sandbox.calls_by_action().items() if v}


__all__ = ["Pod", "sts_calls"]
