"""Async tasks run by real ``cloudq poll`` processes (``--pool asyncio`` and the thread pool).

Settings come from ``CLOUDQ_*`` in the worker's environment; tasks leave marks in the
directory ``E2E_DIR`` so the test process can see what ran, and how often.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import cloudq

app = cloudq.App("aio", set_as_current=False)


def mark(name: str, line: str = "") -> None:
    with (Path(os.environ["E2E_DIR"]) / name).open("a") as f:
        f.write(line + "\n")


def marks(name: str) -> list[str]:
    path = Path(os.environ["E2E_DIR"]) / name
    return path.read_text().splitlines() if path.exists() else []


@app.task
async def nap(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i


@app.task
async def long_nap(name: str, seconds: float) -> str:
    """Naps ``seconds`` on its first run; later runs (redeliveries) return at once."""
    mark(f"{name}.started")
    if len(marks(f"{name}.started")) > 1:
        return "redelivered"
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark(f"{name}.cancelled")
        raise
    mark(f"{name}.done")
    return "first run"


_clients: dict[int, asyncio.Queue[int]] = {}
"""A loop-bound object per worker thread, made by the first async task the thread runs."""


@app.task
async def where() -> list[object]:
    """Which thread and loop ran it, after a round trip through a queue bound to that loop
    by the first async task the thread ran (a waiting ``get`` binds it)."""
    loop = asyncio.get_running_loop()
    inbox = _clients.setdefault(threading.get_ident(), asyncio.Queue())
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0.01)
    await inbox.put(1)
    await getter
    return [threading.current_thread().name, id(loop)]
