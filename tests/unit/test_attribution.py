from __future__ import annotations

import re

import pytest

from airflow_workload_identity.attribution import RunContext, fit, placeholders_in, render

CHARS = r"\w+=,.@-"


def test_context_comes_from_airflow_task_variables() -> None:
    env = {
        "AIRFLOW_CTX_DAG_ID": "etl",
        "AIRFLOW_CTX_TASK_ID": "load",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-01-01T00:00:00+00:00",
        "AIRFLOW_CTX_TRY_NUMBER": "2",
    }
    ctx = RunContext.current("my_conn", env)
    assert ctx.in_task
    assert (ctx.dag_id, ctx.task_id, ctx.try_number) == ("etl", "load", "2")
    assert not RunContext.current("c", {}).in_task


def test_render_fits_sts_session_name_rules() -> None:
    ctx = RunContext(conn_id="c", dag_id="my dag/with:odd*chars", task_id="t", run_id="manual__2026+00:00")
    name = render("airflow.{dag_id}.{task_id}.{run_id}", ctx, allowed=CHARS, max_len=64)
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name)
    assert name.startswith("airflow.my-dag-with-odd-chars.t.manual__2026")


def test_long_values_are_truncated_with_a_distinguishing_hash() -> None:
    a = fit("x" * 100 + "a", allowed=CHARS, max_len=64)
    b = fit("x" * 100 + "b", allowed=CHARS, max_len=64)
    assert len(a) == len(b) == 64
    assert a != b
    assert re.fullmatch(r"x+-[0-9a-f]{8}", a)


def test_too_short_values_are_padded() -> None:
    assert fit("", allowed=CHARS, max_len=64) == "airflow"
    assert fit("a", allowed=CHARS, max_len=64) == "a-airflow"


def test_placeholders_are_parsed_strictly() -> None:
    assert placeholders_in("a.{dag_id}.{task_id}") == {"dag_id", "task_id"}
    with pytest.raises(ValueError):
        placeholders_in("{dag_id:>10}")
    with pytest.raises(ValueError):
        placeholders_in("{}")
