"""Local cloud sandboxes for tests and the demo (loopback only).

``from dev.sandbox import AwsSandbox, OidcIssuer``; heavy imports (moto, boto3) happen on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aws import AwsSandbox, AwsScenario
    from .oidc import OidcIssuer

__all__ = ["AwsSandbox", "AwsScenario", "OidcIssuer"]


def __getattr__(name: str) -> Any:
    if name in ("AwsSandbox", "AwsScenario"):
        from . import aws

        return getattr(aws, name)
    if name == "OidcIssuer":
        from .oidc import OidcIssuer

        return OidcIssuer
    raise AttributeError(name)
