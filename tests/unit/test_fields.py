from __future__ import annotations

import pytest

from airflow_workload_identity.aws.spec import FORM
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.fields import ConnectionForm, Field, read_extra


def test_optional_fields_accept_null_and_required_fields_do_not() -> None:
    fields = FORM.provider_connection_type()["conn-fields"]
    for name, entry in fields.items():  # every field is optional (no role_arn: the pod's own identity)
        assert "null" in entry["schema"]["type"], name
        assert entry["label"] and entry["description"], name


def test_read_extra_prefers_plain_keys_and_reads_legacy_ones() -> None:
    extra = {
        "role_arn": None,
        "extra__aws_workload_identity__role_arn": "arn:aws:iam::123456789012:role/legacy",
        "external_id": "plain",
        "extra__aws_workload_identity__external_id": "legacy",
        "region_name": "",
    }
    values = read_extra(extra, "aws_workload_identity", ["role_arn", "external_id", "region_name", "source"])
    assert values == {
        "role_arn": "arn:aws:iam::123456789012:role/legacy",
        "external_id": "plain",
        "region_name": None,
        "source": None,
    }


def test_read_extra_accepts_a_json_string_and_rejects_garbage() -> None:
    assert read_extra('{"a": 1}', "x", ["a"]) == {"a": 1}
    with pytest.raises(ConfigError) as err:
        read_extra("{not json", "x", ["a"])
    assert err.value.field == "extra"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a, b\nc", ("a", "b", "c")),
        ('["a", "b"]', ("a", "b")),
        (["a"], ("a",)),
    ],
)
def test_arrays_come_as_lists_json_or_separated_text(raw: object, expected: tuple[str, ...]) -> None:
    field = Field(
        name="things",
        label="Things",
        description="d",
        schema={"type": "array", "items": {"type": "string"}},
        fix="list things",
    )
    assert field.parse(raw, conn_type="t") == expected


def test_integers_come_as_numbers_or_digit_strings_not_booleans() -> None:
    field = Field(name="n", label="N", description="d", schema={"type": "integer", "minimum": 1}, fix="use a number")
    assert field.parse("42", conn_type="t") == 42
    assert field.parse(7.0, conn_type="t") == 7
    for bad in (True, "4.5", "x", 0):
        with pytest.raises(ConfigError) as err:
            field.parse(bad, conn_type="t")
        assert err.value.field == "n"
        assert err.value.fix == "use a number"


def test_secret_values_never_appear_in_errors() -> None:
    field = Field(
        name="client_secret",
        label="S",
        description="d",
        schema={"type": "string", "pattern": "^x"},
        fix="f",
        secret=True,
    )
    with pytest.raises(ConfigError) as err:
        field.parse("hunter2-very-secret", conn_type="t")
    assert "hunter2" not in str(err.value)
    assert field.conn_field()["schema"]["format"] == "password"


def test_declaration_rules_are_enforced() -> None:
    with pytest.raises(ValueError, match="__"):
        Field(name="a__b", label="x", description="x", schema={"type": "string"}, fix="x")
    with pytest.raises(ValueError, match="type"):
        Field(name="a", label="x", description="x", schema={"type": "str"}, fix="x")
    field = Field(name="a", label="x", description="x", schema={"type": "string"}, fix="x")
    with pytest.raises(ValueError, match="duplicate"):
        ConnectionForm(conn_type="t", hook_name="T", hook_class_name="m.H", fields=(field, field))
    with pytest.raises(ValueError, match="connection type"):
        ConnectionForm(conn_type="bad-type", hook_name="T", hook_class_name="m.H", fields=(field,))


def test_legacy_behaviour_mirrors_the_declarative_one() -> None:
    new = FORM.ui_field_behaviour()
    old = FORM.legacy_ui_field_behaviour()
    assert new["hidden-fields"] == old["hidden_fields"]
    assert set(new["hidden-fields"]) >= {"host", "port", "schema", "login", "password"}


def test_docs_table_lists_every_field() -> None:
    table = FORM.docs_table()
    for name in FORM.names:
        assert f"| `{name}` |" in table


def test_no_field_is_named_like_a_secret_airflow_would_hide() -> None:
    """Airflow hides an extra's value when its key contains a sensitive word ('token', 'secret', ...): the API and
    the UI would show '***' for a plain setting, and an edit would save '***' back. None of our fields is secret."""
    from airflow._shared.secrets_masker import should_hide_value_for_key

    from airflow_workload_identity.azure.spec import FORM as AZURE_FORM
    from airflow_workload_identity.gcp.spec import FORM as GCP_FORM

    assert should_hide_value_for_key("aws_subject_token")  # what a field of #11 was first called
    for form in (FORM, GCP_FORM, AZURE_FORM):
        for field in form.fields:
            assert not should_hide_value_for_key(field.name), f"{form.conn_type}: Airflow would hide {field.name!r}"
