"""Bad input through the path a user hits, and the CLI's one-line errors and exit statuses.

Every case of the corpus (``tests/unit/bad_extras``) is an ``AIRFLOW_CONN_<ID>`` connection: the cloud's
hook asked for a token raises the ``ConfigError`` naming the field, and the CLI prints one line and exits
2; the sandbox of that cloud, with the process set up as a pod that could get a token, counts zero
requests (a control proves the same path does reach it with the corpus' valid base). Then, in real
subprocesses: a sample of the corpus, a missing connection, a wrong type, a closed pipe and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_workload_identity.cli import Exit, main
from airflow_workload_identity.errors import ConfigError, WorkloadIdentityError
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod
from tests.unit.bad_extras import Case, base_extra, load

CASES = load()
_CLI = Path(sys.executable).with_name("airflow-workload-identity")
CLI = [str(_CLI)] if _CLI.exists() else [sys.executable, "-m", "airflow_workload_identity"]


def _needs(cloud: str) -> None:
    if cloud == "gcp":
        pytest.importorskip("google.cloud.storage")
    elif cloud == "azure":
        pytest.importorskip("azure.storage.blob")


class Cloud:
    """The test process as a pod of ``cloud`` that could get a token, and that cloud's request counter."""

    def __init__(self, cloud: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        _needs(cloud)
        self.cloud = cloud
        self.monkeypatch = monkeypatch
        self.iam_endpoint: str | None = None
        if cloud == "aws":
            pod: Pod = request.getfixturevalue("pod")
            pod.irsa()
            self.sandbox: Any = pod.sandbox
        elif cloud == "gcp":
            self.sandbox = request.getfixturevalue("gke")
            self.iam_endpoint = self.sandbox.iam_endpoint
        else:
            aks = request.getfixturevalue("aks")
            aks.workload_identity()
            self.sandbox = aks.sandbox

    def requests(self) -> dict[str, int]:
        """Every request the cloud's sandbox received (token endpoints, metadata, IMDS, data)."""
        if self.cloud == "aws":
            return {"sts": self.sandbox.calls(), "pod_identity": self.sandbox.pod_identity_calls}
        if self.cloud == "gcp":
            return {
                "metadata": self.sandbox.calls("metadata"),
                "iam": self.sandbox.calls("iam"),
                "all": self.sandbox.calls(),
            }
        return {kind: self.sandbox.calls(kind) for kind in ("imds", "entra", "storage")}

    def define(self, conn_id: str, conn_type: str, extra: Any) -> str:
        """``AIRFLOW_CONN_<ID>`` as JSON; a string extra is stored as is (the connection's extra text).

        On GCP an object extra without an IAM endpoint gets the sandbox's, so that a case the parser wrongly
        accepted would be counted by the sandbox rather than sent to Google.
        """
        if (
            self.iam_endpoint
            and isinstance(extra, dict)
            and "iam_endpoint_url" not in extra
            and f"extra__{conn_type}__iam_endpoint_url" not in extra
        ):
            extra = {**extra, "iam_endpoint_url": self.iam_endpoint}
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, "extra": extra}))
        return conn_id

    def get_token(self, conn_id: str) -> object:
        """What a task does first: ask the connection's hook for credentials."""
        if self.cloud == "aws":
            from airflow_workload_identity.aws import AwsWorkloadIdentityHook

            return AwsWorkloadIdentityHook(aws_conn_id=conn_id).get_credentials().get_frozen_credentials()
        if self.cloud == "gcp":
            from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

            return GcpWorkloadIdentityHook(gcp_conn_id=conn_id).get_access_token()
        from airflow_workload_identity.azure import AzureWorkloadIdentityHook

        return AzureWorkloadIdentityHook(azure_conn_id=conn_id).get_token()


