"""One fault vocabulary for every token endpoint of the sandboxes (loopback only).

Each sandbox owns a :class:`FaultInjector` (``sandbox.faults``) and asks it, for every request to a token
endpoint, whether that request is to be faulted. The endpoints:

============== ========================================== =====================================
endpoint       what it is                                 sub-kinds a fault can be limited to
============== ========================================== =====================================
``sts``        AWS STS (the moto front)                   the action (``AssumeRole``, ...)
``pod_identity`` the EKS Pod Identity agent               -
``metadata``   the GKE metadata server                    ``metadata_token``, ``metadata_identity``, ...
``iam``        IAM Credentials                            ``generateAccessToken``, ``signBlob``, ...
``entra``      Entra ID's token endpoint                  -
``imds``       Azure IMDS                                 -
============== ========================================== =====================================

(``storage``, the GCS front, takes the same switches; it is not a token endpoint.)

What a faulted request gets (:class:`FaultKind`):

* ``error``: the status (500, 503, ...) with the endpoint's own error body (and ``Retry-After`` if given);
* ``throttle``: 429 with ``Retry-After`` (the endpoint's throttling body);
* ``reset``: the connection is closed without a response, with ``SO_LINGER`` 0 (the client sees a TCP RST);
* ``hang``: the request is read and held; it is answered normally once the fault is cleared; after
  ``seconds`` (at most :data:`HANG_LIMIT`, so nothing can hang a test run) or when the sandbox stops, the
  connection is dropped unanswered;
* ``slow``: the real answer, ``seconds`` late (2 s by default);
* ``malformed``: 200 with a truncated body (JSON, or XML for STS) that no client can parse.

A fault applies to the next ``times`` requests, or to every request until cleared (``times=None``).
Every faulted request is counted (:meth:`FaultInjector.faulted`); the sandboxes' own request counters
count faulted requests too.

    sb.faults.inject("sts", Fault.error(503, times=2), match="AssumeRole")
    sb.faults.inject("imds", Fault.hang())            # until sb.faults.clear()
    sb.faults.inject("entra", Fault.throttle(retry_after=1, times=None))
"""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler

__all__ = [
    "ENDPOINTS",
    "HANG_LIMIT",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Reply",
    "abort_connection",
    "answer_fault",
    "client_gone",
    "send_reply",
]

#: The token endpoints (and the GCS front) the switches apply to.
ENDPOINTS = ("sts", "pod_identity", "metadata", "iam", "entra", "imds", "storage")
#: No request is held longer than this many seconds, whatever a test asks for.
HANG_LIMIT = 60.0
#: Slow answers are late by at most this many seconds.
SLOW_LIMIT = 30.0


