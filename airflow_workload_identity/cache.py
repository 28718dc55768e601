"""The host-wide credential cache: one token per identity per host user, not one per task process.

Airflow 3 runs every task in a process of its own, so the process-wide registry alone mints a token per
task. This layer sits behind it: a private directory shared by every process of the same OS user on the
host, holding each identity's current token until it expires, with a file lock per identity so that N
processes starting together make one token request (the others wait, then read it).

What is on disk (``docs/credential-cache.md``), in one directory (mode 0700, owned by the user)::

    <sha256>.json   an entry, mode 0600: {"format", "version", "key", "expires_at", "written_at", "payload"}
    <sha256>.lock   the identity's lock file (empty), mode 0600; removed with the expired entry
    .<sha256>.<random>.tmp   an entry being written (renamed over the entry: readers never see a partial one)

File names are the key only, and the key is a SHA-256 of the canonical identity (:func:`store_key`):
no identity, no secret, in any name. Every file is opened relative to the verified directory descriptor,
with ``O_NOFOLLOW``; an entry that is not a regular 0600 file of this user, not valid JSON, of another
format or version, recorded for another key, or expired is never served.

Configuration (environment first, then Airflow's configuration, as Airflow itself does)::

    [workload_identity]
    credential_cache = host          # host | process | off
    credential_cache_dir = /path     # default: $XDG_RUNTIME_DIR/airflow-workload-identity, else <tmp>/awi-<uid>

A connection's ``"credential_cache": "process"`` (or ``"off"``) keeps that identity out of the host cache.

This module imports neither Airflow nor a cloud SDK; its methods are blocking and thread-safe (async
callers use ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from airflow_workload_identity.errors import ConfigError

__all__ = [
    "DIR_ENV",
    "DIR_SETTING",
    "ENV",
    "FORMAT",
    "FORMAT_VERSION",
    "MODES",
    "SETTING",
    "HostTokenStore",
    "TokenStore",
    "cache_mode",
    "configured_store",
    "default_directory",
    "host_layer",
    "store_key",
]

log = logging.getLogger(__name__)

SETTING = "[workload_identity] credential_cache"
ENV = "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE"
DIR_SETTING = "[workload_identity] credential_cache_dir"
DIR_ENV = "AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR"
CONN_FIELD = "credential_cache"
MODES = ("host", "process", "off")

FORMAT = "airflow-workload-identity/credential-cache"
FORMAT_VERSION = 1

#: An entry larger than this is not ours (a token payload is a few kilobytes at most).
MAX_ENTRY_BYTES = 256 * 1024
#: Opportunistic sweep: at most this many directory entries looked at per sweep, one sweep per interval.
SWEEP_BATCH = 32
SWEEP_INTERVAL = 30.0
#: A temporary file older than this was left by a writer that died; the sweep removes it.
STALE_TEMP_SECONDS = 300.0

_KEY = re.compile(r"[0-9a-f]{64}")
_ENTRY_SUFFIX = ".json"
_LOCK_SUFFIX = ".lock"
_TEMP_SUFFIX = ".tmp"
_PRIVATE_BITS = stat.S_IRWXG | stat.S_IRWXO


class TokenStore(Protocol):
    """What the credential core needs from a cross-process cache; ``key`` comes from :func:`store_key`."""

    def load(self, key: str) -> tuple[dict[str, Any], float] | None:
        """``(payload, expires_at)`` (epoch seconds); ``None`` if absent, corrupt, foreign or expired."""
        ...

    def save(self, key: str, payload: dict[str, Any], expires_at: float) -> None: ...

    def lock(self, key: str, timeout: float) -> AbstractContextManager[None]:
        """Exclusive across processes (and threads) per key; after ``timeout`` s proceeds unlocked."""
        ...

    def remove(self, key: str) -> None: ...


# -- keys ---------------------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("store_key() parts must not hold NaN or infinity")
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": f"{type(value).__qualname__}.{value.name}"}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("store_key() mappings must have string keys")
        return {k: _canonical(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": type(value).__qualname__, "fields": fields}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [_canonical(item) for item in value]
        return {"__set__": sorted(items, key=lambda item: json.dumps(item, sort_keys=True))}
    raise TypeError(f"store_key() cannot canonicalise a {type(value).__name__}")


def store_key(*parts: object) -> str:
    """The cache key of an identity: SHA-256 of the parts as canonical JSON (sorted keys).

    Parts are strings, numbers, booleans, ``None``, enums and (nested) mappings, sequences, sets and
    dataclasses of those. Equal parts give equal keys in every process; the key reveals nothing of them.
    """
    text = json.dumps([_canonical(part) for part in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("a credential cache key must come from store_key() (64 lower-case hex digits)")


# -- configuration ---------------------------------------------------------------------------------------


def _setting(env: str, option: str) -> str | None:
    raw = os.environ.get(env)
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("workload_identity", option, fallback=None)
        except ImportError:  # pragma: no cover - outside Airflow
            raw = None
    if raw is None or not str(raw).strip():
        return None
    return str(raw).strip()


def cache_mode(conn_setting: str | None = None) -> str:
    """``host``, ``process`` or ``off``: the deployment's setting unless the connection opts out."""
    if conn_setting is not None and str(conn_setting).strip():
        value = str(conn_setting).strip().lower()
        if value not in MODES:
            raise ConfigError(
                CONN_FIELD,
                f"{conn_setting!r} is not one of 'host', 'process', 'off'",
                "use 'process' (or 'off') to keep this identity out of the host cache, or leave it unset",
            )
        if value != "host":
            return value
    raw = _setting(ENV, "credential_cache")
    mode = (raw or "host").lower()
    if mode not in MODES:
        raise ConfigError(
            SETTING,
            f"{raw!r} is not one of 'host', 'process', 'off'",
            f"set {SETTING} ({ENV}) to host, process or off",
        )
    return mode


