"""Quiet where nothing is wrong: the demo's set-up and the CLI print no warning, ``--help`` is plain text
with help for every argument, ``policy --format shell`` has no empty titles, and ``doctor`` does not wait
for a metadata database that is not there.

The end-to-end test runs the demo's own set-up (``dev/demo.py``: the local cloud, Airflow on SQLite with
connections in the metadata database, ``airflow_local_settings.py`` installing the interop) in
subprocesses, without the ``PYTHONWARNINGS=ignore`` the demo used to set.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_workload_identity import cli
from airflow_workload_identity.doctor import metadata_db_unavailable
from airflow_workload_identity.plan import Plan, Step

ROOT = Path(__file__).resolve().parents[2]

# Warnings in these runs that are not the package's, each with why it is allowed:
NOT_OURS = (
    # `airflow dags test` imports graphviz to render the DAG and warns when it is not installed (it is not a
    # dependency of this package nor of the demo).
    re.compile(r"Could not import graphviz|pip install graphviz"),
)
WARNING = re.compile(r"warning", re.IGNORECASE)


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if WARNING.search(line) and not any(p.search(line) for p in NOT_OURS)]


# --- --help ------------------------------------------------------------------------------------------------


def _parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, argparse.ArgumentParser]:
    """The CLI's parser and its subcommands' parsers, as ``main`` builds them."""
    seen: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        cli.main([])
    top = seen[0]
    parsers = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update(action.choices)
    return parsers


MARKUP = re.compile(r"``|:(class|func|meth|mod|attr|ref|data|exc):|\*\*|`[^`\s]+`")


def test_help_is_plain_text_and_every_argument_has_help(monkeypatch: pytest.MonkeyPatch) -> None:
    parsers = _parsers(monkeypatch)
    assert set(parsers) >= {"", "whoami", "explain", "policy", "doctor"}
    for name, parser in parsers.items():
        text = parser.format_help()
        assert not MARKUP.search(text), f"{name or PROG_NAME} --help shows markup: {MARKUP.search(text)}"
        if name:
            assert parser.description, f"{name} --help has no description"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: argument {label} has no help text"


PROG_NAME = cli.PROG


def test_help_renders_for_every_subcommand_in_a_subprocess() -> None:
    for command in ("", "whoami", "explain", "policy", "doctor"):
        args = [sys.executable, "-m", "airflow_workload_identity.cli", *([command] if command else []), "--help"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("usage: airflow-workload-identity")
        assert not MARKUP.search(out.stdout), MARKUP.search(out.stdout)
        assert not _warnings(out.stdout + out.stderr)


# --- policy --format shell ---------------------------------------------------------------------------------


def test_shell_rendering_never_prints_an_empty_title() -> None:
    plan = Plan(
        cloud="aws",
        source="arn:aws:iam::111111111111:role/pod-base",
        steps=[
            Step(hop=1, title="Hop 1 of 1: a -> b", kind="trust_statement", target="arn:aws:iam::2:role/b", content={}),
            Step(hop=1, title="", kind="identity_statement", target="arn:aws:iam::1:role/pod-base", content={}),
            Step(hop=None, title="", kind="command", target="", content="gcloud services enable x"),
        ],
    )
    shell = plan.shell()
    assert "# Merge this statement into the identity policy of arn:aws:iam::1:role/pod-base" in shell
    assert "# Hop 1 of 1: a -> b: merge this statement into the trust policy of arn:aws:iam::2:role/b" in shell
    assert not [line for line in shell.splitlines() if line.startswith("# :") or line.strip() == "#"]


# --- doctor and the metadata database ----------------------------------------------------------------------


def test_doctor_does_not_open_a_missing_sqlite_database(tmp_path: Path) -> None:
    missing = tmp_path / "airflow.db"
    assert metadata_db_unavailable(f"sqlite:///{missing}") == f"no SQLite database at {missing}"
    assert not missing.exists()  # opening it would have created an empty database
    missing.write_bytes(b"")
    assert metadata_db_unavailable(f"sqlite:///{missing}") is None


def test_doctor_gives_up_on_a_database_server_that_does_not_answer_within_the_timeout() -> None:
    with socket.socket() as probe:  # a port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    started = time.monotonic()
    reason = metadata_db_unavailable(f"postgresql://airflow:pw-not-shown@127.0.0.1:{closed_port}/airflow", timeout=1)
    assert reason == f"postgresql at 127.0.0.1:{closed_port} did not accept a connection within 1 s"
    assert "pw-not-shown" not in reason
    with socket.create_server(("127.0.0.1", 0)) as server:  # a listening server: worth trying
        port = server.getsockname()[1]
        assert metadata_db_unavailable(f"postgresql://airflow@127.0.0.1:{port}/airflow", timeout=1) is None
    assert time.monotonic() - started < 30  # a sanity bound on the test itself, not a speed measurement


def test_doctor_reads_environment_connections_without_a_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.configuration import conf

    missing = tmp_path / "none.db"
    monkeypatch.setattr(
        conf, "get", lambda *a, **k: f"sqlite:///{missing}" if a[:2] == ("database", "sql_alchemy_conn") else ""
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUIET_READER",
        json.dumps({"conn_type": "aws_workload_identity", "extra": {"role_arn": "arn:aws:iam::222222222222:role/r"}}),
    )
    found, notes = cli._package_connections()
    assert found["quiet_reader"][0] == "aws_workload_identity"
    assert notes == [f"metadata database not read (no SQLite database at {missing}); environment connections only"]
    assert not missing.exists()


# --- the demo's set-up and the CLI, end to end, in subprocesses ----------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """The demo's sandbox, Airflow home, local settings and connections (in the metadata database)."""
    import dev.demo as demo_module

    work = tmp_path_factory.mktemp("quiet-demo")
    state_file = work / "sandbox.json"
    subprocess.run(
        [sys.executable, "-m", "dev.sandbox", "start", "--clouds", "aws,gcp,azure", "--state-file", str(state_file)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=180,
    )
    try:
        state = json.loads(state_file.read_text())
        env = demo_module.demo_env(state)
        home = work / "airflow-home"
        env.pop("PYTHONWARNINGS", None)  # nothing hidden: every warning a user would see is printed
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # Airflow's default: the SDKs' INFO lines would show
            }
        )
        (home / "config").mkdir(parents=True)
        (home / "config" / "airflow_local_settings.py").write_text(demo_module.LOCAL_SETTINGS)
        _run([sys.executable, "-m", "airflow", "db", "migrate"], env)
        hosts = {"azure_workload_identity": {"host": state["azure"]["blob_account_url"]}}
        conn_file = work / "connections.json"
        conn_file.write_text(
            json.dumps(
                {
                    cid: {"conn_type": ctype, "extra": json.dumps(extra), **hosts.get(ctype, {})}
                    for cid, (ctype, extra) in demo_module.connections(state).items()
                }
            )
        )
        _run([sys.executable, "-m", "airflow", "connections", "import", str(conn_file)], env)
        yield state, env
    finally:
        subprocess.run(
            [sys.executable, "-m", "dev.sandbox", "stop", "--state-file", str(state_file)], cwd=ROOT, timeout=60
        )


