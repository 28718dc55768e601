"""Endpoint overrides in connections: the clouds' token endpoints exactly (https, port 443), or hosts the
deployment lists in ``[workload_identity] allowed_endpoint_hosts``; strict URL parsing.

The attacker's side (hosts that must be refused) is in test_endpoint_adversarial.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_workload_identity.endpoints import (
    ENDPOINT_FORMS,
    ENV,
    SETTING,
    check_override,
    cloud_endpoint,
    host_allowed,
    parse_endpoint,
)
from airflow_workload_identity.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"

ACCEPTED = {
    "aws": [
        "https://sts.amazonaws.com",
        "https://sts.us-east-1.amazonaws.com",
        "https://sts.eu-west-1.amazonaws.com/",
        "https://sts.ap-southeast-7.amazonaws.com",
        "https://sts.il-central-1.amazonaws.com",
        "https://sts.mx-central-1.amazonaws.com",
        "https://sts-fips.us-east-1.amazonaws.com",
        "https://sts-fips.ca-central-1.amazonaws.com",
        "https://sts.us-gov-west-1.amazonaws.com",
        "https://sts-fips.us-gov-east-1.amazonaws.com",
        "https://sts.us-east-1.api.aws",
        "https://sts-fips.us-west-2.api.aws",
        "https://sts.us-gov-west-1.api.aws",
        "https://sts.cn-north-1.amazonaws.com.cn",
        "https://sts.cn-northwest-1.amazonaws.com.cn",
        "https://sts.cn-north-1.api.amazonwebservices.com.cn",
        "https://sts.us-iso-east-1.c2s.ic.gov",
        "https://sts.us-isob-east-1.sc2s.sgov.gov",
        "https://sts.eusc-de-east-1.amazonaws.eu",
        "https://vpce-0123456789abcdef0-abcdefgh.sts.us-east-1.vpce.amazonaws.com",
        "https://vpce-0123456789abcdef0-abcdefgh-us-east-1a.sts.us-east-1.vpce.amazonaws.com",
        "https://vpce-01234567-a1b2c3d4.sts.eu-central-1.vpce.amazonaws.com",
        "https://vpce-0123456789abcdef0-abcdefgh.sts.cn-north-1.vpce.amazonaws.com.cn",
        "https://STS.US-EAST-1.AMAZONAWS.COM",
        "HTTPS://sts.us-east-1.amazonaws.com:443",
    ],
    "gcp": [
        "https://iamcredentials.googleapis.com",
        "https://iamcredentials.googleapis.com/",
        "https://iamcredentials.mtls.googleapis.com",
        "https://private.googleapis.com",
        "https://restricted.googleapis.com",
        "https://iamcredentials-myendpoint.p.googleapis.com",
        "https://iamcredentials-a.p.googleapis.com",
        "https://iamcredentials-ep20charactersxxxxx.p.googleapis.com",
        "https://IAMCredentials.GoogleAPIs.com:443",
    ],
    "azure": [
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.com/",
        "https://login.microsoftonline.us",
        "https://login.chinacloudapi.cn",
        "https://login.partner.microsoftonline.cn",
        "https://Login.MicrosoftOnline.com:443",
    ],
}
FIELDS = {
    "aws": ("sts_endpoint_url", "aws_workload_identity"),
    "gcp": ("iam_endpoint_url", "gcp_workload_identity"),
    "azure": ("authority_host", "azure_workload_identity"),
}


@pytest.fixture
def nothing_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")


def _accepted() -> list[tuple[str, str]]:
    return [(cloud, url) for cloud, urls in ACCEPTED.items() for url in urls]


@pytest.mark.parametrize(("cloud", "url"), _accepted())
def test_the_clouds_token_endpoints_are_accepted_without_configuration(
    cloud: str, url: str, nothing_listed: None
) -> None:
    field, conn_type = FIELDS[cloud]
    check_override(url, field=field, conn_type=conn_type, cloud=cloud)
    for other in FIELDS.keys() - {cloud}:  # and only for their own cloud
        with pytest.raises(ConfigError):
            check_override(url, field=FIELDS[other][0], conn_type=FIELDS[other][1], cloud=other)


def test_the_aws_forms_follow_botocores_partitions() -> None:
    """Regions come from botocore's partition data and a strict label pattern, not a wildcard."""
    assert cloud_endpoint("sts.us-east-1.amazonaws.com", "aws")
    assert not cloud_endpoint("sts.cn-north-1.amazonaws.com", "aws")  # China is amazonaws.com.cn
    assert not cloud_endpoint("sts.us-gov-west-1.amazonaws.com.cn", "aws")
    assert not cloud_endpoint("sts.us-east-1.c2s.ic.gov", "aws")  # not an ISO region
    assert not cloud_endpoint("sts.foo-east-1.amazonaws.com", "aws")  # not a region prefix of the partition
    assert not cloud_endpoint("sts.us-east-1x.amazonaws.com", "aws")
    assert not cloud_endpoint("sts.us-east.amazonaws.com", "aws")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://user:secret@sts.amazonaws.com", "user-info"),
        ("https://sts.amazonaws.com.", "trailing dot"),
        ("https://\u0455ts.amazonaws.com", "non-ASCII"),
        ("https://2130706433", "non-standard form"),
        ("https://127.1", "non-standard form"),
        ("https://0x7f000001", "non-standard form"),
        ("https://sts.amazonaws.com:0", "invalid port"),
        ("https://sts.amazonaws.com:65536", "invalid port"),
        ("https://sts.amazonaws.com:0443", "invalid port"),
        ("https://sts.amazonaws.com:", "invalid port"),
        ("https://sts.amazonaws.com/x", "path, query or fragment"),
        ("https://sts.amazonaws.com?", "path, query or fragment"),
        ("https://sts.amazonaws.com#", "path, query or fragment"),
        ("https://sts.amazonaws.com\\", "backslash"),
        ("https://sts.amazonaws.com%2f", "'%'"),
        ("https://[fe80::1%25eth0]", "'%'"),
        ("https://[::g]", "not a valid URL"),
        ("https://[::1", "not a valid URL"),
        ("https://-sts.amazonaws.com", "invalid host name"),
        ("https://sts..amazonaws.com", "invalid host name"),
        ("https://" + "a" * 64 + ".amazonaws.com", "invalid host name"),
        ("sts.amazonaws.com", "absolute http(s) URL"),
        ("file:///etc/passwd", "absolute http(s) URL"),
    ],
)
def test_strict_parsing_says_what_is_wrong(url: str, problem: str, nothing_listed: None) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_endpoint(url)
    with pytest.raises(ConfigError) as err:
        check_override(url, field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws")
    assert problem in err.value.problem
    assert "secret" not in str(err.value)


def test_parse_normalises_case_and_ipv6() -> None:
    parsed = parse_endpoint("HTTPS://STS.Us-East-1.AmazonAWS.com:443/")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.ip) == ("https", "sts.us-east-1.amazonaws.com", 443, False)
    parsed = parse_endpoint("http://[0:0:0:0:0:0:0:1]:8080")
    assert (parsed.host, parsed.port, parsed.ip) == ("::1", 8080, True)


