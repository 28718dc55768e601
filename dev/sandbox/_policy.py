"""Trust-policy evaluation and STS parameter validation the way AWS does them (the parts moto lacks).

Pure functions, no moto import: used by the moto patches in :mod:`dev.sandbox._patches`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CHAINED_SESSION_LIMIT = 3600
MIN_DURATION = 900
MAX_DURATION = 43200

CHAINING_MESSAGE = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
MAX_SESSION_MESSAGE = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."


@dataclass(frozen=True)
class Principal:
    """Who is asking, as a trust policy sees it."""

    arn: str | None = None  # caller ARN: arn:aws:iam::A:user/U or arn:aws:sts::A:assumed-role/R/S
    account: str | None = None
    role_arn: str | None = None  # for a role session: arn:aws:iam::A:role/<path>R
    service: str | None = None  # for an AWS service principal (e.g. pods.eks.amazonaws.com)
    federated: str | None = None  # for web identity: the OIDC provider ARN

    @property
    def is_role_session(self) -> bool:
        return self.role_arn is not None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcard match: ``*`` any run, ``?`` one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _partition_of(arn: str | None) -> str:
    if arn and arn.startswith("arn:"):
        return arn.split(":")[1]
    return "aws"


def principal_matches(element: Any, who: Principal) -> bool:
    """Does a statement's ``Principal`` element name ``who``?

    As AWS does it: a role ARN covers every session of that role, ``arn:aws:iam::A:root`` (or ``A``)
    the whole account, ``*`` everyone; ``Service`` and ``Federated`` match only those kinds of caller.
    """
    if element == "*":
        return True
    if not isinstance(element, dict):
        return False
    for kind, values in element.items():
        for value in _as_list(values):
            if kind == "AWS":
                if who.arn is None:
                    continue
                if value == "*" or value == who.arn or (who.role_arn and value == who.role_arn):
                    return True
                root = f"arn:{_partition_of(who.arn)}:iam::{who.account}:root"
                if who.account and value in (who.account, root):
                    return True
            elif (kind == "Service" and who.service is not None and value == who.service) or (
                kind == "Federated" and who.federated is not None and value == who.federated
            ):
                return True
    return False


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(wildcard_match(p, action, ignore_case=True) for p in _as_list(statement["NotAction"]))
    return any(wildcard_match(p, action, ignore_case=True) for p in _as_list(statement.get("Action")))


_NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
}


def _value_matches(operator: str, actual: str, expected: str) -> bool | None:
    """``None`` for an operator this evaluator does not know (treated as not matching)."""
    base = operator.removesuffix("IfExists")
    if base in ("StringEquals", "StringNotEquals"):
        return actual == expected
    if base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return actual.lower() == expected.lower()
    if base in ("StringLike", "StringNotLike", "ArnLike", "ArnNotLike", "ArnEquals", "ArnNotEquals"):
        return wildcard_match(expected, actual)
    if base == "Bool":
        return actual.lower() == expected.lower()
    return None


def conditions_match(condition: dict[str, Any] | None, context: dict[str, list[str]]) -> bool:
    """Evaluate a ``Condition`` block against request context keys (case-insensitive key names).

    Unknown operators fail closed. A missing key fails a positive operator and satisfies a negated one
    (and any ``...IfExists``), as AWS documents.
    """
    if not condition:
        return True
    ctx = {k.lower(): v for k, v in context.items()}
    for raw_operator, pairs in condition.items():
        qualifier, _, operator = raw_operator.rpartition(":")
        base = operator.removesuffix("IfExists")
        if_exists = operator.endswith("IfExists")
        if not isinstance(pairs, dict):
            return False
        for key, expected_raw in pairs.items():
            expected = [_text(v) for v in _as_list(expected_raw)]
            actual = ctx.get(key.lower())
            if base == "Null":
                if (actual is None) != (expected[:1] == ["true"]):
                    return False
                continue
            if actual is None:
                if if_exists or base in _NEGATED or qualifier == "ForAllValues":
                    continue
                return False
            results: list[bool] = []
            for a in actual:
                hits = [_value_matches(base, a, e) for e in expected]
                if any(h is None for h in hits):
                    return False
                results.append(any(hits))
            if base in _NEGATED:
                ok = not any(results)
            elif qualifier == "ForAllValues":
                ok = all(results)
            else:  # single-valued keys and ForAnyValue
                ok = any(results)
            if not ok:
                return False
    return True


def load_policy(document: Any) -> dict[str, Any]:
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        return dict(json.loads(text))
    return dict(document)


def trust_allows(document: Any, action: str, who: Principal, context: dict[str, list[str]]) -> bool:
    """Does the role's trust (resource) policy allow ``who`` to perform ``action``? Explicit Deny wins."""
    policy = load_policy(document)
    allowed = False
    for statement in _as_list(policy.get("Statement")):
        if not isinstance(statement, dict) or not _action_matches(statement, action):
            continue
        if "NotPrincipal" in statement:
            named = not principal_matches(statement["NotPrincipal"], who)
        else:
            named = principal_matches(statement.get("Principal"), who)
        if not named or not conditions_match(statement.get("Condition"), context):
            continue
        if statement.get("Effect") == "Deny":
            return False
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


