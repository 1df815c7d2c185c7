"""Lambda's init phase for a cloudq function, timed in a fresh process.

    python lambda_init.py handler    # cloudq.lambda_handler + app + clients + Powertools batch
    python lambda_init.py boto3      # bare `import boto3`, the baseline

``handler`` does what Lambda's init does for ``cloudq.lambda_handler.handler`` with
``CLOUDQ_APP=bench_cloudq_app:app``: import the module (which loads the app and builds its SQS
and DynamoDB clients), plus Powertools' batch utility that the first invocation needs.
Interpreter start-up is not timed (it is the same for both). Prints ``{"ms": M}``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "handler"
    if mode not in ("handler", "boto3"):
        raise SystemExit(f"mode is handler or boto3, not {mode!r}")
    os.environ.update(AWS_LAMBDA_FUNCTION_NAME="bench", CLOUDQ_APP="bench_cloudq_app:app")
    started = time.perf_counter()
    if mode == "boto3":
        importlib.import_module("boto3")
    else:
        importlib.import_module("cloudq.lambda_handler")
        importlib.import_module("aws_lambda_powertools.utilities.batch")
    print(json.dumps({"ms": (time.perf_counter() - started) * 1000}))


if __name__ == "__main__":
    main()
