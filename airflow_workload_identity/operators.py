"""``WorkloadIdentityCheckOperator``: prove, on the worker where tasks run, who a connection becomes.

Airflow's *Test* button runs in the api-server, whose identity usually differs from the workers'. Put
this operator first in a DAG: it resolves the connection on the worker, fails the task with the typed
error's explanation if any hop fails or the identity is not the expected one, and returns the identity
report (principals, methods, expiries, endpoints: no secret) as its XCom value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

try:  # Airflow 3.x
    from airflow.sdk import BaseOperator
except ImportError:  # Airflow 2.11
    from airflow.models import BaseOperator  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow_workload_identity.errors import IdentityMismatch
from airflow_workload_identity.hooks import hook_for, whoami

__all__ = ["WorkloadIdentityCheckOperator"]


class WorkloadIdentityCheckOperator(BaseOperator):
    """Resolve ``conn_id`` on the worker and check the identity reached.

    :param conn_id: a connection of any of the package's types.
    :param expected_principal: optional glob the final principal must match, e.g.
        ``arn:aws:sts::222222222222:assumed-role/customer-reader/*``,
        ``reader@customer-proj.iam.gserviceaccount.com``, ``object * in tenant 1111...``.
    :param verify: also make one live call with the final credentials (as ``test_connection`` does).
    """

    template_fields: Sequence[str] = ("conn_id", "expected_principal")
    ui_color = "#d9f2e6"

    def __init__(
        self, *, conn_id: str, expected_principal: str | None = None, verify: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.expected_principal = expected_principal
        self.verify = verify

    def execute(self, context: Any) -> dict[str, Any]:
        hook = hook_for(self.conn_id)
        report = whoami(hook, verify=self.verify)
        self.log.info("%s", report.render())
        principal = report.final.principal
        if self.expected_principal and not fnmatch.fnmatchcase(principal, self.expected_principal):
            raise IdentityMismatch("expected_principal", (self.expected_principal,), principal)
        result: dict[str, Any] = report.to_dict()
        return result
