"""Framework CPU: cloudq tasks per CPU-second on the in-memory transport and store.

    python memory_cpu.py --tasks 3000

Send, run and read the result of each task (``add.delay`` for a batch of 100, a
``BurstWorker`` over the queue, ``get`` on each), timed with ``time.process_time``: what the
framework itself costs per task, with no I/O. Prints ``{"tasks": N, "cpu_s": S}``. Compared
with Celery's eager mode (``celery_side/eager_cpu.py``).
"""

from __future__ import annotations

import argparse
import json
import time

from cloudq.testing import BurstWorker, memory_app

BATCH = 100
WARM_UP_TASKS = 200

app = memory_app("cpu")


@app.task(name="cpu.add")
def add(x: int, y: int) -> int:
    return x + y


def run(tasks: int) -> None:
    for first in range(0, tasks, BATCH):
        numbers = range(first, min(first + BATCH, tasks))
        results = [add.delay(n, n) for n in numbers]
        BurstWorker(app).join(fail_fast=True)
        if [r.get() for r in results] != [2 * n for n in numbers]:
            raise AssertionError("a task returned the wrong result")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    options = parser.parse_args()
    run(WARM_UP_TASKS)
    started = time.process_time()
    run(options.tasks)
    print(json.dumps({"tasks": options.tasks, "cpu_s": time.process_time() - started}))


if __name__ == "__main__":
    main()
