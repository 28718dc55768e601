"""Every SDK private attribute the package uses (all in ``_sdk.py``), exercised against the installed SDKs.

If a botocore, aiobotocore, google-auth or azure-identity release renames or changes one of them, a
test here fails with the name, before anything subtler breaks in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_workload_identity import _sdk

EXPIRY = "2030-01-01T00:00:00+00:00"
DATA = {"access_key": "AKIDTEST", "secret_key": "secret-test", "token": "token-test", "expiry_time": EXPIRY}


def test_botocore_loader_search_paths_can_be_replaced() -> None:
    import botocore.loaders

    loader = botocore.loaders.create_loader()
    paths = ["/nowhere", *loader.search_paths]
    _sdk.set_loader_search_paths(loader, paths)
    assert loader.search_paths == paths
    assert loader.load_service_model("sts", "service-2")["metadata"]["serviceId"] == "STS"


def test_botocore_refreshable_credentials_take_refresh_data_and_refresh_through_refresh() -> None:
    from botocore.credentials import DeferredRefreshableCredentials

    calls: list[str] = []

    class Probe(DeferredRefreshableCredentials):  # type: ignore[misc]
        def _refresh(self) -> None:  # the hook SharedCredentials overrides
            calls.append("refresh")
            _sdk.apply_refresh_data(self, DATA)

    creds = Probe(refresh_using=lambda: DATA, method="probe")
    frozen = creds.get_frozen_credentials()
    assert calls, "botocore's get_frozen_credentials no longer calls _refresh()"
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("AKIDTEST", "secret-test", "token-test")
    assert _sdk.botocore_expiry(creds) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert creds.access_key == "AKIDTEST"  # the properties go through _refresh too
    assert len(calls) >= 2


def test_aiobotocore_credentials_take_refresh_data_and_refresh_through_refresh() -> None:
    from aiobotocore.credentials import AioDeferredRefreshableCredentials

    calls: list[str] = []

    class Probe(AioDeferredRefreshableCredentials):  # type: ignore[misc]
        async def _refresh(self) -> None:
            calls.append("refresh")
            _sdk.apply_refresh_data(self, DATA, lock=False)

    async def read() -> Any:
        return await Probe(refresh_using=None, method="probe").get_frozen_credentials()

    frozen = asyncio.run(read())
    assert calls, "aiobotocore's get_frozen_credentials no longer awaits _refresh()"
    assert frozen.secret_key == "secret-test"


def test_botocore_web_identity_fetcher_call() -> None:
    import botocore.session
    from botocore.credentials import AssumeRoleWithWebIdentityCredentialFetcher
    from botocore.stub import Stubber

    client = botocore.session.Session().create_client("sts", region_name="us-east-1")
    response = {
        "Credentials": {
            "AccessKeyId": "AKIDTESTTESTTEST",
            "SecretAccessKey": "s",
            "SessionToken": "t",
            "Expiration": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        },
        "AssumedRoleUser": {"AssumedRoleId": "AROATEST:x", "Arn": "arn:aws:sts::111111111111:assumed-role/r/x"},
    }
    with Stubber(client) as stub:
        stub.add_response("assume_role_with_web_identity", response)
        fetcher = AssumeRoleWithWebIdentityCredentialFetcher(
            client_creator=lambda *a, **k: client,
            web_identity_token_loader=lambda: "header.payload.signature",
            role_arn="arn:aws:iam::111111111111:role/r",
            extra_args={"RoleSessionName": "airflow-test"},
        )
        got = _sdk.web_identity_call(fetcher)
    assert got["AssumedRoleUser"]["Arn"].endswith("assumed-role/r/x")


def test_google_auth_metadata_module() -> None:
    from google.auth.compute_engine import _metadata

    assert hasattr(_metadata, "_GCE_METADATA_HOST"), "google-auth moved the metadata host"
    assert _sdk.gce_metadata_host() == _metadata._GCE_METADATA_HOST


def test_azure_workload_identity_token_file_is_reread(tmp_path: Path) -> None:
    from azure.identity import WorkloadIdentityCredential

    from airflow_workload_identity.azure.credentials import _RotatingWorkloadIdentityCredential

    assert callable(getattr(WorkloadIdentityCredential, "_get_service_account_token", None)), (
        "azure-identity renamed WorkloadIdentityCredential._get_service_account_token"
    )
    token_file = tmp_path / "token"
    token_file.write_text("first")
    credential = _RotatingWorkloadIdentityCredential(
        tenant_id="00000000-0000-0000-0000-000000000001",
        client_id="00000000-0000-0000-0000-000000000002",
        token_file_path=str(token_file),
    )
    assert _sdk.wi_token_file(credential) == str(token_file)
    assert credential._get_service_account_token() == "first"
    token_file.write_text("second")
    os.utime(token_file, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert credential._get_service_account_token() == "second"
    _sdk.refresh_wi_token_file(credential)


def test_azure_managed_identity_accepts_the_workload_identity_exclusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    token_file = tmp_path / "token"
    token_file.write_text("jwt")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    credential = ManagedIdentityCredential(**{_sdk.AZURE_MI_EXCLUDE_WORKLOAD_IDENTITY: True})
    inner = type(getattr(credential, "_credential", None)).__name__
    assert "WorkloadIdentity" not in inner, inner


def test_botocore_container_credential_url_rule() -> None:
    _sdk.check_container_metadata_url("http://127.0.0.1:8080/v1/credentials")
    _sdk.check_container_metadata_url("http://169.254.170.23/v1/credentials")
    with pytest.raises(ValueError):
        _sdk.check_container_metadata_url("http://attacker.example.com/v1/credentials")
