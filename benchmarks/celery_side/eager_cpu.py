"""Framework CPU: Celery tasks per CPU-second in eager mode (``task_always_eager``).

    python eager_cpu.py --tasks 3000

``add.delay(n, n).get()`` for each task, run in this process by Celery itself, timed with
``time.process_time``. Prints ``{"tasks": N, "cpu_s": S}``. Compared with cloudq's in-memory
transport (``cloudq_side/memory_cpu.py``).
"""

from __future__ import annotations

import argparse
import json
import time

from celery import Celery

WARM_UP_TASKS = 200

app = Celery("cpu", broker="memory://", backend="cache+memory://")
app.conf.task_always_eager = True


@app.task(name="cpu.add")
def add(x: int, y: int) -> int:
    return x + y


def run(tasks: int) -> None:
    for n in range(tasks):
        if add.delay(n, n).get() != 2 * n:
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