@pytest.fixture
def cloud_of(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Cloud]:
    return lambda cloud: Cloud(cloud, request, monkeypatch)


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_control_the_valid_base_reaches_the_sandbox(cloud: str, cloud_of: Callable[[str], Cloud]) -> None:
    """Without this, "zero requests" below could mean the path never reaches the sandbox at all."""
    env = cloud_of(cloud)
    conn_id = env.define("control", f"{cloud}_workload_identity", base_extra(cloud))
    before = env.requests()
    with contextlib.suppress(WorkloadIdentityError):  # the sandbox may refuse the base: what counts is the ask
        env.get_token(conn_id)
    after = env.requests()
    assert any(after[k] > before[k] for k in after), f"no request reached the {cloud} sandbox: {after}"


def _assert_one_line(err: str, case: Case) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert f"field {case.field!r}" in lines[0] and "Fix: " in lines[0], lines[0]
    if case.secret:
        for start in range(0, len(case.secret) - 12, 6):
            assert case.secret[start : start + 12] not in err


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_extra_costs_no_request_and_the_cli_says_it_in_one_line(
    case: Case, cloud_of: Callable[[str], Cloud], capsys: pytest.CaptureFixture[str]
) -> None:
    env = cloud_of(case.cloud)
    conn_id = env.define("bad_input", case.conn_type, case.extra)
    capsys.readouterr()
    before = env.requests()

    with pytest.raises(ConfigError) as caught:
        env.get_token(conn_id)
    assert caught.value.field == case.field, str(caught.value)
    assert caught.value.fix.strip()

    assert main(["whoami", conn_id]) == Exit.BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    _assert_one_line(err, case)
    assert env.requests() == before, "a malformed connection cost a request"


# -- real subprocesses -----------------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _environ(**connections: Any) -> dict[str, str]:
    env = dict(os.environ)
    for conn_id, body in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(body)
    return env


SAMPLE = [
    next(c for c in CASES if c.label == "aws:role_arn-cyrillic-a-in-arn"),
    next(c for c in CASES if c.label == "gcp:chain-pasted-jwt"),
    next(c for c in CASES if c.label == "azure:extra-truncated"),
    next(c for c in CASES if c.label == "aws:template-attribute-chain"),
]


@pytest.mark.parametrize("case", SAMPLE, ids=[c.label for c in SAMPLE])
def test_subprocess_bad_extra_is_one_line_and_status_2(case: Case) -> None:
    _needs(case.cloud)
    result = _run(["whoami", "bad"], _environ(bad={"conn_type": case.conn_type, "extra": case.extra}))
    assert result.returncode == Exit.BAD_INPUT, result.stderr
    assert result.stdout == ""
    _assert_one_line(result.stderr, case)


