"""Reading a JWT's claims for diagnostics (issuer, subject, audience, expiry, ids).

Claims are read without verification and only ever shown as claims: never the token or its signature.
Pure Python, shared by the three clouds and ``doctor``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["PROJECTED_TOKEN_SKEW_SECONDS", "stale_projected_token", "unverified_claims"]

#: How far past its ``exp`` (by the local clock) a projected token may be and still be sent: the clouds'
#: own clock-skew allowance (Entra's is 5 minutes). Beyond it the file is stale whatever the skew.
PROJECTED_TOKEN_SKEW_SECONDS = 300.0


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT as a dict; ``{}`` if ``token`` is not a readable JWT."""
    try:
        payload = token.strip().split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stale_projected_token(path: str, now: float | None = None) -> str | None:
    """Why the projected token in ``path`` is certainly expired (its ``exp`` more than the skew allowance
    in the past by the local clock), or ``None`` (fresh, not a JWT, or unreadable: the caller's request
    reports those). Costs one small file read and no request."""
    import datetime as dt
    import time

    try:
        with open(path) as handle:
            claims = unverified_claims(handle.read())
    except (OSError, UnicodeDecodeError):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    current = time.time() if now is None else now
    if exp >= current - PROJECTED_TOKEN_SKEW_SECONDS:
        return None
    when = dt.datetime.fromtimestamp(exp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"the projected token in {path} expired at {when}, {int(current - exp)} s ago (the kubelet rotates it "
        "well before expiry: is the file still the projected volume, and is the pod's clock right?)"
    )
