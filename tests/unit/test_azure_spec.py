"""Every bad value of the Azure form is refused with the field's name and a fix, before any network call."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_workload_identity.azure.spec import FORM, AzureIdentitySpec
from airflow_workload_identity.errors import ConfigError

GUID = "a1f0e7d2-0c1b-4a5e-9f3d-1b2c3d4e5f60"
RID = (
    "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/mi"
)


def test_defaults_and_authority_by_cloud() -> None:
    spec = AzureIdentitySpec.from_extra({})
    assert spec.mode == "auto"
    assert spec.authority({}) == "https://login.microsoftonline.com"
    assert spec.authority({"AZURE_AUTHORITY_HOST": "login.example.test"}) == "https://login.example.test"
    china = AzureIdentitySpec.from_extra({"cloud": "china"})
    assert china.authority({}) == "https://login.chinacloudapi.cn"
    assert china.default_scopes() == ("https://management.chinacloudapi.cn/.default",)


def test_untouched_form_nulls_and_legacy_keys() -> None:
    extra: dict[str, Any] = {name: None for name in FORM.names}
    extra["extra__azure_workload_identity__client_id"] = GUID.upper()
    assert AzureIdentitySpec.from_extra(extra).client_id == GUID


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"mode": "msi"}, "mode", "not one of"),
    ({"client_id": "not-a-guid"}, "client_id", "expected shape"),
    ({"tenant_id": "bad tenant"}, "tenant_id", "expected shape"),
    ({"object_id": "x"}, "object_id", "expected shape"),
    ({"resource_id": "/subscriptions/x"}, "resource_id", "expected shape"),
    ({"cloud": "germany"}, "cloud", "not one of"),
    ({"authority_host": "http://login.example"}, "authority_host", "expected shape"),
    ({"authority_host": "https://login.example/tenant"}, "authority_host", "path"),
    ({"scopes": ["storage"]}, "scopes", "entry 1"),
    ({"client_assertion_file": "relative/path"}, "client_assertion_file", "expected shape"),
    ({"additionally_allowed_tenants": ["bad tenant"]}, "additionally_allowed_tenants", "entry 1"),
    ({"expected_tenant_id": "contoso.com"}, "expected_tenant_id", "expected shape"),
    ({"mode": "workload_identity", "object_id": GUID}, "object_id", "does not use it"),
    ({"mode": "workload_identity", "resource_id": RID}, "resource_id", "does not use it"),
    ({"mode": "managed_identity", "tenant_id": GUID}, "tenant_id", "does not use it"),
    ({"mode": "managed_identity", "client_assertion_file": "/t"}, "client_assertion_file", "does not use it"),
    ({"mode": "managed_identity", "client_id": GUID, "object_id": GUID}, "object_id", "exactly one"),
    ({"mode": "managed_identity", "object_id": GUID, "resource_id": RID}, "resource_id", "exactly one"),
]


@pytest.mark.parametrize(("extra", "field", "message"), BAD, ids=[f"{b[1]}:{i}" for i, b in enumerate(BAD)])
def test_bad_values_name_the_field_and_the_fix(extra: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        AzureIdentitySpec.from_extra(extra)
    assert err.value.field == field
    assert message in str(err.value)
    assert "Fix:" in str(err.value) and "azure_workload_identity" in str(err.value)
