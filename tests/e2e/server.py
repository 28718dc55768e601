"""A real ``airflow api-server`` (Airflow 3.3, SQLite, SimpleAuthManager) in its own process group, and a
small client for its REST API (REFERENCE 1.8, 1.10)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox

USERNAME = "e2e-admin"
PASSWORD = "e2e-" + secrets.token_hex(8)
STARTUP_TIMEOUT = 90.0  # for db migrate, and again for the api-server's first healthy answer
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Not passed on from the test process: its Airflow settings (tests/conftest.py) and any ambient identity.
DROPPED_PREFIXES = ("AIRFLOW", "AWS_", "AZURE_", "GOOGLE_", "GCE_", "IDENTITY_", "MSI_", "IMDS_", "CLOUDSDK_")


@dataclass
class Cloud:
    """The sandboxes and the environment of a pod whose identity they know (IRSA, GKE, AKS)."""

    aws: AwsSandbox
    gcp: GcpSandbox
    azure: AzureSandbox
    env: dict[str, str]


class ServerError(RuntimeError):
    pass


class ApiError(AssertionError):
    pass


@dataclass
class ApiServer:
    base_url: str
    home: Path
    log: Path
    _token: str | None = None

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (SimpleAuthManager answers 201)."""
        if self._token is None:
            body = {"username": USERNAME, "password": PASSWORD}
            status, payload = self._call("POST", "/auth/token", body, auth=False)
            if status not in (200, 201):
                raise ApiError(f"POST /auth/token -> {status}: {payload}")
            self._token = str(payload["access_token"])
        return self._token

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, method=method)
        request.add_header("Accept", "application/json")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, data, timeout=60) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None

    def request(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, payload = self._call(method, path, body)
        if status != expect:
            raise ApiError(f"{method} {path} -> {status}, expected {expect}: {payload}")
        return payload

    def create_connection(self, conn_id: str, conn_type: str, extra: Mapping[str, Any], **fields: Any) -> None:
        body = {"connection_id": conn_id, "conn_type": conn_type, "extra": json.dumps(extra), **fields}
        self.request("POST", "/api/v2/connections", body, expect=201)

    def connection(self, conn_id: str) -> dict[str, Any]:
        """``GET /api/v2/connections/{id}`` with the extra decoded (the API returns it as a JSON string)."""
        conn: dict[str, Any] = self.request("GET", f"/api/v2/connections/{conn_id}")
        conn["extra"] = json.loads(conn["extra"]) if conn["extra"] else None
        return conn

    def test_connection(self, conn_id: str) -> dict[str, Any]:
        """``POST /api/v2/connections/test`` for a stored connection, as the UI's Test button does but
        without ``port`` (the 3.3.2 UI sends ``port: 0`` for a NULL port, which the API refuses with 400).
        The hook runs inside the api-server, with the api-server's identity."""
        stored = self.request("GET", f"/api/v2/connections/{conn_id}")
        body = {"connection_id": conn_id, "conn_type": stored["conn_type"], "extra": stored["extra"]}
        result: dict[str, Any] = self.request("POST", "/api/v2/connections/test", body)
        return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_command() -> str:
    beside = Path(sys.executable).with_name("airflow")
    found = str(beside) if beside.exists() else shutil.which("airflow")
    if not found:
        raise ServerError("the airflow command is not installed in this environment")
    return found


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (uvicorn and its worker), SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # the leader's children, or the leader itself if stuck
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def server_env(home: Path, pod_env: Mapping[str, str]) -> dict[str, str]:
    """The api-server's environment: this process's minus Airflow and cloud settings, plus the pod's
    identity (``pod_env``) and a fresh Airflow home on SQLite with one admin user."""
    from cryptography.fernet import Fernet

    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({USERNAME: PASSWORD}))
    (home / "dags").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
    env.update(pod_env)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # The GCP connection's iam_endpoint_url is the sandbox's loopback IAM Credentials API.
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
        }
    )
    return env


@contextlib.contextmanager
def run_api_server(home: Path, pod_env: Mapping[str, str], log: Path) -> Iterator[ApiServer]:
    """``airflow db migrate``, then ``airflow api-server`` on a free loopback port until healthy; the
    server's process group is stopped on exit, whatever happened."""
    env = server_env(home, pod_env)
    airflow = airflow_command()
    with log.open("ab") as out:
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=STARTUP_TIMEOUT
        )
    if migrate.returncode != 0:
        raise ServerError(f"airflow db migrate failed ({migrate.returncode}):\n{tail(log)}")

    base_url = f"http://127.0.0.1:{free_port()}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [airflow, "api-server", "-H", "127.0.0.1", "-p", base_url.rsplit(":", 1)[1], "-w", "1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(base_url):
            if process.poll() is not None:
                raise ServerError(f"the api-server exited with {process.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise ServerError(f"no healthy answer from the api-server in {STARTUP_TIMEOUT:.0f} s:\n{tail(log)}")
            time.sleep(0.5)
        yield ApiServer(base_url=base_url, home=home, log=log)
    finally:
        stop(process)


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5) as response:
            return bool(json.loads(response.read())["metadatabase"]["status"] == "healthy")
    except (OSError, ValueError, KeyError):
        return False
