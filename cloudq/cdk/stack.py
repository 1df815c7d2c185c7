"""``CloudqStack``: a stack that holds one ``CloudqService`` (the infra app's and
``cloudq deploy``'s), and ``synth`` to build it without a CDK project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from cloudq.cdk.construct import CloudqService


class CloudqStack(cdk.Stack):
    """One app's stack, in the account and region the CDK CLI (or AWS's env) points at."""

    def __init__(self, scope: Construct, id: str, **props: Any) -> None:
        super().__init__(
            scope, id,
            env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                                region=os.environ.get("CDK_DEFAULT_REGION")),
            description="cloudq: queues, result table, workers and schedules of one app")
        self.service = CloudqService(self, "Tasks", **props)


def synth(stack_name: str, *, outdir: str | Path | None = None,
          **props: Any) -> dict[str, Any]:
    """Synthesize a ``CloudqStack`` into ``outdir`` and return its template."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    cdk_app = cdk.App(outdir=str(outdir) if outdir is not None else None)
    stack = CloudqStack(cdk_app, stack_name, **props)
    template: dict[str, Any] = cdk_app.synth().get_stack_by_name(stack.stack_name).template
    return template
