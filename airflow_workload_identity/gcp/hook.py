"""``GcpWorkloadIdentityHook``: the DAG author's entry point for ``gcp_workload_identity`` connections.

Thin on purpose: the connection id becomes a spec, the spec the shared chain (``credentials.py``), and
the hook hands out google-auth credentials, tokens and the project. Identity is always rebuilt from the
connection id, so a deferred task or a trigger cannot silently lose the chain.
"""

from __future__ import annotations

import contextlib
import os
from functools import cached_property
from typing import Any

from airflow_workload_identity import redaction
from airflow_workload_identity._compat import BaseHook, connection_of_type
from airflow_workload_identity.endpoints import check_override
from airflow_workload_identity.errors import WorkloadIdentityError
from airflow_workload_identity.gcp.credentials import GcpChain, SharedToken, resolve
from airflow_workload_identity.gcp.spec import CONN_TYPE, FORM, GcpIdentitySpec
from airflow_workload_identity.hooks import tested_where
from airflow_workload_identity.plan import Plan
from airflow_workload_identity.report import IdentityReport

__all__ = ["GcpWorkloadIdentityHook"]


class GcpWorkloadIdentityHook(BaseHook):
    """Impersonate the connection's service account (through its chain) from the pod's ambient credentials.

    :param gcp_conn_id: a ``gcp_workload_identity`` connection.
    """

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "gcp_workload_identity_default"
    conn_type = CONN_TYPE
    hook_name = FORM.hook_name

    def __init__(self, gcp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gcp_conn_id = gcp_conn_id

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return FORM.legacy_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return FORM.legacy_ui_field_behaviour()

    @cached_property
    def spec(self) -> GcpIdentitySpec:
        """The connection's validated spec (raises ``ConfigError`` before any network call)."""
        conn = connection_of_type(self.gcp_conn_id, CONN_TYPE)
        spec = GcpIdentitySpec.from_connection(conn)
        check_override(spec.iam_endpoint_url, field="iam_endpoint_url", conn_type=CONN_TYPE, cloud="gcp")
        check_override(spec.sts_endpoint_url, field="sts_endpoint_url", conn_type=CONN_TYPE, cloud="gcp_sts")
        return spec

    @property
    def chain(self) -> GcpChain:
        chain = resolve(self.spec)
        redaction.watch(chain.token)  # keeps its tokens out of every log (redaction.py)
        redaction.watch(chain.source.token)
        return chain

    def get_credentials(self) -> SharedToken:
        """google-auth credentials for the target: shared per process, refreshing themselves; pass them to
        any Google client library (``storage.Client(credentials=..., project=hook.project_id)``)."""
        return self.chain.token

    def get_access_token(self) -> str:
        """A current access token of the target (the shared one while fresh)."""
        return self.chain.access_token()

    def get_id_token(self, audience: str) -> str:
        """An OpenID Connect ID token of the target for ``audience`` (Cloud Run, IAP), via generateIdToken."""
        return self.chain.id_token(audience)

    async def get_access_token_async(self) -> str:
        """For triggers: never blocks the event loop; never mints while the shared token is fresh."""
        return await self.chain.access_token_async()

    @property
    def project_id(self) -> str | None:
        """``project_id``, else the target's project (``<name>@<project>.iam...``), else
        ``GOOGLE_CLOUD_PROJECT``; never guessed from developer/appspot accounts."""
        return self.spec.resolved_project(os.environ)

    def get_conn(self) -> SharedToken:
        return self.get_credentials()

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Every hop: the source e-mail (from the metadata server), each delegate, the target, expiry."""
        return self.chain.report(self.gcp_conn_id, verify=verify)

    def policy_plan(self) -> Plan:
        """The Token Creator bindings each hop needs, from the running source identity."""
        from airflow_workload_identity.gcp.policy import required_bindings

        chain = self.chain
        federated = getattr(chain.source, "plan", None)  # source aws / azure: both clouds' sides (federated.py)
        if federated is not None:
            return federated(self.spec.resolved_project(os.environ))  # type: ignore[no-any-return]
        with contextlib.suppress(WorkloadIdentityError):
            chain.source.token.ensure()
        return required_bindings(
            self.spec.impersonation_chain, chain.source.email(), project=self.spec.resolved_project(os.environ)
        )

    def explain_access_denied(
        self,
        error: Exception,
        *,
        resource: str | None = None,
        bucket: str | None = None,
        role: str = "roles/storage.objectViewer",
    ) -> str:
        """Remediation text for a 403 a client of this hook got on a bucket: who was refused, and the
        ``gcloud`` binding that would allow it. ``resource`` (or its GCS name ``bucket``) is the bucket."""
        from airflow_workload_identity.gcp.policy import explain_storage_denied

        where = resource or bucket or "<bucket>"
        source = self.chain.source
        members = getattr(source, "members", None)  # a federated principal (principal:// / principalSet://)
        if self.spec.is_direct and members is not None:
            principal = members()[0]
        else:
            principal = (source.email() or self.spec.target) if self.spec.is_direct else self.spec.target
        return explain_storage_denied(error, principal=principal, bucket=where, role=role)

    def policy(self) -> str:
        """:meth:`policy_plan` as text for people."""
        return self.policy_plan().text()

    def test_connection(self) -> tuple[bool, str]:
        """Mint through the chain now and say who we became (one live generateIdToken call)."""
        try:
            return True, self.whoami(verify=True).one_line() + " " + tested_where()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
