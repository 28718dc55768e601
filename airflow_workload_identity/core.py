"""The one refreshing-token core the three clouds share.

A cloud supplies only *mint a token* (a function returning :class:`Minted`) and *describe it* (a
name for logs and errors, and a :class:`Codec` for the host cache). Everything else lives here, once:

- **windows**: a token is ``FRESH`` until the advisory window before its expiry, ``STALE`` inside it (one
  caller refreshes, the others keep using it), ``INVALID`` inside the mandatory window (callers wait
  for the one refresh); the windows follow each token's lifetime (:func:`registry.refresh_windows`);
- **single flight**: one refresh in flight per token, across threads and event loops (the async
  path runs the same refresh in a worker thread, so the loop never blocks);
- **serve stale on failure**: a refresh that fails while the current token is still valid keeps
  serving it and logs one line; the next attempt waits a jittered, growing backoff (never hammered);
  callers never wait for the refresh of a still-valid token (it runs in one background thread);
  callers that waited for a failed refresh get that failure, not another request; with no valid token,
  an unwell endpoint (``TransientError``, ``IdentityUnavailable``) is left alone for a short backoff;
- **bounded time**: :class:`~airflow_workload_identity.errors.TransientError` from a mint is retried
  (honouring ``retry_after``) only while the token request budget allows (default 30 s, setting
  ``[workload_identity] token_request_budget_seconds``); a waiter never waits forever;
- **no storms**: a token whose expiry is already past by the local clock (clock skew) is used for
  :data:`SKEWED_LIFETIME_SECONDS`, and no token is treated as living less than
  :data:`MIN_LIFETIME_SECONDS`, so at most one token request per lifetime-bounded interval;
- **host cache**: with a :class:`TokenStore`, a needed mint first takes the store's per-key lock and
  reads the entry another process may have written; only if that is not fresh does it call the cloud,
  then saves what it got.

No Airflow imports and no cloud SDK imports: the clouds build on this, never the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from airflow_workload_identity.errors import ConfigError, IdentityUnavailable, TransientError, WorkloadIdentityError
from airflow_workload_identity.registry import refresh_windows

__all__ = [
    "BUDGET_SETTING",
    "DEFAULT_BUDGET_SECONDS",
    "Codec",
    "Minted",
    "RefreshingToken",
    "TokenState",
    "TokenStore",
    "token_request_budget",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long getting one token may take, retries included, before ``TransientError`` (seconds).
DEFAULT_BUDGET_SECONDS = 30.0
BUDGET_SETTING = "[workload_identity] token_request_budget_seconds"
BUDGET_ENV = "AIRFLOW__WORKLOAD_IDENTITY__TOKEN_REQUEST_BUDGET_SECONDS"
#: A token whose expiry is already past by the local clock is used this long (then refreshed).
SKEWED_LIFETIME_SECONDS = 60.0
#: No token is treated as living less than this: a floor on the interval between token requests.
MIN_LIFETIME_SECONDS = 1.0
#: Backoff after a failed refresh while a token is still served: base, cap (seconds), before jitter.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
#: With no valid token, how long at most an unwell endpoint is left alone after a failed request.
NO_TOKEN_BACKOFF_MAX_SECONDS = 5.0
#: Format version of what the core writes to a host cache.
PAYLOAD_VERSION = 1


def token_request_budget() -> float:
    """The token request budget: the environment first, then Airflow's configuration, as Airflow does.

    Raises :class:`ConfigError` for a value that is not a positive number of seconds."""
    raw: str | None = os.environ.get(BUDGET_ENV)
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("workload_identity", "token_request_budget_seconds", fallback="")
        except ImportError:  # pragma: no cover - outside Airflow
            raw = ""
    if not raw or not raw.strip():
        return DEFAULT_BUDGET_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(
            BUDGET_SETTING,
            f"{raw.strip()!r} is not a positive number of seconds",
            f"set a number such as {DEFAULT_BUDGET_SECONDS:g}, or remove the setting for the default",
        )
    return value


class TokenStore(Protocol):
    """A host-wide cache of tokens shared by the processes of one user (``cache.py`` implements it)."""

    def load(self, key: str) -> tuple[dict[str, Any], float] | None:
        """``(payload, expires_at epoch seconds)`` or ``None`` (absent, corrupt, foreign, expired)."""
        ...

    def save(self, key: str, payload: dict[str, Any], expires_at: float) -> None: ...

    def lock(self, key: str, timeout: float) -> AbstractContextManager[None]:
        """An exclusive lock on ``key`` across processes, waiting at most ``timeout`` seconds."""
        ...

    def remove(self, key: str) -> None: ...


class Codec(Protocol[T]):
    """How one cloud's token becomes a JSON-able dict for the host cache and back."""

    def to_payload(self, value: T) -> dict[str, Any]: ...

    def from_payload(self, payload: dict[str, Any]) -> T: ...


