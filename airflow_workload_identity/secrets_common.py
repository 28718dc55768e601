"""What the three clouds' secrets backends share: kwargs parsing, secret names, masking, the denial type.

A backend is built by Airflow in every process that reads a connection or a variable (scheduler, API
server, each task), from ``[secrets] backend_kwargs``. So construction only parses and validates: it
makes no network call and reads no Airflow connection (backends run before connections exist). The
kwargs are the cloud's connection identity keys (parsed by the same spec as a connection's extra) plus
the official backend's own keys, with the official names and defaults; anything else is a
``ConfigError`` naming the key.

Reads go through the same process-wide shared credentials the hooks use (one token per identity). A
missing secret is ``None`` after one request; a refused read raises :class:`SecretsAccessDenied`, which
is the package's ``AccessDenied`` and, on Airflow versions that have it,
``AirflowSecretsBackendAccessDenied``: Airflow 3 stops on that one and moves on to the next backend on
any other exception, so a denial is never mistaken for "not here". Every value returned is registered
with Airflow's log masker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow.secrets import BaseSecretsBackend

from airflow_workload_identity.errors import AccessDenied, ConfigError

__all__ = [
    "TEAM_SEP",
    "BackendOptions",
    "SecretsAccessDenied",
    "WorkloadIdentitySecretsBackend",
    "configured_backend",
    "mask_connection",
    "mask_secret",
    "split_kwargs",
    "watch_credentials",
]


def mask_secret(value: Any) -> None:
    """Register a value read from the secrets manager with Airflow's log masker.

    Tokens are kept out of logs by ``redaction.py`` (bounded, by shape and key); the values a backend
    returns are the customer's own secrets, which have no shape to match, so they go to Airflow's masker,
    as Airflow does for every connection it reads. There is one entry per secret read, not per token
    refresh, so the masker stays bounded by the number of secrets. A dict masks the values under
    sensitive key names only (``password``, ``token``, ...), as ``Connection.extra`` needs.
    """
    if not value:
        return
    try:  # Airflow 3.x
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # Airflow 2.x
        from airflow.utils.log.secrets_masker import mask_secret as _mask  # type: ignore[no-redef,unused-ignore]
    _mask(value)


log = logging.getLogger(__name__)

#: Separator between a team name and the secret id in team-scoped names (Airflow 3.2+ multi-team),
#: as the official AWS and Azure backends spell it.
TEAM_SEP = "--"

try:  # Airflow 3.x task SDK >= 1.2.2: the authoritative deny that stops the backend search
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied as _AirflowDenied

    _DENY_BASES: tuple[type[BaseException], ...] = (AccessDenied, _AirflowDenied)
except ImportError:  # Airflow 2.x / older task SDKs: no such type; every exception moves on there
    _DENY_BASES = (AccessDenied,)


class SecretsAccessDenied(*_DENY_BASES):  # type: ignore[misc]
    """A secrets backend was refused a read: the package's ``AccessDenied`` (hop, caller, target, the grant
    to add) and, where Airflow has it, ``airflow.sdk.exceptions.AirflowSecretsBackendAccessDenied``."""

    def __init__(self, **fields: Any) -> None:
        AccessDenied.__init__(self, **fields)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable by its fields (OSError's default would lose them)
        fields = {
            name: getattr(self, name)
            for name in (
                "hop",
                "hops",
                "caller",
                "target",
                "permission",
                "remediation",
                "cloud_code",
                "cloud_message",
                "endpoint",
            )
        }
        return (_rebuild_denied, (fields,))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _rebuild_denied(fields: dict[str, Any]) -> SecretsAccessDenied:
    return SecretsAccessDenied(**fields)


#: The official backends' keys common to the three clouds.
PREFIX_KEYS = ("connections_prefix", "variables_prefix", "config_prefix")


@dataclass(frozen=True)
class BackendOptions:
    """The non-identity kwargs: prefixes (``None`` turns a kind off) and the separator."""

    connections_prefix: str | None
    variables_prefix: str | None
    config_prefix: str | None
    sep: str
    extra: Mapping[str, Any]


def split_kwargs(
    backend: str,
    kwargs: Mapping[str, Any],
    *,
    identity_keys: Iterable[str],
    defaults: Mapping[str, Any],
) -> tuple[dict[str, Any], BackendOptions]:
    """Split ``backend_kwargs`` into the identity extra (for the cloud's spec) and the backend options.

    ``defaults`` holds every backend key with its default (the official backend's); a key that is in
    neither is a ``ConfigError`` naming it. Prefixes are strings or ``None``; a trailing ``sep`` is
    dropped as the official backends do.
    """
    identity = set(identity_keys)
    known = sorted(identity | set(defaults))
    for key in kwargs:
        if key not in identity and key not in defaults:
            raise ConfigError(
                str(key),
                f"is not a {backend} backend_kwargs key",
                f"remove it; the keys are {', '.join(known)}",
                conn_type=None,
            )
    values = {**defaults, **{k: v for k, v in kwargs.items() if k in defaults}}
    sep = values.get("sep", "/")
    if not isinstance(sep, str) or not sep:
        raise ConfigError(
            "sep",
            f"is {type(sep).__name__ if not isinstance(sep, str) else 'empty'}",
            f"write the separator as a non-empty string (default {defaults.get('sep')!r})",
            conn_type=None,
        )
    prefixes: dict[str, str | None] = {}
    for key in PREFIX_KEYS:
        value = values.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                key,
                f"is a {type(value).__name__}",
                f"write the prefix as a string, or null to turn this kind off (default {defaults.get(key)!r})",
                conn_type=None,
            )
        prefixes[key] = value.rstrip(sep) if value else value
    extra = {k: v for k, v in values.items() if k not in PREFIX_KEYS and k != "sep"}
    options = BackendOptions(
        connections_prefix=prefixes["connections_prefix"],
        variables_prefix=prefixes["variables_prefix"],
        config_prefix=prefixes["config_prefix"],
        sep=sep,
        extra=extra,
    )
    return {k: v for k, v in kwargs.items() if k in identity}, options


def mask_connection(conn: Any) -> None:
    """Register a connection's password and the values under sensitive extra keys with the log masker."""
    mask_secret(getattr(conn, "password", None))
    extra = getattr(conn, "extra", None)
    if not extra:
        return
    try:
        parsed = json.loads(extra) if isinstance(extra, str) else extra
    except ValueError:
        mask_secret(extra)  # an extra that is not JSON: all of it
        return
    if isinstance(parsed, dict):
        mask_secret(parsed)  # Airflow masks the values under sensitive key names (password, token, ...)


def _multi_team() -> bool:
    try:
        from airflow.configuration import conf

        return bool(conf.getboolean("core", "multi_team", fallback=False))
    except Exception:  # an Airflow without the option
        return False


def watch_credentials(*credentials: Any) -> None:
    """Keep the shared credentials' tokens out of every log, exactly as the hooks do."""
    from airflow_workload_identity import redaction

    for credential in credentials:
        redaction.watch(credential)


class WorkloadIdentitySecretsBackend(BaseSecretsBackend):
    """The three kinds (connections, variables, config) over one ``_read(name)`` per cloud.

    Subclasses set the options in ``__init__`` and implement :meth:`_name` (prefix + id → the cloud's
    secret name, ``None`` when the cloud could not hold that name) and :meth:`_read` (one request;
    ``None`` when the secret does not exist; :class:`SecretsAccessDenied` when refused).
    """

    options: BackendOptions

    # -- per cloud -------------------------------------------------------------------------------------------

    def _name(self, prefix: str, secret_id: str) -> str | None:
        raise NotImplementedError

    def _read(self, name: str) -> str | None:
        raise NotImplementedError

    # -- Airflow's interface -------------------------------------------------------------------------------

    def _skip(self, kind: str, secret_id: str) -> bool:
        """Whether ``secret_id`` is not to be looked up at all (the AWS backends' lookup patterns)."""
        return False

    def _lookup(self, kind: str, secret_id: str, team_name: str | None = None) -> str | None:
        prefix: str | None = getattr(self.options, f"{kind}_prefix")
        if prefix is None or self._skip(kind, secret_id):
            return None
        if _multi_team() and TEAM_SEP in (self._name("", secret_id) or secret_id):
            # ``a--b`` could name team a's secret b or a team-scoped secret of another team: never looked
            # up in multi-team mode, as the official backends refuse it
            log.warning("%s id %r contains %r (the team separator); not looked up", kind, secret_id, TEAM_SEP)
            return None
        if team_name:  # multi-team: the team-scoped name first, as the official backends do
            scoped = self._name(prefix, f"{team_name}{TEAM_SEP}{secret_id}")
            if scoped is not None:
                value = self._read(scoped)
                if value is not None:
                    return value
        name = self._name(prefix, secret_id)
        return None if name is None else self._read(name)

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        """The connection's stored value (an Airflow URI or JSON), ``None`` when absent."""
        return self._lookup("connections", conn_id, team_name)

    def get_connection(self, conn_id: str, team_name: str | None = None) -> Any:
        value = self.get_conn_value(conn_id, team_name=team_name)
        if not value:
            return None
        conn = self.deserialize_connection(conn_id=conn_id, value=value)
        mask_connection(conn)
        return conn

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        value = self._lookup("variables", key, team_name)
        mask_secret(value)
        return value

    def get_config(self, key: str) -> str | None:
        value = self._lookup("config", key)
        mask_secret(value)
        return value


#: This package's backends, by the class path Airflow's ``[secrets] backend`` names.
BACKENDS = (
    "airflow_workload_identity.aws.secrets.SecretsManagerBackend",
    "airflow_workload_identity.aws.secrets.SystemsManagerParameterStoreBackend",
    "airflow_workload_identity.gcp.secrets.SecretManagerBackend",
    "airflow_workload_identity.azure.secrets.KeyVaultBackend",
)


def configured_backend() -> Any | None:
    """The deployment's ``[secrets] backend`` when it is one of this package's, built from
    ``backend_kwargs`` (no network call; a bad kwarg is a ``ConfigError``); ``None`` otherwise.

    For ``whoami`` / ``doctor``: ``configured_backend().whoami(verify=...)`` reports the identity the
    backend reads secrets as, hop by hop, like a connection's report."""
    import importlib

    from airflow.configuration import conf

    path = (conf.get("secrets", "backend", fallback="") or "").strip()
    if path not in BACKENDS:
        return None
    raw = conf.get("secrets", "backend_kwargs", fallback="") or "{}"
    try:
        kwargs = json.loads(raw)
    except ValueError:
        raise ConfigError(
            "[secrets] backend_kwargs", "is not valid JSON", "write the kwargs as a JSON object"
        ) from None
    if not isinstance(kwargs, dict):
        raise ConfigError("[secrets] backend_kwargs", "is not a JSON object", "write the kwargs as a JSON object")
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)
