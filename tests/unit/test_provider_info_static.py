"""The entry point is a generated literal: equal to the field declarations, and it imports nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_workload_identity
from airflow_workload_identity import get_provider_info as entry_point
from dev import gen_provider_info as gen

REGENERATE = f"the committed get_provider_info.py is out of date with the field declarations: run `{gen.COMMAND}`"


def test_committed_file_is_what_the_generator_writes_now() -> None:
    assert gen.TARGET.read_text() == gen.render(), REGENERATE


def test_returned_structure_equals_the_declarations() -> None:
    expected = gen.provider_info()
    expected["versions"] = [airflow_workload_identity.__version__]
    info = entry_point.get_provider_info()
    # JSON round trip: a declaration may hold tuples where the literal has lists.
    assert info == json.loads(json.dumps(expected)), REGENERATE
    assert [item["connection-type"] for item in info["connection-types"]] == [
        form.conn_type for form in entry_point.FORMS
    ]


def test_each_call_returns_a_fresh_structure() -> None:
    first = entry_point.get_provider_info()
    first["connection-types"].clear()
    assert entry_point.get_provider_info()["connection-types"]


def test_generated_module_imports_only_the_package_version() -> None:
    tree = ast.parse(Path(entry_point.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [(node.module, [alias.name for alias in node.names]) for node in top_level] == [
        ("airflow_workload_identity", ["__version__"])
    ]


def test_importing_and_calling_it_loads_no_other_module_in_a_fresh_interpreter() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from airflow_workload_identity.get_provider_info import get_provider_info\n"
        "imported = set(sys.modules) - before\n"
        "info = get_provider_info()\n"
        "called = set(sys.modules) - before - imported\n"
        "print(repr((sorted(imported), sorted(called), len(info['connection-types']))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    imported, called, count = ast.literal_eval(out.stdout.strip())
    assert imported == ["airflow_workload_identity", "airflow_workload_identity.get_provider_info"]
    assert called == []
    assert count == len(gen.SPEC_MODULES)


def test_importtime_shows_only_the_package_and_the_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import airflow_workload_identity.get_provider_info"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    startup = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True, timeout=60
    )

    def modules(stderr: str) -> set[str]:
        return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}

    extra = modules(out.stderr) - modules(startup.stderr) - {"package"}
    assert extra == {"airflow_workload_identity", "airflow_workload_identity.get_provider_info"}


def test_forms_are_imported_on_first_access_only() -> None:
    code = (
        "import sys\n"
        "import airflow_workload_identity.get_provider_info as m\n"
        "assert 'airflow_workload_identity.fields' not in sys.modules\n"
        "print([form.conn_type for form in m.FORMS])\n"
        "assert 'airflow_workload_identity.fields' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert ast.literal_eval(out.stdout.strip()) == [
        "aws_workload_identity",
        "gcp_workload_identity",
        "azure_workload_identity",
    ]


def test_generator_check_mode_detects_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "get_provider_info.py"
    stale.write_text(gen.render().replace('"Workload Identity"', '"Stale"', 1))
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["gen_provider_info.py", "--check"])
    assert gen.main() == 1
    monkeypatch.setattr(sys, "argv", ["gen_provider_info.py"])
    assert gen.main() == 0
    assert stale.read_text() == gen.render()
