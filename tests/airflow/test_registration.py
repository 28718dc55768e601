"""Provider registration, forms and schemas, checked through Airflow's own machinery.

Marked ``smoke``: these also run on Airflow 2.11 and 3.1 (``dev/matrix.sh``); version-specific checks
skip themselves where that Airflow lacks the feature.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import metadata, resources
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from airflow_workload_identity.get_provider_info import FORMS, get_provider_info

pytestmark = pytest.mark.smoke

DIST = "airflow-workload-identity"


def _airflow_version() -> tuple[int, int]:
    major, minor = metadata.version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


@pytest.fixture
def pm() -> Any:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    manager._cleanup()
    manager = ProvidersManager()
    yield manager
    manager._cleanup()


def test_entry_point_and_package_name_match_the_distribution() -> None:
    eps = [ep for ep in metadata.entry_points(group="apache_airflow_provider") if ep.dist and ep.dist.name == DIST]
    assert len(eps) == 1
    assert eps[0].value == "airflow_workload_identity.get_provider_info:get_provider_info"
    assert eps[0].load()() == get_provider_info()
    assert get_provider_info()["package-name"] == canonicalize_name(eps[0].dist.metadata["Name"])
    assert get_provider_info()["versions"][0] == metadata.version(DIST)


def test_provider_info_is_static_and_imports_no_airflow_or_sdk() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"  # namespace-package .pth files may pre-import 'google' at start-up
        "from airflow_workload_identity.get_provider_info import get_provider_info\n"
        "info = get_provider_info()\n"
        "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "('airflow', 'boto3', 'botocore', 'aiobotocore', 'google', 'azure', 'flask', 'wtforms'))\n"
        "assert not bad, bad\n"
        "print(len(info['connection-types']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == str(len(FORMS))


def test_provider_info_validates_against_airflows_runtime_schema() -> None:
    from airflow.providers_manager import _create_provider_info_schema_validator

    _create_provider_info_schema_validator().validate(get_provider_info())


def test_connection_types_validate_against_the_provider_yaml_schema() -> None:
    import jsonschema

    schema = json.loads(resources.files("airflow").joinpath("provider.yaml.schema.json").read_text())
    item_schema = schema["properties"]["connection-types"]["items"]
    if "conn-fields" not in item_schema.get("properties", {}):
        pytest.skip("this Airflow's provider.yaml schema predates conn-fields (3.2+)")
    for item in get_provider_info()["connection-types"]:
        jsonschema.validate(item, item_schema)


def test_field_behaviour_validates_against_the_legacy_schema() -> None:
    from airflow.providers_manager import _create_customized_form_field_behaviours_schema_validator

    validator = _create_customized_form_field_behaviours_schema_validator()
    for form in FORMS:
        validator.validate(form.legacy_ui_field_behaviour())


@pytest.mark.parametrize(
    ("conn_type", "attribute", "name"),
    [
        ("aws_workload_identity", "aws_conn_id", "AWS Workload Identity"),
        ("gcp_workload_identity", "gcp_conn_id", "Google Cloud Workload Identity"),
    ],
)
def test_providers_manager_registers_the_hook(pm: Any, conn_type: str, attribute: str, name: str) -> None:
    if conn_type == "gcp_workload_identity":
        pytest.importorskip("google.auth")
    if conn_type == "azure_workload_identity":
        pytest.importorskip("azure.identity")
    assert pm.providers[DIST].version == metadata.version(DIST)
    hook = pm.hooks[conn_type]
    assert hook.hook_class_name == next(f.hook_class_name for f in FORMS if f.conn_type == conn_type)
    assert hook.connection_id_attribute_name == attribute
    assert hook.hook_name == name
    assert hook.connection_testable
    assert hook.package_name == DIST


def test_official_connection_types_are_not_hijacked(pm: Any) -> None:
    types = {item["connection-type"] for item in get_provider_info()["connection-types"]}
    assert types.isdisjoint({"aws", "google_cloud_platform", "azure", "wasb"})
    if "aws" in pm.hooks:
        assert pm.hooks["aws"].package_name == "apache-airflow-providers-amazon"


@pytest.mark.parametrize("form", FORMS, ids=[f.conn_type for f in FORMS])
def test_hook_class_attributes_match_the_declaration(form: Any) -> None:
    module, _, name = form.hook_class_name.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        pytest.skip(f"{form.conn_type}: its cloud SDK is not installed here ({exc.name})")
    assert hook.conn_type == form.conn_type
    assert hook.hook_name == form.hook_name
    assert hook.get_ui_field_behaviour() == form.legacy_ui_field_behaviour()
    assert hasattr(hook, "test_connection")
    assert hook.default_conn_name == f"{form.conn_type}_default"


def test_legacy_widgets_agree_with_conn_fields() -> None:
    pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    for form in FORMS:
        widgets = form.legacy_widgets()
        fields = form.provider_connection_type()["conn-fields"]
        assert list(widgets) == list(fields)
        for name, widget in widgets.items():
            assert str(widget.args[0]) == fields[name]["label"]
            assert widget.kwargs["description"].startswith(fields[name]["description"])
            kind = fields[name]["schema"]["type"][0] if isinstance(fields[name]["schema"]["type"], list) else "string"
            expected = "IntegerField" if kind == "integer" else "StringField"
            assert widget.field_class.__name__ == expected, name


def test_providers_manager_serves_the_legacy_form_on_older_airflow(pm: Any) -> None:
    if _airflow_version() >= (3, 2):
        pytest.skip("Airflow 3.2+ builds the form from conn-fields")
    if _airflow_version() >= (3, 0):
        # 3.0/3.1 without the FAB provider gather legacy widgets only in the api-server (mocked FAB).
        pytest.importorskip("flask_appbuilder")
    widgets = pm.connection_form_widgets
    for form in FORMS:
        for name in form.names:
            assert f"extra__{form.conn_type}__{name}" in widgets, (form.conn_type, name)
        assert pm.field_behaviours[form.conn_type] == form.legacy_ui_field_behaviour()


def test_api_server_hook_metadata_shows_the_declared_form(pm: Any) -> None:
    if _airflow_version() < (3, 2):
        pytest.skip("HookMetaService serves conn-fields from Airflow 3.2")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    HookMetaService.hook_meta_data.cache_clear()
    metas = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    for form in FORMS:
        meta = metas[form.conn_type]
        assert meta.hook_name == form.hook_name
        assert meta.standard_fields is not None
        assert meta.standard_fields.host.hidden == ("host" in form.hidden_fields)
        assert meta.standard_fields.login.hidden and meta.standard_fields.password.hidden
        extra = meta.extra_fields
        assert extra is not None
        declared = form.provider_connection_type()["conn-fields"]
        assert set(extra) == set(declared)
        for name, entry in extra.items():
            assert entry["schema"]["title"] == declared[name]["label"]
            assert entry["description"] == declared[name]["description"]
    aws = metas["aws_workload_identity"].extra_fields
    assert aws["source"]["schema"]["enum"] == ["auto", "web_identity", "pod_identity", "default_chain", "gcp", "azure"]
    assert aws["duration_seconds"]["schema"]["maximum"] == 43200
    azure = metas["azure_workload_identity"]
    assert azure.standard_fields.host.title == "Storage account URL (for WasbHook)"


def test_api_server_hook_metadata_serves_the_legacy_form_on_3_0_and_3_1(pm: Any) -> None:
    if not (3, 0) <= _airflow_version() < (3, 2):
        pytest.skip("Airflow 3.0/3.1 only: the api-server builds the form from the legacy widgets")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    HookMetaService.hook_meta_data.cache_clear()
    metas = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    for form in FORMS:
        meta = metas[form.conn_type]
        assert meta.standard_fields is not None
        assert meta.standard_fields.login.hidden
        assert meta.standard_fields.host.hidden == ("host" in form.hidden_fields)
        extra = meta.extra_fields
        assert extra is not None
        declared = form.provider_connection_type()["conn-fields"]
        assert set(extra) == set(declared)
        for name, entry in extra.items():
            assert entry["schema"]["title"] == declared[name]["label"]
            assert entry["description"].startswith(declared[name]["description"])
    aws = metas["aws_workload_identity"].extra_fields
    assert aws["source"]["schema"]["enum"] == ["auto", "web_identity", "pod_identity", "default_chain", "gcp", "azure"]


def test_cli_lists_the_provider_and_its_connection_type() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", DIST, "--full", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "aws_workload_identity" in out.stdout
    hooks = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    rows = [row for row in json.loads(hooks.stdout) if row.get("connection_type") == "aws_workload_identity"]
    assert rows
    assert rows[0]["class"].endswith("AwsWorkloadIdentityHook")
