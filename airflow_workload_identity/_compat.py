"""Airflow 2.11 / 3.x import shims, in one place (imported only by hooks and adapters)."""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.x
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.11
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined,unused-ignore]

try:  # Airflow 3.x
    from airflow.sdk.log import mask_secret as _mask_secret
except ImportError:  # Airflow 2.11
    from airflow.utils.log.secrets_masker import mask_secret as _mask_secret  # type: ignore[no-redef,unused-ignore]

__all__ = ["BaseHook", "mask_secret"]


def mask_secret(value: Any) -> None:
    """Register a derived secret (a session token, a secret key) with Airflow's log masker."""
    if value:
        _mask_secret(value)
