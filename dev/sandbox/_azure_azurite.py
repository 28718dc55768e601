"""Azurite's Blob service for the Azure sandbox: project-local install (``npm ci``) and the process.

The npm package is pinned in ``dev/sandbox/azurite/package.json`` + ``package-lock.json``; ``node_modules``
is git-ignored and installed here on first use (a clean clone, CI), under a file lock so that parallel
sandboxes do not install twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from ._azure_tls import TlsMaterial

log = logging.getLogger(__name__)

AZURITE_DIR = Path(__file__).resolve().parent / "azurite"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's well-known development account key (public, documented; not a secret)
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
NPM_CI_FLAGS = ("--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", "--no-progress")
_STAMP = ".awi-installed"
_READY = re.compile(r"successfully listens on (https?)://127\.0\.0\.1:(\d+)")


def _required_version() -> str:
    return str(json.loads((AZURITE_DIR / "package.json").read_text())["dependencies"]["azurite"])


def _installed_version() -> str | None:
    try:
        return str(json.loads((AZURITE_DIR / "node_modules" / "azurite" / "package.json").read_text())["version"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _install_stamp() -> str:
    """What a complete install of the pinned lock file leaves in ``node_modules/.awi-installed``."""
    lock_digest = hashlib.sha256((AZURITE_DIR / "package-lock.json").read_bytes()).hexdigest()
    return f"azurite {_required_version()} lock {lock_digest}\n"


def is_installed() -> bool:
    """True once ``npm ci`` completed for the committed lock file (an interrupted install does not count)."""
    try:
        return (AZURITE_DIR / "node_modules" / _STAMP).read_text() == _install_stamp()
    except FileNotFoundError:
        return False


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the Azure sandbox needs Node.js (node) on PATH to run Azurite")
    return node


def ensure_installed(timeout: float = 600.0) -> float:
    """Install Azurite with ``npm ci`` unless the pinned version is already there.

    Returns the seconds spent installing (0.0 when nothing was done)."""
    required = _required_version()
    if is_installed():
        return 0.0
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("Azurite is not installed and npm is not on PATH (run: npm ci --prefix dev/sandbox/azurite)")
    lock_path = AZURITE_DIR / ".install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_installed():  # another process installed it meanwhile
                return 0.0
            started = time.monotonic()
            log.warning("installing Azurite %s (npm ci --prefix %s)", required, AZURITE_DIR)
            result = subprocess.run(
                [npm, "ci", "--prefix", str(AZURITE_DIR), *NPM_CI_FLAGS],
                cwd=AZURITE_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            elapsed = time.monotonic() - started
            if result.returncode != 0 or _installed_version() != required:
                output = result.stdout[-2000:] + result.stderr[-4000:]
                raise RuntimeError(f"npm ci for Azurite failed (exit {result.returncode}):\n{output}")
            (AZURITE_DIR / "node_modules" / _STAMP).write_text(_install_stamp())
            log.warning("installed Azurite %s in %.1f s", required, elapsed)
            return elapsed
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class AzuriteBlob:
    """``azurite-blob`` over https with ``--oauth basic``, in memory, on a free loopback port."""

    def __init__(self, tls: TlsMaterial, work_dir: Path, port: int = 0) -> None:
        self.tls = tls
        self.work_dir = work_dir
        self.requested_port = port
        self.port = 0
        self.install_seconds = 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` of Azurite itself (no RBAC): seeding and inspection only."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def account_url(self) -> str:
        return f"{self.url}/{ACCOUNT_NAME}"

    def start(self, timeout: float = 60.0) -> None:
        self.install_seconds = ensure_installed()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            node_executable(),
            str(AZURITE_DIR / "run-blob.js"),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.requested_port),
            "--oauth",
            "basic",
            "--cert",
            str(self.tls.server_cert),
            "--key",
            str(self.tls.server_key),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURITE_", "NODE_OPTIONS"))}
        self._proc = subprocess.Popen(
            command,
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        ready = threading.Event()

        def _read() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                self._output.append(line.rstrip())
                match = _READY.search(line)
                if match and not ready.is_set():
                    if match.group(1) == "https":
                        self.port = int(match.group(2))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=_read, name="azure-sandbox-azurite-output", daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.port == 0:
            output = "\n".join(self._output)
            self.stop()
            raise RuntimeError(f"Azurite did not start within {timeout:.0f} s (exit {self.returncode}):\n{output}")

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def output(self) -> list[str]:
        return list(self._output)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # closing stdin makes run-blob.js exit at once; SIGTERM would wait for keep-alive connections to close
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for signal_process in (None, proc.terminate, proc.kill):
            if signal_process is not None:
                signal_process()
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
