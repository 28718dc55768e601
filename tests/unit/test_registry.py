from __future__ import annotations

import contextlib
import random
import threading
import time

from airflow_workload_identity.registry import Registry, refresh_windows


def test_each_key_is_built_once_under_contention() -> None:
    registry = Registry()
    builds: list[str] = []
    barrier = threading.Barrier(16)

    def factory() -> object:
        builds.append("x")
        time.sleep(0.05)
        return object()

    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        results.append(registry.get_or_create(("k",), factory))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(r) for r in results}) == 1
    assert registry.get_or_create(("other",), object) is not results[0]
    assert len(registry) == 2


def test_a_failed_build_is_retried_by_the_next_caller() -> None:
    registry = Registry()

    def boom() -> object:
        raise RuntimeError("no")

    with contextlib.suppress(RuntimeError):
        registry.get_or_create("k", boom)
    assert registry.get_or_create("k", lambda: 5) == 5


def test_refresh_windows_scale_with_lifetime_and_cap_at_botocore_values() -> None:
    rng = random.Random(1)
    advisory, mandatory = refresh_windows(900, rng)
    assert 0.16 * 900 <= advisory <= 0.2 * 900
    assert mandatory == 90
    advisory, mandatory = refresh_windows(43200, rng)
    assert 720 <= advisory <= 900
    assert mandatory == 600
    for lifetime in (10, 900, 3600, 43200):
        for _ in range(50):
            adv, mand = refresh_windows(lifetime)
            assert lifetime > adv > mand >= 0


def test_refresh_windows_are_jittered() -> None:
    values = {refresh_windows(3600)[0] for _ in range(20)}
    assert len(values) > 1


class _Credential:
    """Stands for a shared credential object (weak-referenceable, like the package's)."""

    def __init__(self, key: object) -> None:
        self.key = key


def test_the_registry_is_bounded_and_forgets_identities_nobody_uses() -> None:
    import gc

    registry = Registry(max_size=16)
    builds = 0

    def build(key: object) -> _Credential:
        nonlocal builds
        builds += 1
        return _Credential(key)

    # An api-server rendering session names per task: 10,000 distinct keys.
    for n in range(10_000):
        registry.get_or_create(("aws-hop", f"dag.task_{n}"), lambda n=n: build(n))
        assert len(registry) <= 16
    gc.collect()
    assert len(registry) == 16 and registry.live() == 16
    assert registry.evictions == 10_000 - 16
    # The most recently used are kept: no rebuild for them.
    registry.get_or_create(("aws-hop", "dag.task_9999"), lambda: build("again"))
    assert builds == 10_000


def test_an_evicted_identity_still_in_use_is_handed_out_again_never_rebuilt() -> None:
    registry = Registry(max_size=4)
    held = registry.get_or_create("in-use", lambda: _Credential("in-use"))  # a hook keeps it
    for n in range(100):
        registry.get_or_create(n, lambda n=n: _Credential(n))
    assert "in-use" not in registry._items  # evicted from the LRU ...
    again = registry.get_or_create("in-use", lambda: _Credential("rebuilt"))
    assert again is held  # ... but never two objects for one key
    assert len(registry) <= 4


def test_racing_callers_under_eviction_pressure_build_each_key_once() -> None:
    registry = Registry(max_size=2)
    builds: list[str] = []
    barrier = threading.Barrier(12)
    results: list[object] = []

    def factory() -> _Credential:
        builds.append("hot")
        time.sleep(0.05)
        return _Credential("hot")

    def caller() -> None:
        barrier.wait()
        results.append(registry.get_or_create("hot", factory))

    def flooder() -> None:
        barrier.wait()
        for n in range(200):
            registry.get_or_create(("cold", n), lambda n=n: _Credential(n))

    threads = [threading.Thread(target=caller) for _ in range(8)] + [threading.Thread(target=flooder) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["hot"]
    assert len({id(r) for r in results}) == 1
    assert registry.get_or_create("hot", factory) is results[0]
    assert len(registry) <= 2