def default_directory() -> str:
    """``$XDG_RUNTIME_DIR/airflow-workload-identity`` (a per-user tmpfs), else ``<tmp>/awi-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "airflow-workload-identity")
    return os.path.join(tempfile.gettempdir(), f"awi-{os.geteuid()}")


def _configured_directory() -> str:
    raw = _setting(DIR_ENV, "credential_cache_dir")
    if raw is None:
        return default_directory()
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        raise ConfigError(
            DIR_SETTING,
            "is not an absolute path",
            f"set {DIR_SETTING} ({DIR_ENV}) to an absolute path, or leave it unset for the per-user default",
        )
    return os.path.normpath(path)


_registry_lock = threading.Lock()
_stores: dict[str, HostTokenStore | None] = {}  # one per configured directory: bounded by the configuration
_warned: set[str] = set()  # warning kinds already logged by this process (a fixed, small set)


def _warn_once(kind: str, message: str, *args: object) -> None:
    if kind in _warned:
        log.debug(message, *args)
        return
    _warned.add(kind)
    log.warning(message, *args)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def configured_store(conn_setting: str | None = None) -> TokenStore | None:
    """The host cache this process should use, or ``None`` for in-process only.

    ``conn_setting`` is the connection's ``credential_cache`` value (``process``/``off`` opt it out).
    ``None`` also when the directory is unsafe or unusable: that is logged once per process, as a warning.
    Raises :class:`ConfigError` for a setting that is not ``host``/``process``/``off`` or a relative directory.
    """
    if cache_mode(conn_setting) != "host":
        return None
    directory = _configured_directory()
    with _registry_lock:
        if directory not in _stores:
            try:
                _stores[directory] = HostTokenStore(directory)
            except _UnsafeDirectory as exc:
                _warn_once(
                    "directory",
                    "credential cache directory %s refused (%s): tokens are cached in this process only. "
                    "Fix: make it a directory (not a symlink) owned by uid %d with mode 0700, or set %s",
                    directory,
                    exc.reason,
                    os.geteuid(),
                    DIR_SETTING,
                )
                _stores[directory] = None
        return _stores[directory]


def host_layer(identity_key: object, conn_setting: str | None = None) -> tuple[TokenStore | None, str | None]:
    """The host cache and ``identity_key``'s entry name in it, or ``(None, None)`` to stay in-process.

    ``identity_key`` is the process registry's key of a shared credential: every parameter that changes
    the identity reached, including the ambient source identity (role ARN and token file, Pod Identity
    agent, metadata server, client id and tenant), so one identity's entry is never served to another.
    """
    store = configured_store(conn_setting)
    if store is None:
        return None, None
    return store, store_key("airflow-workload-identity", FORMAT_VERSION, identity_key)


# -- the store ---------------------------------------------------------------------------------------------


class _UnsafeDirectory(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _open_private_directory(path: str) -> int:
    """A descriptor on ``path``, created 0700 if absent, verified: a real directory of ours, private."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _UnsafeDirectory("it is a symbolic link or not a directory") from None
        raise _UnsafeDirectory(f"cannot create or open it: {os.strerror(exc.errno or 0)}") from None
    try:
        _verify_directory(fd)
    except _UnsafeDirectory:
        os.close(fd)
        raise
    return fd