@dataclass(frozen=True)
class Minted(Generic[T]):
    """What a cloud's mint returns: the token (whatever its SDK needs) and its expiry, epoch seconds."""

    value: T
    expires_at: float


class TokenState(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    INVALID = "invalid"


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    expires_at: float  # as the cloud said
    valid_until: float  # what the core goes by (skew and minimum-lifetime floors applied)
    issued_at: float
    advisory: float
    mandatory: float


class RefreshingToken(Generic[T]):
    """One identity's token: refreshed ahead of expiry, single flight, stale served on failure.

    :param mint: the cloud's "get a new token"; raises a :class:`WorkloadIdentityError`
        (:class:`TransientError` for what may pass: retried within the budget).
    :param describe: what this token is, for logs and errors (never a secret).
    :param codec: how the token is stored in a host cache (needed only with ``store``).
    :param store: the host cache; ``store_key`` is this token's key in it.
    :param max_attempts: attempts per refresh when mints raise ``TransientError``, counting the SDK's own
        (``TransientError.attempts``): a mint whose SDK already retried that often is not repeated.
    :param attempt_timeout: the longest one mint can take; no retry starts unless it can finish in budget.
    :param clock: epoch seconds (injectable for tests); ``sleep`` and ``rng`` likewise.
    :param background: refresh a still-valid token in a background thread (callers never wait for it);
        ``False`` refreshes inline in the caller that noticed (deterministic tests).
    """

    def __init__(
        self,
        mint: Callable[[], Minted[T]],
        *,
        describe: str,
        codec: Codec[T] | None = None,
        store: TokenStore | None = None,
        store_key: str | None = None,
        budget: float | None = None,
        max_attempts: int = 1,
        attempt_timeout: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        windows: Callable[[float], tuple[float, float]] = refresh_windows,
        background: bool = True,
    ) -> None:
        if store is not None and (codec is None or not store_key):
            raise ValueError("a token store needs a codec and a store key")
        self._mint = mint
        self.describe = describe
        self._codec = codec
        self._store = store
        self._store_key = store_key
        self._budget = budget
        self._max_attempts = max(1, max_attempts)
        self._attempt_timeout = attempt_timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)
        self._windows = windows
        self._background = background
        self._lock = threading.Lock()
        self._inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[T]] = (
            weakref.WeakKeyDictionary()
        )
        self._entry: _Entry[T] | None = None
        self._generation = 0  # completed refresh attempts
        self._failure: tuple[WorkloadIdentityError, int] | None = None  # (error, generation it ended)
        self._failures = 0  # consecutive
        self._next_attempt_at = 0.0
        self._listeners: list[Callable[[T], None]] = []
        #: Refreshes that got a new token (from the cloud or the host cache), and calls to the cloud.
        self.refreshes = 0
        self.mints = 0

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def budget(self) -> float:
        return self._budget if self._budget is not None else token_request_budget()

    def _state_of(self, entry: _Entry[T] | None, now: float) -> TokenState:
        if entry is None:
            return TokenState.INVALID
        remaining = entry.valid_until - now
        if remaining <= entry.mandatory:
            return TokenState.INVALID
        if remaining <= entry.advisory:
            return TokenState.STALE
        return TokenState.FRESH

    def state(self) -> TokenState:
        return self._state_of(self._entry, self._clock())

    @property
    def value(self) -> T | None:
        """The current token, whatever its state (no refresh)."""
        entry = self._entry
        return entry.value if entry is not None else None

    @property
    def expires_at(self) -> float | None:
        """When the current token expires, as the cloud said (epoch seconds)."""
        entry = self._entry
        return entry.expires_at if entry is not None else None

    @property
    def windows(self) -> tuple[float, float]:
        """``(advisory, mandatory)`` seconds before expiry for the current token."""
        entry = self._entry
        return (entry.advisory, entry.mandatory) if entry is not None else (0.0, 0.0)

    @property
    def backing_off(self) -> bool:
        return self._clock() < self._next_attempt_at

    @property
    def retry_in(self) -> float:
        """Seconds until the next refresh attempt is allowed after a failure (0: now)."""
        return max(0.0, self._next_attempt_at - self._clock())

    def add_listener(self, listener: Callable[[T], None]) -> None:
        """Call ``listener`` with every new token (and now, with the current one, if any)."""
        if listener in self._listeners:
            return
        self._listeners.append(listener)
        entry = self._entry
        if entry is not None:
            listener(entry.value)

    # -- getting the token ------------------------------------------------------------------------------------

    def get(self, *, force: bool = False) -> T:
        """A usable token, refreshing as the windows say (``force``: a new one unless another caller got
        one meanwhile, e.g. after the cloud refused the current one).

        While the current token is valid no caller waits for a refresh: one refresh starts (in a
        background thread, or inline without ``background``) and everyone keeps the current token."""
        now = self._clock()
        entry = self._entry
        state = self._state_of(entry, now)
        if not force and state is TokenState.FRESH:
            assert entry is not None
            return entry.value
        if not force and entry is not None and now < entry.valid_until:
            if now >= self._next_attempt_at and self._lock.acquire(blocking=False):
                self._start_refresh()
            current = self._entry
            assert current is not None
            return current.value
        return self._get_blocking(force)

    def _start_refresh(self) -> None:
        """Run one refresh with the lock held (the caller acquired it; released when done)."""
        if self._background:
            thread = threading.Thread(target=self._refresh_then_release, name="wi-refresh", daemon=True)
            try:
                thread.start()
                return
            except RuntimeError:  # no new threads (interpreter shutting down): refresh here
                pass
        self._refresh_then_release()

    def _refresh_then_release(self) -> None:
        try:
            if self._state_of(self._entry, self._clock()) is not TokenState.FRESH and not self.backing_off:
                self._refresh_locked()
        except WorkloadIdentityError:
            pass  # recorded (self._failure): callers left without a valid token get it
        except Exception:
            logger.exception("Unexpected error refreshing %s", self.describe)
        finally:
            self._lock.release()

    def _get_blocking(self, force: bool) -> T:
        generation = self._generation
        wait = self.budget + 5.0
        if not self._lock.acquire(timeout=wait):
            raise TransientError(f"waiting for the refresh of {self.describe}", 0, f"not done after {wait:.0f} s")
        try:
            now = self._clock()
            entry = self._entry
            if self._generation != generation:  # a refresh completed while we waited: share its outcome
                failure = self._failure
                if failure is not None and failure[1] == self._generation:
                    if entry is not None and now < entry.valid_until:
                        return entry.value
                    raise failure[0]
                if entry is not None and (force or self._state_of(entry, now) is not TokenState.INVALID):
                    return entry.value
            elif not force and entry is not None and self._state_of(entry, now) is not TokenState.INVALID:
                return entry.value
            if entry is not None and now < entry.valid_until and not force:
                return entry.value  # still valid (a refresh just ran or is backing off): it works
            failure = self._failure
            if failure is not None and now < self._next_attempt_at and not force:
                raise failure[0]  # failed moments ago (unwell endpoint) and nothing to serve: no new request
            self._refresh_locked()
            current = self._entry
            assert current is not None
            return current.value
        finally:
            self._lock.release()

    async def aget(self, *, force: bool = False) -> T:
        """:meth:`get` for the event loop: no thread while the token is usable without a refresh; a
        refresh (and any host-cache I/O) runs in a worker thread, sharing the single flight."""
        if not force:
            now = self._clock()
            entry = self._entry
            state = self._state_of(entry, now)
            if entry is not None and (
                state is TokenState.FRESH
                or (now < entry.valid_until and (now < self._next_attempt_at or self._lock.locked()))
            ):
                return entry.value
            # Coroutines of one loop share one call in a worker thread (the executor's few workers would
            # otherwise queue some of them until the refresh they should have shared is over).
            loop = asyncio.get_running_loop()
            shared = self._inflight.get(loop)
            if shared is None or shared.done():
                shared = asyncio.ensure_future(asyncio.to_thread(self.get))
                self._inflight[loop] = shared
            return await asyncio.shield(shared)
        return await asyncio.to_thread(self.get, force=force)

    # -- refreshing (lock held) -------------------------------------------------------------------------------

    def _refresh_locked(self) -> None:
        previous = self._entry
        try:
            entry = self._obtain()
        except WorkloadIdentityError as exc:
            self._generation += 1
            self._failure = (exc, self._generation)
            self._failures += 1
            now = self._clock()
            if previous is None or now >= previous.valid_until:
                # Nothing to serve: the callers that waited for this attempt share its failure. An endpoint or
                # identity that is unwell (transient, unavailable) is not asked again for a short, growing,
                # jittered while: callers meanwhile get this failure. After a verdict (denied, misconfigured)
                # the next caller tries at once: its cause may just have been fixed (a trust policy, a file).
                if isinstance(exc, (TransientError, IdentityUnavailable)):
                    self._next_attempt_at = now + min(self._backoff(BACKOFF_MAX_SECONDS), NO_TOKEN_BACKOFF_MAX_SECONDS)
                raise
            delay = self._backoff(previous.valid_until - now)
            self._next_attempt_at = now + delay
            logger.warning(
                "%s refresh of %s failed; keeping the current credentials (valid %.0f s more), "
                "next attempt in %.1f s: %s",
                "Advisory" if previous.valid_until - now > previous.mandatory else "Mandatory",
                self.describe,
                previous.valid_until - now,
                delay,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return
        self._generation += 1
        self._failure = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self._entry = entry
        self.refreshes += 1
        for listener in self._listeners:
            listener(entry.value)

    def _backoff(self, remaining: float) -> float:
        """Jittered exponential backoff, short enough to try a few more times while the token lasts."""
        ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(self._failures - 1, 16))
        delay = ceiling * self._rng.uniform(0.5, 1.0)
        return max(0.0, min(delay, remaining / 3))

    def _obtain(self) -> _Entry[T]:
        """A new entry: from the host cache if another process refreshed it, else from the cloud."""
        if self._store is None or self._store_key is None:
            return self._mint_with_retries()
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._store.lock(self._store_key, self.budget))
            except Exception as exc:  # a store that cannot lock must not stop the cloud call
                logger.warning("Host credential cache unavailable for %s (%s); asking the cloud", self.describe, exc)
                return self._mint_with_retries()
            cached = self._load()
            if cached is not None:
                return cached
            entry = self._mint_with_retries()
            self._save(entry)
            return entry
        raise AssertionError("unreachable")  # pragma: no cover (ExitStack does not swallow)

    def _load(self) -> _Entry[T] | None:
        assert self._store is not None and self._store_key is not None and self._codec is not None
        try:
            loaded = self._store.load(self._store_key)
            if loaded is None:
                return None
            payload, expires_at = loaded
            if payload.get("v") != PAYLOAD_VERSION:
                return None
            value = self._codec.from_payload(payload["token"])
            issued_at = float(payload["issued_at"])
            entry = self._entry_for(value, float(expires_at), issued_at)
        except Exception as exc:  # corrupt or foreign: ignored, replaced by the next save
            logger.warning("Ignoring an unreadable host cache entry for %s (%s)", self.describe, type(exc).__name__)
            return None
        current = self._entry
        if current is not None and current.expires_at >= entry.expires_at:
            return None  # what we already hold (or older)
        if self._state_of(entry, self._clock()) is not TokenState.FRESH:
            return None
        return entry

    def _save(self, entry: _Entry[T]) -> None:
        assert self._store is not None and self._store_key is not None and self._codec is not None
        payload = {"v": PAYLOAD_VERSION, "issued_at": entry.issued_at, "token": self._codec.to_payload(entry.value)}
        try:
            self._store.save(self._store_key, payload, entry.expires_at)
        except Exception as exc:  # the token is good; only sharing it failed
            logger.warning("Could not write the host cache entry for %s (%s)", self.describe, type(exc).__name__)

    def _mint_with_retries(self) -> _Entry[T]:
        """Mint; on ``TransientError`` try again (``retry_after`` or a jittered backoff) while the
        attempts and the budget allow, then raise the last failure counting every attempt."""
        deadline = self._clock() + self.budget
        tries = 0
        attempts = 0  # the SDK's attempts included
        longest = 0.0  # the longest failed mint so far: an SDK retrying inside one mint takes several timeouts
        while True:
            tries += 1
            self.mints += 1
            started = self._clock()
            try:
                minted = self._mint()
            except TransientError as exc:
                longest = max(longest, self._clock() - started)
                attempts += max(exc.attempts, 1)
                if attempts >= self._max_attempts:  # the SDK's own retries count against the attempts
                    raise (exc if tries == 1 else exc.with_attempts(attempts)) from exc
                if exc.retry_after is not None:
                    delay = max(0.0, exc.retry_after)
                else:
                    delay = min(4.0, 0.5 * 2.0 ** (tries - 1)) * self._rng.uniform(0.5, 1.5)
                # another mint must be able to end before the deadline, as long as the slowest one so far took
                if self._clock() + delay + max(self._attempt_timeout, longest) > deadline:
                    raise (exc if tries == 1 else exc.with_attempts(attempts)) from exc
                self._sleep(delay)
                continue
            return self._entry_for(minted.value, minted.expires_at, self._clock())

    def _entry_for(self, value: T, expires_at: float, issued_at: float) -> _Entry[T]:
        now = self._clock()
        valid_until = expires_at
        if expires_at <= now:
            logger.warning(
                "%s expires %.0f s before now by the local clock (clock skew?); using it for %.0f s",
                self.describe,
                now - expires_at,
                SKEWED_LIFETIME_SECONDS,
            )
            valid_until = now + SKEWED_LIFETIME_SECONDS
        valid_until = max(valid_until, issued_at + MIN_LIFETIME_SECONDS)
        advisory, mandatory = self._windows(valid_until - issued_at)
        return _Entry(value, expires_at, valid_until, issued_at, advisory, mandatory)

    def __repr__(self) -> str:  # never the token
        return f"<RefreshingToken {self.describe} state={self.state().value}>"
