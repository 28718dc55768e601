"""Process-wide sharing of credentials by key, and the one place refresh windows are decided.

Every hook, thread and trigger in a process that resolves the same identity gets the same credential
object from :data:`REGISTRY`; that object refreshes itself with one refresh in flight. Keys hold
everything that changes the resulting identity and never a secret.
"""

from __future__ import annotations

import contextlib
import random
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["DEFAULT_MAX_ENTRIES", "REGISTRY", "Registry", "refresh_windows"]

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


#: Entries a registry keeps strongly (least recently used beyond this are evicted).
DEFAULT_MAX_ENTRIES = 512

_MISSING = object()


class Registry:
    """A thread-safe map from identity keys to shared objects, each built once, bounded in size.

    Keys include rendered session names (``{dag_id}.{task_id}``, possibly the run id), so a long-lived
    process would otherwise keep every identity it ever built. The registry keeps at most ``max_size``
    entries strongly, evicting the least recently used; an evicted object that someone still holds (a
    hook, a chain built on it, a thread refreshing it) stays reachable through a weak reference and is
    handed out again, so there are never two objects for one key and single flight is kept. An object
    nobody holds any more is collected. Values must support weak references (the package's do).
    """

    def __init__(self, max_size: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._held: weakref.WeakValueDictionary[Hashable, Any] = weakref.WeakValueDictionary()
        self._building: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.evictions = 0

    def _lookup(self, key: Hashable) -> Any:
        """The live object for ``key`` (lock held), marking it most recently used."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._held.get(key)
        if value is None:
            return _MISSING
        self._items[key] = value  # evicted earlier but still in use: the same object again
        self._evict()
        return value

    def _evict(self) -> None:
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
            self.evictions += 1

    def get_or_create(self, key: Hashable, factory: Callable[[], V]) -> V:
        """The object for ``key``, built by ``factory`` on first use (once, even under contention)."""
        with self._lock:
            value = self._lookup(key)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                value = self._lookup(key)
                if value is not _MISSING:
                    return value  # type: ignore[no-any-return]
            try:
                created = factory()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:
                self._items[key] = created
                with contextlib.suppress(TypeError):  # not weak-referenceable: kept only while in the LRU
                    self._held[key] = created
                self._building.pop(key, None)
                self._evict()
            return created

    def clear(self) -> None:
        """Forget every shared object (tests; a process that changed its ambient identity)."""
        with self._lock:
            self._items.clear()
            self._held.clear()

    def live(self) -> int:
        """Objects the registry can hand out again: those it keeps plus evicted ones still in use."""
        with self._lock:
            return len(set(self._items) | set(self._held.keys()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: The process-wide registry all hooks share.
REGISTRY = Registry()
