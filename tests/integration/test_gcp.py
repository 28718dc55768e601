"""GCP impersonation over loopback: the real google-auth and google-cloud-storage against the sandbox."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

pytest.importorskip("google.cloud.storage", reason="the Google SDKs are not installed")

from google.api_core.exceptions import Forbidden
from google.cloud import storage

from airflow_workload_identity.errors import AccessDenied, ConfigError, IdentityUnavailable, TransientError
from airflow_workload_identity.gcp import GcpWorkloadIdentityHook
from dev.sandbox import GcpSandbox


def client(hook: GcpWorkloadIdentityHook, sb: GcpSandbox) -> storage.Client:
    return storage.Client(
        credentials=hook.get_credentials(), project=hook.project_id, client_options={"api_endpoint": sb.storage_host}
    )


def read(hook: GcpWorkloadIdentityHook, sb: GcpSandbox, bucket: str, name: str) -> bytes:
    return client(hook, sb).bucket(bucket).blob(name).download_as_bytes()


@pytest.mark.smoke
def test_reads_bucket_a_and_is_denied_bucket_b(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("reader", impersonation_chain=[sc.reader_sa]))
    assert read(hook, gke, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    with pytest.raises(Forbidden) as err:
        read(hook, gke, sc.bucket_b, sc.bucket_b_key)
    assert sc.reader_sa in str(err.value)
    assert hook.project_id == "customer-proj"
    report = hook.whoami()
    assert report.hops[0].principal == sc.source_sa
    assert report.final.principal == sc.reader_sa
    assert report.final.endpoint == gke.iam_endpoint
    assert gke.calls("generateAccessToken") == 1


def test_one_metadata_token_serves_every_chain_of_the_source(
    gke: GcpSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = gke.scenario
    one = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("one", impersonation_chain=[sc.reader_sa]))
    two = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("two", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    )
    one.get_access_token()
    two.get_access_token()
    two.get_id_token("https://svc.example")
    assert gke.calls("metadata_token") == 1
    assert gke.calls("generateAccessToken") == 2


def test_two_hop_chain(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    hook = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("chain", impersonation_chain=f"{sc.hop_sa}, {sc.chained_reader_sa}")
    )
    assert read(hook, gke, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    assert [h.principal for h in hook.whoami().hops] == [sc.source_sa, sc.hop_sa, sc.chained_reader_sa]
    assert gke.calls("generateAccessToken") == 1  # the whole chain is one call


@pytest.mark.parametrize(
    ("chain", "hop", "caller_attr", "target_attr"),
    [
        (["chained_reader_sa"], 1, "source_sa", "chained_reader_sa"),
        (["hop_sa", "no_creator_sa"], 2, "hop_sa", "no_creator_sa"),
    ],
)
def test_missing_token_creator_names_the_hop_and_the_fix(
    gke: GcpSandbox, gcp_connection: Callable[..., str], chain: list[str], hop: int, caller_attr: str, target_attr: str
) -> None:
    sc = gke.scenario
    accounts = [getattr(sc, name) for name in chain]
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("c", impersonation_chain=accounts))
    with pytest.raises(AccessDenied) as err:
        hook.get_access_token()
    caller, target = getattr(sc, caller_attr), getattr(sc, target_attr)
    assert (err.value.hop, err.value.hops) == (hop, len(chain))
    # One chain call, plus, for a multi-hop chain only, the hop-by-hop diagnosis up to the failing hop.
    assert gke.calls("generateAccessToken") == (1 if len(chain) == 1 else 1 + hop)
    assert (err.value.caller, err.value.target) == (caller, target)
    assert err.value.permission == "iam.serviceAccounts.getAccessToken"
    assert (
        f"gcloud iam service-accounts add-iam-policy-binding {target} --member=serviceAccount:{caller} "
        "--role=roles/iam.serviceAccountTokenCreator" in str(err.value)
    )


def test_unknown_account_is_a_config_error(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("m", impersonation_chain=[gke.scenario.missing_sa]))
    with pytest.raises(ConfigError) as err:
        hook.get_access_token()
    assert err.value.field == "impersonation_chain"
    assert gke.scenario.missing_sa in str(err.value)


def test_lifetime_over_an_hour_needs_the_extension(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    refused = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("short", impersonation_chain=[sc.reader_sa], lifetime_seconds=7200)
    )
    with pytest.raises(ConfigError) as err:
        refused.get_access_token()
    assert err.value.field == "lifetime_seconds"
    assert "constraints/iam.allowServiceAccountCredentialLifetimeExtension" in str(err.value)
    allowed = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("long", impersonation_chain=[sc.long_lived_sa], lifetime_seconds=7200)
    )
    allowed.get_access_token()
    remaining = (allowed.get_credentials().expiry - __import__("datetime").datetime.utcnow()).total_seconds()
    assert 7000 < remaining <= 7200


def test_id_token_audience_and_email(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    hook = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("r", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    )
    token = hook.get_id_token("https://my-service.a.run.app")
    claims = gke.verify_id_token(token, audience="https://my-service.a.run.app")
    assert claims["email"] == sc.chained_reader_sa
    assert hook.get_id_token("https://my-service.a.run.app") == token  # cached while fresh
    assert gke.calls("generateIdToken") == 1


def test_n_hooks_by_m_threads_mint_once_per_key(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    conn = gcp_connection("r", impersonation_chain=[sc.reader_sa])
    gke.set_latency("generateAccessToken", 0.3)
    barrier = threading.Barrier(12)
    tokens: list[str] = []

    def worker() -> None:
        barrier.wait()
        for _ in range(3):
            tokens.append(GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token())

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 36 and len(set(tokens)) == 1
    assert gke.calls("generateAccessToken") == 1
    assert gke.calls("metadata_token") == 1


def test_k_async_callers_mint_once_and_never_block_the_loop(
    gke: GcpSandbox, gcp_connection: Callable[..., str]
) -> None:
    sc = gke.scenario
    conn = gcp_connection("r", impersonation_chain=[sc.reader_sa])
    gke.set_latency("generateAccessToken", 0.5)

    async def scenario() -> tuple[set[str], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        tokens = await asyncio.gather(
            *(GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token_async() for _ in range(20))
        )
        again = await GcpWorkloadIdentityHook(gcp_conn_id=conn).get_access_token_async()
        done.set()
        await tick
        return {*tokens, again}, ticks

    tokens, ticks = asyncio.run(scenario())
    assert len(tokens) == 1
    assert gke.calls("generateAccessToken") == 1
    assert ticks > 20


def test_refresh_before_expiry_with_short_tokens(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    import time

    sc = gke.scenario
    gke.force_token_ttl(6)
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("r", impersonation_chain=[sc.reader_sa]))
    creds = hook.get_credentials()
    seen: list[tuple[float, float]] = []
    first = hook.get_access_token()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        before = creds.expiry
        token = hook.get_access_token()
        if seen == [] or token != seen[-1][0]:
            seen.append((token, before))  # type: ignore[arg-type]
        time.sleep(0.05)
    assert first
    mints = gke.calls("generateAccessToken")
    assert 2 <= mints <= 4, gke.calls_by_kind()


def test_injected_502_is_retried(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    gke.inject_fault("generateAccessToken", status=502, times=2, html=True)
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("r", impersonation_chain=[sc.reader_sa]))
    assert hook.get_access_token()
    assert gke.calls("generateAccessToken") == 3

    gke.inject_fault("generateAccessToken", status=502, times=5, html=True)
    other = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection(
            "r2", impersonation_chain=[sc.reader_sa], scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
        )
    )
    with pytest.raises(TransientError) as err:
        other.get_access_token()
    assert "HTML error page" in str(err.value)


def test_metadata_server_unreachable_says_where_it_looked(
    gke: GcpSandbox, gcp_connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.auth.compute_engine import _metadata

    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("r", impersonation_chain=[gke.scenario.reader_sa]))
    with pytest.raises(IdentityUnavailable) as err:
        hook.get_access_token()
    assert "127.0.0.1:9" in str(err.value)
    assert "GCE_METADATA_HOST" in str(err.value)


def test_test_connection_and_policy(gke: GcpSandbox, gcp_connection: Callable[..., str]) -> None:
    sc = gke.scenario
    hook = GcpWorkloadIdentityHook(
        gcp_conn_id=gcp_connection("r", impersonation_chain=[sc.hop_sa, sc.chained_reader_sa])
    )
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith(f"Connected as {sc.chained_reader_sa}")
    assert "verified now: generateIdToken issued a token for " + sc.chained_reader_sa in message
    text = hook.policy()
    assert f"# Hop 2 of 2: {sc.hop_sa} -> {sc.chained_reader_sa}" in text
    bad = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("b", impersonation_chain=[sc.no_creator_sa]))
    ok, message = bad.test_connection()
    assert not ok and "AccessDenied" in message and "hop 1 of 1" in message


def test_iam_endpoint_override_to_an_unlisted_host_is_refused(
    gke: GcpSandbox, gcp_connection: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS")
    hook = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("r", impersonation_chain=[gke.scenario.reader_sa]))
    with pytest.raises(ConfigError) as err:
        hook.get_access_token()
    assert err.value.field == "iam_endpoint_url"
    assert gke.calls() == 0