def _run(cmd: list[str], env: dict[str, str], *, expect: int = 0) -> str:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, f"{' '.join(cmd[2:])} exited {proc.returncode}:\n{output[-4000:]}"
    return output


CLI = [sys.executable, "-m", "airflow_workload_identity.cli"]


@pytest.mark.parametrize(
    "args",
    [
        ["whoami", "customer_chain"],
        ["policy", "customer_reader"],
        ["policy", "customer_reader", "--format", "shell"],
        ["policy", "customer_gcs_chain", "--format", "shell"],
        ["whoami", "customer_gcs"],
        ["whoami", "customer_blob"],
        ["doctor"],
    ],
    ids=" ".join,
)
def test_cli_prints_no_warning_when_nothing_is_wrong(
    demo: tuple[dict[str, Any], dict[str, str]], args: list[str]
) -> None:
    _, env = demo
    output = _run([*CLI, *args], env)
    assert _warnings(output) == []
    assert "shall not contain '_'" not in output
    assert "Request headers" not in output and "Response headers" not in output  # azure-core at INFO
    assert not [line for line in output.splitlines() if line.startswith("# :")]


def test_explain_on_azure_verifies_with_a_new_token(demo: tuple[dict[str, Any], dict[str, str]]) -> None:
    _, env = demo
    output = _run([*CLI, "explain", "customer_blob"], env)
    assert output.startswith("OK: all 2 hop(s) work now")
    assert "verified now: a new token was issued for this identity" in output
    assert _warnings(output) == []


def test_azure_sdk_debug_lines_still_come_when_asked_for(demo: tuple[dict[str, Any], dict[str, str]]) -> None:
    _, env = demo
    debug = {"AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG", "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": "process"}
    output = _run([*CLI, "whoami", "customer_blob"], {**env, **debug})  # a token request, not a cached token
    assert "azure.core.pipeline.policies.http_logging_policy" in output


def test_airflow_cli_and_dags_test_print_no_warning_on_our_connections(
    demo: tuple[dict[str, Any], dict[str, str]],
) -> None:
    _, env = demo
    airflow = [sys.executable, "-m", "airflow"]
    tested = _run([*airflow, "connections", "test", "customer_external"], env)
    assert "Connection success!" in tested
    assert _warnings(tested) == []
    dag_run = _run([*airflow, "dags", "test", "wi_aws_demo"], env)
    assert "official S3Hook read s3://customer-bucket-a/reports/hello.txt" in dag_run  # the S3Hook ran on our type
    assert "expected connection type 'aws'" not in dag_run
    assert "shall not contain '_'" not in dag_run
    assert _warnings(dag_run) == []


def test_the_diagnostic_dag_prints_doctor_whoami_and_policy_from_inside_the_deployment(
    demo: tuple[dict[str, Any], dict[str, str]],
) -> None:
    state, env = demo
    conf = {"conn_ids": ["customer_reader", "customer_gcs", "customer_blob"], "probe_defaults": False}
    out = _run([sys.executable, "-m", "airflow", "dags", "test", "wi_diagnostic", "--conf", json.dumps(conf)], env)
    assert "Ambient identities of this worker" in out
    assert f"role {state['env']['irsa']['AWS_ROLE_ARN']}" in out  # the principal to paste, as doctor shows it
    assert "===== customer_reader" in out and "----- policy customer_reader" in out
    assert "sts:AssumeRole" in out  # the trust statement from the worker's real identity
    assert "roles/iam.serviceAccountTokenCreator" in out  # the GCP binding
    assert "azure identity for connection 'customer_blob'" in out
    assert "FAILED" not in out
    assert _warnings(out) == []
