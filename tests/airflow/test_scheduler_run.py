"""A real scheduler run: Airflow 3 with the LocalExecutor (parallelism 8) on SQLite runs a DAG of 40 tasks
on one connection per cloud, each task in a process of its own, against the sandbox.

With the host credential cache (the default), the whole run costs at most 2 token requests per hop per
cloud (today's in-process sharing alone costs one per task); the per-task credential time is recorded
(``record_property``), not asserted: speed is measured in ``dev/bench/scheduler_bench.py``.
"""

from __future__ import annotations

import importlib.util

import pytest

from dev import scheduler_run

TASKS = 40

pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("google.cloud.storage", "azure.storage.blob")),
        reason="needs every cloud's SDK",
    ),
    pytest.mark.timeout(1200),
]


def test_forty_tasks_per_cloud_make_at_most_two_token_requests_per_hop(record_property):
    rows = scheduler_run.run(clouds=scheduler_run.CLOUDS, sides=("host",), tasks=TASKS, parallelism=8)
    by_cloud = {row.cloud: row for row in rows}
    for cloud, row in by_cloud.items():
        record_property(f"{cloud}_credential_ms_median", round(row.median_ms, 1))
        record_property(f"{cloud}_token_requests", row.token_requests)
        assert row.succeeded == TASKS, f"{cloud}: {row.succeeded}/{TASKS} tasks succeeded"
        assert len(row.credential_ms) == TASKS
        for hop, count in row.token_requests.items():
            assert 1 <= count <= 2, f"{cloud} {hop}: {count} token requests for {TASKS} tasks"
    assert set(by_cloud) == set(scheduler_run.CLOUDS)
