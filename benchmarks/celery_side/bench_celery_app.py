"""The benchmark's Celery app: the same tasks, under the same names, as cloudq's side.

Runs in the benchmark's own virtualenv (Celery is never a dependency of cloudq). SQS broker
(kombu's SQS transport) and DynamoDB result backend, both pointed at this process's listener
on the counting proxy (``BENCH_ENDPOINT_URL``), queue and table names from ``BENCH_PREFIX``.
Every other setting is Celery's default.

The names here are the ones ``caller.py`` uses on both sides: ``noop`` (no result), ``add``,
``tsum``, ``group``, ``chord``, ``QUEUES`` and ``provision``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from celery import Celery, chord, group
from kombu import Queue

__all__ = ["QUEUES", "add", "app", "chord", "group", "noop", "provision", "tsum"]

PREFIX = os.environ.get("BENCH_PREFIX", "bench-")
QUEUES = [f"{PREFIX}celery"]
"""The queues this app's tasks go to (physical names), whose depth the harness watches."""

_endpoint = urlsplit(os.environ.get("BENCH_ENDPOINT_URL", "http://127.0.0.1:5000"))
_host = f"{_endpoint.hostname}:{_endpoint.port}"
_key = os.environ.get("AWS_ACCESS_KEY_ID", "testing")
_secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")

# kombu takes the endpoint from the broker URL's host and port, plain HTTP with is_secure=False;
# the DynamoDB backend takes an IP address (or localhost) in the region's place as a local
# endpoint, http://host:port.
app = Celery("bench_celery_app",
             broker=f"sqs://{_key}:{_secret}@{_host}",
             backend=f"dynamodb://{_key}:{_secret}@{_host}/{PREFIX}results")
app.conf.update(
    broker_transport_options={"region": "us-east-1", "is_secure": False,
                              "queue_name_prefix": PREFIX},
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop", ignore_result=True)
def noop(n: int) -> None:
    """A task whose result nobody stores."""


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="bench.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


def provision() -> None:
    """Create the queue and the result table (as the first caller or worker would)."""
    app.backend.client  # noqa: B018 - creating the client creates the table
    with app.connection_for_write() as connection:
        Queue(app.conf.task_default_queue)(connection.default_channel).declare()
