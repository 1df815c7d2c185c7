"""Retry decisions, free of I/O: how long to wait before the next attempt."""

from __future__ import annotations

import random


def backoff_countdown_s(
    retries: int,
    *,
    factor: float,
    maximum_s: float,
    jitter: bool,
    rng: random.Random | None = None,
) -> float:
    """Celery's exponential back-off: ``factor * 2**retries`` capped at ``maximum_s``.

    With ``jitter`` the countdown is drawn uniformly from 0 to that value ("full jitter"),
    so many tasks failing together do not come back together.
    """
    countdown = min(maximum_s, factor * (2.0**retries))
    if jitter:
        countdown = float((rng or random.Random()).uniform(0, countdown))
    return max(0.0, countdown)
