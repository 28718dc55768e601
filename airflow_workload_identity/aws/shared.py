"""AWS credentials on the package's credential core, as the SDK objects botocore and aiobotocore need.

:class:`SharedCredentials` is a botocore ``DeferredRefreshableCredentials``: every botocore client,
boto3 session and the Amazon provider sign with it unchanged. When to refresh, single flight, serving
the current credentials while a refresh fails, backoff and the host cache are the core's
(:class:`~airflow_workload_identity.core.RefreshingToken`); this module only turns a fetch (STS, the Pod
Identity agent) into a mint and botocore's fields into what the core decided.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from botocore.credentials import DeferredRefreshableCredentials
from botocore.utils import parse_timestamp

from airflow_workload_identity._sdk import apply_refresh_data
from airflow_workload_identity.aws.spec import account_of
from airflow_workload_identity.aws.sts import STS_ATTEMPT_SECONDS, STS_MAX_ATTEMPTS
from airflow_workload_identity.core import Minted, RefreshingToken, TokenState, TokenStore
from airflow_workload_identity.registry import refresh_windows as _refresh_windows

__all__ = ["CODEC", "SharedCredentials", "async_mirror"]

_FIELDS = ("access_key", "secret_key", "token", "expiry_time", "account_id", "principal")


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


class _MetadataCodec:
    """botocore refresh metadata as a host-cache payload: keys, token, expiry, account, principal."""

    def to_payload(self, value: dict[str, Any]) -> dict[str, Any]:
        return {k: value.get(k) for k in _FIELDS}

    def from_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        for key in ("access_key", "secret_key", "token", "expiry_time"):
            if not isinstance(payload.get(key), str):
                raise ValueError(f"payload lacks {key}")
        return {k: payload.get(k) for k in _FIELDS}


CODEC = _MetadataCodec()


class SharedCredentials(DeferredRefreshableCredentials):  # type: ignore[misc]
    """Refreshing botocore credentials shared by every user of one key, refreshed by the core.

    ``fetch`` returns botocore refresh metadata (``access_key``, ``secret_key``, ``token``,
    ``expiry_time``, ``account_id``, optionally ``principal``) or raises a ``WorkloadIdentityError``.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        method: str,
        *,
        describe: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        windows: Callable[[float], tuple[float, float]] = _refresh_windows,
        store: TokenStore | None = None,
        store_key: str | None = None,
        max_attempts: int = STS_MAX_ATTEMPTS,
        attempt_timeout: float = STS_ATTEMPT_SECONDS,
    ) -> None:
        if clock is None:
            super().__init__(refresh_using=fetch, method=method)
        else:
            super().__init__(refresh_using=fetch, method=method, time_fetcher=clock)
        self._fetch = fetch
        self.principal: str | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._applied: dict[str, Any] | None = None
        self.core: RefreshingToken[dict[str, Any]] = RefreshingToken(
            self._mint,
            describe=describe or f"{method} credentials",
            codec=CODEC,
            store=store,
            store_key=store_key,
            clock=(lambda: clock().timestamp()) if clock is not None else time.time,
            windows=windows,
            max_attempts=max_attempts,
            attempt_timeout=attempt_timeout,
        )
        self.core.add_listener(self._on_new)

    def _mint(self) -> Minted[dict[str, Any]]:
        data = dict(self._fetch())
        data["expiry_time"] = _iso(data["expiry_time"])
        expiry = parse_timestamp(data["expiry_time"])
        return Minted(data, expiry.timestamp())

    def _on_new(self, data: dict[str, Any]) -> None:
        self.principal = data.get("principal") or self.principal
        for listener in self._listeners:
            listener(data)

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with each refresh's metadata (and now, with the current one, if any)."""
        if listener in self._listeners:
            return
        self._listeners.append(listener)
        current = self.core.value
        if current is not None:
            listener(current)

    # botocore calls _refresh() before every use (get_frozen_credentials, the key properties).
    def _refresh(self) -> None:
        self._adopt(self.core.get())

    def _adopt(self, data: dict[str, Any]) -> None:
        if data is not self._applied:
            apply_refresh_data(self, data)
            self._applied = data

    @property
    def fetches(self) -> int:
        """New credentials received (from STS or the Pod Identity agent, or the host cache)."""
        return self.core.refreshes

    @property
    def expiry(self) -> dt.datetime | None:
        return self._expiry_time  # type: ignore[no-any-return]

    @property
    def windows(self) -> tuple[float, float]:
        return self.core.windows

    def fresh(self) -> bool:
        """True when the current credentials are usable without a refresh."""
        return self.core.state() is TokenState.FRESH

    def metadata(self) -> dict[str, Any]:
        """The current credentials as refresh metadata; refreshes if needed."""
        data = self.core.get()
        self._adopt(data)
        return data

    def __repr__(self) -> str:  # never the keys
        return f"<SharedCredentials method={self.method!r} principal={self.principal!r} expiry={self.expiry}>"


def async_mirror(shared: SharedCredentials) -> Any:
    """aiobotocore credentials over ``shared``: usable credentials without a thread, a refresh through
    the same core (single flight with every thread) off the event loop."""
    from aiobotocore.credentials import AioDeferredRefreshableCredentials

    class AsyncSharedCredentials(AioDeferredRefreshableCredentials):  # type: ignore[misc]
        _applied: dict[str, Any] | None = None

        async def _refresh(self) -> None:
            data = await shared.core.aget()
            if data is not self._applied:
                apply_refresh_data(self, data, lock=False)
                self._applied = data

        def __repr__(self) -> str:
            return f"<AsyncSharedCredentials of {shared!r}>"

    return AsyncSharedCredentials(refresh_using=shared.metadata, method=shared.method)


def refresh_data(response: dict[str, Any]) -> dict[str, Any]:
    """botocore refresh metadata from an ``AssumeRole*`` answer (keys, expiry, the session's ARN)."""
    creds = response["Credentials"]
    arn = response["AssumedRoleUser"]["Arn"]
    return {
        "access_key": creds["AccessKeyId"],
        "secret_key": creds["SecretAccessKey"],
        "token": creds["SessionToken"],
        "expiry_time": _iso(creds["Expiration"]),
        "account_id": account_of(arn),
        "principal": arn,
    }
