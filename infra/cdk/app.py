"""The CDK app that deploys a cloudq app: ``npx cdk deploy -c app=shop.tasks:app``.

Context keys (``-c key=value``), all optional:

    app           module:attr of the cloudq App      (default: the repository's example app)
    code          directory holding the app's code   (default: the repository's examples/)
    workers       lambda | fargate                   (default: lambda)
    stack         the stack's name                   (default: Cloudq)
    production    false: table and bucket are deleted with the stack (default: true, RETAIN)
    architecture  x86_64 | arm64                     (default: x86_64)

With no context at all it synthesizes the example stack, offline, without Docker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_APP = "shop.tasks:app"
DEFAULT_CODE = ROOT / "examples"


def build(cdk_app: cdk.App) -> cdk.Stack:
    """The stack the context asks for, added to ``cdk_app``."""
    from cloudq.cdk.stack import CloudqStack

    def context(key: str, default: Any) -> Any:
        value = cdk_app.node.try_get_context(key)
        return default if value is None else value

    production = context("production", True)
    return CloudqStack(
        cdk_app, context("stack", "Cloudq"),
        app=context("app", DEFAULT_APP),
        code=Path(context("code", str(DEFAULT_CODE))),
        workers=context("workers", "lambda"),
        production=str(production).lower() not in ("false", "0", "no"),
        architecture=context("architecture", "x86_64"),
    )


def main() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from cloudq.errors import CloudqError

    cdk_app = cdk.App()
    try:
        build(cdk_app)
    except CloudqError as exc:  # the reason, not a traceback through jsii
        sys.exit(f"cloudq: cannot deploy: {exc}")
    cdk_app.synth()


if __name__ == "__main__":
    main()
