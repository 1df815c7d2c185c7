"""The app `cloudq beat` runs in the beat tests: one entry every second (settings from CLOUDQ_*)."""

from __future__ import annotations

import cloudq

app = cloudq.App("beat-e2e")
app.conf.beat_schedule = {
    "every-second": {"task": "beat.add", "schedule": 1.0, "args": (2, 3)},
}


@app.task(name="beat.add")
def add(x: int, y: int) -> int:
    return x + y
