"""Airflow secrets backends on AWS Secrets Manager and Systems Manager Parameter Store, reached as the
role an ``aws_workload_identity`` connection would assume.

``backend_kwargs`` take the connection's identity keys (``role_arn``, ``role_chain``, ``external_id``,
``expected_account_ids``, ``region_name``, ...; parsed by :class:`AwsIdentitySpec`) plus the official
backends' keys with their names and defaults, so switching from
``airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend`` changes only the class path::

    [secrets]
    backend = airflow_workload_identity.aws.secrets.SecretsManagerBackend
    backend_kwargs = {"connections_prefix": "airflow/connections", "role_arn": "arn:aws:iam::222222222222:role/r"}

The role chain is the same shared, refreshing one the hooks get (one STS session per identity per
process); boto3 clients come from it with bounded timeouts and honour ``HTTPS_PROXY``/``NO_PROXY``,
``AWS_CA_BUNDLE``/``REQUESTS_CA_BUNDLE`` and ``AWS_ENDPOINT_URL*`` like any boto3 client.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

from botocore.exceptions import ClientError

from airflow_workload_identity.attribution import RunContext
from airflow_workload_identity.aws.spec import CONN_TYPE, FORM, AwsIdentitySpec, account_of
from airflow_workload_identity.endpoints import check_override
from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.report import IdentityReport
from airflow_workload_identity.secrets_common import (
    SecretsAccessDenied,
    WorkloadIdentitySecretsBackend,
    split_kwargs,
    watch_credentials,
)

__all__ = ["SecretsManagerBackend", "SystemsManagerParameterStoreBackend"]

#: The official backends' keys besides the prefixes (``region_name`` is an identity key as well).
_LOOKUP_KEYS = {"connections_lookup_pattern": None, "variables_lookup_pattern": None, "config_lookup_pattern": None}

#: Secrets Manager JSON secrets: the field names the official backend accepts for each connection part.
_CONN_WORDS: dict[str, list[str]] = {
    "login": ["login", "user", "username", "user_name"],
    "password": ["password", "pass", "key"],
    "host": ["host", "remote_host", "server"],
    "port": ["port"],
    "schema": ["database", "schema"],
    "conn_type": ["conn_type", "conn_id", "connection_type", "engine"],
    "extra": ["extra"],
}


class _AwsBackend(WorkloadIdentitySecretsBackend):
    """The identity part the two AWS backends share."""

    service = ""
    action = ""
    defaults: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        identity, self.options = split_kwargs(
            type(self).__name__, kwargs, identity_keys=FORM.names, defaults=self.defaults
        )
        self.spec = AwsIdentitySpec.from_extra(identity)
        check_override(self.spec.sts_endpoint_url, field="sts_endpoint_url", conn_type=CONN_TYPE, cloud="aws")
        self.patterns = {
            kind: self.options.extra.get(f"{kind}_lookup_pattern") for kind in ("connections", "variables", "config")
        }
        for kind, pattern in self.patterns.items():
            if pattern is not None and not isinstance(pattern, str):
                raise ConfigError(
                    f"{kind}_lookup_pattern",
                    f"is a {type(pattern).__name__}",
                    "write a regular expression as a string, or null",
                    conn_type=None,
                )
        self._local = threading.local()

    @property
    def region_name(self) -> str | None:
        return self.spec.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def client(self) -> Any:
        """A client on the shared chain's credentials (one per thread and identity; no call until a read)."""
        from airflow_workload_identity.aws.credentials import resolve
        from airflow_workload_identity.aws.hook import CLIENT_CONFIG, _thread_session

        chain = resolve(self.spec, RunContext.current(type(self).__name__))
        watch_credentials(chain.credentials)
        self._chain = chain
        key = (id(chain.credentials), self.region_name)
        cached = getattr(self._local, "client", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        client = _thread_session(chain.credentials, self.region_name).client(self.service, config=CLIENT_CONFIG)
        self._local.client = (key, client)
        return client

    def whoami(self, *, verify: bool = False) -> IdentityReport:
        """Who the backend reads secrets as, hop by hop (``verify``: one ``GetCallerIdentity`` now)."""
        from airflow_workload_identity.aws.credentials import resolve

        chain = resolve(self.spec, RunContext.current(type(self).__name__))
        watch_credentials(chain.credentials)
        return chain.report(f"[secrets] backend {type(self).__name__}", verify=verify)

    def _skip(self, kind: str, secret_id: str) -> bool:
        pattern = self.patterns.get(kind)
        return bool(pattern) and not re.match(str(pattern), secret_id, re.IGNORECASE)

    def _resource_arn(self, name: str) -> str:
        raise NotImplementedError

    def _grant(self, name: str) -> str:
        raise NotImplementedError

    def _denied(self, error: ClientError, name: str, permission: str | None = None) -> SecretsAccessDenied:
        err = error.response.get("Error", {})
        chain = self._chain
        role = self._role()
        statement = {"Effect": "Allow", "Action": permission or self.action, "Resource": self._grant(name)}
        remediation = (
            f"Add this statement to an identity policy of {role} (the backend's role), then retry:\n"
            + json.dumps(statement, indent=2)
        )
        if permission == "kms:Decrypt":
            statement["Resource"] = "<the ARN of the KMS key that encrypts the secret>"
            remediation = (
                f"{role} may read the secret but not decrypt it: add this statement to its identity policy "
                "(and allow the role in the key policy):\n" + json.dumps(statement, indent=2)
            )
        return SecretsAccessDenied(
            hop=chain.hops[-1].index if chain.hops else 0,
            hops=chain.hops[-1].total if chain.hops else 0,
            caller=chain.credentials.principal or role,
            target=self._resource_arn(name),
            permission=permission or self.action,
            remediation=remediation,
            cloud_code=str(err.get("Code", "")),
            cloud_message=str(err.get("Message", "")),
        )

    def _role(self) -> str:
        """The role the backend reads as: the last assumed, or (no role_arn) the pod's own identity."""
        if self.spec.roles:
            return self.spec.roles[-1]
        from airflow_workload_identity.aws.policy import principal_for

        arn = self._chain.credentials.principal or self._chain.source.principal
        return principal_for(arn) if arn else "arn:aws:iam::<account>:role/<the pod's role>"

    def _arn_parts(self) -> tuple[str, str, str]:
        role = self._role()
        return role.split(":")[1], self.region_name or "<region>", account_of(role) or "<account>"


class SecretsManagerBackend(_AwsBackend):
    """Connections, variables and config in AWS Secrets Manager, read as the configured role.

    Defaults as the official backend: ``connections_prefix="airflow/connections"``,
    ``variables_prefix="airflow/variables"``, ``config_prefix="airflow/config"``, ``sep="/"``; a
    connection is an Airflow URI or a JSON object (with the official backend's field aliases, extendable
    with ``extra_conn_words``).
    """

    service = "secretsmanager"
    action = "secretsmanager:GetSecretValue"
    defaults = {
        "connections_prefix": "airflow/connections",
        "variables_prefix": "airflow/variables",
        "config_prefix": "airflow/config",
        "sep": "/",
        "extra_conn_words": None,
        **_LOOKUP_KEYS,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        words = self.options.extra.get("extra_conn_words") or {}
        if not isinstance(words, dict) or not all(
            isinstance(v, list) and all(isinstance(w, str) for w in v) for v in words.values()
        ):
            raise ConfigError(
                "extra_conn_words",
                "is not an object of lists of strings",
                'write e.g. {"password": ["secret"]}',
                conn_type=None,
            )
        self.conn_words = {k: list(v) for k, v in _CONN_WORDS.items()}
        for part, extra_words in words.items():
            self.conn_words.setdefault("login" if part == "user" else part, []).extend(extra_words)

    def _name(self, prefix: str, secret_id: str) -> str | None:
        return self.build_path(prefix, secret_id, self.options.sep) if prefix else secret_id

    def _resource_arn(self, name: str) -> str:
        partition, region, account = self._arn_parts()
        return f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}"

    def _grant(self, name: str) -> str:
        for prefix in (self.options.connections_prefix, self.options.variables_prefix, self.options.config_prefix):
            if prefix and name.startswith(prefix + self.options.sep):
                return self._resource_arn(prefix + self.options.sep + "*")
        return self._resource_arn(name) + "-??????"

    def _read(self, name: str) -> str | None:
        client = self.client()
        try:
            response = client.get_secret_value(SecretId=name)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            if code == "AccessDeniedException":
                raise self._denied(error, name) from None
            if code == "DecryptionFailure":
                raise self._denied(error, name, "kms:Decrypt") from None
            raise
        value = response.get("SecretString")
        return None if value is None else str(value)

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        value = super().get_conn_value(conn_id, team_name)
        if value is not None and value.strip().startswith("{"):
            # the official backend's JSON form: field aliases mapped onto Airflow's names
            secret = json.loads(value)
            standard = {
                part: next((v for k, v in secret.items() if k in words), None)
                for part, words in self.conn_words.items()
            }
            return json.dumps(standard)
        return value


class SystemsManagerParameterStoreBackend(_AwsBackend):
    """Connections, variables and config in SSM Parameter Store (decrypted), read as the configured role.

    Defaults as the official backend: ``connections_prefix="/airflow/connections"``,
    ``variables_prefix="/airflow/variables"``, ``config_prefix="/airflow/config"``; names are joined with
    ``/`` and always start with ``/``.
    """

    service = "ssm"
    action = "ssm:GetParameter"
    defaults = {
        "connections_prefix": "/airflow/connections",
        "variables_prefix": "/airflow/variables",
        "config_prefix": "/airflow/config",
        "sep": "/",
        **_LOOKUP_KEYS,
    }

    def _name(self, prefix: str, secret_id: str) -> str | None:
        path = self.build_path(prefix, secret_id)
        return path if path.startswith("/") else "/" + path

    def _resource_arn(self, name: str) -> str:
        partition, region, account = self._arn_parts()
        return f"arn:{partition}:ssm:{region}:{account}:parameter/{name.lstrip('/')}"

    def _grant(self, name: str) -> str:
        for prefix in (self.options.connections_prefix, self.options.variables_prefix, self.options.config_prefix):
            if prefix and name.startswith(self._name(prefix, "") or ""):
                return self._resource_arn(self._name(prefix, "*") or name)
        return self._resource_arn(name)

    def _read(self, name: str) -> str | None:
        client = self.client()
        try:
            response = client.get_parameter(Name=name, WithDecryption=True)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ParameterNotFound":
                return None
            if code in ("AccessDeniedException", "AccessDenied"):
                raise self._denied(error, name) from None
            raise
        return str(response["Parameter"]["Value"])