class FaultKind(enum.StrEnum):
    ERROR = "error"
    THROTTLE = "throttle"
    RESET = "reset"
    HANG = "hang"
    SLOW = "slow"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Fault:
    """What to do to a request. Build with the class methods; ``times=None`` means until cleared."""

    kind: FaultKind
    times: int | None = 1
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    # endpoint-specific details of an error answer (each endpoint has defaults)
    code: str | None = None
    message: str | None = None
    body: object = None
    html: bool | None = None

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be >= 1 or None (until cleared), got {self.times}")
        if self.kind in (FaultKind.ERROR, FaultKind.THROTTLE) and not 400 <= self.status <= 599:
            raise ValueError(f"an error fault needs a 4xx/5xx status, got {self.status}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")

    @classmethod
    def error(
        cls,
        status: int = 503,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        body: object = None,
        html: bool | None = None,
    ) -> Fault:
        return cls(
            FaultKind.ERROR,
            times,
            status,
            retry_after=retry_after,
            code=code,
            message=message,
            body=body,
            html=html,
        )

    @classmethod
    def throttle(cls, retry_after: float = 1, *, times: int | None = 1) -> Fault:
        return cls(FaultKind.THROTTLE, times, 429, retry_after=retry_after)

    @classmethod
    def reset(cls, *, times: int | None = 1) -> Fault:
        return cls(FaultKind.RESET, times)

    @classmethod
    def hang(cls, seconds: float = HANG_LIMIT, *, times: int | None = None) -> Fault:
        return cls(FaultKind.HANG, times, seconds=min(seconds, HANG_LIMIT))

    @classmethod
    def slow(cls, seconds: float = 2.0, *, times: int | None = 1) -> Fault:
        return cls(FaultKind.SLOW, times, seconds=min(seconds, SLOW_LIMIT))

    @classmethod
    def malformed(cls, *, times: int | None = 1) -> Fault:
        return cls(FaultKind.MALFORMED, times, status=200)

    def describe(self) -> str:
        until = "until cleared" if self.times is None else f"next {self.times}"
        if self.kind in (FaultKind.ERROR, FaultKind.THROTTLE):
            extra = f" {self.status}" + (f" Retry-After {self.retry_after:g}" if self.retry_after is not None else "")
        elif self.kind in (FaultKind.HANG, FaultKind.SLOW):
            extra = f" {self.seconds:g}s"
        else:
            extra = ""
        return f"{self.kind.value}{extra} ({until})"


@dataclass
class _Armed:
    fault: Fault
    endpoint: str | None
    match: str | None
    remaining: int | None


class FaultInjector:
    """Armed faults and added latency per endpoint; thread-safe. One per sandbox."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        unknown = set(endpoints) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}; known: {ENDPOINTS}")
        self.endpoints = endpoints
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._latency: dict[tuple[str | None, str | None], float] = {}
        self._faulted: Counter[str] = Counter()
        self._release = threading.Event()
        self._closed = False

    def _check(self, endpoint: str | None) -> None:
        if endpoint is not None and endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}; this sandbox has {self.endpoints}")

    # --- switches

    def inject(self, endpoint: str | None, fault: Fault, *, match: str | None = None) -> None:
        """Arm ``fault`` for requests to ``endpoint`` (None: any of this sandbox's endpoints), limited to
        the sub-kind ``match`` (an STS action, a GCP call kind) if given. Faults apply in arming order."""
        self._check(endpoint)
        with self._lock:
            if fault.kind is FaultKind.HANG:
                self._release.clear()
            self._armed.append(_Armed(fault, endpoint, match, fault.times))

    def clear(self, endpoint: str | None = None, *, kinds: tuple[FaultKind, ...] | None = None) -> None:
        """Disarm the faults of ``endpoint`` (None: all), optionally only those of ``kinds``; held
        (hanging) requests are released and answered normally."""
        self._check(endpoint)
        with self._lock:
            self._armed = [
                a
                for a in self._armed
                if not (
                    (endpoint is None or a.endpoint in (None, endpoint)) and (kinds is None or a.fault.kind in kinds)
                )
            ]
            if not any(a.fault.kind is FaultKind.HANG for a in self._armed):
                self._release.set()

    def set_latency(self, endpoint: str | None, seconds: float, *, match: str | None = None) -> None:
        """Delay every request to ``endpoint`` (None: all; ``match``: one sub-kind) by ``seconds``; 0 clears.
        Latency is independent of faults and applies to faulted requests too."""
        self._check(endpoint)
        with self._lock:
            if seconds > 0:
                self._latency[(endpoint, match)] = min(float(seconds), SLOW_LIMIT)
            else:
                self._latency.pop((endpoint, match), None)

    def clear_latency(self, endpoint: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._latency if endpoint is None or k[0] == endpoint]:
                del self._latency[key]

    def close(self) -> None:
        """The sandbox is stopping: release every held request (they are dropped unanswered)."""
        with self._lock:
            self._closed = True
            self._release.set()

    # --- counters

    def faulted(self, endpoint: str | None = None) -> int:
        """Requests that were faulted (slow ones included), for ``endpoint`` or all."""
        with self._lock:
            return self._faulted[endpoint] if endpoint else sum(self._faulted.values())

    def reset_counts(self) -> None:
        with self._lock:
            self._faulted.clear()

    def armed(self) -> list[str]:
        """Human-readable list of what is armed (for debugging a test)."""
        with self._lock:
            return [f"{a.endpoint or '*'}{'/' + a.match if a.match else ''}: {a.fault.describe()}" for a in self._armed]

    # --- the request side

    def take(self, endpoint: str, *names: str) -> Fault | None:
        """The fault for this request to ``endpoint`` (sub-kinds ``names``), consuming one of its ``times``;
        sleeps for the endpoint's added latency first (outside the lock)."""
        with self._lock:
            delay = 0.0
            for key in [*((endpoint, n) for n in names), (endpoint, None), (None, None)]:
                if key in self._latency:
                    delay = self._latency[key]
                    break
            fault = None
            for armed in self._armed:
                if armed.endpoint not in (None, endpoint):
                    continue
                if armed.match is not None and armed.match not in names:
                    continue
                fault = armed.fault
                if armed.remaining is not None:
                    armed.remaining -= 1
                self._faulted[endpoint] += 1
                break
            self._armed = [a for a in self._armed if a.remaining is None or a.remaining > 0]
        if delay:
            time.sleep(delay)
        return fault

    def hold(self, fault: Fault) -> bool:
        """Hold a hanging request. True if released by :meth:`clear` (answer it normally); False after
        ``fault.seconds`` or when the sandbox stops (drop the connection)."""
        released = self._release.wait(min(fault.seconds, HANG_LIMIT))
        with self._lock:
            return released and not self._closed


# --- applying a fault to an http.server (or werkzeug) request --------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def with_retry_after(self, retry_after: float | None) -> Reply:
        if retry_after is None:
            return self
        value = str(int(retry_after)) if float(retry_after).is_integer() else f"{retry_after:g}"
        return replace(self, headers=(*self.headers, ("Retry-After", value)))


def send_reply(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    for name, value in reply.headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(reply.body)))
    handler.end_headers()
    handler.wfile.write(reply.body)


