"""``airflow-workload-identity`` (also ``python -m airflow_workload_identity``): diagnostics where tasks run.

    whoami  CONN_ID [--json] [--as IDENTITY]
                                    who the connection becomes, hop by hop (--as: planned from IDENTITY,
                                    the deployment's workload identity, no cloud call)
    explain CONN_ID [--json]        verify every hop now; on failure: the hop, caller, target, permission, fix
    policy  CONN_ID [--format text|json|shell] [--as IDENTITY]
                                    what to grant (trust policy, gcloud bindings, az commands); hop 0 (what
                                    the platform grants) apart from what you grant
    doctor  [--json] [--probe-defaults]
                                    ambient identities, projected tokens' claims, endpoints, connections

Run it in a worker pod: the ambient identity it uses is the one of the process; from a laptop (Astro gives
no shell into workers) give the deployment's workload identity with --as. A failure is one line on
stderr (``explain`` prints its full explanation on stdout), never a traceback unless --traceback is given.

exit status:
    0    success
    1    doctor found an invalid connection
    2    bad input: a connection field holds a bad value (the line names the field and the fix), or bad
         command-line usage
    3    no such connection (not in AIRFLOW_CONN_<ID>, a secrets backend or the metadata database)
    4    the connection has another type than the package's three
    5    access denied: the cloud refused a hop (explain prints the hop and what to grant)
    6    identity mismatch: the identity reached is not the one the connection pins
    7    no ambient identity in this process (IRSA, Pod Identity, GKE metadata, AKS token file, IMDS)
    8    transient: a cloud endpoint kept failing after the bounded retries
    9    another error of this package
    70   internal error (a bug: rerun with --traceback and report it)
    130  interrupted (Ctrl-C)
    141  output closed early (a broken pipe, e.g. piped into head)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from airflow_workload_identity import redaction
from airflow_workload_identity.errors import (
    AccessDenied,
    ConfigError,
    IdentityMismatch,
    IdentityUnavailable,
    TransientError,
    WorkloadIdentityError,
)
from airflow_workload_identity.hooks import CONN_TYPES, hook_for, whoami

__all__ = ["Exit", "main"]

PROG = "airflow-workload-identity"


class Exit(IntEnum):
    """The exit statuses (documented in ``--help`` and docs/cli.md)."""

    OK = 0
    INVALID_CONNECTION = 1
    BAD_INPUT = 2
    NOT_FOUND = 3
    WRONG_TYPE = 4
    ACCESS_DENIED = 5
    IDENTITY_MISMATCH = 6
    NO_IDENTITY = 7
    TRANSIENT = 8
    OTHER_ERROR = 9
    INTERNAL = 70
    INTERRUPTED = 130
    BROKEN_PIPE = 141


def exit_status(exc: BaseException) -> Exit:
    """The exit status for an error the CLI reports."""
    if isinstance(exc, ConfigError):
        return Exit.WRONG_TYPE if exc.field == "conn_type" else Exit.BAD_INPUT
    for kind, status in (
        (AccessDenied, Exit.ACCESS_DENIED),
        (IdentityMismatch, Exit.IDENTITY_MISMATCH),
        (IdentityUnavailable, Exit.NO_IDENTITY),
        (TransientError, Exit.TRANSIENT),
        (WorkloadIdentityError, Exit.OTHER_ERROR),
    ):
        if isinstance(exc, kind):
            return status
    if _is_not_found(exc):
        return Exit.NOT_FOUND
    return Exit.INTERNAL


def _not_found_types() -> tuple[type[BaseException], ...]:
    """Airflow's "no such connection" exception classes (one class on 3.x; 2.11 has only the first)."""
    found: list[type[BaseException]] = []
    for module in ("airflow.exceptions", "airflow.sdk.exceptions"):
        try:
            kind = importlib.import_module(module).AirflowNotFoundException
        except (ImportError, AttributeError):
            continue
        if isinstance(kind, type) and issubclass(kind, BaseException) and kind not in found:
            found.append(kind)
    return tuple(found)


def _is_not_found(exc: BaseException) -> bool:
    return not isinstance(exc, WorkloadIdentityError) and isinstance(exc, _not_found_types())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_line(exc: BaseException, conn_id: str | None = None) -> str:
    """The one line the CLI prints for ``exc`` (secrets redacted by the caller)."""
    status = exit_status(exc)
    if status is Exit.NOT_FOUND:
        name = conn_id or "?"
        return (
            f"{PROG}: connection {name!r} not found (looked in AIRFLOW_CONN_{name.upper()}, the secrets "
            f"backend and the metadata database). Fix: define it, e.g. 'airflow connections add {name} "
            "--conn-type aws_workload_identity --conn-extra ...', or check the id's spelling"
        )
    if isinstance(exc, AccessDenied):
        first = str(exc).splitlines()[0] if str(exc) else "access denied"
        hint = f"; run '{PROG} explain {conn_id}' for what to grant" if conn_id else ""
        return f"{PROG}: AccessDenied: {_one_line(first)}{hint}"
    if isinstance(exc, WorkloadIdentityError):
        return f"{PROG}: {type(exc).__name__}: {_one_line(str(exc))}"
    return f"{PROG}: internal error: {type(exc).__name__}: {_one_line(str(exc))} (rerun with --traceback)"


