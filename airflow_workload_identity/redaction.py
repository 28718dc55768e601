"""Keeps every credential out of every log, bounded however long the process lives.

Airflow's secrets masker keeps each value it is given forever and recompiles one regular expression over
all of them on every addition: registering a token per refresh grows without bound in a triggerer or a
long-lived worker, and it never sees the secrets an SDK logs at DEBUG before the package learns them (the
pod's projected token in an ``AssumeRoleWithWebIdentity`` body, an intermediate hop's session token in
``botocore.auth``'s canonical request). This module redacts instead by what a credential *looks like* and
by the *key* it is written under, plus a small set of live exact values for what neither catches:

- **shapes**: JWTs (``eyJ…``: projected service-account tokens, ID tokens, Entra and IMDS access tokens,
  client assertions), Google OAuth access tokens (``ya29.…``), AWS session tokens (``IQoJb3JpZ2lu…``,
  ``FwoGZXIvYXdz…``, ``FQoGZXIvYXdz…``, ``AQoDYXdz…``), in plain or URL-encoded form;
- **keys**: the value written under a credential key (``SecretAccessKey``, ``SessionToken``,
  ``secret_key``, ``token``, ``X-Amz-Security-Token``, ``Authorization``, ``WebIdentityToken``,
  ``client_assertion``, ``access_token``, ``accessToken``, ``assertion``, ...) in XML, JSON, python
  reprs, form and query strings, HTTP header lines and botocore's canonical requests;
- **live values**: the current secrets of each shared credential that no shape matches (an AWS secret
  access key): those of each identity's latest refresh only (at most :data:`VALUES_PER_IDENTITY`),
  replaced by the next refresh, dropped once expired and forgotten with the credential object.

One :class:`RedactingFilter` runs on every stdlib ``LogRecord`` as it is created (a record factory, so
before any handler, whatever ``dictConfig`` later installs: the task log, the CLI's stderr, a
library's own handler), and one structlog processor, :func:`redact_event`, runs before the final
renderer of structlog's chain (Airflow 3's own events and rendered tracebacks). :func:`install` puts
both in place, once per process; it is idempotent and cheap, and the hooks call it.

``AIRFLOW_WORKLOAD_IDENTITY_REDACTION=off`` disables all of it. It exists for the tests that prove the
redaction is what keeps the logs clean, and for diagnosing the redaction itself; never set it in a
deployment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = [
    "ENV_SWITCH",
    "REPLACEMENT",
    "RedactingFilter",
    "enabled",
    "install",
    "redact",
    "redact_event",
    "redact_exception",
    "remember",
    "state",
    "uninstall",
    "watch",
]

ENV_SWITCH = "AIRFLOW_WORKLOAD_IDENTITY_REDACTION"
REPLACEMENT = "***"
#: Live exact values kept per identity: those of its latest refresh (a refresh replaces them all).
VALUES_PER_IDENTITY = 2  # AWS: the secret access key and, where no shape catches it, the session token
#: Identities tracked at most (least recently refreshed first out); the registry holds far fewer.
MAX_IDENTITIES = 256
#: Shorter values are never matched exactly (they would redact ordinary words).
MIN_LIVE_LENGTH = 16

_TOKEN_CHARS = r"A-Za-z0-9_\-"
_B64_CHARS = r"A-Za-z0-9+/=" + r"%"  # '%': URL-encoded '+', '/', '=' in form bodies and query strings
_SHAPES = re.compile(
    "|".join(
        (
            rf"eyJ[{_TOKEN_CHARS}]+(?:\.[{_TOKEN_CHARS}=]*){{0,4}}",  # JWT / JWS / JWE (header starts '{"')
            rf"ya29\.[{_TOKEN_CHARS}.]+",  # Google OAuth 2.0 access token
            rf"(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz|AQoDYXdz|AQoEXAMPLE)[{_B64_CHARS}]+",  # AWS session token
        )
    )
)

#: Keys whose value is a credential, whatever the syntax around them (compared case-insensitively).
SECRET_KEYS: tuple[str, ...] = (
    "SecretAccessKey",
    "secret_access_key",
    "aws_secret_access_key",
    "secret_key",
    "SessionToken",
    "session_token",
    "aws_session_token",
    "security_token",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
    "Signature",
    "Token",
    "AuthorizationToken",
    "Authorization",
    "Proxy-Authorization",
    "WebIdentityToken",
    "web_identity_token",
    "client_assertion",
    "client_secret",
    "assertion",
    "subject_token",
    "access_token",
    "accessToken",
    "id_token",
    "idToken",
    "refresh_token",
    "signedJwt",
    "jwt",
    "X-IDENTITY-HEADER",
    "X-aws-ec2-metadata-token",
    "password",
)
_SECRET_KEY_NAMES = frozenset(k.lower() for k in SECRET_KEYS)
_KEY_HIT = re.compile("|".join(sorted((re.escape(k.lower()) for k in SECRET_KEYS), key=len, reverse=True)))
_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_AUTH_SCHEME = r"(?:(?:bearer|basic|negotiate|aws4-hmac-sha256|signature|sharedkey)\s+)?"
# What may follow a credential key (matched on the lower-cased text, at the end of the key):
_AFTER_KEY = re.compile(
    "|".join(
        (
            # "key": "value" / 'key': b'value' / key='value' (JSON, python reprs, keyword reprs)
            r"(?P<sep1>[\"']?\s*[:=]\s*b?)(?:\"(?P<v1>[^\"\\]*(?:\\.[^\"\\]*)*)\"|'(?P<v0>[^'\\]*(?:\\.[^'\\]*)*)')",
            # key=value (form bodies, query strings), Key: value (header lines), key:value (canonical requests)
            rf"(?P<sep3>=|:[ \t]*)(?![ \t]*b?[\"'])(?P<v3>{_AUTH_SCHEME}[^\s&\"'<>,;\\)}}\]]+)",
        )
    )
)
_XML_VALUE = re.compile(r">(?P<v2>[^<]*)</")  # <Key>value</Key> (STS XML)


def _keyed_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the values written under a credential key in ``text``.

    The keys are found by one case-sensitive scan of the lower-cased text (fast: a literal alternation),
    then each hit is checked in place: a whole word (or right after an escaped line break), followed by a
    separator and a value in one of the syntaxes above."""
    low = text.lower() if text.isascii() else "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    spans: list[tuple[int, int]] = []
    last = 0
    for hit in _KEY_HIT.finditer(low):
        start, end = hit.span()
        if start < last:
            continue
        before = low[start - 1] if start else ""
        if before in _WORD and not (start >= 2 and low[start - 2] == "\\" and before in "nrt"):
            continue
        if end < len(low) and low[end] in _WORD:
            continue
        if before == "<":
            xml = _XML_VALUE.match(low, end)
            if xml is not None and low.startswith(hit.group(0) + ">", xml.end()):
                spans.append(xml.span("v2"))
                last = xml.end()
            continue
        after = _AFTER_KEY.match(low, end)
        if after is None:
            continue
        group = next(g for g in ("v1", "v0", "v3") if after.group(g) is not None)
        value = after.span(group)
        if value[1] > value[0]:
            spans.append(value)
        last = after.end()
    return spans


