"""One AssumeRole hop of a role chain, shared by every chain that starts the same way.

The hop's STS client is created once (botocore's retry quota is per client) and signs with the
previous hop's (or the source's) shared credentials; its own credentials are
:class:`~airflow_workload_identity.aws.shared.SharedCredentials` over one ``AssumeRole`` call.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any, Protocol

from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from airflow_workload_identity.aws.policy import explain_assume_role_error
from airflow_workload_identity.aws.shared import SharedCredentials, refresh_data
from airflow_workload_identity.aws.sources import Source
from airflow_workload_identity.aws.spec import AssumeRoleHop, account_of
from airflow_workload_identity.aws.sts import (
    STS_MAX_ATTEMPTS,
    StsEndpoint,
    caller_arn,
    sdk_transient,
    sts_client,
    with_http_details,
)
from airflow_workload_identity.core import TokenStore
from airflow_workload_identity.errors import IdentityMismatch

__all__ = ["Caller", "HopCredentials"]


class Caller(Protocol):
    """Who makes a hop's STS call: the ambient source, the previous hop, or nobody (``credentials`` None: an
    unsigned call, the web identity hop of a cross-cloud source)."""

    @property
    def credentials(self) -> Credentials | None: ...

    def caller_arn(self) -> str | None: ...


class HopCredentials:
    """One AssumeRole hop, shared by every chain that starts the same way."""

    def __init__(
        self,
        caller: Source | HopCredentials | Caller,
        hop: AssumeRoleHop,
        *,
        index: int,
        total: int,
        endpoint: StsEndpoint,
        source_identity_carried: bool,
        expected_accounts: tuple[str, ...],
        clock: Callable[[], dt.datetime] | None,
        store: TokenStore | None = None,
        store_key: str | None = None,
    ) -> None:
        self.caller = caller
        self.hop = hop
        self.index = index
        self.total = total
        self.endpoint = endpoint
        self.source_identity_carried = source_identity_carried
        self.expected_accounts = expected_accounts
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.credentials: SharedCredentials = SharedCredentials(
            self._fetch,
            "assume-role",
            describe=f"sts:AssumeRole {hop.role_arn} (hop {index} of {total})",
            clock=clock,
            store=store,
            store_key=store_key,
        )

    @property
    def principal(self) -> str | None:
        return self.credentials.principal

    def caller_arn(self) -> str | None:
        return self.principal or caller_arn(self.credentials, self.endpoint)

    def client(self) -> Any:
        """The STS client for this hop, created once and reused (botocore retry quota is per client)."""
        with self._client_lock:
            if self._client is None:
                self._client = sts_client(self.caller.credentials, self.endpoint)
            return self._client

    def endpoint_url(self) -> str:
        client = self._client
        return str(client.meta.endpoint_url) if client is not None else self.endpoint.describe()

    def _fetch(self) -> dict[str, Any]:
        client = self.client()
        try:
            response = client.assume_role(**self.hop.assume_role_kwargs())
        except ClientError as error:
            explained = explain_assume_role_error(
                error,
                hop_index=self.index,
                hops=self.total,
                hop=self.hop,
                caller_arn=self.caller.caller_arn(),
                endpoint=self.endpoint_url(),
                source_identity_carried=self.source_identity_carried,
                attempts=STS_MAX_ATTEMPTS,
            )
            raise with_http_details(explained, error, self.endpoint_url()) from error
        except (BotoCoreError, ResponseParserError) as error:  # ResponseParserError: a malformed answer
            raise sdk_transient(
                f"sts:AssumeRole {self.hop.role_arn} (hop {self.index} of {self.total}) at {self.endpoint_url()}",
                error,
                self.endpoint_url(),
            ) from error
        arn = response["AssumedRoleUser"]["Arn"]
        if self.expected_accounts and account_of(arn) not in self.expected_accounts:
            raise IdentityMismatch("expected_account_ids", self.expected_accounts, arn)
        return refresh_data(response)
