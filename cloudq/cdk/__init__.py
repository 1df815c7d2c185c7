"""Deploy an app with AWS CDK: ``CloudqService`` (extra ``cdk``) and the I/O-free plan it builds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.cdk.construct import CloudqService
    from cloudq.cdk.fargate import FargateOptions

__all__ = ["CloudqService", "FargateOptions"]


def __getattr__(name: str) -> Any:
    if name == "CloudqService":  # aws_cdk is imported only when the construct is asked for
        from cloudq.cdk.construct import CloudqService

        return CloudqService
    if name == "FargateOptions":
        from cloudq.cdk.fargate import FargateOptions

        return FargateOptions
    raise AttributeError(f"module 'cloudq.cdk' has no attribute {name!r}")