def _redact_keyed(text: str) -> str:
    spans = _keyed_spans(text)
    if not spans:
        return text
    parts, position = [], 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append(REPLACEMENT)
        position = end
    parts.append(text[position:])
    return "".join(parts)


class _LiveValues:
    """The current exact secrets per identity, for what shapes and keys miss; bounded and expiring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a GC finalizer may forget a slot inside remember()
        self._slots: OrderedDict[int, list[tuple[str, float | None]]] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False

    def remember(self, slot: int, values: tuple[str, ...], expires_at: float | None) -> None:
        """The values of ``slot``'s latest refresh replace its previous ones."""
        new = [(v, expires_at) for v in values[:VALUES_PER_IDENTITY]]
        with self._lock:
            if self._slots.get(slot) == new:
                return
            self._slots[slot] = new
            self._slots.move_to_end(slot)
            while len(self._slots) > MAX_IDENTITIES:
                self._slots.popitem(last=False)
            self._dirty = True

    def forget(self, slot: int) -> None:
        with self._lock:
            if self._slots.pop(slot, None) is not None:
                self._dirty = True

    def pattern(self) -> re.Pattern[str] | None:
        if not self._dirty:
            return self._pattern
        with self._lock:
            now = time.time()
            for values in self._slots.values():
                live = [(v, e) for v, e in values if e is None or e > now]
                if len(live) != len(values):
                    values.clear()
                    values.extend(live)
            held = sorted({v for values in self._slots.values() for v, _ in values}, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in held)) if held else None
            self._dirty = False
            return self._pattern

    def expire(self) -> None:
        """Drop expired values now (they are otherwise dropped at the next change)."""
        with self._lock:
            self._dirty = True
        self.pattern()

    def sizes(self) -> tuple[int, int]:
        with self._lock:
            return len(self._slots), sum(len(v) for v in self._slots.values())

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._pattern, self._dirty = None, False


