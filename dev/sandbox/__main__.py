"""Run the AWS sandbox as its own process.

    python -m dev.sandbox start  [--state-file PATH] [--port N] [--pod-identity-port N] [--timeout S]
    python -m dev.sandbox status [--state-file PATH]
    python -m dev.sandbox env    [--state-file PATH] {irsa,pod-identity,default-chain}
    python -m dev.sandbox stop   [--state-file PATH]
    python -m dev.sandbox serve  [--state-file PATH] [--port N] [--pod-identity-port N]   (foreground)

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


# --- commands ----------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .aws import AwsSandbox

    state_file = Path(args.state_file)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    sb = AwsSandbox.start(port=args.port, pod_identity_port=args.pod_identity_port)
    try:
        token_file = sb.write_web_identity_token()
        state = {"pid": os.getpid(), "started_at": time.time(), "tmp_dir": str(sb.tmp_dir), **sb.describe()}
        state["web_identity_token_file"] = str(token_file)
        _write_state(state_file, state)
        print(f"aws sandbox ready: {sb.endpoint_url} (pod identity {sb.pod_identity_url})", flush=True)
        # kubelet rotates projected tokens; keep the demo's IRSA token fresh the same way
        while not stop.wait(TOKEN_REFRESH_SECONDS):
            sb.write_web_identity_token(token_file)
    finally:
        sb.stop()
        current = _read_state(state_file)
        if current is not None and current.get("pid") == os.getpid():
            _cleanup_files(state_file, current)
        print("aws sandbox stopped", flush=True)
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
    print(f"aws sandbox did not start (exit {child.returncode}); log {log_path}:\n{tail}", file=sys.stderr)
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
    env = {**state["env"]["isolation"], **state["env"][args.kind.replace("-", "_")]}
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.sandbox", description="Local AWS sandbox (moto + fakes).")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--state-file", default=str(DEFAULT_STATE_FILE), help=f"default {DEFAULT_STATE_FILE}")
        return p

    for name, help_text in (("start", "start in the background"), ("serve", "run in the foreground")):
        p = add(name, help_text)
        p.add_argument("--port", type=int, default=0, help="moto port (0: free port)")
        p.add_argument("--pod-identity-port", type=int, default=0, help="Pod Identity agent port (0: free)")
        if name == "start":
            p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness")
    add("stop", "stop a started sandbox").add_argument("--timeout", type=float, default=10.0)
    add("status", "print the state; exit 1 if not running")
    add("env", "print export lines for a pod identity").add_argument(
        "kind", choices=["irsa", "pod-identity", "default-chain"]
    )
    args = parser.parse_args(argv)
    handlers = {"serve": cmd_serve, "start": cmd_start, "stop": cmd_stop, "status": cmd_status, "env": cmd_env}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
