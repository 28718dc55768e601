"""The one place the package touches the cloud SDKs' private attributes.

Each SDK is used through its public classes wherever it offers one; where it does not (botocore's
refresh hooks, google-auth's metadata module, azure-identity's token-file cache), the private name is
used here and only here, so an SDK release that renames it breaks one module, and
``tests/unit/test_sdk_adapter.py`` says so loudly (it exercises every function below against the
installed SDKs). ``pyproject.toml`` bounds those SDKs below their next major version.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = [
    "AZURE_MI_EXCLUDE_WORKLOAD_IDENTITY",
    "apply_refresh_data",
    "botocore_expiry",
    "check_container_metadata_url",
    "gce_metadata_host",
    "refresh_wi_token_file",
    "set_loader_search_paths",
    "web_identity_call",
    "wi_token_file",
]

# -- botocore ---------------------------------------------------------------------------------------------------


def set_loader_search_paths(loader: Any, paths: list[str]) -> None:
    """Replace a botocore ``Loader``'s search path list (it has no setter)."""
    loader._search_paths = paths


def apply_refresh_data(credentials: Any, data: dict[str, Any], *, lock: bool = True) -> None:
    """Make botocore (or aiobotocore) ``RefreshableCredentials`` hold ``data`` (refresh metadata:
    ``access_key``, ``secret_key``, ``token``, ``expiry_time``, ``account_id``), the way its own refresh
    does: ``_set_from_data`` then ``_publish_refresh``, under botocore's refresh lock when ``lock``
    (aiobotocore's lock is an asyncio lock: its callers are on the loop, where this cannot interleave)."""
    if lock:
        with credentials._refresh_lock:
            _apply(credentials, data)
    else:
        _apply(credentials, data)


def _apply(credentials: Any, data: dict[str, Any]) -> None:
    try:
        credentials._set_from_data(data)
        credentials._publish_refresh()
    finally:
        credentials._staged_expiry_time = None


def check_container_metadata_url(url: str) -> None:
    """botocore's rule for container credential URLs (https, loopback, or the EKS/ECS agent addresses);
    ``ValueError`` otherwise."""
    from botocore.utils import ContainerMetadataFetcher

    ContainerMetadataFetcher()._validate_allowed_url(url)


def botocore_expiry(credentials: Any) -> dt.datetime | None:
    """When botocore refreshable credentials expire (``None`` for static ones)."""
    value = getattr(credentials, "_expiry_time", None)
    return value if isinstance(value, dt.datetime) else None


def web_identity_call(fetcher: Any) -> dict[str, Any]:
    """Run botocore's ``AssumeRoleWithWebIdentityCredentialFetcher`` call once, bypassing its cache
    (the projected token is re-read): the STS response."""
    response: dict[str, Any] = fetcher._get_credentials()
    return response


# -- google-auth ------------------------------------------------------------------------------------------------


def gce_metadata_host() -> str:
    """The GKE/GCE metadata host google-auth uses (read from ``GCE_METADATA_HOST`` at its import)."""
    try:
        from google.auth.compute_engine import _metadata
    except ImportError:  # pragma: no cover
        return "metadata.google.internal"
    return str(getattr(_metadata, "_GCE_METADATA_HOST", "metadata.google.internal"))


# -- azure-identity ---------------------------------------------------------------------------------------------

#: ``ManagedIdentityCredential`` keyword that stops it from picking workload identity from the environment.
AZURE_MI_EXCLUDE_WORKLOAD_IDENTITY = "_exclude_workload_identity_credential"


def wi_token_file(credential: Any) -> str:
    """The projected token file a ``WorkloadIdentityCredential`` reads."""
    return str(credential._token_file_path)


def refresh_wi_token_file(credential: Any) -> None:
    """Make a ``WorkloadIdentityCredential`` re-read its token file on its next request (it caches the
    file's content for 600 s)."""
    credential._last_read_time = 0