def client_gone(sock: socket.socket) -> bool:
    """True if the client of a held request has closed its side (it sends nothing else while it waits
    for the answer, so anything readable is its FIN or RST)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def abort_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close the handler's connection now, without a response, with a TCP RST (``SO_LINGER`` 0).

    The request's read buffer is closed first so that closing the socket really closes it; the handler
    then finishes quietly (its write side has nothing buffered)."""
    sock = handler.connection
    handler.close_connection = True
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.rfile.close()
    sock.close()


def answer_fault(
    handler: BaseHTTPRequestHandler,
    injector: FaultInjector,
    fault: Fault | None,
    *,
    error: Callable[[Fault], Reply],
    malformed: Reply,
) -> bool:
    """Apply ``fault`` to the request ``handler`` is serving. True if the request was answered (or
    dropped) here; False if the handler must now give its real answer (no fault, a slow one, or a
    hang that was cleared)."""
    if fault is None:
        return False
    if fault.kind is FaultKind.SLOW:
        time.sleep(fault.seconds)
        return False
    if fault.kind is FaultKind.HANG:
        if injector.hold(fault) and not client_gone(handler.connection):
            return False
        abort_connection(handler)
        return True
    if fault.kind is FaultKind.RESET:
        abort_connection(handler)
        return True
    if fault.kind is FaultKind.MALFORMED:
        send_reply(handler, malformed)
        return True
    retry_after = fault.retry_after
    if fault.kind is FaultKind.THROTTLE and retry_after is None:
        retry_after = 1
    send_reply(handler, error(fault).with_retry_after(retry_after))
    return True


class DropConnection(ConnectionAbortedError):
    """Raised by a WSGI app (the moto front) to have its request handler drop the connection with a RST."""
