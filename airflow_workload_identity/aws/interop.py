"""Let the official Amazon provider's hooks and operators run on ``aws_workload_identity`` connections.

Set, in the Airflow configuration of every component::

    [aws]
    session_factory = airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory

(``AIRFLOW__AWS__SESSION_FACTORY=...``). Every ``AwsBaseHook`` subclass (``S3Hook``, ...) whose
connection has type ``aws_workload_identity`` then signs with the same shared, refreshing credentials
as :class:`~airflow_workload_identity.aws.hook.AwsWorkloadIdentityHook`, in its sync and deferrable
paths; connections of other types keep the provider's own behaviour.
"""

from __future__ import annotations

import warnings
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import BaseSessionFactory

from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook
from airflow_workload_identity.aws.spec import CONN_TYPE

__all__ = ["WorkloadIdentitySessionFactory"]

# The provider's connection wrapper warns for every connection whose type is not "aws". For our type that
# warning is wrong (this factory is what makes it work), so it is silenced for our type only.
warnings.filterwarnings(
    "ignore",
    message=rf".*conn_type='{CONN_TYPE}'\) expected connection type 'aws'",
    category=UserWarning,
)


class WorkloadIdentitySessionFactory(BaseSessionFactory):
    """A ``BaseSessionFactory`` that serves ``aws_workload_identity`` connections from the shared chain."""

    def create_session(self, deferrable: bool = False) -> Any:
        conn = self.conn
        if conn is None or conn.conn_type != CONN_TYPE or not isinstance(conn.conn_id, str):
            return super().create_session(deferrable=deferrable)
        hook = AwsWorkloadIdentityHook(aws_conn_id=conn.conn_id)
        region = self.region_name
        if deferrable:
            session = hook.get_async_session(region_name=region)
            self._apply_session_kwargs(session)  # type: ignore[no-untyped-call]
            return session
        return hook.get_session(region_name=region)
