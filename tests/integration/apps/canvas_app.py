"""The app the canvas integration tests run: in this process (burst worker, Lambda handler)
and inside real ``cloudq poll`` processes.

Settings are given per test (``app.conf.update`` here, ``CLOUDQ_*`` in a worker's
environment). Tasks note what they did in ``runs``, in order; in a worker process
(``E2E_DIR`` set, as the e2e harness does) they also append it to ``$E2E_DIR/runs``, so the
test process can see how often a callback ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cloudq

app = cloudq.App("canvas", set_as_current=False)

runs: list[str] = []
"""One entry per noted task run, in the order they ran."""
errbacks: list[tuple[dict[str, Any], BaseException, str]] = []
"""The ``(request, exc, traceback)`` each ``on_error`` call got."""


class RenderError(Exception):
    """A domain error: the task's failure, stored as its result."""


def noted(line: str) -> None:
    runs.append(line)
    workdir = os.environ.get("E2E_DIR")
    if workdir:
        with (Path(workdir) / "runs").open("a") as f:
            f.write(line + "\n")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def tsum(numbers: list[int]) -> int:
    """The usual chord callback: notes how many results it got."""
    noted(f"tsum({len(numbers)})")
    return sum(numbers)


@app.task
def boom(value: Any = None) -> int:
    raise RenderError(f"cannot render {value!r}")


@app.task
def note(value: Any) -> None:
    """A ``link`` callback: it gets the parent's return value."""
    noted(f"note({value!r})")


@app.task
def on_error(request: Any, exc: Any, traceback: Any) -> None:
    """A ``link_error`` errback, called as Celery calls one."""
    errbacks.append((request, exc, traceback))


# -- the report-generation workflow ---------------------------------------------------------------
@app.task
def fetch(report_id: str) -> dict[str, str]:
    noted(f"fetch({report_id})")
    return {"title": f"report {report_id}"}


@app.task
def render(data: dict[str, str], part: str) -> str:
    return f"<{part} of {data['title']}>"


@app.task
def merge(parts: list[str]) -> str:
    noted(f"merge({len(parts)})")
    return "".join(parts)