def _verify_directory(fd: int) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise _UnsafeDirectory("it is not a directory")
    if st.st_uid != os.geteuid():
        raise _UnsafeDirectory(f"it is owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}")
    if st.st_mode & _PRIVATE_BITS:
        raise _UnsafeDirectory(f"its mode is {stat.S_IMODE(st.st_mode):04o}: group or others have access")


class HostTokenStore:
    """A :class:`TokenStore` in one private directory, shared by this user's processes on the host.

    Holds a descriptor on the verified directory and nothing per token: entries live on disk only.
    Every failure to read or write is a cache miss (logged at DEBUG), never an exception to the caller.
    """

    def __init__(self, directory: str, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._dir_fd = _open_private_directory(directory)
        self._sweep_lock = threading.Lock()
        self._sweep_iter: Iterator[os.DirEntry[str]] | None = None
        self._sweep_pid = os.getpid()
        self._next_sweep = 0.0

    def __repr__(self) -> str:
        return f"HostTokenStore(directory={self.directory!r})"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._dir_fd)

    # -- checks -----------------------------------------------------------------------------------

    def _directory_ok(self) -> bool:
        try:
            _verify_directory(self._dir_fd)
        except (_UnsafeDirectory, OSError) as exc:
            reason = exc.reason if isinstance(exc, _UnsafeDirectory) else "it can no longer be read"
            _warn_once(
                "directory",
                "credential cache directory %s refused (%s): tokens are cached in this process only",
                self.directory,
                reason,
            )
            return False
        return True

    def _refuse_entry(self, name: str, st: os.stat_result | None, why: str) -> None:
        _warn_once("entry", "credential cache entry refused and removed (%s)", why)
        self._unlink_if_same(name, st)

    def _unlink_if_same(self, name: str, st: os.stat_result | None) -> None:
        """Remove ``name`` if it is still the file ``st`` describes (not a fresh entry written since)."""
        try:
            if st is not None:
                now = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    return
            os.unlink(name, dir_fd=self._dir_fd)
        except OSError:
            return

    # -- TokenStore -------------------------------------------------------------------------------

    def load(self, key: str) -> tuple[dict[str, Any], float] | None:
        _check_key(key)
        if not self._directory_ok():
            return None
        self._maybe_sweep()
        name = key + _ENTRY_SUFFIX
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._refuse_entry(name, None, "a symbolic link")
            else:
                log.debug("credential cache entry unreadable: %s", os.strerror(exc.errno or 0))
            return None
        try:
            st = os.fstat(fd)
            problem = self._entry_problem(st)
            if problem:
                self._refuse_entry(name, st, problem)
                return None
            data = self._read(fd)
        except OSError as exc:
            log.debug("credential cache entry unreadable: %s", os.strerror(exc.errno or 0))
            return None
        finally:
            os.close(fd)
        entry = self._parse(data)
        if entry is None:
            log.debug("credential cache entry ignored: not a readable entry of this format")
            self._unlink_if_same(name, st)
            return None
        if entry["key"] != key:
            self._refuse_entry(name, st, "it was written for another key")
            return None
        expires_at = float(entry["expires_at"])
        if expires_at <= self._clock():
            self._unlink_if_same(name, st)
            self._remove_lock_file(key)
            return None
        return entry["payload"], expires_at

    def save(self, key: str, payload: dict[str, Any], expires_at: float) -> None:
        _check_key(key)
        if not isinstance(payload, dict):
            raise TypeError("payload must be a dict")
        if not math.isfinite(expires_at):
            raise ValueError("expires_at must be a finite epoch time")
        if expires_at <= self._clock():
            return
        if not self._directory_ok():
            return
        entry = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "key": key,
            "expires_at": float(expires_at),
            "written_at": self._clock(),
            "payload": payload,
        }
        data = json.dumps(entry, separators=(",", ":")).encode("utf-8")
        if len(data) > MAX_ENTRY_BYTES:
            log.debug("credential cache entry not written: larger than %d bytes", MAX_ENTRY_BYTES)
            return
        temp = f".{key}.{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600, dir_fd=self._dir_fd)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, key + _ENTRY_SUFFIX, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            log.debug("credential cache entry not written: %s", os.strerror(exc.errno or 0))
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._dir_fd)
        self._maybe_sweep()

    def remove(self, key: str) -> None:
        _check_key(key)
        with contextlib.suppress(OSError):
            os.unlink(key + _ENTRY_SUFFIX, dir_fd=self._dir_fd)
        self._remove_lock_file(key)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        _check_key(key)
        fd = self._acquire(key + _LOCK_SUFFIX, timeout) if self._directory_ok() else None
        try:
            yield
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    # -- internals --------------------------------------------------------------------------------

    def _entry_problem(self, st: os.stat_result) -> str | None:
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_uid != os.geteuid():
            return f"owned by uid {st.st_uid}"
        if st.st_mode & _PRIVATE_BITS:
            return f"mode {stat.S_IMODE(st.st_mode):04o} gives group or others access"
        if st.st_size > MAX_ENTRY_BYTES:
            return "larger than any entry this package writes"
        return None

    @staticmethod
    def _read(fd: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ENTRY_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(data: bytes) -> dict[str, Any] | None:
        if len(data) > MAX_ENTRY_BYTES:
            return None
        try:
            entry = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(entry, dict):
            return None
        if entry.get("format") != FORMAT or entry.get("version") != FORMAT_VERSION:
            return None
        expires_at = entry.get("expires_at")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float) or not math.isfinite(expires_at):
            return None
        if not isinstance(entry.get("key"), str) or not isinstance(entry.get("payload"), dict):
            return None
        return entry

    def _open_lock_file(self, name: str) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, 0o600, dir_fd=self._dir_fd)

    def _acquire(self, name: str, timeout: float) -> int | None:
        """The locked descriptor of ``name``, or ``None`` (proceed unlocked) after ``timeout`` seconds."""
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        delay = 0.002
        while True:
            try:
                fd = self._open_lock_file(name)
            except OSError as exc:
                log.debug("credential cache lock unavailable (%s): proceeding without it", os.strerror(exc.errno or 0))
                return None
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        os.close(fd)
                        log.debug(
                            "credential cache lock still held after %.1f s: proceeding without it",
                            time.monotonic() - start,
                        )
                        return None
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.05)
                except OSError as exc:
                    os.close(fd)
                    log.debug("credential cache lock failed (%s): proceeding without it", os.strerror(exc.errno or 0))
                    return None
            # The lock file may have been removed (and maybe re-created) while we waited: a lock on an
            # unlinked file excludes no one, so retry on the file the name now points at.
            try:
                held = os.fstat(fd)
                current = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                if (held.st_ino, held.st_dev) == (current.st_ino, current.st_dev):
                    return fd
            except OSError:
                pass
            os.close(fd)

    def _remove_lock_file(self, key: str) -> None:
        """Remove ``key``'s lock file if no one holds it (removed while held, so never under a waiter)."""
        name = key + _LOCK_SUFFIX
        try:
            fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        try:
            held = os.fstat(fd)
            current = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            if (held.st_ino, held.st_dev) == (current.st_ino, current.st_dev):
                os.unlink(name, dir_fd=self._dir_fd)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _maybe_sweep(self) -> None:
        """Remove expired entries (and their lock files) and dead writers' temp files, a batch at a time."""
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + SWEEP_INTERVAL
            if self._sweep_pid != os.getpid():  # a forked child must not share the parent's directory stream
                self._sweep_iter, self._sweep_pid = None, os.getpid()
            if self._sweep_iter is None:
                self._sweep_iter = iter(os.scandir(self._dir_fd))
            for _ in range(SWEEP_BATCH):
                item = next(self._sweep_iter, None)
                if item is None:
                    self._sweep_iter = None
                    break
                self._sweep_one(item.name)
        except OSError as exc:
            self._sweep_iter = None
            log.debug("credential cache sweep stopped: %s", os.strerror(exc.errno or 0))
        finally:
            self._sweep_lock.release()

    def _sweep_one(self, name: str) -> None:
        if name.endswith(_TEMP_SUFFIX) and name.startswith("."):
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                if self._clock() - st.st_mtime > STALE_TEMP_SECONDS:
                    self._unlink_if_same(name, st)
            return
        key, _, suffix = name.rpartition(".")
        if not _KEY.fullmatch(key):
            return
        if suffix == "json":
            self._sweep_entry(key)
        elif suffix == "lock":
            try:
                os.stat(key + _ENTRY_SUFFIX, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                self._remove_lock_file(key)
            except OSError:
                return

    def _sweep_entry(self, key: str) -> None:
        name = key + _ENTRY_SUFFIX
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._unlink_if_same(name, None)
            return
        try:
            st = os.fstat(fd)
            if self._entry_problem(st):
                self._unlink_if_same(name, st)
                return
            entry = self._parse(self._read(fd))
        except OSError:
            return
        finally:
            os.close(fd)
        if entry is None or entry["key"] != key or float(entry["expires_at"]) <= self._clock():
            self._unlink_if_same(name, st)
            self._remove_lock_file(key)
