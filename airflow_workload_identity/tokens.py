"""Reading a JWT's claims for diagnostics (issuer, subject, audience, expiry, ids).

Claims are read without verification and only ever shown as claims: never the token or its signature.
Pure Python, shared by the three clouds and ``doctor``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["unverified_claims"]


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT as a dict; ``{}`` if ``token`` is not a readable JWT."""
    try:
        payload = token.strip().split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
