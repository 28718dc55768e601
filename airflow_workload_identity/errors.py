"""The error vocabulary shared by the three clouds.

Callers branch on the exception type and its fields, never on message text. Every message is built from
the fields, so what a log shows is what a program can read. No field ever holds a token or a key.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AccessDenied",
    "ConfigError",
    "IdentityMismatch",
    "IdentityUnavailable",
    "RejectedValue",
    "TransientError",
    "WorkloadIdentityError",
]


class WorkloadIdentityError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(WorkloadIdentityError, ValueError):
    """A connection field holds a value the cloud would refuse; raised before any network call.

    ``field`` is the extra key (as in the connection form and the docs), ``problem`` says what is wrong
    with the value (never the value itself when the field is secret), ``fix`` says what to put instead.
    """

    def __init__(self, field: str, problem: str, fix: str, *, conn_type: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        self.conn_type = conn_type
        where = f"{conn_type} connection field {field!r}" if conn_type else f"field {field!r}"
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class IdentityUnavailable(WorkloadIdentityError):
    """No ambient identity where the connection expects one.

    ``source`` is the kind of identity looked for (``web_identity``, ``pod_identity``, ...),
    ``looked_for`` the environment variables or endpoints that were checked, ``detail`` what was found.
    """

    def __init__(self, source: str, looked_for: Sequence[str], detail: str) -> None:
        self.source = source
        self.looked_for = tuple(looked_for)
        self.detail = detail
        super().__init__(
            f"no {source} identity is available in this process: {detail}. Looked for: {', '.join(self.looked_for)}"
        )


class AccessDenied(WorkloadIdentityError):
    """The cloud refused a hop. ``hop`` counts from 1 (the source identity is hop 0 of ``hops``).

    ``remediation`` is text a platform engineer can paste (a trust policy statement, a ``gcloud`` or
    ``az`` command); ``cloud_message`` is the cloud's own error message, kept for the audit trail.
    """

    def __init__(
        self,
        *,
        hop: int,
        hops: int,
        caller: str | None,
        target: str,
        permission: str,
        remediation: str,
        cloud_code: str = "",
        cloud_message: str = "",
        endpoint: str | None = None,
    ) -> None:
        self.hop = hop
        self.hops = hops
        self.caller = caller
        self.target = target
        self.permission = permission
        self.remediation = remediation
        self.cloud_code = cloud_code
        self.cloud_message = cloud_message
        self.endpoint = endpoint
        where = "the source identity" if hop == 0 else f"hop {hop} of {hops}"
        lines = [
            f"access denied at {where}: {caller or 'the caller'} may not {permission} on {target}",
        ]
        if cloud_code or cloud_message:
            lines.append(f"The cloud said: {cloud_code}: {cloud_message}".rstrip(": "))
        if endpoint:
            lines.append(f"Endpoint: {endpoint}")
        lines.append(remediation)
        super().__init__("\n".join(lines))


class IdentityMismatch(WorkloadIdentityError):
    """The identity reached is not the one the connection pins (fail closed)."""

    def __init__(self, field: str, expected: Sequence[str], actual: str) -> None:
        self.field = field
        self.expected = tuple(expected)
        self.actual = actual
        super().__init__(
            f"the identity reached ({actual}) is not allowed by {field!r} "
            f"(expected {', '.join(self.expected)}); refusing to hand out its credentials. "
            f"Fix: point the connection at the intended role, or add the account to {field!r}"
        )


class TransientError(WorkloadIdentityError):
    """A call kept failing after bounded retries; says what was retried and the last failure.

    ``endpoint`` is where the calls went, ``status`` the last HTTP status (``None`` for a reset, a
    timeout or a malformed answer), ``retry_after`` the seconds the cloud asked to wait (``Retry-After``),
    if it said. The credential core retries on this type within the token request budget.
    """

    def __init__(
        self,
        operation: str,
        attempts: int,
        last_error: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.operation = operation
        self.attempts = attempts
        self.last_error = last_error
        self.endpoint = endpoint
        self.status = status
        self.retry_after = retry_after
        where = f" at {endpoint}" if endpoint and endpoint not in operation else ""
        last_status = f" (last status {status})" if status is not None else ""
        super().__init__(f"{operation}{where} failed after {attempts} attempts{last_status}; last error: {last_error}")

    def with_attempts(self, attempts: int) -> TransientError:
        """The same failure, counting ``attempts`` in all (the core's retries on top of the SDK's)."""
        return TransientError(
            self.operation,
            attempts,
            self.last_error,
            endpoint=self.endpoint,
            status=self.status,
            retry_after=self.retry_after,
        )


class RejectedValue(ConfigError):
    """The cloud's answer proves a connection field wrong (an unknown account, a lifetime over the
    role's or the organisation's limit). Unlike its parent, raised *after* a network call: the value was
    well-formed, the cloud refused it. Names the field and the fix like every ``ConfigError``; ``cloud_code``
    is the cloud's own error code or status, for the audit trail."""

    def __init__(
        self, field: str, problem: str, fix: str, *, conn_type: str | None = None, cloud_code: str = ""
    ) -> None:
        self.cloud_code = cloud_code
        super().__init__(field, problem, fix, conn_type=conn_type)
