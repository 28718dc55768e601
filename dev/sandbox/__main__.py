"""Run the AWS sandbox (and optionally the GCP one) as its own process.

    python -m dev.sandbox start  [--state-file PATH] [--clouds aws,gcp] [--port N] [--pod-identity-port N] [--timeout S]
    python -m dev.sandbox status [--state-file PATH]
    python -m dev.sandbox env    [--state-file PATH] {irsa,pod-identity,default-chain,gcp,azure,azure-imds}
    python -m dev.sandbox stop   [--state-file PATH]
    python -m dev.sandbox serve  [--state-file PATH] [--clouds aws,gcp] [--port N] [--pod-identity-port N]  (foreground)

``--clouds`` (alias ``--cloud``) defaults to ``aws``. With ``gcp`` the state file also has a ``gcp`` object
(metadata host, IAM endpoint, GCS host, scenario, env, the google-auth module constants to patch); ``--gcp-*-port``
pick its ports. With only ``gcp`` the AWS keys are absent. With ``azure`` it has an ``azure`` object (fake IMDS,
Entra authority host, RBAC-fronted Azurite blob URL, CA bundle, token file, scenario, env; Azurite is
``npm ci``-installed before the readiness wait); ``env azure`` / ``env azure-imds`` print its variables.

``start`` spawns ``serve`` in its own session, waits until it has written the state file (JSON: pid,
endpoint_url, pod_identity_url, token files, scenario names and ARNs, user keys, ready-made env dicts)
and prints that file. A ``serve`` that fails to come up is killed and its state file removed. ``stop``
sends SIGTERM to the recorded pid (SIGKILL after a grace period) and removes what it left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_FILE = Path(tempfile.gettempdir()) / "awi-aws-sandbox" / "state.json"
TOKEN_REFRESH_SECONDS = 600
CLOUDS = ("aws", "gcp", "azure")


def _clouds(value: str) -> list[str]:
    clouds = [c.strip().lower() for c in value.split(",") if c.strip()]
    unknown = [c for c in clouds if c not in CLOUDS]
    if unknown or not clouds:
        raise argparse.ArgumentTypeError(f"clouds must be a comma list of {', '.join(CLOUDS)}; got {value!r}")
    return list(dict.fromkeys(clouds))


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    """Running (not a zombie) and one of ours: a ``dev.sandbox serve`` process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return "dev.sandbox" in cmdline and "serve" in cmdline
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _cleanup_files(state_file: Path, state: dict[str, Any] | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_file.unlink()
    if state and state.get("tmp_dir"):
        shutil.rmtree(state["tmp_dir"], ignore_errors=True)
    if state and isinstance(state.get("gcp"), dict) and state["gcp"].get("tmp_dir"):
        shutil.rmtree(state["gcp"]["tmp_dir"], ignore_errors=True)
    if state and isinstance(state.get("azure"), dict) and state["azure"].get("tmp_dir"):
        shutil.rmtree(state["azure"]["tmp_dir"], ignore_errors=True)


# --- commands ----------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    with contextlib.ExitStack() as stack:

        @stack.callback
        def _remove_state() -> None:
            current = _read_state(state_file)
            if current is not None and current.get("pid") == os.getpid():
                _cleanup_files(state_file, current)
            print(f"{'+'.join(args.clouds)} sandbox stopped", flush=True)

        state: dict[str, Any] = {"pid": os.getpid(), "started_at": time.time(), "clouds": args.clouds}
        sb = None
        gcp = None
        if "aws" in args.clouds:
            from .aws import AwsSandbox

            sb = AwsSandbox.start(port=args.port, pod_identity_port=args.pod_identity_port)
            stack.callback(sb.stop)
            token_file = sb.write_web_identity_token()
            state.update({"tmp_dir": str(sb.tmp_dir), **sb.describe()})
            state["web_identity_token_file"] = str(token_file)
        if "gcp" in args.clouds:
            from .gcp import GcpSandbox

            gcp = GcpSandbox.start(
                metadata_port=args.gcp_metadata_port, iam_port=args.gcp_iam_port, storage_port=args.gcp_storage_port
            )
            stack.callback(gcp.stop)
            state["gcp"] = gcp.describe()
            print(
                f"gcp sandbox ready: metadata {gcp.metadata_host}, iam {gcp.iam_endpoint}, gcs {gcp.storage_host}",
                flush=True,
            )

        azure = None
        if "azure" in args.clouds:
            from .azure import AzureSandbox

            azure = AzureSandbox.start()
            stack.callback(azure.stop)
            azure.write_sa_token()
            state["azure"] = {"tmp_dir": str(azure.tmp_dir), **azure.describe()}
            print(
                f"azure sandbox ready: imds {azure.imds_url}, entra {azure.authority_host}, "
                f"blob {azure.blob_account_url}",
                flush=True,
            )

        if sb is not None and gcp is not None and azure is not None:
            # across clouds, as docs/cross-cloud.md sets it up: the customer's AWS account trusts the GKE pod's
            # Google service account and the AKS workload identity (roles reading bucket A)
            from ._fed_aws_trust import seed_federated_readers

            state["federation"] = {"aws_roles": seed_federated_readers(sb, gcp, azure)}

        _write_state(state_file, state)
        if sb is not None:
            print(f"aws sandbox ready: {sb.endpoint_url} (pod identity {sb.pod_identity_url})", flush=True)
        # kubelet rotates projected tokens; keep the demo's IRSA token fresh the same way
        while not stop.wait(TOKEN_REFRESH_SECONDS):
            if sb is not None:
                sb.write_web_identity_token(token_file)
            if azure is not None:
                azure.write_sa_token()
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    existing = _read_state(state_file)
    if existing is not None:
        if _alive(int(existing.get("pid", 0))):
            print(f"already running (pid {existing['pid']}); state in {state_file}", file=sys.stderr)
            return 1
        _cleanup_files(state_file, existing)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    if "azure" in args.clouds:  # npm ci on first use, outside the readiness timeout
        from ._azure_azurite import ensure_installed

        ensure_installed()
    log_path = state_file.with_suffix(".log")
    command = [
        sys.executable,
        "-m",
        "dev.sandbox",
        "serve",
        "--state-file",
        str(state_file),
        "--port",
        str(args.port),
        "--pod-identity-port",
        str(args.pod_identity_port),
        "--clouds",
        ",".join(args.clouds),
        "--gcp-metadata-port",
        str(args.gcp_metadata_port),
        "--gcp-iam-port",
        str(args.gcp_iam_port),
        "--gcp-storage-port",
        str(args.gcp_storage_port),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = _read_state(state_file)
        if state is not None and state.get("pid") == child.pid:
            print(json.dumps(state, indent=2, sort_keys=True))
            return 0
        if child.poll() is not None:
            break
        time.sleep(0.05)
    # failed: leave nothing running
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)
    _cleanup_files(state_file, _read_state(state_file))
    tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
    print(f"sandbox did not start (exit {child.returncode}); log {log_path}:\n{tail}", file=sys.stderr)
    return 1


def cmd_stop(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    state = _read_state(state_file)
    if state is None:
        print("not running (no state file)")
        return 0
    pid = int(state.get("pid", 0))
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, args.timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
    _cleanup_files(state_file, state)
    if pid and _alive(pid):
        print(f"pid {pid} is still running", file=sys.stderr)
        return 1
    print(f"stopped (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _read_state(Path(args.state_file))
    running = state is not None and _alive(int(state.get("pid", 0)))
    print(json.dumps({"running": running, **(state or {})}, indent=2, sort_keys=True))
    return 0 if running else 1


def cmd_env(args: argparse.Namespace) -> int:
    state = _read_state(Path(args.state_file))
    if state is None or not _alive(int(state.get("pid", 0))):
        print("not running", file=sys.stderr)
        return 1
    if args.kind == "gcp":
        if "gcp" not in state:
            print("the running sandbox has no gcp (start it with --clouds aws,gcp or --clouds gcp)", file=sys.stderr)
            return 1
        gcp_env = state["gcp"]["env"]
        env = {**gcp_env["isolation"], **gcp_env["gke"], **gcp_env["storage"]}
    elif args.kind.startswith("azure"):
        if "azure" not in state:
            print("the running sandbox has no azure (start it with --clouds azure)", file=sys.stderr)
            return 1
        azure_env = state["azure"]["env"]
        env = {**azure_env["tls"], **azure_env["imds" if args.kind == "azure-imds" else "workload_identity"]}
    elif "env" not in state:
        print("the running sandbox has no aws (start it with --clouds aws)", file=sys.stderr)
        return 1
    else:
        env = {**state["env"]["isolation"], **state["env"][args.kind.replace("-", "_")]}
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.sandbox",
        description="Local cloud sandboxes (AWS: moto + fakes; GCP: fakes + GCS emulator).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--state-file", default=str(DEFAULT_STATE_FILE), help=f"default {DEFAULT_STATE_FILE}")
        return p

    for name, help_text in (("start", "start in the background"), ("serve", "run in the foreground")):
        p = add(name, help_text)
        p.add_argument("--port", type=int, default=0, help="moto port (0: free port)")
        p.add_argument("--pod-identity-port", type=int, default=0, help="Pod Identity agent port (0: free)")
        p.add_argument(
            "--clouds", "--cloud", type=_clouds, default=["aws"], help="comma list of aws,gcp,azure (default: aws)"
        )
        for server in ("metadata", "iam", "storage"):
            p.add_argument(f"--gcp-{server}-port", type=int, default=0, help=f"GCP {server} fake port (0: free)")
        if name == "start":
            p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness")
    add("stop", "stop a started sandbox").add_argument("--timeout", type=float, default=10.0)
    add("status", "print the state; exit 1 if not running")
    add("env", "print export lines for a pod identity").add_argument(
        "kind", choices=["irsa", "pod-identity", "default-chain", "gcp", "azure", "azure-imds"]
    )
    args = parser.parse_args(argv)
    handlers = {"serve": cmd_serve, "start": cmd_start, "stop": cmd_stop, "status": cmd_status, "env": cmd_env}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
