"""Every bad value of the GCP form is refused with the field's name and a fix, before any network call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_workload_identity.errors import AccessDenied, ConfigError, TransientError
from airflow_workload_identity.gcp.policy import explain_iam_error, parse_error_body, required_bindings
from airflow_workload_identity.gcp.spec import FORM, GcpIdentitySpec

READER = "reader@customer-proj.iam.gserviceaccount.com"
HOP = "hop@customer-proj.iam.gserviceaccount.com"


def spec(**extra: Any) -> GcpIdentitySpec:
    return GcpIdentitySpec.from_extra({"impersonation_chain": [READER], **extra})


def test_chain_order_target_last_and_delegates_in_api_form() -> None:
    s = GcpIdentitySpec.from_extra({"impersonation_chain": f"projects/-/serviceAccounts/{HOP}\n{READER.upper()}"})
    assert s.target == READER
    assert s.delegates == (HOP,)
    assert s.api_delegates() == [f"projects/-/serviceAccounts/{HOP}"]
    assert s.scopes == ("https://www.googleapis.com/auth/cloud-platform",)


def test_untouched_form_nulls_and_legacy_keys() -> None:
    extra: dict[str, Any] = {name: None for name in FORM.names}
    extra["extra__gcp_workload_identity__impersonation_chain"] = READER
    extra["lifetime_seconds"] = ""
    assert GcpIdentitySpec.from_extra(extra) == GcpIdentitySpec(impersonation_chain=(READER,))


@pytest.mark.parametrize(
    ("email", "project"),
    [
        (READER, "customer-proj"),
        ("123456789-compute@developer.gserviceaccount.com", None),
        ("my-app@appspot.gserviceaccount.com", None),
        ("svc@example.com:proj.iam.gserviceaccount.com", None),
    ],
)
def test_project_is_never_guessed_from_developer_or_appspot_accounts(email: str, project: str | None) -> None:
    s = GcpIdentitySpec.from_extra({"impersonation_chain": [email]})
    assert s.resolved_project({}) == project
    assert s.resolved_project({"GOOGLE_CLOUD_PROJECT": "env-proj"}) == (project or "env-proj")
    assert (
        GcpIdentitySpec.from_extra({"impersonation_chain": [email], "project_id": "set-proj"}).resolved_project({})
        == "set-proj"
    )


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"impersonation_chain": None, "subject": "analyst@example.com"}, "subject", "impersonation_chain is empty"),
    ({"impersonation_chain": [], "subject": "analyst@example.com"}, "subject", "domain-wide delegation"),
    ({"impersonation_chain": ["someone@gmail.com"]}, "impersonation_chain", "not a service-account e-mail"),
    ({"impersonation_chain": ["not an email"]}, "impersonation_chain", "entry 1"),
    ({"impersonation_chain": [READER, READER]}, "impersonation_chain", "twice"),
    ({"impersonation_chain": [READER] * 11}, "impersonation_chain", "limit is 10"),
    ({"scopes": ["cloud-platform"]}, "scopes", "entry 1"),
    ({"lifetime_seconds": 30}, "lifetime_seconds", "below the minimum 60"),
    ({"lifetime_seconds": 43201}, "lifetime_seconds", "above the maximum 43200"),
    ({"lifetime_seconds": "1h"}, "lifetime_seconds", "whole number"),
    ({"project_id": "My Project"}, "project_id", "expected shape"),
    ({"quota_project_id": "x"}, "quota_project_id", "expected shape"),
    ({"subject": "not-an-email"}, "subject", "expected shape"),
    ({"impersonation_chain": [HOP, READER], "subject": "a@example.com"}, "subject", "single-entry chain"),
    ({"iam_endpoint_url": "iamcredentials.googleapis.com"}, "iam_endpoint_url", "expected shape"),
    ({"iam_endpoint_url": "https://iam.example.com/v1"}, "iam_endpoint_url", "path"),
    ({"source": "gke"}, "source", "not one of"),
    ({"expected_principal": HOP}, "expected_principal", "chain ends at"),
    ({"expected_principal": "x@gmail.com"}, "expected_principal", "expected shape"),
]


@pytest.mark.parametrize(("extra", "field", "message"), BAD, ids=[f"{b[1]}:{i}" for i, b in enumerate(BAD)])
def test_bad_values_name_the_field_and_the_fix(extra: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(**extra)
    assert err.value.field == field
    assert message in str(err.value)
    assert "Fix:" in str(err.value) and "gcp_workload_identity" in str(err.value)


DENIED = (
    '{"error":{"code":403,"message":"Permission \'iam.serviceAccounts.getAccessToken\' denied on resource (or it may '
    'not exist).","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",'
    '"reason":"IAM_PERMISSION_DENIED","domain":"iam.googleapis.com","metadata":{"permission":'
    '"iam.serviceAccounts.getAccessToken"}}]}}'
)


class _RefreshError(Exception):
    pass


def test_error_bodies_become_typed_errors_with_the_fix() -> None:
    assert parse_error_body(DENIED)["reason"] == "IAM_PERMISSION_DENIED"  # type: ignore[index]
    assert parse_error_body("<html>502</html>") is None
    denied = explain_iam_error(_RefreshError("Unable", DENIED), hop=2, hops=2, caller=HOP, target=READER, endpoint="e")
    assert isinstance(denied, AccessDenied)
    assert (denied.hop, denied.caller, denied.target) == (2, HOP, READER)
    assert f"add-iam-policy-binding {READER} --member=serviceAccount:{HOP}" in denied.remediation
    html = explain_iam_error(
        _RefreshError("Unable", "<html>x</html>"), hop=1, hops=1, caller=None, target=READER, endpoint="e"
    )
    assert isinstance(html, TransientError) and "HTML" in str(html)


def test_required_bindings_list_every_hop() -> None:
    plan = required_bindings((HOP, READER), "airflow@platform.iam.gserviceaccount.com")
    text = plan.text()
    assert [step.hop for step in plan.steps if step.kind == "command"][:3] == [0, 1, 2]
    assert [step.granted_by for step in plan.steps][:3] == ["platform", "you", "you"]
    assert json.loads(plan.json())["steps"][2]["target"] == READER
    shell = plan.shell()
    run = [line for line in shell.splitlines() if line.startswith("gcloud iam service-accounts")]
    assert shell.startswith("#!/usr/bin/env bash") and len(run) == 2  # hop 0 is shown commented out
    assert "#   gcloud iam service-accounts add-iam-policy-binding airflow@platform" in shell
    assert "# Hop 1 of 2: airflow@platform.iam.gserviceaccount.com -> " + HOP in text
    assert f"# Hop 2 of 2: {HOP} -> {READER}" in text
    assert text.count("roles/iam.serviceAccountTokenCreator") == 2


def test_offline_plan_of_a_federated_connection_is_refused_naming_as() -> None:
    from airflow_workload_identity.gcp.policy import plan_as, report_as

    spec = GcpIdentitySpec.from_extra(
        {
            "source": "aws",
            "workload_identity_provider": (
                "projects/1/locations/global/workloadIdentityPools/aws-pool/providers/aws-prov"
            ),
        }
    )
    for call in (
        lambda: plan_as(spec, "a@b-proj.iam.gserviceaccount.com", {}),
        lambda: report_as(spec, "a@b-proj.iam.gserviceaccount.com", {}, "conn"),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == "--as" and "without --as" in err.value.fix
