"""Local cloud sandboxes for tests and the demo (loopback only).

``from dev.sandbox import AwsSandbox, GcpSandbox, OidcIssuer``; heavy imports (moto, boto3, the GCS emulator)
happen on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aws import AwsSandbox, AwsScenario
    from .azure import AzureSandbox, AzureScenario
    from .gcp import GcpSandbox, GcpScenario
    from .oidc import OidcIssuer

__all__ = ["AwsSandbox", "AwsScenario", "AzureSandbox", "AzureScenario", "GcpSandbox", "GcpScenario", "OidcIssuer"]


def __getattr__(name: str) -> Any:
    if name in ("AwsSandbox", "AwsScenario"):
        from . import aws

        return getattr(aws, name)
    if name in ("GcpSandbox", "GcpScenario"):
        from . import gcp

        return getattr(gcp, name)
    if name in ("AzureSandbox", "AzureScenario"):
        from . import azure

        return getattr(azure, name)
    if name == "OidcIssuer":
        from .oidc import OidcIssuer

        return OidcIssuer
    raise AttributeError(name)
