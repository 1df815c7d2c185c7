"""The app the end-to-end tests run inside real ``cloudq poll`` processes.

Settings come from ``CLOUDQ_*`` in the worker's environment; tasks leave marks in the
directory ``E2E_DIR`` so the test process can see what ran, and how often.
"""

from __future__ import annotations

import hashlib
import os
import time
from decimal import Decimal
from pathlib import Path

import cloudq

app = cloudq.App("e2e")


class PaymentDeclined(Exception):
    """A domain error whose type must survive the trip back to the caller."""


def _dir() -> Path:
    return Path(os.environ["E2E_DIR"])


def mark(name: str, line: str = "") -> None:
    with (_dir() / name).open("a") as f:
        f.write(line + "\n")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def touch(name: str) -> str:
    mark(name)
    return name


@app.task(bind=True, max_retries=3)
def flaky(self: cloudq.Task[..., int], fail_times: int) -> int:
    mark(f"flaky-{self.request.id}", str(self.request.retries))
    if self.request.retries < fail_times:
        raise self.retry(exc=OSError("transient"), countdown=1)
    return self.request.retries


@app.task
def charge(amount: Decimal) -> str:
    raise PaymentDeclined(f"card declined for {amount}")


@app.task(bind=True)
def progress(self: cloudq.Task[..., int], steps: int) -> int:
    for step in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
        deadline = time.monotonic() + 10
        while not (_dir() / f"release-{step}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return steps


@app.task
def slow(name: str, seconds: float) -> str:
    mark(f"{name}.started")
    time.sleep(seconds)
    mark(f"{name}.done")
    return name


@app.task
def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
