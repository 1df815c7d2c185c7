"""Tasks whose outcomes are hard to store or whose messages arrive twice (issue 11: 4, 5, 9, 13).

Used in this process (with the Lambda handler) and by real ``cloudq poll`` processes
(``-A tests.integration.apps.outcomes:app``, settings from ``CLOUDQ_*``). Body runs are
counted in the app's own table (``runs#<label>``), so every process and the test see one count.
"""

from __future__ import annotations

import time

import cloudq

app = cloudq.App("outcomes", set_as_current=False)

RUNS_TTL_S = 3600


def runs_key(label: str) -> str:
    return f"runs#{label}"


def count_run(label: str) -> None:
    app.store.increment(runs_key(label), "n", ttl_s=RUNS_TTL_S)


def runs(label: str) -> int:
    item = app.store.get(runs_key(label))
    return int(item["n"]) if item else 0


def _raise_deep(text: str, depth: int) -> None:
    if depth:
        _raise_deep(text, depth - 1)
    raise ValueError(f"bad value {text!r}")


@app.task
def explode(size: int, depth: int = 0) -> None:
    """Fails with an error text of ``size`` characters (a bad value echoed back), raised
    ``depth`` frames down."""
    _raise_deep("v" * size, depth)


@app.task
def big(size: int) -> str:
    """A result of ``size`` bytes (compressible)."""
    return "r" * size


@app.task
def varied(size: int) -> list[int]:
    """A result of roughly ``size`` bytes of JSON that compresses poorly."""
    return [(i * 7919) % 100_003 for i in range(size // 6)]


@app.task(idempotent=True)
def once(label: str, seconds: float = 1.5) -> str:
    """Counts its body runs, then works for ``seconds``."""
    count_run(label)
    time.sleep(seconds)
    return label


@app.task(idempotent=True)
def hangs_first(label: str) -> str:
    """Hangs on its first run (its worker is then killed); returns at once on the next."""
    count_run(label)
    if runs(label) == 1:
        time.sleep(60)
    return label


@app.task
async def ping() -> str:
    """An ``async def`` task: with one, the Lambda handler runs a batch's records at once."""
    return "pong"
