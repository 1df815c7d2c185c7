"""The app the Lambda tests hand to the handler, in this process, against moto server.

Settings are given per test (``app.conf.update``). Tasks note what they did in ``runs``,
in order, so a test sees what ran and how often; the ``lambda_app`` fixture clears it.
"""

from __future__ import annotations

import time
from typing import Any

import cloudq

app = cloudq.App("lam", set_as_current=False)

runs: list[str] = []
"""One entry per task body run, in the order they ran."""
rejected: set[str] = set()
"""Keys ``reject_once`` has already turned away."""


class OrderError(Exception):
    """A domain error: the task's failure, stored as its result."""


@app.task
def add(x: int, y: int) -> int:
    runs.append(f"add({x}, {y})")
    return x + y


@app.task
def record(label: str) -> str:
    runs.append(label)
    return label


@app.task
def note(value: Any) -> None:
    """A ``link`` callback: it gets the parent's return value."""
    runs.append(f"note({value!r})")


@app.task
def fail(reason: str) -> None:
    runs.append(f"fail({reason})")
    raise OrderError(reason)


@app.task(bind=True, max_retries=2)
def always_retry(self: cloudq.Task[..., None]) -> None:
    runs.append(f"always_retry#{self.request.retries}")
    raise self.retry(exc=OSError("upstream still down"), countdown=0)


@app.task
def reject_once(key: str) -> str:
    """Hands its message back the first time it sees ``key``; runs the second time."""
    if key not in rejected:
        rejected.add(key)
        raise cloudq.Reject(f"{key}: not yet", requeue=True)
    runs.append(key)
    return key


@app.task(idempotent=True)
def charge(order: str) -> str:
    runs.append(f"charge({order})")
    return f"charged {order}"


@app.task
def spin(label: str) -> str:
    """Works until stopped, in small steps, as long-running Python code does."""
    runs.append(f"{label}.started")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)
    runs.append(f"{label}.finished")
    return label
