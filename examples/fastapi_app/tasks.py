"""The tasks behind the FastAPI example: an ``async def`` task and a plain one.

Task names are explicit so the web process and the worker agree however they import this.
"""

from __future__ import annotations

import asyncio

import cloudq

app = cloudq.App("fastapi-example")


@app.task(name="web.fetch_size", max_retries=2, autoretry_for=(ConnectionError,))
async def fetch_size(url: str) -> int:
    """Pretend to download ``url`` without blocking the worker's event loop."""
    await asyncio.sleep(0.2)
    return len(url) * 100


@app.task(name="web.add")
def add(x: int, y: int) -> int:
    return x + y
