"""Deploy an app with AWS CDK: ``CloudqService`` (extra ``cdk``) and the I/O-free plan it builds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.cdk.construct import CloudqService

__all__ = ["CloudqService"]


def __getattr__(name: str) -> Any:
    if name == "CloudqService":  # aws_cdk is imported only when the construct is asked for
        from cloudq.cdk.construct import CloudqService

        return CloudqService
    raise AttributeError(f"module 'cloudq.cdk' has no attribute {name!r}")
