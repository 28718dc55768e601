"""The fault layer (dev/sandbox/faults.py) on each token endpoint, seen by plain HTTP clients.

Each endpoint is asked a real, valid token request (what the SDKs send); every fault kind is checked on
every endpoint: what the client receives, that the next request is answered normally once the fault is
used up or cleared, and that the sandboxes count faulted requests.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import pytest

from dev.sandbox.faults import HANG_LIMIT, SLOW_LIMIT, Fault, FaultInjector, FaultKind

if TYPE_CHECKING:  # the sandboxes import their clouds' SDKs (fixtures build them)
    from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox

pytest.importorskip("google.cloud.storage", reason="the GCP sandbox needs the Google SDKs")
pytest.importorskip("azure.storage.blob", reason="the Azure sandbox needs the Azure SDKs")

pytestmark = pytest.mark.timeout(120)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """One token endpoint: how to ask it for a token, and its request counter."""

    name: str
    url: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    calls: Callable[[], int]
    injector: FaultInjector
    context: ssl.SSLContext | None = None
    success_marker: bytes = b""

    def request(self, timeout: float = 10) -> Answer:
        parts = urlsplit(self.url)
        assert parts.hostname == "127.0.0.1"  # loopback only
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(self.method, self.path, body=self.body, headers=self.headers)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def assert_real_answer(self, answer: Answer) -> None:
        assert answer.status == 200, answer
        assert self.success_marker in answer.body


def _aws_endpoints(sb: AwsSandbox) -> list[Endpoint]:
    sc = sb.scenario
    form = urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": sc.pod_base_role_arn,
            "RoleSessionName": "fault-layer",
            "WebIdentityToken": sb.issuer.mint(),
        }
    ).encode()
    pod_token = sb.rotate_pod_identity_token()
    pod_url = urlsplit(sb.pod_identity_url)
    return [
        Endpoint(
            "sts",
            sb.endpoint_url,
            "POST",
            "/",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            form,
            lambda: sb.calls("AssumeRoleWithWebIdentity"),
            sb.faults,
            success_marker=b"<AccessKeyId>",
        ),
        Endpoint(
            "pod_identity",
            sb.pod_identity_url,
            "GET",
            pod_url.path,
            {"Authorization": pod_token},
            None,
            lambda: sb.pod_identity_calls,
            sb.faults,
            success_marker=b'"AccessKeyId"',
        ),
    ]


def _gcp_endpoints(sb: GcpSandbox) -> list[Endpoint]:
    sc = sb.scenario
    source_token = sb.mint_token(sc.source_sa)
    return [
        Endpoint(
            "metadata",
            f"http://{sb.metadata_host}",
            "GET",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            {"Metadata-Flavor": "Google"},
            None,
            lambda: sb.calls("metadata_token"),
            sb.faults,
            success_marker=b'"access_token"',
        ),
        Endpoint(
            "iam",
            sb.iam_endpoint,
            "POST",
            f"/v1/projects/-/serviceAccounts/{sc.reader_sa}:generateAccessToken",
            {"Authorization": f"Bearer {source_token}", "Content-Type": "application/json"},
            json.dumps({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}).encode(),
            lambda: sb.calls("generateAccessToken"),
            sb.faults,
            success_marker=b'"accessToken"',
        ),
    ]


def _azure_endpoints(sb: AzureSandbox) -> list[Endpoint]:
    sc = sb.scenario
    form = urlencode(
        {
            "client_assertion": sb.mint_sa_token(),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": sc.workload_client_id,
            "grant_type": "client_credentials",
            "scope": "https://storage.azure.com/.default",
        }
    ).encode()
    query = urlencode(
        {"api-version": "2018-02-01", "resource": "https://storage.azure.com", "client_id": sc.node_client_id}
    )
    return [
        Endpoint(
            "entra",
            sb.authority_host,
            "POST",
            f"/{sc.tenant_id}/oauth2/v2.0/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
            lambda: sb.calls("entra"),
            sb.faults,
            context=ssl.create_default_context(cafile=str(sb.ca_bundle)),
            success_marker=b'"access_token"',
        ),
        Endpoint(
            "imds",
            sb.imds_url,
            "GET",
            f"/metadata/identity/oauth2/token?{query}",
            {"Metadata": "true"},
            None,
            lambda: sb.calls("imds"),
            sb.faults,
            success_marker=b'"access_token"',
        ),
    ]


ENDPOINT_NAMES = ["sts", "pod_identity", "metadata", "iam", "entra", "imds"]


@pytest.fixture
def endpoint(
    request: pytest.FixtureRequest,
    aws_sandbox: AwsSandbox,
    gcp_sandbox: GcpSandbox,
    azure_sandbox: AzureSandbox,
) -> Iterator[Endpoint]:
    name = request.param
    if name in ("sts", "pod_identity"):
        candidates = _aws_endpoints(aws_sandbox)
    elif name in ("metadata", "iam"):
        candidates = _gcp_endpoints(gcp_sandbox)
    else:
        candidates = _azure_endpoints(azure_sandbox)
    ep = next(c for c in candidates if c.name == name)
    ep.injector.clear()
    ep.injector.clear_latency()
    ep.injector.reset_counts()
    yield ep
    ep.injector.clear()
    ep.injector.clear_latency()


each_endpoint = pytest.mark.parametrize("endpoint", ENDPOINT_NAMES, indirect=True)


@each_endpoint
@pytest.mark.parametrize("status", [500, 503])
def test_error_for_the_next_n_requests_then_the_real_answer(endpoint: Endpoint, status: int) -> None:
    before = endpoint.calls()
    endpoint.injector.inject(endpoint.name, Fault.error(status, times=2))
    assert [endpoint.request().status for _ in range(2)] == [status, status]
    endpoint.assert_real_answer(endpoint.request())
    assert endpoint.calls() - before == 3  # faulted requests are counted
    assert endpoint.injector.faulted(endpoint.name) == 2


@each_endpoint
def test_throttle_answers_429_with_retry_after(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.throttle(retry_after=7))
    answer = endpoint.request()
    assert answer.status == 429
    assert answer.headers["retry-after"] == "7"
    assert answer.body  # the endpoint's own throttling body, not an empty page
    endpoint.assert_real_answer(endpoint.request())


@each_endpoint
def test_reset_closes_the_connection_with_a_tcp_reset(endpoint: Endpoint) -> None:
    before = endpoint.calls()
    endpoint.injector.inject(endpoint.name, Fault.reset())
    with pytest.raises(ConnectionResetError):
        endpoint.request()
    endpoint.assert_real_answer(endpoint.request())
    assert endpoint.calls() - before == 2
    assert endpoint.injector.faulted(endpoint.name) == 1


@each_endpoint
def test_hang_holds_until_cleared_then_answers(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.hang())
    with pytest.raises(TimeoutError):
        endpoint.request(timeout=0.5)  # held: no byte comes back

    answers: list[Answer] = []
    waiter = threading.Thread(target=lambda: answers.append(endpoint.request(timeout=30)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not answers
    endpoint.injector.clear(endpoint.name)
    waiter.join(30)
    assert not waiter.is_alive()
    endpoint.assert_real_answer(answers[0])
    assert endpoint.injector.faulted(endpoint.name) == 2


@each_endpoint
def test_hang_is_bounded_then_the_connection_is_dropped(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.hang(0.3, times=1))
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        endpoint.request(timeout=10)
    endpoint.assert_real_answer(endpoint.request())


@each_endpoint
def test_slow_gives_the_real_answer_late(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.slow(0.6))
    started = time.monotonic()
    answer = endpoint.request()
    late_by = time.monotonic() - started
    endpoint.assert_real_answer(answer)
    assert late_by >= 0.6  # the fault itself: at least the injected delay
    assert endpoint.injector.faulted(endpoint.name) == 1


@each_endpoint
def test_malformed_is_a_200_with_a_truncated_body(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.malformed())
    answer = endpoint.request()
    assert answer.status == 200
    assert int(answer.headers["content-length"]) == len(answer.body) > 0
    if endpoint.name == "sts":
        with pytest.raises(ET.ParseError):
            ET.fromstring(answer.body)
    else:
        with pytest.raises(json.JSONDecodeError):
            answer.json()
    endpoint.assert_real_answer(endpoint.request())


@each_endpoint
def test_until_cleared(endpoint: Endpoint) -> None:
    endpoint.injector.inject(endpoint.name, Fault.error(503, times=None))
    assert {endpoint.request().status for _ in range(4)} == {503}
    endpoint.injector.clear(endpoint.name)
    endpoint.assert_real_answer(endpoint.request())
    assert endpoint.injector.faulted(endpoint.name) == 4


@each_endpoint
def test_latency_adds_to_every_request_and_clears(endpoint: Endpoint) -> None:
    endpoint.injector.set_latency(endpoint.name, 0.4)
    started = time.monotonic()
    endpoint.assert_real_answer(endpoint.request())
    assert time.monotonic() - started >= 0.4
    endpoint.injector.set_latency(endpoint.name, 0)
    assert endpoint.injector.faulted(endpoint.name) == 0  # latency alone is not a fault


def test_faults_apply_in_arming_order_and_only_to_their_endpoint(
    aws_sandbox: AwsSandbox, gcp_sandbox: GcpSandbox
) -> None:
    sts, pod = _aws_endpoints(aws_sandbox)
    metadata, iam = _gcp_endpoints(gcp_sandbox)
    for ep in (sts, metadata):
        ep.injector.clear()
    try:
        aws_sandbox.faults.inject("pod_identity", Fault.error(500, times=1))
        aws_sandbox.faults.inject("pod_identity", Fault.throttle(2, times=1))
        sts.assert_real_answer(sts.request())  # another endpoint of the same sandbox: untouched
        assert [pod.request().status for _ in range(3)] == [500, 429, 200]

        gcp_sandbox.faults.inject("iam", Fault.error(503), match="generateIdToken")
        iam.assert_real_answer(iam.request())  # another call kind: untouched
        metadata.assert_real_answer(metadata.request())
        assert gcp_sandbox.faults.armed() == ["iam/generateIdToken: error 503 (next 1)"]
    finally:
        aws_sandbox.faults.clear()
        gcp_sandbox.faults.clear()


def test_a_fault_for_any_endpoint_of_a_sandbox(azure_sandbox: AzureSandbox) -> None:
    entra, imds = _azure_endpoints(azure_sandbox)
    azure_sandbox.faults.clear()
    azure_sandbox.faults.inject(None, Fault.error(502, times=2))
    try:
        assert [entra.request().status, imds.request().status] == [502, 502]
        entra.assert_real_answer(entra.request())
        imds.assert_real_answer(imds.request())
    finally:
        azure_sandbox.faults.clear()


def test_sts_fault_limited_to_one_action(aws_sandbox: AwsSandbox) -> None:
    sts, _ = _aws_endpoints(aws_sandbox)
    aws_sandbox.clear_faults()
    aws_sandbox.faults.inject("sts", Fault.reset(times=None), match="AssumeRole")
    try:
        sts.assert_real_answer(sts.request())  # AssumeRoleWithWebIdentity is another action
    finally:
        aws_sandbox.clear_faults()


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback (no packet is sent), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 9))
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_sandboxes_listen_on_loopback_only(
    aws_sandbox: AwsSandbox, gcp_sandbox: GcpSandbox, azure_sandbox: AzureSandbox
) -> None:
    urls = [
        aws_sandbox.endpoint_url,
        aws_sandbox.pod_identity_url,
        f"http://{gcp_sandbox.metadata_host}",
        gcp_sandbox.iam_endpoint,
        azure_sandbox.authority_host,
        azure_sandbox.imds_url,
    ]
    other = _non_loopback_address()
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", url
        assert parts.port is not None
        with socket.create_connection(("127.0.0.1", parts.port), timeout=2):
            pass
        if other is not None:  # the same port on the host's other address: nobody listens
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, parts.port), timeout=2).close()


def test_fault_values_are_checked_and_bounded() -> None:
    with pytest.raises(ValueError, match="times"):
        Fault.error(503, times=0)
    with pytest.raises(ValueError, match="status"):
        Fault.error(200)
    assert Fault.hang(3600).seconds == HANG_LIMIT
    assert Fault.slow(3600).seconds == SLOW_LIMIT
    assert Fault.throttle().status == 429 and Fault.throttle().kind is FaultKind.THROTTLE
    injector = FaultInjector(("imds",))
    with pytest.raises(ValueError, match="unknown endpoint"):
        injector.inject("sts", Fault.reset())
    with pytest.raises(ValueError, match="unknown endpoints"):
        FaultInjector(("nowhere",))


def test_a_hang_is_dropped_when_the_sandbox_stops() -> None:
    from dev.sandbox.azure import AzureSandbox as FreshAzureSandbox

    sb = FreshAzureSandbox.start(azurite=False)
    try:
        _, imds = _azure_endpoints(sb)
        sb.faults.inject("imds", Fault.hang())
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                imds.request(timeout=20)
            except BaseException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=ask)
        waiter.start()
        time.sleep(0.3)
    finally:
        sb.stop()
    waiter.join(20)
    assert not waiter.is_alive()
    assert errors and isinstance(errors[0], ConnectionResetError | http.client.RemoteDisconnected)
