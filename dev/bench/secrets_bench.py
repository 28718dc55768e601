"""Benchmark: requests per secret read, this package's secrets backends against the official ones.

Everything runs in this process against the local sandboxes (moto with IAM enforced; the fake GKE metadata
server, IAM Credentials and Secret Manager API; Entra and the Key Vault over https), from the same pod
identity, reading the same secrets as the same target identity. Counted by the sandboxes themselves:
token requests (STS, metadata + IAM Credentials, Entra) and data requests (GetSecretValue, ``:access``,
Key Vault GETs, bearer challenges apart). Two patterns:

* one backend object, ``--reads`` reads of existing variables and one of a missing one;
* ``--objects`` backend objects built one after the other, one read each (Airflow builds the backend in
  every process that reads a secret; within a process the package shares one token per identity).

Official backends: ``SecretsManagerBackend`` with ``role_arn`` (it assumes the role itself, from the same
web identity); ``CloudSecretManagerBackend`` with ``impersonation_chain`` (its gRPC client patched to the
REST transport and the sandbox's endpoint, google-auth's IAM endpoints pointed at the sandbox);
``AzureKeyVaultBackend`` with ``managed_identity_client_id``/``workload_identity_tenant_id`` and
``verify_challenge_resource=False``. Results are printed as Markdown.

    uv run python dev/bench/secrets_bench.py [--reads 10] [--objects 5]

A measurement, not a test: nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow  # noqa: E402

isolate_airflow(AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS="127.0.0.1")

Row = tuple[str, str, int, int]  # (backend, pattern, token requests, data requests)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure(
    name: str,
    build: Callable[[], Any],
    counters: Callable[[], tuple[int, int]],
    reset: Callable[[], None],
    reads: int,
    objects: int,
) -> list[Row]:
    from airflow_workload_identity.registry import REGISTRY

    rows: list[Row] = []
    REGISTRY.clear()
    reset()
    backend = build()
    for _ in range(reads):
        assert backend.get_variable("greeting")
    assert backend.get_variable("absent") is None
    tokens, data = counters()
    rows.append((name, f"1 object, {reads} reads + 1 missing", tokens, data))
    REGISTRY.clear()
    reset()
    for _ in range(objects):
        assert build().get_variable("greeting")
    tokens, data = counters()
    rows.append((name, f"{objects} objects, 1 read each", tokens, data))
    return rows


def bench_aws(reads: int, objects: int) -> list[Row]:
    from dev.sandbox import AwsSandbox

    rows: list[Row] = []
    with AwsSandbox.start() as sb, tempfile.TemporaryDirectory() as tmp:
        sc = sb.scenario
        token = sb.write_web_identity_token(Path(tmp) / "token")
        sm = sb.admin_client("secretsmanager", sc.customer_account)
        sm.create_secret(Name="airflow/variables/greeting", SecretString="hello")
        with environ({**sb.env_isolation(), **sb.env_irsa(token)}):
            from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend as Official

            from airflow_workload_identity.aws.secrets import SecretsManagerBackend

            def counters() -> tuple[int, int]:
                return sb.calls(), sum(sb.api_calls().values())

            def reset() -> None:
                sb.reset_calls()
                sb.reset_api_calls()

            kwargs: dict[str, Any] = {"role_arn": sc.customer_reader_role_arn, "region_name": sb.region}
            rows += measure(
                "AWS: this package", lambda: SecretsManagerBackend(**kwargs), counters, reset, reads, objects
            )
            rows += measure("AWS: official", lambda: Official(**kwargs), counters, reset, reads, objects)
    return rows


def bench_gcp(reads: int, objects: int) -> list[Row]:
    from dev.sandbox import GcpSandbox

    rows: list[Row] = []
    with GcpSandbox.start() as sb:
        sc = sb.scenario
        project = sc.customer_project
        sb.secret_manager.add_secret(project, "airflow-variables-greeting", "hello")
        sb.secret_manager.grant(sc.reader_sa, project, "airflow-*")
        with contextlib.ExitStack() as stack:
            stack.enter_context(environ({**sb.env(), "GOOGLE_CLOUD_PROJECT": project}))
            for module, attribute, value in sb.google_auth_patches():
                mod = importlib.import_module(module)
                stack.callback(setattr, mod, attribute, getattr(mod, attribute))
                setattr(mod, attribute, value)
            stack.enter_context(sb.patch_google_auth_iam_endpoints())
            from airflow.providers.google.cloud._internal_client import secret_manager_client as client_module
            from airflow.providers.google.cloud.secrets.secret_manager import CloudSecretManagerBackend
            from google.cloud.secretmanager_v1 import SecretManagerServiceClient

            from airflow_workload_identity.gcp.secrets import SecretManagerBackend

            original = getattr(client_module, "SecretManagerServiceClient")  # noqa: B009
            rest = functools.partial(
                SecretManagerServiceClient,
                transport="rest",
                client_options={"api_endpoint": sb.secret_manager_endpoint},
            )
            setattr(client_module, "SecretManagerServiceClient", rest)  # noqa: B010
            stack.callback(setattr, client_module, "SecretManagerServiceClient", original)

            def counters() -> tuple[int, int]:
                return sb.calls("metadata") + sb.calls("iam"), sb.secret_manager.calls()

            def reset() -> None:
                sb.reset_calls()
                sb.secret_manager.reset_calls()

            ours: dict[str, Any] = {
                "impersonation_chain": sc.reader_sa,
                "iam_endpoint_url": sb.iam_endpoint,
                "secret_manager_endpoint_url": sb.secret_manager_endpoint,
            }
            rows += measure("GCP: this package", lambda: SecretManagerBackend(**ours), counters, reset, reads, objects)
            official: dict[str, Any] = {
                "project_id": project,
                "impersonation_chain": sc.reader_sa,
                "gcp_scopes": "https://www.googleapis.com/auth/cloud-platform",
            }
            rows += measure(
                "GCP: official", lambda: CloudSecretManagerBackend(**official), counters, reset, reads, objects
            )
    return rows


def bench_azure(reads: int, objects: int) -> list[Row]:
    from dev.sandbox import AzureSandbox

    rows: list[Row] = []
    with AzureSandbox.start(azurite=False) as sb, tempfile.TemporaryDirectory() as tmp:
        sc = sb.scenario
        token_file = Path(tmp) / "sa-token"
        sb.write_sa_token(token_file)
        sb.key_vault.set_secret("airflow-variables-greeting", "hello")
        sb.key_vault.grant(sc.workload_object_id, "airflow-*")
        with environ({**sb.env_isolation(), **sb.env_workload_identity(token_file)}):
            from airflow.providers.microsoft.azure.secrets.key_vault import AzureKeyVaultBackend

            from airflow_workload_identity.azure.secrets import KeyVaultBackend

            def counters() -> tuple[int, int]:
                by_status = sb.key_vault.calls_by_status()
                return sb.calls("entra"), sum(v for k, v in by_status.items() if k != "401")

            def reset() -> None:
                sb.reset_calls()
                sb.key_vault.reset_calls()

            ours: dict[str, Any] = {
                "vault_url": sb.key_vault.url,
                "client_id": sc.workload_client_id,
                "tenant_id": sc.tenant_id,
            }
            rows += measure("Azure: this package", lambda: KeyVaultBackend(**ours), counters, reset, reads, objects)
            official_kv: dict[str, Any] = {
                "vault_url": sb.key_vault.url,
                "managed_identity_client_id": sc.workload_client_id,
                "workload_identity_tenant_id": sc.tenant_id,
                "verify_challenge_resource": False,
            }
            rows += measure(
                "Azure: official", lambda: AzureKeyVaultBackend(**official_kv), counters, reset, reads, objects
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=10)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [
        *bench_aws(args.reads, args.objects),
        *bench_gcp(args.reads, args.objects),
        *bench_azure(args.reads, args.objects),
    ]
    if args.json:
        print(json.dumps([dict(zip(("backend", "pattern", "tokens", "data"), r, strict=True)) for r in rows]))
        return
    print("| Backend | Pattern | Token requests | Secret requests |")
    print("|---|---|---:|---:|")
    for name, pattern, tokens, data in rows:
        print(f"| {name} | {pattern} | {tokens} | {data} |")


if __name__ == "__main__":
    main()
