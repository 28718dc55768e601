"""An attacker who may edit connections tries to point each cloud's token endpoint at a host they control.

Every override below is refused with a ``ConfigError`` naming the field, with no allow-list configured and
with the deployment's usual ``127.0.0.1`` entry (the test suite's own setting): hosts under the clouds'
domains that others run, look-alikes, ``@`` tricks, IP literals, IDN, trailing dots, ports, plain http.
The integration tests (tests/integration/test_endpoint_allowlist.py) show the refusal costs no request.
"""

from __future__ import annotations

import pytest

from airflow_workload_identity.endpoints import ENV, check_override
from airflow_workload_identity.errors import ConfigError

# Written the way an editor would paste them into the form; each is a complete endpoint URL.
AWS = [
    "https://ec2-3-4-5-6.compute-1.amazonaws.com",
    "https://ec2-3-4-5-6.eu-west-1.compute.amazonaws.com",
    "https://abc123.execute-api.us-east-1.amazonaws.com",
    "https://x.elb.amazonaws.com",
    "https://my-lb-1234.us-east-1.elb.amazonaws.com",
    "https://bucket.s3.amazonaws.com",
    "https://bucket.s3.us-east-1.amazonaws.com",
    "https://bucket.s3-website-us-east-1.amazonaws.com",
    "https://abc.lambda-url.us-east-1.on.aws",
    "https://d111111abcdef8.cloudfront.net",
    "https://amazonaws.com",
    "https://api.aws",
    "https://sts.amazonaws.com.evil.com",
    "https://sts.us-east-1.amazonaws.com.evil.com",
    "https://evil.com/sts.amazonaws.com",
    "https://sts.amazonaws.com@evil.com",
    "https://evil.com@sts.amazonaws.com",
    "https://evil.com\\@sts.amazonaws.com",
    "https://sts.amazonaws.com\\@evil.com",
    "https://evil.sts.us-east-1.amazonaws.com",
    "https://sts.evil.amazonaws.com",
    "https://sts.us-east-1.s3.amazonaws.com",
    "https://sts.not-a-region.amazonaws.com",
    "https://sts.cn-north-1.amazonaws.com",  # China regions live under amazonaws.com.cn
    "https://sts.us-east-1.amazonaws.com.cn",
    "https://sts.us_east_1.amazonaws.com",
    "https://sts-fips.amazonaws.com",
    "https://sts.us-east-1.vpce.amazonaws.com",
    "https://vpce-0123456789abcdef0-abcdefgh.execute-api.us-east-1.vpce.amazonaws.com",
    "https://vpce-0123456789abcdef0-abcdefgh.vpce-svc-0123456789abcdef0.us-east-1.vpce.amazonaws.com",
    "https://evil.sts.us-east-1.vpce.amazonaws.com",
    "https://vpce-0123456789abcdef0-abcdefgh-us-west-2a.sts.us-east-1.vpce.amazonaws.com",
    "http://sts.us-east-1.amazonaws.com",
    "http://sts.amazonaws.com",
    "https://sts.amazonaws.com:8443",
    "https://sts.us-east-1.amazonaws.com:80",
    "https://sts.amazonaws.com.",
    "https://sts.us-east-1.amazonaws.com./",
    "https://\u0455ts.amazonaws.com",  # Cyrillic dze
    "https://sts.amazonaws.c\u043em",  # Cyrillic o
    "https://xn--ts-gmc.amazonaws.com",
    "https://\uff53\uff54\uff53.amazonaws.com",  # full-width letters NFKC-fold to "sts"
    "https://169.254.169.254",
    "https://3.4.5.6",
    "https://2130706433",
    "https://0x7f000001",
    "https://127.1",
    "https://0177.0.0.1",
    "https://[::1]",
    "https://[::ffff:127.0.0.1]",
    "https://localhost",
    "https://sts.us-east-1.amazonaws.com/evil",
    "https://sts.us-east-1.amazonaws.com?redirect=evil.com",
    "https://sts.us-east-1.amazonaws.com#@evil.com",
    "https://sts.us-east-1.amazonaws.com%2eevil.com",
    "https://sts.us-east-1.amazonaws.com\t.evil.com",
    "https:sts.us-east-1.amazonaws.com",
    "https://",
    "https://:443",
    "ftp://sts.amazonaws.com",
    "sts.amazonaws.com",
    "//sts.amazonaws.com",
]