def test_plain_http_and_other_ports_are_refused_on_public_endpoints(nothing_listed: None) -> None:
    with pytest.raises(ConfigError) as err:
        check_override("http://sts.us-east-1.amazonaws.com", field="f", conn_type="t", cloud="aws")
    assert "plain http" in err.value.problem and err.value.fix == "use https://sts.us-east-1.amazonaws.com"
    with pytest.raises(ConfigError) as err:
        check_override("https://iamcredentials.googleapis.com:8443", field="f", conn_type="t", cloud="gcp")
    assert "443 only" in err.value.problem


def test_listed_hosts_may_use_http_and_any_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, " sts.corp.example , *.proxy.example, 10.0.0.5, [fd00::5], localhost,STS.UPPER.EXAMPLE")
    for url in (
        "https://sts.corp.example",
        "http://sts.corp.example:8080",
        "https://a.proxy.example:8443",
        "http://a.b.proxy.example",
        "http://10.0.0.5:9000",
        "http://[fd00::5]:9000",
        "http://[fd00:0::5]",
        "http://localhost:4566",
        "https://sts.upper.example",
    ):
        check_override(url, field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws")
    for url in (
        "https://proxy.example",  # a pattern covers hosts under the suffix, not the suffix
        "https://evilproxy.example",
        "https://proxy.example.evil.com",
        "https://10.0.0.6",
        "https://sts.corp.example.evil.com",
        "https://a.proxy.example@evil.com",
        "https://xn--80ak6aa92e.proxy.example.evil.com",
        "https://2130706433",
    ):
        with pytest.raises(ConfigError):
            check_override(url, field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws")


def test_a_listed_public_host_may_use_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment decides for the hosts it lists, e.g. an http-only proxy that answers on the name."""
    monkeypatch.setenv(ENV, "sts.us-east-1.amazonaws.com")
    check_override("http://sts.us-east-1.amazonaws.com", field="f", conn_type="t", cloud="aws")
    with pytest.raises(ConfigError):
        check_override("http://sts.us-west-2.amazonaws.com", field="f", conn_type="t", cloud="aws")


@pytest.mark.parametrize(
    "entry",
    [
        "https://sts.corp.example",
        "sts.corp.example:8443",
        "*",
        "*.example",
        "sts.corp.example.",
        "*.exa mple.com",
        "a/b",
    ],
)
def test_a_malformed_allow_list_entry_is_reported_not_ignored(entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, entry)
    with pytest.raises(ConfigError) as err:
        check_override(
            "https://sts.corp.example", field="sts_endpoint_url", conn_type="aws_workload_identity", cloud="aws"
        )
    assert err.value.field == "sts_endpoint_url"
    assert SETTING in err.value.problem and SETTING in err.value.fix


def test_an_unlisted_override_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sts.corp.example")
    with pytest.raises(ConfigError) as err:
        check_override(
            "http://127.0.0.1:8080", field="iam_endpoint_url", conn_type="gcp_workload_identity", cloud="gcp"
        )
    assert err.value.field == "iam_endpoint_url"
    assert SETTING in str(err.value)
    assert ENV in err.value.fix


def test_no_override_is_nothing_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "not a valid entry")
    check_override(None, field="f", conn_type="t", cloud="aws")
    check_override("", field="f", conn_type="t", cloud="aws")


def test_the_allow_list_is_read_from_airflow_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.configuration import conf

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setitem(conf._sections, "workload_identity", {"allowed_endpoint_hosts": "sts.conf.example"})  # type: ignore[attr-defined]
    check_override("https://sts.conf.example", field="f", conn_type="t", cloud="aws")


@pytest.mark.parametrize(
    ("host", "cloud", "allowed", "ok"),
    [
        ("sts.eu-west-1.amazonaws.com", "aws", (), True),
        ("iamcredentials.googleapis.com", "gcp", (), True),
        ("login.microsoftonline.us", "azure", (), True),
        ("evil.example.com", "aws", (), False),
        ("amazonaws.com.evil.example", "aws", (), False),
        ("notamazonaws.com", "aws", (), False),
        ("bucket.s3.amazonaws.com", "aws", (), False),
        ("127.0.0.1", "gcp", (), False),
        ("127.0.0.1", "gcp", ("127.0.0.1",), True),
        ("::1", "gcp", ("::1",), True),
        ("sts.internal.example.com", "aws", ("*.internal.example.com",), True),
        ("internal.example.com", "aws", ("*.internal.example.com",), False),
        ("login.microsoftonline.com", "aws", (), False),
        ("sts.internal.example.com", "aws", ("bad entry",), False),
    ],
)
def test_host_allowed(host: str, cloud: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, cloud, allowed) is ok


def test_docs_list_every_accepted_form() -> None:
    """docs/security.md states exactly the forms the code accepts."""
    text = DOCS.read_text()
    for forms in ENDPOINT_FORMS.values():
        for form in forms:
            assert f"`{form}`" in text, form


def test_doctor_reports_a_refused_override_as_invalid(nothing_listed: None) -> None:
    """``doctor`` validates connections without a request; it must not call valid what the hook refuses."""
    from airflow_workload_identity.doctor import check_connections

    role = {"role_arn": "arn:aws:iam::123456789012:role/reader"}
    chain = {"impersonation_chain": ["reader@customer-proj.iam.gserviceaccount.com"]}
    results = check_connections(
        {
            "aws_ok": ("aws_workload_identity", {**role, "sts_endpoint_url": "https://sts.eu-west-1.amazonaws.com"}),
            "aws_bad": ("aws_workload_identity", {**role, "sts_endpoint_url": "https://bucket.s3.amazonaws.com"}),
            "gcp_bad": ("gcp_workload_identity", {**chain, "iam_endpoint_url": "https://b.storage.googleapis.com"}),
            "azure_bad": ("azure_workload_identity", {"authority_host": "https://login.microsoftonline.com.evil.com"}),
            "azure_ok": ("azure_workload_identity", {"authority_host": "https://login.microsoftonline.us"}),
        }
    )
    by_id = {r["conn_id"]: r for r in results}
    assert by_id["aws_ok"]["valid"] and by_id["azure_ok"]["valid"]
    for conn_id, field in (
        ("aws_bad", "sts_endpoint_url"),
        ("gcp_bad", "iam_endpoint_url"),
        ("azure_bad", "authority_host"),
    ):
        assert not by_id[conn_id]["valid"]
        assert f"field {field!r}" in by_id[conn_id]["error"]


def test_a_value_that_is_not_a_string_is_refused(nothing_listed: None) -> None:
    with pytest.raises(ConfigError) as err:
        check_override(["https://sts.amazonaws.com"], field="sts_endpoint_url", conn_type="t", cloud="aws")  # type: ignore[arg-type]
    assert err.value.field == "sts_endpoint_url" and "not a URL" in err.value.problem


@pytest.mark.parametrize(
    "url",
    [
        "https://sts.googleapis.com",
        "https://sts.googleapis.com/",
        "https://sts.mtls.googleapis.com",
        "https://private.googleapis.com",
        "https://restricted.googleapis.com",
        "https://sts-myendpoint.p.googleapis.com",
        "https://STS.GoogleAPIs.com:443",
    ],
)
def test_google_sts_endpoints_are_accepted_for_the_token_exchange_only(url: str, nothing_listed: None) -> None:
    check_override(url, field="sts_endpoint_url", conn_type="gcp_workload_identity", cloud="gcp_sts")
    if "sts" in url.lower():  # Google's STS is not an IAM Credentials endpoint, nor AWS's
        for field, cloud in (("iam_endpoint_url", "gcp"), ("sts_endpoint_url", "aws")):
            with pytest.raises(ConfigError):
                check_override(url, field=field, conn_type="t", cloud=cloud)


@pytest.mark.parametrize(
    "url",
    [
        "http://sts.googleapis.com",
        "https://sts.googleapis.com:8443",
        "https://iamcredentials.googleapis.com",
        "https://sts.googleapis.com.evil.example",
        "https://evil-sts.googleapis.com",
        "https://sts-.p.googleapis.com",
        "https://sts-UPPER_case.p.googleapis.com",
        "https://b.storage.googleapis.com",
        "https://sts.amazonaws.com",
        "http://127.0.0.1:8080",
    ],
)
def test_other_hosts_are_refused_as_google_sts(url: str, nothing_listed: None) -> None:
    with pytest.raises(ConfigError) as err:
        check_override(url, field="sts_endpoint_url", conn_type="gcp_workload_identity", cloud="gcp_sts")
    assert err.value.field == "sts_endpoint_url"


def test_doctor_checks_the_google_sts_override(nothing_listed: None) -> None:
    from airflow_workload_identity.doctor import check_connections

    federated = {
        "source": "aws",
        "workload_identity_provider": "projects/1/locations/global/workloadIdentityPools/aws-pool/providers/aws-prov",
    }
    results = check_connections(
        {
            "ok": ("gcp_workload_identity", {**federated, "sts_endpoint_url": "https://sts.googleapis.com"}),
            "bad": (
                "gcp_workload_identity",
                {**federated, "sts_endpoint_url": "https://iamcredentials.googleapis.com"},
            ),
        }
    )
    by_id = {r["conn_id"]: r for r in results}
    assert by_id["ok"]["valid"]
    assert not by_id["bad"]["valid"] and "field 'sts_endpoint_url'" in by_id["bad"]["error"]
