"""The benchmark's cloudq app: the same tasks, under the same names, as Celery's side.

Configured from the environment that ``vs_celery.py`` sets for each process:
``BENCH_ENDPOINT_URL`` (this process's listener on the counting proxy) and ``BENCH_PREFIX``
(this run's queue and table names). Every other setting is cloudq's default.

The names here are the ones ``caller.py`` uses on both sides: ``noop`` (no result), ``add``,
``tsum``, ``group``, ``chord``, ``QUEUES`` and ``provision``.
"""

from __future__ import annotations

import os

import cloudq
from cloudq import chord, group

__all__ = ["QUEUES", "add", "app", "chord", "group", "noop", "provision", "tsum"]

PREFIX = os.environ.get("BENCH_PREFIX", "bench-")
QUEUES = [f"{PREFIX}default"]
"""The queues this app's tasks go to (physical names), whose depth the harness watches."""

app = cloudq.App("bench", endpoint_url=os.environ.get("BENCH_ENDPOINT_URL"),
                 queue_prefix=PREFIX, result_table=f"{PREFIX}results")


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
    """Create the queues and the result table."""
    from cloudq.provision import provision as create

    create(app)
