"""The app the poller-hardening tests run inside real ``cloudq poll`` processes.

Settings come from ``CLOUDQ_*`` in the worker's environment. ``record`` appends
``<label> <start time>`` to ``$E2E_DIR/starts``, so a test can read what ran and in which order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cloudq

app = cloudq.App("workers")


def _starts() -> Path:
    return Path(os.environ["E2E_DIR"]) / "starts"


@app.task
def record(label: str) -> str:
    with _starts().open("a") as f:
        f.write(f"{label} {time.time():.6f}\n")
    return label


@app.task(time_limit=1)
def overrun(seconds: float) -> str:
    """Sleeps in one blocking call, which no exception raised in the thread can stop."""
    record(f"overrun-{seconds:g}")
    time.sleep(seconds)
    record(f"overrun-{seconds:g}-done")
    return "finished"


@app.task(time_limit=1)
async def aoverrun(seconds: float) -> str:
    import asyncio

    record(f"aoverrun-{seconds:g}")
    await asyncio.sleep(seconds)
    record(f"aoverrun-{seconds:g}-done")
    return "finished"
