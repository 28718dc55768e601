"""The credential core, driven deterministically: an injected clock, sleep and mint function.

The mint functions here stand in for a cloud (the thing under test is the core's refresh logic); the
in-memory store stands in for the host cache (its own tests are in the cache's test module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_workload_identity.core import (
    BUDGET_ENV,
    BUDGET_SETTING,
    DEFAULT_BUDGET_SECONDS,
    SKEWED_LIFETIME_SECONDS,
    Minted,
    RefreshingToken,
    TokenState,
    token_request_budget,
)
from airflow_workload_identity.errors import AccessDenied, ConfigError, TransientError

T0 = 1_800_000_000.0


class Clock:
    """Fake epoch clock; ``sleep`` advances it and records the delays."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Cloud:
    """A scripted token endpoint: each mint returns the next token living ``lifetime`` seconds, or
    raises what ``faults`` holds next."""

    def __init__(self, clock: Clock, lifetime: float = 900.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.faults: list[Exception] = []
        self.fail_always: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def mint(self) -> Minted[str]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.faults:
            raise self.faults.pop(0)
        if self.fail_always is not None:
            raise self.fail_always
        return Minted(f"token-{self.calls}", self.clock() + self.lifetime)


def transient(status: int | None = 503, retry_after: float | None = None) -> TransientError:
    return TransientError(
        "token request for test",
        1,
        f"HTTP {status}",
        endpoint="https://sts.test",
        status=status,
        retry_after=retry_after,
    )


def denied() -> AccessDenied:
    return AccessDenied(hop=1, hops=1, caller="a", target="b", permission="assume", remediation="trust a")


def no_windows_jitter(lifetime: float) -> tuple[float, float]:
    from airflow_workload_identity.registry import refresh_windows

    return refresh_windows(lifetime, random.Random(0))


def make(clock: Clock, cloud: Cloud, **kwargs: Any) -> RefreshingToken[str]:
    kwargs.setdefault("budget", DEFAULT_BUDGET_SECONDS)
    return RefreshingToken(
        cloud.mint,
        describe="test token",
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
        windows=no_windows_jitter,
        background=kwargs.pop("background", False),
        **kwargs,
    )


# -- windows and reuse ---------------------------------------------------------------------------------------


def test_a_fresh_token_is_reused_and_refreshed_once_inside_the_advisory_window() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    token = make(clock, cloud)
    assert token.state() is TokenState.INVALID
    assert [token.get() for _ in range(50)] == ["token-1"] * 50
    assert cloud.calls == 1
    advisory, mandatory = token.windows
    assert mandatory == pytest.approx(90) and 0.16 * 900 <= advisory <= 0.2 * 900
    clock.now += 900 - advisory + 1  # inside the advisory window: one refresh, then fresh again
    assert token.state() is TokenState.STALE
    assert token.get() == "token-2"
    assert [token.get() for _ in range(10)] == ["token-2"] * 10
    assert cloud.calls == 2 and token.state() is TokenState.FRESH


def test_listeners_hear_every_new_token_and_the_current_one() -> None:
    clock = Clock()
    cloud = Cloud(clock, lifetime=100)
    token = make(clock, cloud)
    early: list[str] = []
    token.add_listener(early.append)
    token.get()
    late: list[str] = []
    token.add_listener(late.append)
    token.add_listener(late.append)  # once
    clock.now += 95
    token.get()
    assert early == ["token-1", "token-2"]
    assert late == ["token-1", "token-2"]


# -- failures ------------------------------------------------------------------------------------------------


def test_a_failed_advisory_refresh_serves_the_cached_token_and_backs_off_with_jitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cloud = Cloud(clock, lifetime=3600)
    token = make(clock, cloud)
    assert token.get() == "token-1"
    cloud.fail_always = transient()
    clock.now += 3600 - 600  # 10 minutes left: advisory (720 s) but not mandatory (360 s)
    served = []
    with caplog.at_level(logging.WARNING, logger="airflow_workload_identity.core"):
        for _ in range(120):  # two minutes of one call per second
            served.append(token.get())
            clock.now += 1
    assert served == ["token-1"] * 120  # zero failed calls while the token is valid
    # Backoff grows (1, 2, 4, 8, 16, 32 s before jitter): a handful of attempts, not 120.
    assert 4 <= cloud.calls - 1 <= 8, cloud.calls
    assert (
        "Advisory refresh of test token failed; keeping the current credentials" in caplog.text
        and "test token" in caplog.text
    )
    cloud.fail_always = None
    clock.now += 60
    assert token.get() == f"token-{cloud.calls}"
    assert token.state() is TokenState.FRESH and not token.backing_off


def test_backoff_is_jittered_between_identities() -> None:
    delays = set()
    for seed in range(5):
        clock = Clock()
        cloud = Cloud(clock, lifetime=3600)
        token = RefreshingToken(
            cloud.mint,
            describe="t",
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(seed),
            windows=no_windows_jitter,
            background=False,
        )
        token.get()
        cloud.fail_always = transient()
        clock.now += 3000
        token.get()
        assert token.backing_off
        delays.add(round(token.retry_in, 3))
    assert len(delays) > 1


def test_a_failure_inside_the_mandatory_window_still_serves_a_valid_token() -> None:
    clock = Clock()
    cloud = Cloud(clock, lifetime=900)
    token = make(clock, cloud)
    token.get()
    cloud.fail_always = transient()
    clock.now += 900 - 30  # 30 s left, mandatory window (90 s)
    assert token.state() is TokenState.INVALID
    assert token.get() == "token-1"
    calls = cloud.calls
    assert token.get() == "token-1" and cloud.calls == calls  # backing off, not hammering
    clock.now += 31  # expired now: no token to serve, the failure is raised
    with pytest.raises(TransientError) as err:
        token.get()
    assert err.value.endpoint == "https://sts.test" and err.value.status == 503


def test_without_a_token_a_denial_is_raised_at_once_and_not_retried() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    cloud.faults = [denied()]
    token = make(clock, cloud, max_attempts=3)
    with pytest.raises(AccessDenied):
        token.get()
    assert cloud.calls == 1 and clock.sleeps == []
    assert token.get() == "token-2"  # the next caller tries again (the trust may have been fixed)


def test_without_a_token_an_unwell_endpoint_is_not_hammered() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    cloud.fail_always = transient(503)
    token = make(clock, cloud)
    calls = 0
    while clock.now < T0 + 30:  # a task retrying every 100 ms for 30 s
        with contextlib.suppress(TransientError):
            token.get()
        calls += 1
        clock.now += 0.1
    assert calls >= 299 and 6 <= cloud.calls <= 12, cloud.calls  # backoff 1, 2, 4, then at most 5 s
    cloud.fail_always = None
    clock.now += 5
    assert token.get() == f"token-{cloud.calls}"


def test_transient_faults_within_the_budget_are_invisible() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    cloud.faults = [transient(503), transient(None)]
    token = make(clock, cloud, max_attempts=3)
    assert token.get() == "token-3"
    assert len(clock.sleeps) == 2 and all(0.2 <= s <= 1.5 for s in clock.sleeps)


def test_retry_after_is_honoured() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    cloud.faults = [transient(429, retry_after=7)]
    token = make(clock, cloud, max_attempts=3)
    assert token.get() == "token-2"
    assert clock.sleeps == [7]


def test_persistent_faults_end_in_a_transient_error_within_the_budget() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    cloud.fail_always = transient(429, retry_after=12)
    token = make(clock, cloud, max_attempts=10, attempt_timeout=5, budget=30)
    with pytest.raises(TransientError) as err:
        token.get()
    # 12 s waits, each followed by an attempt of up to 5 s, fit twice in 30 s, not a third time.
    assert clock.sleeps == [12, 12]
    assert clock.now - T0 <= 30
    assert err.value.attempts == 3 == cloud.calls
    text = str(err.value)
    assert "https://sts.test" in text and "3 attempts" in text and "last status 429" in text


def test_the_budget_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "12.5")
    assert token_request_budget() == 12.5
    monkeypatch.setenv(BUDGET_ENV, "")
    assert token_request_budget() == DEFAULT_BUDGET_SECONDS
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(ConfigError) as err:
            token_request_budget()
        assert err.value.field == BUDGET_SETTING


