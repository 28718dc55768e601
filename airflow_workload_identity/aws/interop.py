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

from airflow_workload_identity._compat import quiet_uri_scheme_warning
from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook
from airflow_workload_identity.aws.spec import CONN_TYPE

__all__ = ["WorkloadIdentitySessionFactory"]

# This module is imported when ``airflow.providers.amazon.aws.hooks.base_aws`` resolves ``[aws]
# session_factory`` (at its import, before any hook builds a connection wrapper). The provider's wrapper
# warns "expected connection type 'aws' ... might not work correctly" for every connection whose type is
# not "aws". For our type that warning is wrong once this factory is configured (the factory is what makes
# it work), so it is silenced for our type only, and only in processes where the factory is configured:
# without the factory the warning stays, because there an S3Hook on our type really would not work.
warnings.filterwarnings(
    "ignore",
    message=rf".*conn_type='{CONN_TYPE}'\) expected connection type 'aws'",
    category=UserWarning,
)

quiet_uri_scheme_warning()  # Airflow's URI-scheme warning is wrong for our types (_compat.py)


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
