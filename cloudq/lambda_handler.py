"""The Lambda entry point: handler ``cloudq.lambda_handler.handler``, env ``CLOUDQ_APP``.

    CLOUDQ_APP=shop.tasks:app        # the module is imported in Lambda's init phase

Or, in your own module, ``handler = app.lambda_handler()``. Importing this module loads
boto3 and Powertools' batch utility, never click, croniter, moto, CDK or aioboto3.
"""

from __future__ import annotations

import os
from typing import Any

from cloudq.errors import ConfigError
from cloudq.runners.lambda_runner import LambdaHandler

_handler: LambdaHandler | None = None


def _load() -> LambdaHandler:
    from cloudq.loading import load_app

    spec = os.environ.get("CLOUDQ_APP")
    if not spec:
        raise ConfigError("CLOUDQ_APP is not set: give the app as module:attr, e.g. shop.tasks:app")
    return load_app(spec, option="CLOUDQ_APP").lambda_handler().warm()


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Run the SQS event's tasks; returns the partial batch response."""
    global _handler
    if _handler is None:
        _handler = _load()
    return _handler(event, context)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("CLOUDQ_APP"):
    _handler = _load()  # in Lambda's init phase: the app and its clients are ready when called