# -- storms --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lifetime", [60.0, 5.0])
def test_short_lived_tokens_cost_one_request_per_lifetime(lifetime: float) -> None:
    clock = Clock()
    cloud = Cloud(clock, lifetime=lifetime)
    token = make(clock, cloud)
    span = 600.0
    while clock.now < T0 + span:
        token.get()
        clock.now += 0.1
    lifetimes = span / lifetime
    assert lifetimes <= cloud.calls <= lifetimes * 1.3 + 1, cloud.calls


def test_skewed_tokens_do_not_cause_a_refresh_storm(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    cloud = Cloud(clock, lifetime=-120)  # expired two minutes ago by our clock
    token = make(clock, cloud)
    with caplog.at_level(logging.WARNING, logger="airflow_workload_identity.core"):
        while clock.now < T0 + 600:
            token.get()
            clock.now += 0.1
    assert cloud.calls <= 600 / (SKEWED_LIFETIME_SECONDS * 0.8) + 1, cloud.calls
    assert "clock skew" in caplog.text


# -- single flight -------------------------------------------------------------------------------------------


def test_one_mint_in_flight_across_threads_and_the_failure_is_shared_with_waiters() -> None:
    cloud = Cloud(Clock())
    cloud.clock = Clock()
    cloud.clock.now = time.time()
    cloud.gate = threading.Event()
    cloud.faults = [denied()]
    token = RefreshingToken(cloud.mint, describe="shared", budget=10)
    outcomes: list[object] = []

    def worker() -> None:
        try:
            outcomes.append(token.get())
        except AccessDenied as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    assert cloud.entered.wait(5)
    time.sleep(0.2)  # let the others queue on the refresh
    cloud.gate.set()
    for t in threads:
        t.join(10)
    assert cloud.calls == 1
    assert len(outcomes) == 16 and all(isinstance(o, AccessDenied) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1
    # Once it passes, the next burst also makes one call.
    cloud.gate = None
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(token.get())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert cloud.calls == 2 and set(results) == {"token-2"}


def test_threads_and_the_event_loop_share_one_refresh_and_the_loop_never_blocks() -> None:
    cloud = Cloud(Clock())
    cloud.clock.now = time.time()
    cloud.gate = threading.Event()
    token = RefreshingToken(cloud.mint, describe="async", budget=10)
    thread_results: list[str] = []
    thread = threading.Thread(target=lambda: thread_results.append(token.get()))
    thread.start()
    assert cloud.entered.wait(5)

    async def scenario() -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while not cloud.gate.is_set() or ticks < 5:  # type: ignore[union-attr]
                ticks += 1
                await asyncio.sleep(0.01)

        async def release() -> None:
            await asyncio.sleep(0.3)
            cloud.gate.set()  # type: ignore[union-attr]

        results = await asyncio.gather(*(token.aget() for _ in range(10)), ticker(), release())
        return [r for r in results if isinstance(r, str)], ticks

    tokens, ticks = asyncio.run(scenario())
    thread.join(5)
    assert cloud.calls == 1
    assert set(tokens) == {"token-1"} and thread_results == ["token-1"]
    assert ticks >= 20  # the loop kept running while the refresh was in flight


def test_a_fresh_token_is_served_to_the_loop_without_a_thread() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    token = make(clock, cloud)
    token.get()

    async def scenario() -> str:
        before = threading.active_count()
        value = await token.aget()
        assert threading.active_count() == before
        return value

    assert asyncio.run(scenario()) == "token-1"


def test_force_gets_a_new_token_unless_another_caller_just_did() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    token = make(clock, cloud)
    token.get()
    assert token.get(force=True) == "token-2"
    assert cloud.calls == 2


# -- host cache layer ----------------------------------------------------------------------------------------


class MemoryStore:
    """An in-memory TokenStore: what two processes sharing a host cache would see."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[dict[str, Any], float]] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.io_threads: set[int] = set()
        self.fail_lock = False

    def load(self, key: str) -> tuple[dict[str, Any], float] | None:
        self.io_threads.add(threading.get_ident())
        return self.entries.get(key)

    def save(self, key: str, payload: dict[str, Any], expires_at: float) -> None:
        self.io_threads.add(threading.get_ident())
        self.entries[key] = (payload, expires_at)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        if self.fail_lock:
            raise TimeoutError("lock busy")
        lock = self.locks.setdefault(key, threading.Lock())
        assert lock.acquire(timeout=timeout)
        try:
            yield
        finally:
            lock.release()

    def remove(self, key: str) -> None:
        self.entries.pop(key, None)


class StrCodec:
    def to_payload(self, value: str) -> dict[str, Any]:
        return {"token": value}

    def from_payload(self, payload: dict[str, Any]) -> str:
        return str(payload["token"])


def test_processes_sharing_a_store_make_one_request() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    store = MemoryStore()
    processes = [make(clock, cloud, store=store, store_key="k", codec=StrCodec()) for _ in range(5)]
    assert {p.get() for p in processes} == {"token-1"}
    assert cloud.calls == 1
    payload, expires_at = store.entries["k"]
    assert expires_at == T0 + 900 and payload["token"] == {"token": "token-1"}
    # Later, one process refreshes; the others pick its token up from the store when they need one.
    clock.now += 900 - 100
    assert {p.get() for p in processes} == {"token-2"}
    assert cloud.calls == 2


def test_a_stale_corrupt_or_foreign_store_entry_is_replaced() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    store = MemoryStore()
    store.entries["k"] = ({"v": 1, "issued_at": T0 - 850, "token": {"token": "old"}}, T0 + 50)  # stale
    token = make(clock, cloud, store=store, store_key="k", codec=StrCodec())
    assert token.get() == "token-1"
    for junk in ({"v": 1, "issued_at": T0}, {"v": 99, "issued_at": T0, "token": {"token": "x"}}, {"nonsense": 1}):
        store.entries["k"] = (junk, T0 + 1000)
        other = make(clock, cloud, store=store, store_key="k", codec=StrCodec())
        assert other.get() == f"token-{cloud.calls}"
        assert store.entries["k"][0]["token"] == {"token": f"token-{cloud.calls}"}
    assert cloud.calls == 4


def test_an_unusable_store_falls_back_to_the_cloud() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    store = MemoryStore()
    store.fail_lock = True
    token = make(clock, cloud, store=store, store_key="k", codec=StrCodec())
    assert token.get() == "token-1"


def test_async_store_io_runs_off_the_event_loop() -> None:
    cloud = Cloud(Clock())
    cloud.clock.now = time.time()
    store = MemoryStore()
    token = RefreshingToken(cloud.mint, describe="a", store=store, store_key="k", codec=StrCodec(), budget=5)

    async def scenario() -> tuple[str, int]:
        return await token.aget(), threading.get_ident()

    value, loop_thread = asyncio.run(scenario())
    assert value == "token-1"
    assert store.io_threads and loop_thread not in store.io_threads


def test_reprs_never_show_the_token() -> None:
    clock = Clock()
    cloud = Cloud(clock)
    token = make(clock, cloud)
    token.get()
    assert "token-1" not in repr(token)


def test_callers_never_wait_for_the_refresh_of_a_valid_token() -> None:
    cloud = Cloud(Clock())
    cloud.clock.now = time.time()
    cloud.lifetime = 10
    token = RefreshingToken(cloud.mint, describe="bg", budget=10, windows=no_windows_jitter)
    assert token.get() == "token-1"
    cloud.gate = threading.Event()
    cloud.entered.clear()
    time.sleep(10 - 1.5)  # advisory window (2 s), not yet mandatory (1 s)
    started = time.monotonic()
    served = [token.get() for _ in range(20)]
    assert cloud.entered.wait(5)  # the refresh runs ...
    time.sleep(0.8)  # ... into the mandatory window, still blocked
    served += [token.get() for _ in range(20)]
    assert time.monotonic() - started < 2  # nobody waited for it
    assert served == ["token-1"] * 40 and cloud.calls == 2
    cloud.gate.set()
    deadline = time.monotonic() + 5
    while token.value != "token-2" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert token.get() == "token-2" and cloud.calls == 2


def test_many_coroutines_share_one_worker_thread_call() -> None:
    cloud = Cloud(Clock())
    cloud.clock.now = time.time()
    cloud.gate = threading.Event()
    cloud.faults = [denied()]
    token = RefreshingToken(cloud.mint, describe="loop", budget=10)

    async def scenario() -> list[object]:
        async def release() -> None:
            await asyncio.sleep(0.3)
            cloud.gate.set()  # type: ignore[union-attr]

        # More coroutines than the default executor has workers: none may start a second refresh.
        results = await asyncio.gather(*(token.aget() for _ in range(40)), release(), return_exceptions=True)
        return results[:40]

    outcomes = asyncio.run(scenario())
    assert cloud.calls == 1
    assert all(isinstance(o, AccessDenied) for o in outcomes)
