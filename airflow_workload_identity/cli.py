"""``airflow-workload-identity`` (also ``python -m airflow_workload_identity``): diagnostics where tasks run.

    whoami  CONN_ID [--json]        who the connection becomes, hop by hop
    explain CONN_ID [--json]        verify every hop now; on failure: the hop, caller, target, permission, fix
    policy  CONN_ID [--format text|json|shell]
                                    what to grant (trust policy, gcloud bindings, az commands)
    doctor  [--json] [--probe-defaults]
                                    ambient identities, projected tokens' claims, endpoints, connections

Run it in a worker pod: the ambient identity it uses is the one of the process. Exit status: 0 on
success, 1 on a ``WorkloadIdentityError`` (explained, no traceback), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from airflow_workload_identity.errors import AccessDenied, ConfigError, WorkloadIdentityError
from airflow_workload_identity.hooks import CONN_TYPES, hook_for, whoami

__all__ = ["main"]


def _color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def _whoami(args: argparse.Namespace) -> int:
    report = hook_for(args.conn_id).whoami()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def _error_dict(exc: WorkloadIdentityError) -> dict[str, Any]:
    data: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, AccessDenied):
        data.update(
            hop=exc.hop,
            hops=exc.hops,
            caller=exc.caller,
            target=exc.target,
            permission=exc.permission,
            fix=exc.remediation,
        )
    elif isinstance(exc, ConfigError):
        data.update(field=exc.field, problem=exc.problem, fix=exc.fix)
    return data


def _explain(args: argparse.Namespace) -> int:
    hook = hook_for(args.conn_id)
    try:
        report = whoami(hook, verify=True)
    except WorkloadIdentityError as exc:
        if args.json:
            print(json.dumps({"ok": False, **_error_dict(exc)}, indent=2))
        else:
            print(_color(f"FAILED: {type(exc).__name__}", "31"))
            print(str(exc))
        return 1
    if args.json:
        print(json.dumps({"ok": True, "report": report.to_dict()}, indent=2))
    else:
        print(_color(f"OK: all {len(report.hops)} hop(s) work now", "32"))
        print(report.render())
    return 0


def _policy(args: argparse.Namespace) -> int:
    plan = hook_for(args.conn_id).policy_plan()
    print({"text": plan.text, "json": plan.json, "shell": plan.shell}[args.format]())
    return 0


def _package_connections() -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """Connections of the package's types from the environment and, when reachable, the metadata DB."""
    found: dict[str, tuple[str, Any]] = {}
    notes: list[str] = []
    from airflow.models.connection import Connection

    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        conn_id = name.removeprefix("AIRFLOW_CONN_").lower()
        try:
            conn = (
                Connection.from_json(value, conn_id=conn_id)
                if value.lstrip().startswith("{")
                else Connection(conn_id=conn_id, uri=value)
            )
        except Exception as exc:  # a malformed variable is a finding, not a crash
            notes.append(f"{name}: not a valid connection ({type(exc).__name__})")
            continue
        if conn.conn_type in CONN_TYPES:
            found[conn_id] = (str(conn.conn_type), conn.extra_dejson)
    try:
        from airflow.utils.session import create_session

        with create_session() as session:
            for conn in session.query(Connection).filter(Connection.conn_type.in_(list(CONN_TYPES))):
                found.setdefault(str(conn.conn_id), (str(conn.conn_type), conn.extra_dejson))
    except Exception as exc:
        notes.append(f"metadata database not read ({type(exc).__name__}); environment connections only")
    return found, notes


def _doctor(args: argparse.Namespace) -> int:
    from airflow_workload_identity.doctor import ambient_identities, check_connections

    findings = ambient_identities(probe_defaults=args.probe_defaults)
    connections, notes = _package_connections()
    checked = check_connections(connections)
    if args.json:
        print(
            json.dumps(
                {"identities": [f.to_dict() for f in findings], "connections": checked, "notes": notes},
                indent=2,
                default=str,
            )
        )
        return 0 if all(c["valid"] for c in checked) else 1
    width = max(len(f.name) for f in findings)
    print("Ambient identities:")
    for f in findings:
        mark = _color("yes", "32") if f.present else _color("no ", "2")
        print(f"  {f.name.ljust(width)}  {mark}  {f.detail}")
        if f.token:
            print(f"  {' ' * width}       token: " + ", ".join(f"{k}={v}" for k, v in f.token.items()))
        if f.reachable is not None:
            print(f"  {' ' * width}       endpoint {f.endpoint}: {'answers' if f.reachable else 'no answer'}")
    print("Connections:")
    if not checked:
        print("  (none of the package's types found)")
    for c in checked:
        status = _color("valid", "32") if c["valid"] else _color("INVALID", "31")
        print(f"  {c['conn_id']} ({c['conn_type']}): {status}" + (f"\n    {c['error']}" if c["error"] else ""))
    for note in notes:
        print(f"  note: {note}")
    return 0 if all(c["valid"] for c in checked) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airflow-workload-identity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("whoami", _whoami, "resolve every hop and print who the connection becomes"),
        ("explain", _explain, "verify every hop now; say which one fails and how to fix it"),
        ("policy", _policy, "print what must be granted for this connection, from the running identity"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("conn_id")
        if name == "policy":
            sub.add_argument(
                "--format",
                choices=("text", "json", "shell"),
                default="text",
                help="text for people, json for programs, shell for the commands to run",
            )
        else:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(run=run)
    doctor = commands.add_parser("doctor", help="ambient identities, token claims, endpoints, connections")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument(
        "--probe-defaults",
        action="store_true",
        help="also probe link-local metadata endpoints not named by the environment",
    )
    doctor.set_defaults(run=_doctor)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except WorkloadIdentityError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
