"""Entra in the sandbox trusts other clouds' issuers: signing keys fetched over loopback, as Entra does.

A federated identity credential names an issuer, a subject and an audience; Entra verifies a client
assertion from an external issuer (``https://accounts.google.com``, an AWS account's outbound issuer
``https://<uuid>.tokens.sts.global.api.aws``) with the keys it fetches from that issuer's JWKS. Here the
Entra fake is told where each trusted issuer's JWKS lives on loopback (the GCP sandbox's
``google_jwks_url``, the AWS sandbox's outbound ``jwks_url``) and fetches it on first use, caching the keys
and fetching again (at most every :data:`REFETCH_SECONDS`) when an assertion names a ``kid`` it does not
have, which is how a key rotation is picked up. RS256 and ES384 keys are both accepted. Issuer, subject,
audience and expiry are checked by the Entra fake's token endpoint (``azure.py``), which refuses with
AADSTS70021 when no federated credential matches all three.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import jwt

__all__ = ["FETCH_TIMEOUT", "REFETCH_SECONDS", "RemoteIssuers"]

#: Seconds one JWKS fetch may take.
FETCH_TIMEOUT = 5.0
#: An unknown ``kid`` triggers a new fetch at most this often per issuer (no fetch storm from forged tokens).
REFETCH_SECONDS = 10.0


class RemoteIssuers:
    """External OIDC issuers Entra trusts, each with its JWKS URL on loopback and the keys fetched from it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jwks_urls: dict[str, str] = {}
        self._keys: dict[str, list[tuple[str, Any]]] = {}
        self._fetched_at: dict[str, float] = {}
        #: JWKS fetches made per trusted issuer since it was trusted (tests and benchmarks count them).
        self.fetches: dict[str, int] = {}

    def trust(self, issuer_url: str, jwks_url: str) -> None:
        """Trust ``issuer_url``; its keys are fetched from ``jwks_url`` (loopback http only)."""
        parts = urlsplit(jwks_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the sandbox fetches JWKS over loopback only, not from {jwks_url}")
        with self._lock:
            self._jwks_urls[issuer_url] = jwks_url
            self._keys.pop(issuer_url, None)
            self._fetched_at.pop(issuer_url, None)
            self.fetches[issuer_url] = 0

    def distrust(self, issuer_url: str) -> None:
        with self._lock:
            self._jwks_urls.pop(issuer_url, None)
            self._keys.pop(issuer_url, None)
            self._fetched_at.pop(issuer_url, None)
            self.fetches.pop(issuer_url, None)

    def trusted(self, issuer_url: str) -> bool:
        with self._lock:
            return issuer_url in self._jwks_urls

    def keys(self, issuer_url: str, kid: str | None) -> list[tuple[str, Any]] | None:
        """``(kid, public key)`` pairs for ``issuer_url``, or ``None`` if it is not trusted. Fetched on first
        use; fetched again when ``kid`` is unknown and the last fetch is older than :data:`REFETCH_SECONDS`.
        A fetch that fails leaves what was cached (possibly nothing: the signature then fails to verify)."""
        with self._lock:
            url = self._jwks_urls.get(issuer_url)
            if url is None:
                return None
            cached = self._keys.get(issuer_url)
            known = cached is not None and (kid is None or any(k == kid for k, _ in cached))
            recent = time.monotonic() - self._fetched_at.get(issuer_url, -REFETCH_SECONDS) < REFETCH_SECONDS
            if known or (cached is not None and recent):
                return list(cached or [])
            self._fetched_at[issuer_url] = time.monotonic()
            self.fetches[issuer_url] = self.fetches.get(issuer_url, 0) + 1
        fetched = _fetch(url)
        with self._lock:
            if fetched is not None and self._jwks_urls.get(issuer_url) == url:
                self._keys[issuer_url] = fetched
            return list(self._keys.get(issuer_url) or [])


def _fetch(url: str) -> list[tuple[str, Any]] | None:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # loopback http (checked in trust())
            document = json.loads(response.read())
        keys = jwt.PyJWKSet.from_dict(document).keys
    except (OSError, ValueError, jwt.PyJWTError):
        return None
    return [(str(key.key_id or ""), key.key) for key in keys]
