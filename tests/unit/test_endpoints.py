"""Endpoint overrides in connections are honoured only for public cloud endpoints and allowed hosts."""

from __future__ import annotations

import pytest

from airflow_workload_identity.endpoints import check_override, host_allowed
from airflow_workload_identity.errors import ConfigError


@pytest.mark.parametrize(
    ("host", "cloud", "allowed", "ok"),
    [
        ("sts.eu-west-1.amazonaws.com", "aws", (), True),
        ("vpce-123.sts.eu-west-1.vpce.amazonaws.com", "aws", (), True),
        ("sts.cn-north-1.amazonaws.com.cn", "aws", (), True),
        ("iamcredentials.googleapis.com", "gcp", (), True),
        ("login.microsoftonline.us", "azure", (), True),
        ("evil.example.com", "aws", (), False),
        ("amazonaws.com.evil.example", "aws", (), False),
        ("notamazonaws.com", "aws", (), False),
        ("127.0.0.1", "gcp", (), False),
        ("127.0.0.1", "gcp", ("127.0.0.1",), True),
        ("sts.internal.example.com", "aws", ("*.internal.example.com",), True),
        ("internal.example.com", "aws", ("*.internal.example.com",), False),
        ("login.microsoftonline.com", "aws", (), False),
    ],
)
def test_host_allowed(host: str, cloud: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, cloud, allowed) is ok


def test_an_unlisted_override_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS", "sts.corp.example, *.proxy.example")
    check_override("https://sts.corp.example", field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws")
    check_override(
        "https://a.proxy.example:8443", field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws"
    )
    with pytest.raises(ConfigError) as err:
        check_override(
            "http://127.0.0.1:8080", field="iam_endpoint_url", conn_type="gcp_workload_identity", cloud="gcp"
        )
    assert err.value.field == "iam_endpoint_url"
    assert "[workload_identity] allowed_endpoint_hosts" in str(err.value)
    assert "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS" in err.value.fix
