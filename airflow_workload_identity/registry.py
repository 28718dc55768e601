"""Process-wide sharing of credentials by key, and the one place refresh windows are decided.

Every hook, thread and trigger in a process that resolves the same identity gets the same credential
object from :data:`REGISTRY`; that object refreshes itself with one refresh in flight. Keys hold
everything that changes the resulting identity and never a secret.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["REGISTRY", "Registry", "refresh_windows"]

V = TypeVar("V")

#: Refresh no earlier than this many seconds before expiry (botocore's advisory window) ...
MAX_ADVISORY_SECONDS = 15 * 60
#: ... and block callers for a refresh only inside this window (botocore's mandatory window).
MAX_MANDATORY_SECONDS = 10 * 60


def refresh_windows(lifetime_seconds: float, rng: random.Random | None = None) -> tuple[float, float]:
    """``(advisory, mandatory)`` seconds before expiry for credentials that live ``lifetime_seconds``.

    Proportional to the lifetime, so short-lived credentials (``DurationSeconds=900``) are reused for
    most of their life instead of being refreshed on every request, capped at botocore's windows for
    long ones. The advisory window is jittered (80-100 %) so processes that started together do not
    refresh together; it is always wider than the mandatory one.
    """
    lifetime = max(float(lifetime_seconds), 0.0)
    jitter = (rng or random).uniform(0.8, 1.0)
    advisory = min(MAX_ADVISORY_SECONDS, lifetime * 0.2) * jitter
    mandatory = min(MAX_MANDATORY_SECONDS, lifetime * 0.1)
    return advisory, mandatory


class Registry:
    """A thread-safe map from identity keys to shared objects, each built once."""

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._building: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get_or_create(self, key: Hashable, factory: Callable[[], V]) -> V:
        """The object for ``key``, built by ``factory`` on first use (once, even under contention)."""
        with self._lock:
            if key in self._items:
                return self._items[key]  # type: ignore[no-any-return]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._items:
                    return self._items[key]  # type: ignore[no-any-return]
            value = factory()
            with self._lock:
                self._items[key] = value
                self._building.pop(key, None)
            return value

    def clear(self) -> None:
        """Forget every shared object (tests; a process that changed its ambient identity)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: The process-wide registry all hooks share.
REGISTRY = Registry()
