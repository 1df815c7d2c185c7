"""The app the periodic-task integration tests sync to EventBridge and run from templates.

Settings (queue prefix, table, ``beat_schedule``) are given per test with ``app.conf.update``.
Tasks note each run in ``runs``: the label and the periodic headers the run saw.
"""

from __future__ import annotations

from typing import Any

import cloudq

app = cloudq.App("per", set_as_current=False)

runs: list[dict[str, Any]] = []
"""One item per task body run, in order: label, task id, periodic headers."""


def _note(task: cloudq.Task[..., Any], label: str) -> str:
    request = task.request
    runs.append({"label": label, "id": request.id,
                 "name": request.headers.get("periodic_task_name"),
                 "tick": request.headers.get("periodic_tick")})
    return f"done {label}"


@app.task(name="per.report", bind=True)
def report(self: cloudq.Task[..., str], label: str) -> str:
    return _note(self, label)


@app.task(name="per.charge", bind=True, idempotent=True)
def charge(self: cloudq.Task[..., str], label: str) -> str:
    """Idempotent: a tick delivered twice (same task id) runs once."""
    return _note(self, label)