class _DropExtraParseErrors(logging.Filter):
    """Airflow logs a traceback when a connection's extra is not JSON; the CLI reports it as one line
    (a ``ConfigError`` on the field ``extra``), so that record is dropped in the CLI process."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to deserialize extra property")


_EXTRA_FILTER = _DropExtraParseErrors()


def _quiet_extra_parse_errors() -> None:
    from airflow_workload_identity._compat import quiet_uri_scheme_warning  # Airflow configures its loggers

    quiet_uri_scheme_warning()  # reading a connection caches it as a URI; the scheme warning is not ours
    for name in ("airflow.sdk.definitions.connection", "airflow.models.connection"):
        logging.getLogger(name).addFilter(_EXTRA_FILTER)


# The Azure SDK logs every request's and response's headers at INFO (HttpLoggingPolicy) and each token at
# INFO (azure.identity): ~20 lines before a CLI answer at Airflow's default level. The CLI answers on
# stdout and reports failures as one line, so these loggers start at WARNING here, unless the user asked
# for DEBUG (AIRFLOW__LOGGING__LOGGING_LEVEL=DEBUG) or configured the logger's level themselves. Levels
# only: the records that still pass keep going through the redaction filters (redaction.install()).
_CHATTY_INFO_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def _quiet_sdk_info_logs() -> None:
    if (
        logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        or os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "").upper() == "DEBUG"
    ):
        return
    for name in _CHATTY_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _plain(text: str) -> str:
    """``--help`` text from reStructuredText: inline literals (````x````) and roles (``:class:`x```) shown
    as plain words."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _say(line: str) -> None:
    """Print one line on stderr (secrets redacted); a closed stderr is not worth a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(redaction.redact(line), file=sys.stderr, flush=True)


def _stdout_to_devnull() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush cannot fail again
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        pass


def _color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def _offline(conn_id: str, identity: str, what: str) -> Any:
    """``--as``: the connection's plan or report from its spec alone, starting at ``identity`` (the deployment's
    workload identity, as the Astro UI shows it); the connection is read, no cloud is called."""
    from airflow_workload_identity.attribution import RunContext

    hook: Any = hook_for(conn_id)
    cloud = str(hook.conn_type).removesuffix("_workload_identity")
    policy = importlib.import_module(f"airflow_workload_identity.{cloud}.policy")
    spec = hook.spec  # parsed and validated: a bad field is a ConfigError before anything else
    extra: tuple[Any, ...] = {
        "aws": (RunContext.current(conn_id),),
        "gcp": (os.environ,),
        "azure": (),
    }[cloud]
    if what == "plan":
        return policy.plan_as(spec, identity, *extra)
    return policy.report_as(spec, identity, *extra, conn_id)


def _backend_report() -> Any:
    """The configured ``[secrets] backend``'s identity report (one of the package's backends)."""
    from airflow_workload_identity.secrets_common import BACKENDS, configured_backend

    backend = configured_backend()
    if backend is None:
        raise ConfigError(
            "[secrets] backend",
            "is not one of this package's backends",
            f"set AIRFLOW__SECRETS__BACKEND to one of {', '.join(BACKENDS)}, or drop --secrets-backend",
        )
    return backend.whoami()


def _whoami(args: argparse.Namespace) -> int:
    if args.conn_id is None and not args.secrets_backend:
        raise ConfigError("conn_id", "is missing", "name a connection, or pass --secrets-backend")
    if args.secrets_backend:
        report = _backend_report()
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
        if args.conn_id is None:
            return 0
    if args.as_identity is not None:
        report = _offline(args.conn_id, args.as_identity, "report")
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
        return 0
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
        raise  # and, like every command: one line on stderr, the error's exit status
    if args.json:
        print(json.dumps({"ok": True, "report": report.to_dict()}, indent=2))
    else:
        print(_color(f"OK: all {len(report.hops)} hop(s) work now", "32"))
        print(report.render())
    return 0


def _policy(args: argparse.Namespace) -> int:
    if args.as_identity is not None:
        plan = _offline(args.conn_id, args.as_identity, "plan")
    else:
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
        if value.lstrip().startswith("{"):  # read here: Airflow's model refuses an extra that is not JSON
            try:
                body = json.loads(value)
            except json.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                notes.append(f"{name}: not a valid connection (not a JSON object)")
                continue
            conn_type = str(body.get("conn_type") or "").replace("-", "_")
            extra = body.get("extra")
            if conn_type in CONN_TYPES:
                found[conn_id] = (conn_type, extra if extra is None or isinstance(extra, str) else json.dumps(extra))
            continue
        try:
            conn = Connection(conn_id=conn_id, uri=value)
        except Exception as exc:  # a malformed variable is a finding, not a crash
            notes.append(f"{name}: not a valid connection ({type(exc).__name__})")
            continue
        if conn.conn_type in CONN_TYPES:  # the stored text: an extra that is not JSON is reported as such
            found[conn_id] = (str(conn.conn_type), conn.extra)
    from airflow.configuration import conf

    from airflow_workload_identity.doctor import metadata_db_unavailable

    skip = metadata_db_unavailable(conf.get("database", "sql_alchemy_conn", fallback="") or "")
    if skip:  # not configured or not reachable: say so at once, no driver timeout, no retries
        notes.append(f"metadata database not read ({skip}); environment connections only")
        return found, notes
    try:
        from airflow.utils.session import create_session

        with create_session() as session:
            for conn in session.query(Connection).filter(Connection.conn_type.in_(list(CONN_TYPES))):
                found.setdefault(str(conn.conn_id), (str(conn.conn_type), conn.extra))
    except Exception as exc:
        notes.append(f"metadata database not read ({type(exc).__name__}); environment connections only")
    return found, notes


def _doctor(args: argparse.Namespace) -> int:
    from airflow_workload_identity.doctor import ambient_identities, check_connections

    findings = ambient_identities(probe_defaults=args.probe_defaults)
    connections, notes = _package_connections()
    checked = check_connections(connections)
    from airflow_workload_identity.doctor import secrets_backend

    backend = secrets_backend()
    if args.json:
        print(
            json.dumps(
                {
                    "identities": [f.to_dict() for f in findings],
                    "connections": checked,
                    "secrets_backend": backend,
                    "notes": notes,
                },
                indent=2,
                default=str,
            )
        )
        return 0 if all(c["valid"] for c in checked) and (backend is None or backend.get("valid", True)) else 1
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
    print("Secrets backend:")
    if backend is None:
        print("  (none configured)")
    elif not backend["package"]:
        print(f"  {backend['backend']} (not one of the package's)")
    elif not backend["valid"]:
        print(f"  {backend['backend']}: {_color('INVALID', '31')}\n    {backend['error']}")
    else:
        prefixes = ", ".join(
            f"{kind} {backend[kind + '_prefix']!r}" if backend[kind + "_prefix"] else f"{kind} off"
            for kind in ("connections", "variables", "config")
        )
        print(f"  {backend['backend']}: {_color('valid', '32')}, reads as {backend['reads_as']}; {prefixes}")
        print(f"    (run '{PROG} whoami --secrets-backend' to request its token and see who it is now)")
    for note in notes:
        print(f"  note: {note}")
    ok = all(c["valid"] for c in checked) and (backend is None or backend.get("valid", True))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=_plain(__doc__ or ""), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on an unexpected error, print the Python traceback too"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("whoami", _whoami, "resolve every hop and print who the connection becomes"),
        ("explain", _explain, "verify every hop now; say which one fails and how to fix it"),
        ("policy", _policy, "print what must be granted for this connection, from the running identity"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument(
            "conn_id",
            nargs="?" if name == "whoami" else None,
            help="the Airflow connection id (of type aws_, gcp_ or azure_workload_identity)",
        )
        if name == "whoami":
            sub.add_argument(
                "--secrets-backend",
                action="store_true",
                help="also (or, without CONN_ID, only) who the configured [secrets] backend reads secrets as",
            )
        if name == "policy":
            sub.add_argument(
                "--format",
                choices=("text", "json", "shell"),
                default="text",
                help="text for people, json for programs, shell for the commands to run",
            )
        else:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("whoami", "policy"):
            sub.add_argument(
                "--as",
                dest="as_identity",
                metavar="IDENTITY",
                help="from a laptop, no cloud call: start from this identity instead of the running one, the "
                "deployment's workload identity as the Astro UI shows it (Deployment > Details > Workload "
                "Identity): an IAM role ARN (AWS), a service-account e-mail (GCP), a client id (Azure)",
            )
        sub.set_defaults(run=run)
    doctor_text = "ambient identities, token claims, endpoints, connections"
    doctor = commands.add_parser(
        "doctor",
        help=doctor_text,
        description="Show the ambient identities of this process (the deployment's workload identity to paste "
        "into the cloud), the claims of projected tokens, which endpoints answer, and which connections of "
        "the package's types are valid. No token is requested.",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--probe-defaults",
        action="store_true",
        help="also probe link-local metadata endpoints not named by the environment",
    )
    doctor.set_defaults(run=_doctor)
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return Exit.INTERRUPTED
    conn_id = getattr(args, "conn_id", None)
    try:
        redaction.install()  # SDK DEBUG lines on stderr pass the same redaction as task logs
        _quiet_extra_parse_errors()
        _quiet_sdk_info_logs()
        status = int(args.run(args))
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        _say(f"{PROG}: output closed before everything was written (broken pipe)")
        return Exit.BROKEN_PIPE
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return Exit.INTERRUPTED
    except Exception as exc:
        status = exit_status(exc)
        if status is Exit.INTERNAL and args.traceback:
            _say("".join(traceback.format_exception(exc)).rstrip())
        _say(error_line(exc, conn_id))
        return status


if __name__ == "__main__":
    sys.exit(main())
