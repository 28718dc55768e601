"""The demo: a customer's S3 bucket read from Airflow through the pod's workload identity, no secret.

Starts the local AWS sandbox, configures Airflow on SQLite in a scratch home (``.demo/``), creates
``aws_workload_identity`` connections with the Airflow CLI, prints ``whoami`` and ``policy``, runs the
example DAG with ``airflow dags test`` and checks every task succeeded. Stops everything it started,
also on failure. Run it with ``bash dev/demo.sh``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"
STATE = WORK / "sandbox.json"
DAG_IDS = ("wi_aws_demo", "wi_gcp_demo", "wi_azure_demo", "wi_cross_cloud_demo")
FACTORY = "airflow_workload_identity.aws.interop.WorkloadIdentitySessionFactory"


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m", flush=True)


def run(cmd: list[str], env: dict[str, str], *, check: bool = True, timeout: int = 600) -> str:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        print(output)
        raise SystemExit(f"demo failed: {' '.join(cmd)} exited {proc.returncode}")
    return output


def demo_env(state: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_", "AIRFLOW__"))}
    home = WORK / "airflow-home"
    env.update(state["env"]["isolation"])
    env.update(state["env"]["irsa"])  # the pod's identity: IRSA, as on EKS
    for group in state["gcp"]["env"].values():  # ... and GKE Workload Identity's metadata server
        env.update(group)
    for group in state["azure"]["env"].values():  # ... and AKS workload identity (and the test CA)
        env.update(group)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dev" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__AWS__SESSION_FACTORY": FACTORY,
            # The sandbox's endpoints are on loopback: connections may only override endpoints to allowed hosts.
            "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS": "127.0.0.1",
            # One token per identity for all the demo's processes (the host credential cache), kept in the demo's home.
            "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR": str(home / "credential-cache"),
            # Only Airflow's own "Could not import graphviz" (`dags test` renders the DAG when graphviz is
            # installed; it is no dependency here). Every other warning shows: there is none when nothing is
            # wrong (tests/airflow/test_quiet.py).
            "PYTHONWARNINGS": "ignore:Could not import graphviz",
        }
    )
    return env


def connections(state: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    sc, gc = state["scenario"], state["gcp"]["scenario"]
    iam = state["gcp"]["iam_endpoint"]
    aws = {
        "customer_reader": {
            "role_arn": sc["customer_reader_role_arn"],
            "expected_account_ids": [sc["customer_account"]],
            "session_tags": {"team": "data-platform", "dag": "{dag_id}"},
            "source_identity": "{dag_id}.{task_id}",
        },
        "customer_chain": {
            "role_chain": [sc["customer_hop_role_arn"]],
            "role_arn": sc["customer_reader_chained_role_arn"],
            "duration_seconds": 900,
        },
        "customer_external": {"role_arn": sc["customer_external_role_arn"], "external_id": sc["external_id"]},
        "customer_untrusting": {"role_arn": sc["customer_untrusting_role_arn"]},
    }
    gcp = {
        "customer_gcs": {"impersonation_chain": [gc["reader_sa"]], "iam_endpoint_url": iam},
        "customer_gcs_chain": {
            "impersonation_chain": [gc["hop_sa"], gc["chained_reader_sa"]],
            "iam_endpoint_url": iam,
            "expected_principal": gc["chained_reader_sa"],
        },
        "customer_gcs_no_creator": {"impersonation_chain": [gc["no_creator_sa"]], "iam_endpoint_url": iam},
    }
    azure = {
        "customer_blob": {
            "scopes": ["https://storage.azure.com/.default"],
            "identity_name": state["azure"]["scenario"]["workload_identity_name"],
            "resource_group": state["azure"]["scenario"]["resource_group"],
        },
        "customer_blob_wrong_client": {"client_id": "99999999-9999-9999-9999-999999999999"},
    }
    # Across clouds: the same pod reaches the customer's AWS account as its GKE service account (a Google ID
    # token as the web identity), with no AWS identity of its own involved (docs/cross-cloud.md).
    aws["customer_s3_from_gke"] = {"source": "gcp", "role_arn": state["federation"]["aws_roles"]["gcp"]}
    return {
        **{k: ("aws_workload_identity", v) for k, v in aws.items()},
        **{k: ("gcp_workload_identity", v) for k, v in gcp.items()},
        **{k: ("azure_workload_identity", v) for k, v in azure.items()},
    }


LOCAL_SETTINGS = """\
# Written by the demo: every Airflow process of this home gives the official Google and Azure hooks the
# package's shared credentials on *_workload_identity connections (docs/gcp.md, docs/azure.md).
from airflow_workload_identity.azure.interop import install as install_azure
from airflow_workload_identity.gcp.interop import install as install_gcp

