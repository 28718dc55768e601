"""``AwsWorkloadIdentityHook``: the DAG author's entry point for ``aws_workload_identity`` connections.

Thin on purpose: the connection id becomes a spec, the spec becomes the shared role chain (see
``credentials.py``), and the hook hands out boto3/aiobotocore objects signed by the chain's refreshing
credentials. Identity is always rebuilt from the connection id, so a deferred task or a trigger cannot
silently lose it.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from airflow_workload_identity import __version__, redaction
from airflow_workload_identity._compat import BaseHook, connection_of_type
from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.credentials import (
    RoleChain,
    SharedCredentials,
    new_botocore_session,
    resolve,
)
from airflow_workload_identity.aws.spec import CONN_TYPE, FORM, AwsIdentitySpec
from airflow_workload_identity.endpoints import check_override
from airflow_workload_identity.errors import WorkloadIdentityError
from airflow_workload_identity.hooks import tested_where
from airflow_workload_identity.plan import Plan
from airflow_workload_identity.report import IdentityReport

__all__ = ["AwsWorkloadIdentityHook"]

#: Clients get bounded timeouts and botocore's standard retries unless the caller says otherwise.
CLIENT_CONFIG = Config(
    connect_timeout=10,
    read_timeout=60,
    retries={"mode": "standard", "max_attempts": 3},
    user_agent_extra=f"airflow-workload-identity/{__version__}",
)


_local = threading.local()


def _thread_session(credentials: SharedCredentials, region: str | None) -> boto3.session.Session:
    """One boto3 session per thread, identity and region.

    Building a botocore session registers ~130 event handlers (about 9 ms); boto3 sessions are not
    thread-safe, so they are reused only within a thread. The cached session holds the credentials
    object, so its ``id`` cannot be reused for another identity while the entry lives.
    """
    cache: dict[tuple[int, str | None], boto3.session.Session] | None = getattr(_local, "sessions", None)
    if cache is None:
        cache = _local.sessions = {}
    key = (id(credentials), region)
    session = cache.get(key)
    if session is None:
        session = boto3.session.Session(botocore_session=new_botocore_session(credentials, region))
        cache[key] = session
    return session


class AwsWorkloadIdentityHook(BaseHook):
    """Assume the connection's role (or chain of roles) from the pod's ambient AWS identity.

    :param aws_conn_id: an ``aws_workload_identity`` connection.
    :param region_name: region for clients (default: the connection's ``region_name``, then the
        environment).
    :param config: a botocore ``Config`` merged over the hook's defaults for every client.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_workload_identity_default"
    conn_type = CONN_TYPE
    hook_name = FORM.hook_name

    def __init__(
        self,
        aws_conn_id: str = default_conn_name,
        region_name: str | None = None,
        config: Config | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self._region_name = region_name
        self._config = CLIENT_CONFIG.merge(config) if config is not None else CLIENT_CONFIG

    # -- form (Airflow 2.11-3.1; 3.2+ reads conn-fields from the provider info) ------------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return FORM.legacy_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return FORM.legacy_ui_field_behaviour()

    # -- identity ------------------------------------------------------------------------------------------------

    @cached_property
    def spec(self) -> AwsIdentitySpec:
        """The connection's validated identity spec (raises ``ConfigError`` before any network call)."""
        conn = connection_of_type(self.aws_conn_id, CONN_TYPE)
        spec = AwsIdentitySpec.from_connection(conn)
        check_override(spec.sts_endpoint_url, field="sts_endpoint_url", conn_type=CONN_TYPE, cloud="aws")
        return spec

    @property
    def chain(self) -> RoleChain:
        """The shared chain for this connection in the current run context."""
        chain = resolve(self.spec, RunContext.current(self.aws_conn_id))
        redaction.watch(chain.credentials)  # keeps its secrets out of every log (redaction.py)
        return chain

    @property
    def region_name(self) -> str | None:
        return (
            self._region_name
            or self.spec.region_name
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )

    def get_credentials(self) -> SharedCredentials:
        """The target role's refreshing botocore credentials (shared per process; never frozen)."""
        return self.chain.credentials

    def get_session(self, region_name: str | None = None) -> boto3.session.Session:
        """A boto3 session signed by the shared refreshing credentials (reused within this thread)."""
        return _thread_session(self.get_credentials(), region_name or self.region_name)

    def get_client(
        self,
        service: str,
        region_name: str | None = None,
        config: Config | None = None,
        endpoint_url: str | None = None,
    ) -> Any:
        """A boto3 client for ``service`` acting as the connection's role."""
        merged = self._config.merge(config) if config is not None else self._config
        return self.get_session(region_name).client(service, config=merged, endpoint_url=endpoint_url)

    def get_resource(
        self,
        service: str,
        region_name: str | None = None,
        config: Config | None = None,
        endpoint_url: str | None = None,
    ) -> Any:
        """A boto3 resource for ``service`` acting as the connection's role."""
        merged = self._config.merge(config) if config is not None else self._config
        return self.get_session(region_name).resource(service, config=merged, endpoint_url=endpoint_url)

    def get_conn(self) -> Any:
        """Airflow's generic accessor: the boto3 session."""
        return self.get_session()

    # -- async (triggers) ------------------------------------------------------------------------------------

    def get_async_credentials(self) -> Any:
        """aiobotocore credentials for the running loop; a refresh runs in a thread, never on the loop."""
        return self.chain.async_credentials()

    def get_async_session(self, region_name: str | None = None) -> Any:
        """An aiobotocore session signed by the shared credentials (call inside the event loop)."""
        from aiobotocore.credentials import AioCredentialResolver
        from aiobotocore.session import AioSession

        from airflow_workload_identity.aws.credentials import _shared_loader

        credentials = self.get_async_credentials()

        class _Provider:
            METHOD = "airflow-workload-identity"

            async def load(self) -> Any:
                return credentials

        session = AioSession()
        session.register_component("data_loader", _shared_loader())
        session.register_component("credential_provider", AioCredentialResolver([_Provider()]))
        region = region_name or self.region_name
        if region:
            session.set_config_variable("region", region)
        return session

    # -- diagnostics -------------------------------------------------------------------------------------------

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Resolve every hop and report who the connection is at each one.

        Shared credentials that are still fresh are reported without a new STS call; ``verify=True``
        adds one ``GetCallerIdentity`` with the final credentials (what ``test_connection`` does)."""
        return self.chain.report(self.aws_conn_id, verify=verify)

    def explain_access_denied(
        self, error: Exception, *, resource: str | None = None, service: str = "s3", action: str | None = None
    ) -> str:
        """Remediation text for an AccessDenied a client of this hook got: who was refused what, and the
        identity-policy statement that would allow it."""
        from airflow_workload_identity.aws.policy import explain_data_access_denied

        chain = self.chain
        principal = chain.credentials.principal or self.spec.role_arn or chain.source.caller_arn() or "the pod's role"
        return explain_data_access_denied(error, principal=principal, service=service, resource=resource, action=action)

    def policy_plan(self) -> Plan:
        """What the connection needs granted, hop by hop, from its spec and the running source identity."""
        from airflow_workload_identity.aws.policy import required_grants

        chain = self.chain
        if chain.federation is not None:
            return self._federated_plan(chain)
        web_identity = None
        if chain.source.method == "web_identity":
            web_identity = (os.environ["AWS_ROLE_ARN"], os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"])
        return required_grants(
            chain.spec.hops(RunContext.current(self.aws_conn_id)),
            chain.source.caller_arn(),
            chain.source.description,
            web_identity=web_identity,
        )

    def _federated_plan(self, chain: RoleChain) -> Plan:
        """Source gcp / azure: the AWS side's grants for the web identity hop, from the live token's claims,
        then the usual statements for every later hop."""
        from airflow_workload_identity.aws.policy import federated_steps, required_grants

        assert chain.federation is not None
        token = chain.federation.get()  # the live token: its iss / sub / aud are what STS checks
        hops = chain.spec.hops(RunContext.current(self.aws_conn_id))
        first = hops[0].role_arn
        rest = required_grants(hops[1:], first, f"the first role, assumed with the {token.source_cloud} token")
        plan = Plan(
            cloud="aws",
            source=token.principal,
            header=[
                f"Source identity: {token.principal} on {token.source_cloud} "
                f"(token iss={token.issuer}, sub={token.subject}, aud={token.audience}).",
                f"This connection assumes {len(hops)} role(s) in order; the first with "
                "sts:AssumeRoleWithWebIdentity and that token.",
            ],
            steps=federated_steps(token.claims, token.source_cloud, token.principal, first),
        )
        plan.steps.extend(step for step in rest.steps if step.hop is not None)
        return plan

    def policy(self) -> str:
        """:meth:`policy_plan` as text for people."""
        return self.policy_plan().text()

    def test_connection(self) -> tuple[bool, str]:
        """Assume every hop now and say who we became (Airflow's connection test)."""
        try:
            return True, self.whoami(verify=True).one_line() + " " + tested_where()
        except WorkloadIdentityError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
