"""The redaction filter and structlog processor (``redaction.py``) on real SDK DEBUG lines, and its bounds.

The log lines are captured for real: each cloud's SDK runs against the local sandbox with its loggers at
DEBUG (and ``http.client``'s wire dump on) while the package's redaction is uninstalled, so the raw lines
are what an unprotected process would write. The test first checks the raw lines do carry the sandbox's
secrets (so they are representative), then that the filter leaves none of them.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_workload_identity import redaction
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

if TYPE_CHECKING:
    from dev.sandbox import AzureSandbox, GcpSandbox
    from tests.fixtures_azure import Aks

SDK_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "google.auth",
    "google.auth.transport",
    "google.cloud",
    "azure",
    "azure.identity",
    "azure.core.pipeline.policies.http_logging_policy",
    "msal",
    "requests",
    "http.client",
)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def raw_sdk_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Capture]:
    """Every SDK logger at DEBUG, http.client's dump into logging, the package's redaction uninstalled."""
    import airflow_workload_identity._compat  # noqa: F401  (Airflow configures logging on import: first)

    redaction.uninstall()
    monkeypatch.setenv(redaction.ENV_SWITCH, "off")
    capture = _Capture()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in SDK_LOGGERS}
    root.addHandler(capture)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    monkeypatch.setattr(http.client.HTTPConnection, "debuglevel", 1)
    wire = logging.getLogger("http.client")
    monkeypatch.setattr(http.client, "print", lambda *a: wire.debug(" ".join(str(x) for x in a)), raising=False)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        monkeypatch.delenv(redaction.ENV_SWITCH)
        redaction.install()


def _lines(capture: _Capture) -> list[str]:
    out = []
    for record in capture.records:
        try:
            out.append(record.getMessage())
        except Exception:
            out.append(f"{record.msg} {record.args!r}")
    return out


def _leaks(lines: list[str], issued: set[str]) -> set[str]:
    return {s for s in issued if any(s in line for line in lines)}


def _assert_filter_cleans(capture: _Capture, issued: set[str], *, min_leaking: int) -> list[str]:
    raw = _lines(capture)
    leaking = _leaks(raw, issued)
    assert len(leaking) >= min_leaking, f"the raw lines should carry secrets ({len(raw)} lines)"
    filtered = []
    for record in capture.records:
        redaction.RedactingFilter().filter(record)
        filtered.append(record.getMessage())
    assert _leaks(filtered, issued) == set()
    return filtered


def test_aws_debug_lines(
    raw_sdk_lines: _Capture, pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    from moto.sts.models import sts_backends

    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    sc = aws_sandbox.scenario
    token = pod.irsa().read_text().strip()
    conn = connection("chain", role_chain=[sc.customer_hop_role_arn], role_arn=sc.customer_reader_chained_role_arn)
    hook = AwsWorkloadIdentityHook(aws_conn_id=conn)
    hook.get_client("s3").list_objects_v2(Bucket="customer-bucket-a")
    frozen = hook.get_credentials().get_frozen_credentials()
    logging.getLogger("botocore.probe").debug("credentials %r", frozen)
    issued = {token} | {
        value
        for regions in sts_backends.values()
        for backend in regions.values()
        for role in backend.assumed_roles
        for value in (role.secret_access_key, role.session_token)
    }
    # The web identity token (body), the hops' session tokens (XML, headers, canonical request), the keys.
    filtered = _assert_filter_cleans(raw_sdk_lines, issued, min_leaking=4)
    text = "\n".join(filtered)
    assert "Action=AssumeRoleWithWebIdentity" in text and "WebIdentityToken=***" in text
    assert "<SessionToken>***</SessionToken>" in text and "x-amz-security-token:***" in text
    assert f"access_key='{frozen.access_key}', secret_key='***', token='***'" in text  # identifiers stay


def test_gcp_debug_lines(raw_sdk_lines: _Capture, gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    from google.cloud import storage

    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    sc = gke.scenario
    before = set(gke.issued_secrets())
    hook = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("chain", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    )
    client = storage.Client(
        credentials=hook.get_credentials(), project=hook.project_id, client_options={"api_endpoint": gke.storage_host}
    )
    client.bucket("customer-bucket-a").blob("reports/hello.txt").download_as_bytes()
    logging.getLogger("botocore.probe").debug("id token %s", hook.get_id_token("https://service.example.com"))
    issued = set(gke.issued_secrets()) - before
    _assert_filter_cleans(raw_sdk_lines, issued, min_leaking=2)


def test_azure_debug_lines(
    raw_sdk_lines: _Capture, aks: Aks, azure_sandbox: AzureSandbox, azure_connection: Callable[..., str]
) -> None:
    from azure.storage.blob import BlobServiceClient

    from airflow_workload_identity.azure import AzureWorkloadIdentityHook

    assertion = aks.workload_identity().read_text().strip()
    before = set(azure_sandbox.issued_secrets())
    hook = AzureWorkloadIdentityHook(azure_conn_id=azure_connection("blob"))
    blobs = BlobServiceClient(hook.account_url, credential=hook.get_credential(), retry_total=0, logging_enable=True)
    blobs.get_blob_client("container-a", "reports/hello.txt").download_blob().readall()
    issued = (set(azure_sandbox.issued_secrets()) - before) | {assertion}
    _assert_filter_cleans(raw_sdk_lines, issued, min_leaking=2)


# -- shapes and keys on their own ------------------------------------------------------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("{'WebIdentityToken': 'opaque-token-value-1234567890'}", "{'WebIdentityToken': '***'}"),
        ("<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCY</SecretAccessKey>", "<SecretAccessKey>***</SecretAccessKey>"),
        ("x-amz-security-token:opaque1234567890\nhost:127.0.0.1", "x-amz-security-token:***\nhost:127.0.0.1"),
        ("client_assertion=opaque1234567890&client_id=abc", "client_assertion=***&client_id=abc"),
        ('{"accessToken":"opaque1234567890","expireTime":"2026-01-01T00:00:00Z"}', '"accessToken":"***"'),
        ("b'GET / HTTP/1.1\\r\\nAuthorization: Bearer opaque1234567890\\r\\n'", "\\r\\nAuthorization: ***\\r\\n"),
        ("https://h/cb?access_token=opaque1234567890&state=1", "?access_token=***&state=1"),
        ("token type eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln end", "token type *** end"),
        ("ya29.c.b0Aaekm1K-abc_def and more", "*** and more"),
        ("IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2Fabc+/= next", "*** next"),
        ("{'token_type': 'Bearer', 'expires_in': 3599}", "{'token_type': 'Bearer', 'expires_in': 3599}"),
    ],
)
def test_shapes_and_keys(line: str, kept: str) -> None:
    assert kept in redaction.redact(line)


def test_exceptions_from_the_sdks_lose_their_secrets() -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from botocore.exceptions import ClientError
    from google.auth.exceptions import RefreshError

    secret = "opaque-" + secrets.token_urlsafe(24)
    errors: list[BaseException] = [
        ClientError({"Error": {"Code": "X", "Message": f"<SessionToken>{secret}</SessionToken>"}}, "AssumeRole"),
        RefreshError("Unable to acquire impersonated credentials", json.dumps({"accessToken": secret})),
        ClientAuthenticationError(message=f"client_assertion={secret}"),
    ]
    for error in errors:
        assert secret in str(error) + repr(error.args) + str(getattr(error, "message", ""))
        redaction.redact_exception(error)
        assert secret not in str(error) + repr(error.args) + str(getattr(error, "message", ""))


def test_structlog_processor_covers_events_and_rendered_tracebacks() -> None:
    """Airflow 3's task-process chain: dict tracebacks, then the JSON renderer; ours sits just before it."""
    import structlog

    secret = "opaque-" + secrets.token_urlsafe(24)
    out = io.StringIO()
    chain: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        structlog.processors.JSONRenderer(),
    ]
    chain.insert(len(chain) - 1, redaction.redact_event)
    logger = structlog.wrap_logger(structlog.PrintLogger(out), processors=chain)
    try:
        raise RuntimeError(f"refresh failed: {{'SessionToken': '{secret}'}}")
    except RuntimeError:
        logger.exception("refresh failed", body={"access_token": secret}, header=f"Authorization: Bearer {secret}")
    assert secret not in out.getvalue()
    assert '"access_token": "***"' in out.getvalue()