install_gcp()
install_azure()
"""


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    python = sys.executable
    airflow = [python, "-m", "airflow"]
    started = False
    try:
        banner(
            "Starting the local cloud on 127.0.0.1: AWS (moto with IAM enforcement, EKS OIDC) and GCP (GKE metadata, "
            "IAM Credentials, GCS)"
        )
        subprocess.run(
            [python, "-m", "dev.sandbox", "start", "--clouds", "aws,gcp,azure", "--state-file", str(STATE)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        started = True
        state = json.loads(STATE.read_text())
        env = demo_env(state)
        print(f"AWS: {state['endpoint_url']}; pod identity: IRSA as {state['env']['irsa']['AWS_ROLE_ARN']}")
        print(f"GCP: metadata {state['gcp']['metadata_host']}; pod identity: {state['gcp']['scenario']['source_sa']}")
        print(f"Azure: Entra {state['azure']['authority_host']}; storage {state['azure']['blob_account_url']}")
        config = WORK / "airflow-home" / "config"
        config.mkdir(parents=True)
        (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)

        banner("Airflow on SQLite in a scratch home")
        run([*airflow, "db", "migrate"], env)

        banner("Connections: identifiers only, no secret")
        defined = connections(state)
        hosts = {"azure_workload_identity": {"host": state["azure"]["blob_account_url"]}}
        conn_file = WORK / "connections.json"
        conn_file.write_text(
            json.dumps(
                {
                    cid: {"conn_type": ctype, "extra": json.dumps(extra), **hosts.get(ctype, {})}
                    for cid, (ctype, extra) in defined.items()
                }
            )
        )
        run([*airflow, "connections", "import", str(conn_file)], env)
        for conn_id, (conn_type, extra) in defined.items():
            print(f"  {conn_id} ({conn_type}): {json.dumps(extra)}")

        banner("airflow-workload-identity whoami customer_chain")
        print(run([python, "-m", "airflow_workload_identity.cli", "whoami", "customer_chain"], env))
        banner("airflow-workload-identity policy customer_reader")
        print(run([python, "-m", "airflow_workload_identity.cli", "policy", "customer_reader"], env))
        banner("airflow connections test customer_external")
        print(run([*airflow, "connections", "test", "customer_external"], env))

        banner("airflow-workload-identity whoami customer_s3_from_gke (GCP -> AWS, no key)")
        print(run([python, "-m", "airflow_workload_identity.cli", "whoami", "customer_s3_from_gke"], env))

        banner("airflow-workload-identity policy customer_gcs_chain")
        print(run([python, "-m", "airflow_workload_identity.cli", "policy", "customer_gcs_chain"], env))

        failed = False
        for dag_id in DAG_IDS:
            banner(f"airflow dags test {dag_id}")
            print(run([*airflow, "dags", "test", dag_id], env, check=False))
            states = task_states(env, dag_id)
            banner(f"Result of {dag_id}")
            for task, task_state in states.items():
                print(f"  {task}: {task_state}")
            failed = failed or not states or any(s != "success" for s in states.values())
        failed = secrets_backends(state, env) or failed
        if failed:
            print("demo FAILED: not every task succeeded")
            return 1
        print(
            "demo OK: the customers' data read through the hooks and the official S3Hook / GCSHook / WasbHook (and "
            "S3 from the GKE identity, across clouds), the "
            "rest denied with the fix, untrusting roles, missing Token Creator and a wrong client id refused with "
            "what to grant; variables read from Secrets Manager, Secret Manager and Key Vault as the workload "
            "identity, a prefix it may not read refused with the grant to add."
        )
        return 0
    finally:
        if started:
            banner("Stopping the sandbox")
            subprocess.run([python, "-m", "dev.sandbox", "stop", "--state-file", str(STATE)], cwd=ROOT, timeout=60)


DENIED_READ = """\
from airflow.models import Variable
try:
    Variable.get("greeting")
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
"""


def secrets_backends(state: dict[str, Any], env: dict[str, str]) -> bool:
    """Each cloud's secrets backend as ``[secrets] backend``: a variable read as the workload identity, and
    a prefix it may not read refused with the grant to add. Returns True if a step failed."""
    import boto3

    sc, gc, ac = state["scenario"], state["gcp"]["scenario"], state["azure"]["scenario"]
    key, secret = state["admin_keys"][sc["customer_account"]]
    admin = boto3.client(
        "secretsmanager",
        endpoint_url=state["endpoint_url"],
        region_name=state["region"],
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    for name, value in {
        "airflow/variables/greeting": "hello from Secrets Manager",
        "restricted/variables/greeting": "not for the reader",
    }.items():
        admin.create_secret(Name=name, SecretString=value)
    backends = {
        "AWS Secrets Manager": (
            "airflow_workload_identity.aws.secrets.SecretsManagerBackend",
            {"role_arn": sc["customer_reader_role_arn"], "region_name": state["region"]},
            "restricted/variables",
        ),
        "Google Secret Manager": (
            "airflow_workload_identity.gcp.secrets.SecretManagerBackend",
            {
                "impersonation_chain": gc["reader_sa"],
                "iam_endpoint_url": state["gcp"]["iam_endpoint"],
                "secret_manager_endpoint_url": state["gcp"]["secret_manager_endpoint"],
            },
            "restricted-variables",
        ),
        "Azure Key Vault": (
            "airflow_workload_identity.azure.secrets.KeyVaultBackend",
            {
                "vault_url": state["azure"]["key_vault_url"],
                "client_id": ac["workload_client_id"],
                "tenant_id": ac["tenant_id"],
            },
            "restricted-variables",
        ),
    }
    failed = False
    for name, (backend, kwargs, restricted) in backends.items():
        banner(f"Secrets backend: {name} ({backend})")
        print(f"AIRFLOW__SECRETS__BACKEND_KWARGS={json.dumps(kwargs)}")
        benv = {**env, "AIRFLOW__SECRETS__BACKEND": backend, "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(kwargs)}
        value = run([sys.executable, "-m", "airflow", "variables", "get", "greeting"], benv, check=False).strip()
        print(f"airflow variables get greeting -> {value.splitlines()[-1] if value else '(nothing)'}")
        denied_kwargs = {**kwargs, "variables_prefix": restricted}
        benv["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps(denied_kwargs)
        print(f"with variables_prefix={restricted!r}:")
        refused = run([sys.executable, "-c", DENIED_READ], benv, check=False)
        print(refused)
        failed = failed or "hello from" not in value or "AccessDenied" not in refused
    return failed


def task_states(env: dict[str, str], dag_id: str) -> dict[str, str]:
    runs = json.loads(
        run([sys.executable, "-m", "airflow", "dags", "list-runs", dag_id, "-o", "json"], env).strip().splitlines()[-1]
    )
    if not runs:
        return {}
    run_id = runs[0]["run_id"]
    rows = json.loads(
        run([sys.executable, "-m", "airflow", "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"], env)
        .strip()
        .splitlines()[-1]
    )
    return {row["task_id"]: row["state"] for row in rows}


if __name__ == "__main__":
    sys.exit(main())
