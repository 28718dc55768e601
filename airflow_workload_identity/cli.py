"""``airflow-workload-identity``: diagnostics from the machine that runs the tasks.

    airflow-workload-identity whoami <conn_id> [--json]   who the connection becomes, hop by hop
    airflow-workload-identity policy <conn_id>            what to grant so that it works

Run it where the tasks run (a worker pod): the ambient identity is the one of the process.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from airflow_workload_identity.errors import WorkloadIdentityError

__all__ = ["main"]


def _hook(conn_id: str) -> Any:
    from airflow_workload_identity._compat import get_connection

    conn = get_connection(conn_id)
    if conn.conn_type == "aws_workload_identity":
        from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook

        return AwsWorkloadIdentityHook(aws_conn_id=conn_id)
    if conn.conn_type == "gcp_workload_identity":
        from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook

        return GcpWorkloadIdentityHook(gcp_conn_id=conn_id)
    if conn.conn_type == "azure_workload_identity":
        from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook

        return AzureWorkloadIdentityHook(azure_conn_id=conn_id)
    raise WorkloadIdentityError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; this command serves the *_workload_identity types"
    )


def _whoami(args: argparse.Namespace) -> int:
    report = _hook(args.conn_id).whoami()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def _policy(args: argparse.Namespace) -> int:
    print(_hook(args.conn_id).policy())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airflow-workload-identity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    whoami = commands.add_parser("whoami", help="resolve every hop and print who the connection becomes")
    whoami.add_argument("conn_id")
    whoami.add_argument("--json", action="store_true", help="machine-readable output")
    whoami.set_defaults(run=_whoami)
    policy = commands.add_parser("policy", help="print the trust and identity policy statements to grant")
    policy.add_argument("conn_id")
    policy.set_defaults(run=_policy)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except WorkloadIdentityError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