def test_install_is_idempotent_and_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import structlog

    redaction.install()
    factory = logging.getLogRecordFactory()
    chain = structlog.get_config()["processors"]
    redaction.install()
    assert logging.getLogRecordFactory() is factory
    assert chain.count(redaction.redact_event) == 1
    record = logging.getLogRecordFactory()(
        "x", logging.DEBUG, __file__, 1, "body %s", ("Token=abcdefghijklmnop",), None
    )
    assert record.getMessage() == "body Token=***"

    redaction.uninstall()
    monkeypatch.setenv(redaction.ENV_SWITCH, "off")
    redaction.install()
    assert redaction.redaction_filter_installed() is False
    monkeypatch.delenv(redaction.ENV_SWITCH)
    redaction.install()
    assert redaction.redaction_filter_installed() is True


# -- bounded ---------------------------------------------------------------------------------------------------


class _Identity:
    """Stands for one shared credential object (what the hooks pass to ``redaction.watch``)."""


def test_state_and_per_line_work_stay_bounded_over_10000_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    """10 identities, 1,000 refreshes each (a new secret key and session token per refresh, AWS-style):
    the live values held, the live pattern's size, and Airflow's masker are the same after the last
    refresh as after the first round; every secret still live is redacted and replaced ones are gone."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker

    redaction.reset()
    masker_patterns = len(_secrets_masker().patterns)
    identities = [_Identity() for _ in range(10)]
    listeners = [redaction.listener_for(identity) for identity in identities]
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()

    def refresh_all(listeners: list[Callable[[Any], None]]) -> list[str]:
        keys = []
        for listen in listeners:
            key, token = secrets.token_urlsafe(30), "opaque" + secrets.token_urlsafe(60)
            listen({"access_key": "ASIA" + "X" * 16, "secret_key": key, "token": token, "expiry_time": expiry})
            keys.append(key)
        return keys

    first_keys = refresh_all(listeners)
    after_first = redaction.state()
    pattern_first = redaction.live_pattern_size()
    line = " ".join(f"secret_access_key {k}" for k in first_keys)
    assert "***" in redaction.redact(line) and first_keys[0] not in redaction.redact(line)
    for _ in range(999):
        last_keys = refresh_all(listeners)
    after_last = redaction.state()
    assert after_last == after_first == {"identities": 10, "live_values": 10 * redaction.VALUES_PER_IDENTITY}
    assert abs(redaction.live_pattern_size() - pattern_first) <= 0.1 * pattern_first
    assert len(_secrets_masker().patterns) == masker_patterns  # nothing registered per refresh
    assert all(k not in redaction.redact(f"leaked {k}") for k in last_keys)
    assert redaction.redact(f"old {first_keys[0]}") == f"old {first_keys[0]}"  # replaced: no longer held

    identities.clear()
    listeners.clear()
    import gc

    gc.collect()
    assert redaction.state() == {"identities": 0, "live_values": 0}  # forgotten with the credentials


def test_expired_values_are_dropped() -> None:
    redaction.reset()
    owner = _Identity()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    redaction.listener_for(owner)({"secret_key": "k" * 40, "token": "t" * 80, "expiry_time": past})
    assert redaction.state() == {"identities": 1, "live_values": 0}


@pytest.mark.smoke
def test_log_file_written_through_the_filter_is_clean(tmp_path: Path) -> None:
    """A stdlib handler writing a file (Airflow 2's task handler) gets already-redacted records."""
    redaction.install()
    secret = "opaque" + secrets.token_urlsafe(30)
    handler = logging.FileHandler(tmp_path / "task.log")
    logger = logging.getLogger("botocore.endpoint")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("Making request with params: %r", {"body": {"WebIdentityToken": secret}})
        try:
            raise ValueError(f"<SecretAccessKey>{secret}</SecretAccessKey>")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(logging.NOTSET)
    text = (tmp_path / "task.log").read_text()
    assert secret not in text and "WebIdentityToken': '***'" in text and "<SecretAccessKey>***" in text


def test_hooks_watch_each_shared_credential_once(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    """Many hooks on one connection: one shared credential watched, one identity's values held."""
    from airflow_workload_identity.aws import AwsWorkloadIdentityHook

    redaction.reset()
    pod.irsa()
    conn = connection("r", role_arn=aws_sandbox.scenario.customer_reader_role_arn)
    for _ in range(50):
        credentials = AwsWorkloadIdentityHook(aws_conn_id=conn).get_credentials()
    frozen = credentials.get_frozen_credentials()
    assert redaction.state() == {"identities": 1, "live_values": 1}  # the secret key; the token has a shape
    assert redaction.redact(f"leaked {frozen.secret_key}") == "leaked ***"


def test_an_event_dict_passed_to_stdlib_stays_a_dict() -> None:
    """structlog's ``ProcessorFormatter.wrap_for_formatter`` hands stdlib the event dict as the message."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, {"event": "e", "token": "abcdefghijklmnopq"}, (), None)
    redaction.RedactingFilter().filter(record)
    assert record.msg == {"event": "e", "token": "***"}
