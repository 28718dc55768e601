"""A ready diagnostic DAG: ``doctor``, ``whoami`` and ``policy`` from inside the deployment.

Astro (and most managed Airflow) gives no shell into the workers, so the package's CLI cannot be run
where tasks run. Copy this file into the ``dags/`` folder of the project, deploy, and trigger
``wi_diagnostic`` with the connection ids to check (the ``conn_ids`` parameter, a list; empty: only the
environment). Each task prints into its log what the CLI would print on a worker:

* ``doctor``: the deployment's ambient workload identity (the IRSA / Pod Identity role ARN, the GKE
  service account, the AKS client id and tenant: the principal to paste into the customer's cloud), the
  claims of its projected tokens (never the tokens), which metadata endpoints answer, and the identity
  the configured secrets backend reads as;
* ``check_connections``: for each connection, ``whoami`` with a live verification (who the connection
  becomes, hop by hop) and ``policy`` (what the customer must grant, computed from the identity the
  worker really has). A connection that fails prints the typed error's explanation (the hop, the caller,
  the target, the statement to paste) and the task fails after every connection has been tried.

Nothing secret is printed: reports hold principals, methods, expiries and endpoints only.
"""

from __future__ import annotations

from typing import Any

import pendulum

try:  # Airflow 3.x
    from airflow.sdk import Param, dag, task
except ImportError:  # Airflow 2.11
    from airflow.decorators import dag, task  # type: ignore[no-redef,attr-defined,unused-ignore]
    from airflow.models.param import Param  # type: ignore[no-redef,attr-defined,unused-ignore]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["workload-identity", "diagnostic"],
    params={
        "conn_ids": Param([], type="array", description="connection ids to check (whoami + policy)"),
        "probe_defaults": Param(
            True,
            type="boolean",
            description="also probe the link-local metadata endpoints (GKE, Azure IMDS), 2 s timeout each",
        ),
    },
    doc_md=__doc__,
)
def wi_diagnostic() -> None:
    @task
    def doctor(params: dict[str, Any] | None = None) -> None:
        from airflow_workload_identity.doctor import ambient_identities
        from airflow_workload_identity.errors import WorkloadIdentityError
        from airflow_workload_identity.secrets_common import configured_backend

        print("Ambient identities of this worker (the deployment's workload identity):")
        for finding in ambient_identities(probe_defaults=bool((params or {}).get("probe_defaults", True))):
            print(f"  {finding.name}: {'yes' if finding.present else 'no'}  {finding.detail}")
            if finding.token:
                print("      token claims: " + ", ".join(f"{k}={v}" for k, v in finding.token.items()))
        try:
            backend = configured_backend()
        except WorkloadIdentityError as exc:
            print(f"[secrets] backend: {type(exc).__name__}: {exc}")
            return
        if backend is None:
            print("[secrets] backend: not one of this package's")
        else:
            print(f"[secrets] backend {type(backend).__name__} reads secrets as:")
            print(backend.whoami(verify=True).render())

    @task
    def check_connections(params: dict[str, Any] | None = None) -> None:
        from airflow_workload_identity.errors import WorkloadIdentityError
        from airflow_workload_identity.hooks import hook_for, whoami

        conn_ids = [str(c) for c in (params or {}).get("conn_ids") or []]
        if not conn_ids:
            print('No connection ids given: trigger with {"conn_ids": ["my_conn"]} to check connections.')
            return
        failed: list[str] = []
        for conn_id in conn_ids:
            print(f"===== {conn_id}")
            try:
                hook = hook_for(conn_id)
                print(whoami(hook, verify=True).render())
                print(f"----- policy {conn_id}: what must be granted")
                print(hook.policy_plan().text())
            except WorkloadIdentityError as exc:
                failed.append(conn_id)
                print(f"FAILED: {type(exc).__name__}")
                print(str(exc))
        if failed:
            raise RuntimeError(f"connections that do not work yet: {', '.join(failed)} (explanations above)")

    doctor() >> check_connections()


wi_diagnostic()
