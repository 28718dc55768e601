"""Every malformed extra of the corpus (``tests/unit/bad_extras``) is a ``ConfigError`` naming the field and
the fix, and the form's JSON schema agrees with the parser on it.

The Airflow path (hooks on ``AIRFLOW_CONN_*`` connections with the sandbox counting requests, and the CLI)
is in ``tests/airflow/test_cli_errors.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from airflow_workload_identity.aws.spec import FORM as AWS_FORM
from airflow_workload_identity.aws.spec import AwsIdentitySpec
from airflow_workload_identity.azure.spec import FORM as AZURE_FORM
from airflow_workload_identity.azure.spec import AzureIdentitySpec
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.fields import ConnectionForm
from airflow_workload_identity.gcp.spec import FORM as GCP_FORM
from airflow_workload_identity.gcp.spec import GcpIdentitySpec
from tests.unit.bad_extras import CLOUDS, Case, base_extra, load

PARSERS: dict[str, Callable[[Any], object]] = {
    "aws": AwsIdentitySpec.from_extra,
    "gcp": GcpIdentitySpec.from_extra,
    "azure": AzureIdentitySpec.from_extra,
}
FORMS: dict[str, ConnectionForm] = {"aws": AWS_FORM, "gcp": GCP_FORM, "azure": AZURE_FORM}
CASES = load()


def form_schema(form: ConnectionForm) -> dict[str, Any]:
    """The form as one object schema: each ``conn-fields`` schema as a property; required = no ``null`` type."""
    fields = form.provider_connection_type()["conn-fields"]
    return {
        "type": "object",
        "properties": {name: entry["schema"] for name, entry in fields.items()},
        "required": [name for name, entry in fields.items() if "null" not in entry["schema"]["type"]],
    }


VALIDATORS = {cloud: jsonschema.Draft202012Validator(form_schema(form)) for cloud, form in FORMS.items()}


def test_the_corpus_is_big_enough_and_covers_every_field() -> None:
    by_cloud = {cloud: [c for c in CASES if c.cloud == cloud] for cloud in CLOUDS}
    assert len(CASES) >= 150
    for cloud, cases in by_cloud.items():
        assert len(cases) >= 50, cloud
        named = {c.field for c in cases}
        assert set(FORMS[cloud].names) - named == set(), f"{cloud}: fields no case names"
        assert "extra" in named
    for validator in VALIDATORS.values():
        jsonschema.Draft202012Validator.check_schema(validator.schema)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_each_base_extra_is_valid_for_the_parser_and_the_schema(cloud: str) -> None:
    """The control: a case fails because of what it changes, not because its base was already wrong."""
    PARSERS[cloud](base_extra(cloud))
    PARSERS[cloud](json.dumps(base_extra(cloud)))
    assert list(VALIDATORS[cloud].iter_errors(base_extra(cloud))) == []


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_the_parser_names_the_field_and_the_fix(case: Case) -> None:
    with pytest.raises(ConfigError) as caught:
        PARSERS[case.cloud](case.extra)
    error = caught.value
    assert error.field == case.field, str(error)
    assert error.fix.strip() and error.problem.strip()
    message = str(error)
    assert f"field {case.field!r}" in message and "Fix: " in message
    assert "\n" not in message, "one line: a ConfigError is printed as one line by the CLI"
    if case.secret:
        for start in range(0, len(case.secret) - 12, 6):
            assert case.secret[start : start + 12] not in message, "a pasted credential is echoed"


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_the_form_schema_and_the_parser_agree(case: Case) -> None:
    """The schema rejects exactly the cases marked ``schema: true``; the parser rejects them all (above).

    A case marked ``false`` that the schema rejects means the mark is stale: the schema learnt to say it.
    """
    try:
        instance = case.instance()
    except ValueError:
        assert not case.schema_rejects, "text that is not JSON never reaches the form's schema"
        return
    errors = list(VALIDATORS[case.cloud].iter_errors(instance))
    if case.schema_rejects:
        assert errors, f"the form's schema accepts {case.label}, which the parser rejects"
    else:
        assert not errors, f"the schema rejects {case.label} ({errors[0].message[:120]}): mark it schema: true"
        assert case.why, "say why JSON Schema cannot express it"
