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
