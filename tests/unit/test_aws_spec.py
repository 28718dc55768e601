"""Every bad value of the AWS form is refused with the field's name and a fix, before any network call."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.spec import FORM, AwsIdentitySpec
from airflow_workload_identity.errors import ConfigError

ROLE = "arn:aws:iam::222222222222:role/customer-reader"
HOP = "arn:aws:iam::222222222222:role/customer-hop"


def spec(**extra: Any) -> AwsIdentitySpec:
    return AwsIdentitySpec.from_extra({"role_arn": ROLE, **extra})


def test_minimal_connection_defaults() -> None:
    s = spec()
    assert s.roles == (ROLE,)
    assert s.duration_seconds == 3600
    assert s.source == "auto"


def test_untouched_ui_form_nulls_are_unset() -> None:
    extra = {name: None for name in FORM.names}
    extra["role_arn"] = ROLE
    extra["session_tags"] = ""
    assert AwsIdentitySpec.from_extra(extra) == AwsIdentitySpec(role_arn=ROLE)


def test_legacy_prefixed_keys_are_read() -> None:
    s = AwsIdentitySpec.from_extra(
        {
            "extra__aws_workload_identity__role_arn": ROLE,
            "extra__aws_workload_identity__duration_seconds": "1800",
            "extra__aws_workload_identity__role_chain": HOP,
        }
    )
    assert s.duration_seconds == 1800
    assert s.roles == (HOP, ROLE)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"role_arn": None, "external_id": "customer-42"}, "external_id", "role_arn is empty"),
    ({"role_arn": None, "role_chain": [HOP]}, "role_chain", "no role is assumed"),
    ({"role_arn": "arn:aws:iam::2222:role/x"}, "role_arn", "expected shape"),
    ({"role_arn": "arn:aws:iam::222222222222:user/bob"}, "role_arn", "expected shape"),
    ({"role_arn": "arn:aws:sts::222222222222:assumed-role/x/y"}, "role_arn", "expected shape"),
    ({"role_arn": 12}, "role_arn", "must be a string"),
    ({"role_chain": ["not-an-arn"]}, "role_chain", "entry 1"),
    ({"role_chain": [HOP] * 11}, "role_chain", "limit is 10"),
    ({"role_chain": "[bad json"}, "role_chain", "JSON list"),
    ({"region_name": "Europe"}, "region_name", "expected shape"),
    ({"sts_endpoint_url": "sts.amazonaws.com"}, "sts_endpoint_url", "expected shape"),
    ({"sts_endpoint_url": "https://sts.example.com/path"}, "sts_endpoint_url", "path"),
    ({"sts_endpoint_url": "https://user@sts.example.com"}, "sts_endpoint_url", "user"),
    ({"sts_endpoint_url": "https://sts.example.com:99999"}, "sts_endpoint_url", "port"),
    ({"external_id": "x"}, "external_id", "shorter than 2"),
    ({"external_id": "has space"}, "external_id", "expected shape"),
    ({"external_id": "x" * 1225}, "external_id", "limit is 1224"),
    ({"duration_seconds": 899}, "duration_seconds", "below the minimum 900"),
    ({"duration_seconds": 43201}, "duration_seconds", "above the maximum 43200"),
    ({"duration_seconds": "an hour"}, "duration_seconds", "whole number"),
    ({"duration_seconds": 7200, "role_chain": [HOP]}, "duration_seconds", "1 hour"),
    ({"duration_seconds": 7200, "source": "web_identity"}, "duration_seconds", "3600"),
    ({"duration_seconds": 7200, "source": "pod_identity"}, "duration_seconds", "3600"),
    ({"role_session_name": "{dag}"}, "role_session_name", "unknown placeholder"),
    ({"role_session_name": "{dag_id:>4}"}, "role_session_name", "not a valid template"),
    ({"role_session_name": "x" * 257}, "role_session_name", "limit is 256"),
    ({"source_identity": "aws:me"}, "source_identity", "aws:"),
    ({"source_identity": "{nope}"}, "source_identity", "unknown placeholder"),
    ({"session_tags": "[1]"}, "session_tags", "JSON object"),
    ({"session_tags": {"team": 5}}, "session_tags", "must be a string"),
    ({"session_tags": {"": "x"}}, "session_tags", "not a valid tag key"),
    ({"session_tags": {"aws:x": "x"}}, "session_tags", "not a valid tag key"),
    ({"session_tags": {"k" * 129: "x"}}, "session_tags", "not a valid tag key"),
    ({"session_tags": {"team": "x" * 257}}, "session_tags", "limit is 256"),
    ({"session_tags": {f"k{i}": "v" for i in range(51)}}, "session_tags", "limit is 50"),
    ({"session_tags": {"Team": "a", "team": "b"}}, "session_tags", "case"),
    ({"session_tags": {"team": "{who}"}}, "session_tags", "unknown placeholder"),
    ({"session_tags": {"team": "a"}, "transitive_tag_keys": ["other"]}, "transitive_tag_keys", "not a key"),
    ({"session_policy": "not json"}, "session_policy", "not valid JSON"),
    ({"session_policy": '{"Version": "2012-10-17"}'}, "session_policy", "Statement"),
    ({"session_policy": "x" * 2049}, "session_policy", "limit is 2048"),
    ({"policy_arns": ["arn:aws:iam::aws:role/x"]}, "policy_arns", "entry 1"),
    ({"policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"] * 11}, "policy_arns", "limit is 10"),
    ({"source": "irsa"}, "source", "not one of"),
    ({"expected_account_ids": ["123"]}, "expected_account_ids", "entry 1"),
    ({"expected_account_ids": ["111111111111"]}, "expected_account_ids", "222222222222 is not listed"),
]


@pytest.mark.parametrize(("extra", "field", "message"), BAD, ids=[f"{b[1]}:{i}" for i, b in enumerate(BAD)])
def test_bad_values_name_the_field_and_the_fix(extra: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(**extra)
    assert err.value.field == field
    assert message in str(err.value)
    assert err.value.fix
    assert "Fix:" in str(err.value)
    assert "aws_workload_identity" in str(err.value)


def test_good_values_of_every_field_are_accepted() -> None:
    s = spec(
        role_chain=f"{HOP}\n",
        region_name="eu-west-1",
        sts_endpoint_url="https://sts.eu-west-1.amazonaws.com",
        external_id="ext-7f3a9c",
        duration_seconds="900",
        role_session_name="af.{dag_id}.{task_id}.{try_number}",
        source_identity="{dag_id}",
        session_tags='{"team": "data", "dag": "{dag_id}"}',
        transitive_tag_keys="team",
        session_policy='{"Version": "2012-10-17", "Statement": []}',
        policy_arns=["arn:aws:iam::aws:policy/ReadOnlyAccess"],
        source="web_identity",
        expected_account_ids="222222222222, 333333333333",
    )
    assert s.expected_account_ids == ("222222222222", "333333333333")
    assert s.session_tags == (("team", "data"), ("dag", "{dag_id}"))


def test_hops_place_each_parameter_on_the_right_call() -> None:
    s = spec(
        role_chain=[HOP],
        external_id="ext-7f3a9c",
        source_identity="{dag_id}",
        session_tags={"team": "data", "dag": "{dag_id}"},
        transitive_tag_keys=["team"],
        session_policy='{"Version": "2012-10-17", "Statement": []}',
        policy_arns=["arn:aws:iam::aws:policy/ReadOnlyAccess"],
    )
    first, last = s.hops(RunContext(conn_id="c", dag_id="etl", task_id="load"))
    assert first.role_arn == HOP
    assert last.role_arn == ROLE
    assert first.session_name == last.session_name == "airflow.etl.load"
    assert first.source_identity == "etl"
    assert last.source_identity is None
    assert first.tags == (("team", "data"), ("dag", "etl"))
    assert first.transitive_tag_keys == ("team",)
    assert last.tags == (("dag", "etl"),)
    assert last.transitive_tag_keys == ()
    assert first.external_id is None
    assert last.external_id == "ext-7f3a9c"
    assert first.policy is None
    assert last.policy
    kwargs = last.assume_role_kwargs()
    assert kwargs["ExternalId"] == "ext-7f3a9c"
    assert kwargs["PolicyArns"] == [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]
    assert "SourceIdentity" not in kwargs


def test_default_session_name_outside_a_task_uses_the_connection() -> None:
    assert spec().session_name(RunContext(conn_id="my_conn")) == "airflow.my_conn"
