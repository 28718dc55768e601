"""Run context (dag, task, run, try) turned into names the clouds record in their audit logs.

Templates use ``str.format`` placeholders: ``{dag_id}``, ``{task_id}``, ``{run_id}``, ``{try_number}``,
``{map_index}``, ``{conn_id}`` and ``{hostname}``. Rendered values are made to fit the cloud's charset
and length: disallowed characters become ``-`` and a value that is too long keeps its start and ends in
a short hash of the whole, so two long names stay distinct.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass

__all__ = ["PLACEHOLDERS", "RunContext", "fit", "placeholders_in", "render"]

PLACEHOLDERS = ("dag_id", "task_id", "run_id", "try_number", "map_index", "conn_id", "hostname")

# Airflow exports these in every task process (2.x and 3.x), so no Airflow import is needed here.
_ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
    "map_index": "AIRFLOW_CTX_MAP_INDEX",
}


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """Who is asking: the task (when inside one), the connection and the host."""

    conn_id: str
    dag_id: str = ""
    task_id: str = ""
    run_id: str = ""
    try_number: str = ""
    map_index: str = ""
    hostname: str = ""

    @classmethod
    def current(cls, conn_id: str, environ: Mapping[str, str] | None = None) -> RunContext:
        env = os.environ if environ is None else environ
        values = {name: env.get(var, "") for name, var in _ENV.items()}
        return cls(conn_id=conn_id, hostname=socket.gethostname().split(".")[0], **values)

    @property
    def in_task(self) -> bool:
        return bool(self.dag_id and self.task_id)


def placeholders_in(template: str) -> set[str]:
    """The placeholder names a template uses; raises ``ValueError`` for a malformed template."""
    names = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion:
            raise ValueError("placeholders take the form {name} with no format spec")
        names.add(name)
    return names


def fit(value: str, *, allowed: str, max_len: int, min_len: int = 2, pad: str = "airflow") -> str:
    """Make ``value`` match the character class ``allowed`` and ``min_len..max_len`` characters."""
    cleaned = re.sub(f"[^{allowed}]", "-", value)
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")
    if len(cleaned) < min_len:
        cleaned = (cleaned + "-" + pad).strip("-") if cleaned else pad
    if len(cleaned) > max_len:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        cleaned = cleaned[: max_len - 9].rstrip("-") + "-" + digest
    return cleaned


def render(template: str, context: RunContext, *, allowed: str, max_len: int, min_len: int = 2) -> str:
    """Render ``template`` with the run context and fit it to the cloud's limits."""
    values = {k: v for k, v in asdict(context).items() if k in PLACEHOLDERS}
    text = template.format(**values)
    return fit(text, allowed=allowed, max_len=max_len, min_len=min_len)