# --- parameter validation -------------------------------------------------------------------------

SESSION_NAME_PATTERN = r"[\w+=,.@-]*"
EXTERNAL_ID_PATTERN = r"[\w+=,.@:/-]*"
SOURCE_IDENTITY_PATTERN = r"[\w+=,.@-]*"
TAG_KEY_PATTERN = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+"
TAG_VALUE_PATTERN = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*"
_TAG_CHARS = re.compile(r"[\w\s.:/=+\-@]*")


def _fullmatch(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value, flags=re.ASCII) is not None


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, value: Any, field: str, constraint: str) -> None:
        self.items.append(f"Value '{value}' at '{field}' failed to satisfy constraint: {constraint}")

    def length(self, value: str | None, field: str, low: int, high: int | None) -> bool:
        if value is None:
            return False
        if len(value) < low:
            self.add(value, field, f"Member must have length greater than or equal to {low}")
            return False
        if high is not None and len(value) > high:
            self.add(value, field, f"Member must have length less than or equal to {high}")
            return False
        return True

    def pattern(self, value: str | None, field: str, pattern: str) -> None:
        if value is not None and not _fullmatch(pattern, value):
            self.add(value, field, f"Member must satisfy regular expression pattern: {pattern}")

    def message(self) -> str | None:
        if not self.items:
            return None
        n = len(self.items)
        return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(self.items)


def validate_assume_params(action: str, params: dict[str, Any]) -> str | None:
    """AWS-style ``ValidationError`` message for bad AssumeRole* input, or ``None`` if valid."""
    errors = _Errors()
    errors.length(params.get("RoleArn"), "roleArn", 20, 2048)
    name = params.get("RoleSessionName")
    if errors.length(name, "roleSessionName", 2, 64):
        errors.pattern(name, "roleSessionName", SESSION_NAME_PATTERN)
    duration = params.get("DurationSeconds")
    if duration is not None:
        seconds = int(duration)
        if seconds < MIN_DURATION:
            errors.add(seconds, "durationSeconds", f"Member must have value greater than or equal to {MIN_DURATION}")
        elif seconds > MAX_DURATION:
            errors.add(seconds, "durationSeconds", f"Member must have value less than or equal to {MAX_DURATION}")
    policy = params.get("Policy")
    if policy is not None:
        errors.length(policy, "policy", 1, 2048)
    if action == "AssumeRole":
        external_id = params.get("ExternalId")
        if errors.length(external_id, "externalId", 2, 1224):
            errors.pattern(external_id, "externalId", EXTERNAL_ID_PATTERN)
        source_identity = params.get("SourceIdentity")
        if errors.length(source_identity, "sourceIdentity", 2, 64):
            errors.pattern(source_identity, "sourceIdentity", SOURCE_IDENTITY_PATTERN)
        tags = params.get("Tags") or []
        if len(tags) > 50:
            errors.add("[...]", "tags", "Member must have length less than or equal to 50")
        for i, tag in enumerate(tags, start=1):
            key, value = str(tag.get("Key", "")), str(tag.get("Value", ""))
            if errors.length(key, f"tags.{i}.member.key", 1, 128) and not _TAG_CHARS.fullmatch(key):
                errors.add(
                    key, f"tags.{i}.member.key", f"Member must satisfy regular expression pattern: {TAG_KEY_PATTERN}"
                )
            if errors.length(value, f"tags.{i}.member.value", 0, 256) and not _TAG_CHARS.fullmatch(value):
                errors.add(
                    value,
                    f"tags.{i}.member.value",
                    f"Member must satisfy regular expression pattern: {TAG_VALUE_PATTERN}",
                )
        if len(params.get("TransitiveTagKeys") or []) > 50:
            errors.add("[...]", "transitiveTagKeys", "Member must have length less than or equal to 50")
    return errors.message()