_LIVE = _LiveValues()
_SLOTS: dict[int, int] = {}  # id(credential object) -> its slot, while the object lives
_slot_counter = iter(range(1, 1 << 62))


def enabled() -> bool:
    """False only when ``AIRFLOW_WORKLOAD_IDENTITY_REDACTION=off`` (tests and diagnosis; never in production)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in {"off", "0", "false", "no"}


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``***`` (shapes, keyed values, live exact values)."""
    if not text:
        return text
    text = _SHAPES.sub(REPLACEMENT, text)
    text = _redact_keyed(text)
    live = _LIVE.pattern()
    if live is not None:
        text = live.sub(REPLACEMENT, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "backslashreplace")
        cleaned = redact(text)
        return value if cleaned == text else cleaned.encode()
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v, depth + 1) for v in value)
    return value


def _redact_item(key: Any, value: Any, depth: int = 0) -> Any:
    """A mapping's value: all of it if its key names a credential, else whatever shapes and keys find in it."""
    if isinstance(key, str) and key.lower() in _SECRET_KEY_NAMES and value not in (None, "", b""):
        return REPLACEMENT if isinstance(value, str | bytes | bytearray) else _redact_value(value, depth)
    return _redact_value(value, depth)


def redact_exception(exc: BaseException | None) -> None:
    """Redact, in place, the arguments (and azure-core's ``message``) of ``exc`` and of its causes and
    contexts, so that rendering its traceback cannot print a credential."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < 16:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            current.args = tuple(_redact_value(a) for a in current.args)
            message = getattr(current, "message", None)
            if isinstance(message, str):
                current.message = redact(message)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # an extension type with read-only args
            pass
        pending.extend((current.__cause__, current.__context__))


class RedactingFilter(logging.Filter):
    """Redacts a ``LogRecord``'s message, arguments and exception; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Mapping) and not record.args:  # structlog's wrap_for_formatter: an event dict
            record.msg = _redact_value(record.msg)
        elif record.args or not isinstance(record.msg, str):
            try:
                message = record.getMessage()
            except Exception:  # a broken format: what the handler would show, without secrets
                message = f"{record.msg!s} {record.args!r}"
            record.msg, record.args = redact(message), ()
        else:
            record.msg = redact(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            redact_exception(record.exc_info[1])
        return True


def redact_event(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every string in the event (rendered tracebacks included) redacted."""
    for key, value in list(event_dict.items()):
        if key == "exc_info":
            if isinstance(value, BaseException):
                redact_exception(value)
            elif isinstance(value, tuple) and len(value) == 3:
                redact_exception(value[1])
            elif value is True:
                import sys

                redact_exception(sys.exc_info()[1])
            continue
        event_dict[key] = _redact_item(key, value)
    return event_dict


# -- live values -------------------------------------------------------------------------------------------


def _slot_for(owner: object) -> int:
    key = id(owner)
    slot = _SLOTS.get(key)
    if slot is None:
        slot = _SLOTS[key] = next(_slot_counter)
        with contextlib.suppress(TypeError):  # not weak-referenceable: kept until evicted by MAX_IDENTITIES
            weakref.finalize(owner, _forget, key, slot)
    return slot


def _forget(key: int, slot: int) -> None:
    if _SLOTS.get(key) == slot:
        del _SLOTS[key]
    _LIVE.forget(slot)


def _remember(slot: int, values: tuple[str | None, ...], expires_at: float | None) -> None:
    kept = tuple(v for v in values if v and len(v) >= MIN_LIVE_LENGTH and _SHAPES.fullmatch(v) is None)
    if kept:
        _LIVE.remember(slot, kept, expires_at)


def remember(owner: object, *values: str | None, expires_at: float | None = None) -> None:
    """Keep ``values`` (the new secrets of the credential ``owner``) as live exact values, unless a shape
    already catches them; they replace the owner's previous ones and are forgotten with the owner."""
    _remember(_slot_for(owner), values, expires_at)


def _expiry(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def listener_for(owner: object) -> Callable[[Any], None]:
    """A credential listener (``add_listener``) that remembers each new secret of ``owner``.

    It accepts what the three clouds' shared credentials call listeners with: AWS metadata dicts
    (``secret_key``, ``token``, ``expiry_time``) or a bare token string. It holds no reference to
    ``owner``, so the values are forgotten when the credential is."""
    slot = _slot_for(owner)

    def listen(data: Any) -> None:
        if isinstance(data, Mapping):
            _remember(slot, (data.get("secret_key"), data.get("token")), _expiry(data.get("expiry_time")))
        elif isinstance(data, str):
            _remember(slot, (data,), None)

    return listen


_LISTENERS: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def watch(credential: Any) -> None:
    """Install redaction (:func:`install`) and remember ``credential``'s new secrets as they come.

    ``credential`` is one of the package's shared credential objects (``add_listener``)."""
    install()
    if not enabled():
        return
    listener = _LISTENERS.get(credential)
    if listener is None:
        listener = _LISTENERS[credential] = listener_for(credential)
    credential.add_listener(listener)


def state() -> dict[str, int]:
    """The redaction's state sizes (identities and live values held), for tests and benchmarks."""
    _LIVE.expire()
    identities, values = _LIVE.sizes()
    return {"identities": identities, "live_values": values}


def live_pattern_size() -> int:
    """Characters of the live-values expression each log line is matched against (0 if none): with the
    two fixed expressions, what a line's redaction costs."""
    pattern = _LIVE.pattern()
    return len(pattern.pattern) if pattern is not None else 0


def redaction_filter_installed() -> bool:
    """Whether the record factory with the redaction filter is the current one."""
    return _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory


def reset() -> None:
    """Forget every live value (tests and benchmarks)."""
    _LIVE.clear()
    _SLOTS.clear()


# -- installation ------------------------------------------------------------------------------------------

_FILTER = RedactingFilter()
_install_lock = threading.Lock()
_installed_factory: Callable[..., logging.LogRecord] | None = None
_structlog_chain: object | None = None


def _install_record_factory() -> None:
    global _installed_factory
    if _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _FILTER.filter(record)
        return record

    factory.previous = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    _installed_factory = factory


def _install_structlog() -> None:
    global _structlog_chain
    try:
        import structlog
    except ImportError:  # Airflow 2.11 without structlog: the record factory covers every log line
        return
    processors = structlog.get_config().get("processors")
    if processors is _structlog_chain or not isinstance(processors, list):
        return
    if redact_event not in processors:
        # Before the final renderer, after everything that adds text (formatted arguments, rendered tracebacks).
        processors.insert(max(len(processors) - 1, 0), redact_event)
    _structlog_chain = processors


def install() -> None:
    """Put the record-factory filter and the structlog processor in place (once; cheap to call again).

    Does nothing when ``AIRFLOW_WORKLOAD_IDENTITY_REDACTION=off``."""
    if not enabled():
        return
    with _install_lock:
        _install_record_factory()
        _install_structlog()


def uninstall() -> None:
    """Undo :func:`install` (tests that need the raw lines an SDK logs)."""
    global _installed_factory, _structlog_chain
    with _install_lock:
        factory = _installed_factory
        if factory is not None and logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(factory.previous)  # type: ignore[attr-defined]
        _installed_factory = None
        if isinstance(_structlog_chain, list) and redact_event in _structlog_chain:
            _structlog_chain.remove(redact_event)
        _structlog_chain = None