def test_subprocess_missing_connection() -> None:
    result = _run(["whoami", "nosuch"], _environ())
    assert result.returncode == Exit.NOT_FOUND, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert "connection 'nosuch' not found" in result.stderr and "AIRFLOW_CONN_NOSUCH" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_subprocess_connection_of_another_type() -> None:
    result = _run(["policy", "other"], _environ(other={"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}))
    assert result.returncode == Exit.WRONG_TYPE, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert "field 'conn_type'" in result.stderr and "has type 'aws'" in result.stderr
    assert "Traceback" not in result.stderr


def test_in_process_statuses_are_distinct_and_documented(
    pod: Pod, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pod.irsa()
    assert main(["whoami", "nosuch"]) == Exit.NOT_FOUND
    connection("other", conn_type="aws")
    assert main(["whoami", "other"]) == Exit.WRONG_TYPE
    connection("denied", role_arn="arn:aws:iam::222222222222:role/no-such-role")
    assert main(["whoami", "denied"]) == Exit.ACCESS_DENIED
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 3 and "Traceback" not in err
    assert "AccessDenied: access denied at hop 1 of 1" in err and "explain denied" in err
    statuses = [status.value for status in Exit]
    assert len(set(statuses)) == len(statuses)
    main_help = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=120, check=True).stdout
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for status in Exit:
        assert f"\n    {status.value} " in main_help, status
        assert f"| {status.value} |" in docs, status


@pytest.fixture
def irsa_chain(pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]) -> str:
    """A long chain, so that ``policy --format shell`` prints more than a small pipe holds."""
    sc = aws_sandbox.scenario
    pod.irsa()
    hops = [sc.customer_hop_role_arn, *(f"arn:aws:iam::{sc.customer_account}:role/relay-{n}" for n in range(7))]
    return connection("chain", role_chain=hops, role_arn=sc.customer_reader_chained_role_arn)


def test_subprocess_closed_pipe_is_one_line_and_status_141(irsa_chain: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``policy CONN | head -1``: the reader goes away after one line while the CLI is still writing."""
    assert main(["policy", irsa_chain, "--format", "shell"]) == 0
    output = capsys.readouterr().out
    read_end, write_end = os.pipe()
    capacity = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    # The CLI cannot have written everything when one line has been read: the rest does not fit the pipe.
    assert len(output.encode()) > capacity + len(output.splitlines()[0]) + 1
    process = subprocess.Popen(
        [*CLI, "policy", irsa_chain, "--format", "shell"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
        text=True,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        first = reader.readline()
    assert first.decode() == output.splitlines(keepends=True)[0]
    _, err = process.communicate(timeout=120)
    assert process.returncode == Exit.BROKEN_PIPE, err
    assert err.splitlines() == ["airflow-workload-identity: output closed before everything was written (broken pipe)"]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_subprocess_ctrl_c_is_one_line_and_status_130(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    """SIGINT while the CLI waits on a token endpoint that does not answer (the sandbox's STS holds it)."""
    pod.irsa()
    conn_id = connection("slow", role_arn=aws_sandbox.scenario.customer_reader_role_arn)
    aws_sandbox.set_sts_latency(20)  # every STS action
    aws_sandbox.reset_calls()
    process = subprocess.Popen(
        [*CLI, "whoami", conn_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # no credentials from a host-wide cache: the CLI must ask STS
        env={**os.environ, "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE": "off"},
        text=True,
        # as from a terminal: dev/test.sh runs pytest as a background job, and a non-interactive shell's
        # background jobs (and their children) start with SIGINT ignored, which Python then keeps
        preexec_fn=_sigint_default,
    )
    try:
        deadline = time.monotonic() + 120
        while aws_sandbox.calls("AssumeRoleWithWebIdentity") == 0:  # the CLI's first STS request arrived
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the CLI never reached STS"
            time.sleep(0.05)
        time.sleep(0.5)  # ... and the CLI waits on it (each attempt may wait 5 s for an answer)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        aws_sandbox.set_sts_latency(0)
    assert process.returncode == Exit.INTERRUPTED, err
    assert err.splitlines() == ["airflow-workload-identity: interrupted"], err
    assert out == ""


def test_doctor_reports_an_extra_that_is_not_json_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(c for c in CASES if c.label == "aws:extra-invalid-json")
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN_TEXT", json.dumps({"conn_type": case.conn_type, "extra": case.extra}))
    assert main(["doctor", "--json"]) == Exit.INVALID_CONNECTION
    out, err = capsys.readouterr()
    broken = next(c for c in json.loads(out)["connections"] if c["conn_id"] == "broken_text")
    assert not broken["valid"] and "field 'extra': is not valid JSON" in broken["error"]
    assert "Traceback" not in err


def test_no_identity_and_transient_failures_are_one_line_with_their_statuses(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    pod.irsa()
    role = aws_sandbox.scenario.customer_reader_role_arn
    absent = connection("absent", role_arn=role, source="pod_identity")  # the pod has IRSA, not Pod Identity
    assert main(["whoami", absent]) == Exit.NO_IDENTITY
    err = capsys.readouterr().err
    assert err.startswith("airflow-workload-identity: IdentityUnavailable: ") and len(err.splitlines()) == 1, err

    aws_sandbox.inject_sts_fault(action="*", status=503, times=1000)  # cleared by the pod fixture
    flaky = connection("flaky", role_arn=role)
    assert main(["whoami", flaky]) == Exit.TRANSIENT
    err = capsys.readouterr().err
    assert err.startswith("airflow-workload-identity: TransientError: ") and len(err.splitlines()) == 1, err
    assert "503" in err and "Traceback" not in err
