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
DAG_ID = "wi_aws_demo"
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
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dev" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__AWS__SESSION_FACTORY": FACTORY,
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def connections(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sc = state["scenario"]
    return {
        "customer_reader": {
            "role_arn": sc["customer_reader_role_arn"],
            "expected_account_ids": [sc["customer_account"]],
            "session_tags": {"team": "data", "dag": "{dag_id}"},
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


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    python = sys.executable
    airflow = [python, "-m", "airflow"]
    started = False
    try:
        banner("Starting the local AWS sandbox (moto with IAM enforcement, fake EKS OIDC issuer) on 127.0.0.1")
        subprocess.run(
            [python, "-m", "dev.sandbox", "start", "--state-file", str(STATE)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        started = True
        state = json.loads(STATE.read_text())
        env = demo_env(state)
        print(f"sandbox: {state['endpoint_url']}; pod identity: IRSA as {state['env']['irsa']['AWS_ROLE_ARN']}")

        banner("Airflow on SQLite in a scratch home")
        run([*airflow, "db", "migrate"], env)

        banner("Connections: identifiers only, no secret")
        for conn_id, extra in connections(state).items():
            run(
                [
                    *airflow,
                    "connections",
                    "add",
                    conn_id,
                    "--conn-type",
                    "aws_workload_identity",
                    "--conn-extra",
                    json.dumps(extra),
                ],
                env,
            )
            print(f"  {conn_id}: {json.dumps(extra)}")

        banner("airflow-workload-identity whoami customer_chain")
        print(run([python, "-m", "airflow_workload_identity.cli", "whoami", "customer_chain"], env))
        banner("airflow-workload-identity policy customer_reader")
        print(run([python, "-m", "airflow_workload_identity.cli", "policy", "customer_reader"], env))
        banner("airflow connections test customer_external")
        print(run([*airflow, "connections", "test", "customer_external"], env))

        banner(f"airflow dags test {DAG_ID}")
        output = run([*airflow, "dags", "test", DAG_ID], env, check=False)
        print(output)
        states = task_states(env)
        banner("Result")
        for task, task_state in states.items():
            print(f"  {task}: {task_state}")
        if not states or any(s != "success" for s in states.values()):
            print("demo FAILED: not every task succeeded")
            return 1
        print(
            "demo OK: bucket A read through the hook and the official S3Hook, bucket B denied with the fix, "
            "an untrusting role refused with the trust policy to paste."
        )
        return 0
    finally:
        if started:
            banner("Stopping the sandbox")
            subprocess.run([python, "-m", "dev.sandbox", "stop", "--state-file", str(STATE)], cwd=ROOT, timeout=60)


def task_states(env: dict[str, str]) -> dict[str, str]:
    runs = json.loads(
        run([sys.executable, "-m", "airflow", "dags", "list-runs", DAG_ID, "-o", "json"], env).strip().splitlines()[-1]
    )
    if not runs:
        return {}
    run_id = runs[0]["run_id"]
    rows = json.loads(
        run([sys.executable, "-m", "airflow", "tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"], env)
        .strip()
        .splitlines()[-1]
    )
    return {row["task_id"]: row["state"] for row in rows}


if __name__ == "__main__":
    sys.exit(main())