GCP = [
    "https://storage.googleapis.com",
    "https://any-bucket.storage.googleapis.com",
    "https://www.googleapis.com",
    "https://oauth2.googleapis.com",
    "https://evil.googleapis.com",
    "https://googleapis.com",
    "https://iamcredentials.googleapis.com.evil.com",
    "https://evil.com/iamcredentials.googleapis.com",
    "https://iamcredentials.googleapis.com@evil.com",
    "https://evil.com@iamcredentials.googleapis.com",
    "https://evil.iamcredentials.googleapis.com",
    "https://iamcredentials.evil.googleapis.com",
    "https://evil.p.googleapis.com",
    "https://storage-ep1.p.googleapis.com",
    "https://iamcredentials-.p.googleapis.com",
    "https://iamcredentials-1ep.p.googleapis.com",
    "https://iamcredentials-ep-1.p.googleapis.com",
    "https://iamcredentials-averyveryverylongendpointname.p.googleapis.com",
    "https://x.iamcredentials-ep1.p.googleapis.com",
    "https://x.run.app",
    "https://evil.appspot.com",
    "https://evil.cloudfunctions.net",
    "https://evil.web.app",
    "https://storage.cloud.google.com",
    "http://iamcredentials.googleapis.com",
    "http://private.googleapis.com",
    "https://iamcredentials.googleapis.com:8443",
    "https://iamcredentials.googleapis.com.",
    "https://IAMCREDENTIALS.GOOGLEAPIS.COM.EVIL.COM",
    "https://iamcredentials.googleapis.c\u043em",
    "https://\u0456amcredentials.googleapis.com",  # Cyrillic i
    "https://xn--amcredentials-0ij.googleapis.com",
    "https://199.36.153.8",  # private.googleapis.com's address, not listed
    "https://[2001:db8::1]",
    "https://3627732744",
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x:generateAccessToken",
    "https://iamcredentials.googleapis.com?x=1",
    "https://iamcredentials.googleapis.com#frag",
    "https://iamcredentials.googleapis.com\\@evil.com",
    "https://iamcredentials.googleapis.com:",
    "https://iamcredentials.googleapis.com:0",
    "https://iamcredentials.googleapis.com:99999",
    "https://iamcredentials.googleapis.com: 443",
    "metadata.google.internal",
    "https://metadata.google.internal",
]

AZURE = [
    "https://login.microsoftonline.com.evil.com",
    "https://evil.com/login.microsoftonline.com",
    "https://login.microsoftonline.com@evil.com",
    "https://evil.com@login.microsoftonline.com",
    "https://login.microsoftonline.com\\@evil.com",
    "https://evil.login.microsoftonline.com",
    "https://login.evil.microsoftonline.com",
    "https://microsoftonline.com",
    "https://evil.microsoftonline.com",
    "https://login.microsoftonline.us.evil.com",
    "https://login.chinacloudapi.cn.evil.com",
    "https://x.chinacloudapi.cn",
    "https://evil.azurewebsites.net",
    "https://evil.blob.core.windows.net",
    "https://evil.trafficmanager.net",
    "https://evil.b2clogin.com",
    "https://login.microsoft.com.evil.com",
    "https://login.microsoftonIine.com",  # capital I for l
    "https://l\u043egin.microsoftonline.com",  # Cyrillic o
    "https://xn--lgin-h7b.microsoftonline.com",
    "https://login.microsoftonline.com.",
    "https://login.microsoftonline.com:8443",
    "http://login.microsoftonline.com",
    "https://login.microsoftonline.com/evil-tenant",
    "https://login.microsoftonline.com?x=1",
    "https://login.microsoftonline.com#x",
    "https://20.190.128.1",
    "https://[::1]:8443",
    "https://2130706433",
    "https://login.microsoftonline.com%40evil.com",
    "https://login.microsoftonline.com\n.evil.com",
    "login.microsoftonline.com.evil.com",
]

FIELDS = {
    "aws": ("sts_endpoint_url", "aws_workload_identity"),
    "gcp": ("iam_endpoint_url", "gcp_workload_identity"),
    "azure": ("authority_host", "azure_workload_identity"),
}


def test_each_list_is_long_enough_and_free_of_duplicates() -> None:
    for urls in (AWS, GCP, AZURE):
        assert len(urls) >= 30
        assert len(set(urls)) == len(urls)


def _cases() -> list[tuple[str, str]]:
    return [("aws", u) for u in AWS] + [("gcp", u) for u in GCP] + [("azure", u) for u in AZURE]


@pytest.mark.parametrize("allow_list", ["", "127.0.0.1"], ids=["nothing-listed", "loopback-listed"])
@pytest.mark.parametrize(("cloud", "url"), _cases(), ids=[f"{c}:{u!a}" for c, u in _cases()])
def test_refused_naming_the_field(cloud: str, url: str, allow_list: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, allow_list)
    field, conn_type = FIELDS[cloud]
    with pytest.raises(ConfigError) as err:
        check_override(url, field=field, conn_type=conn_type, cloud=cloud)
    assert err.value.field == field
    assert err.value.conn_type == conn_type
    assert err.value.fix
    assert f"field {field!r}" in str(err.value)
    # The message shows at most the host, escaped: never user info and never a raw look-alike.
    assert "evil.com@" not in str(err.value) and "@evil.com" not in str(err.value)
    assert str(err.value).isascii()


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_another_clouds_endpoint_is_refused(cloud: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")
    field, conn_type = FIELDS[cloud]
    others = {
        "aws": "https://login.microsoftonline.com",
        "gcp": "https://sts.amazonaws.com",
        "azure": "https://iamcredentials.googleapis.com",
    }
    with pytest.raises(ConfigError):
        check_override(others[cloud], field=field, conn_type=conn_type, cloud=cloud)
