"""One benchmark scenario as a client of either system, in that system's virtualenv.

    python caller.py --app bench_cloudq_app --scenario group --tasks 300
    python caller.py --app bench_celery_app --provision

The app module (imported by name, from the current directory) gives both sides the same
names: ``noop`` (a task with no result), ``add``, ``tsum``, ``group``, ``chord``. So the code
of every scenario is the same for cloudq and for Celery; only the module differs.

Protocol with ``vs_celery.py``, on stdin and stdout:

1. the caller warms up (connections, queue URLs: one call of each kind it will make) and
   prints ``ready``;
2. the orchestrator waits until the queue is empty, snapshots the proxy's counts, writes ``go``;
3. the caller runs the scenario and prints one JSON object: what it measured itself.

``feed`` (the throughput run) talks more: after each chunk of tasks it prints ``sent`` and
waits for ``more`` (the queue is shallow again) or ``stop``.

Whatever else the process prints goes to stderr, so stdout carries only the protocol.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, TextIO

GROUP_SIZE = 100
THREADS = 32
TIMEOUT_S = 120.0

Measured = dict[str, Any]


def single(app: ModuleType, tasks: int) -> Measured:
    """``noop.delay()`` one after another; nobody waits for anything."""
    for n in range(tasks):
        app.noop.delay(n)
    return {}


def threaded(app: ModuleType, tasks: int) -> Measured:
    """``noop.delay()`` from 32 threads at once (a web server under load)."""
    start = threading.Barrier(THREADS)

    def send(first: int) -> None:
        start.wait()
        for n in range(first, tasks, THREADS):
            app.noop.delay(n)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {}


def groups(app: ModuleType, tasks: int) -> Measured:
    """Groups of 100 ``add`` tasks, each sent and then waited for with ``.get()``."""
    for first in range(0, tasks, GROUP_SIZE):
        members = range(first, min(first + GROUP_SIZE, tasks))
        results = app.group([app.add.s(n, n) for n in members]).apply_async()
        if results.get(timeout=TIMEOUT_S) != [2 * n for n in members]:
            raise AssertionError("a group returned the wrong results")
    return {}


def roundtrip(app: ModuleType, tasks: int) -> Measured:
    """``add.delay().get()`` one after another, default settings; each one's latency."""
    latencies_ms = []
    for n in range(tasks):
        started = time.perf_counter()
        if app.add.delay(n, 1).get(timeout=TIMEOUT_S) != n + 1:
            raise AssertionError("a task returned the wrong result")
        latencies_ms.append((time.perf_counter() - started) * 1000)
    return {"latencies_ms": latencies_ms}


def chord(app: ModuleType, tasks: int) -> Measured:
    """One chord of ``tasks`` ``add`` members and a ``tsum`` callback, waited for."""
    result = app.chord([app.add.s(n, n) for n in range(tasks)])(app.tsum.s())
    if result.get(timeout=TIMEOUT_S) != tasks * (tasks - 1):
        raise AssertionError("the chord's callback returned the wrong sum")
    return {}


def feed(app: ModuleType, chunk: int, control: TextIO, out: TextIO) -> Measured:
    """``add.delay()`` in chunks, one more each time the orchestrator says ``more`` (when the
    queue is shallow again), until it says ``stop``: the throughput run, at a depth moto
    keeps up with."""
    sent = 0
    while True:
        for n in range(sent, sent + chunk):
            app.add.delay(n, n)
        sent += chunk
        print("sent", file=out)
        if control.readline().strip() != "more":
            return {"sent": sent}


SCENARIOS: dict[str, Callable[[ModuleType, int], Measured]] = {
    "single": single, "threaded": threaded, "group": groups, "roundtrip": roundtrip,
    "chord": chord,
}


def warm_up(app: ModuleType, scenario: str) -> None:
    """Make one call of each kind the scenario makes, so that the measured run starts with
    connections open, clients built and queue URLs known."""
    if scenario in ("single", "threaded"):
        app.noop.delay(-1)
    elif scenario == "feed":
        app.add.delay(0, 0)
    elif scenario in ("group", "chord"):
        app.group([app.add.s(0, 0), app.add.s(1, 1)]).apply_async().get(timeout=TIMEOUT_S)
        if scenario == "chord":
            app.chord([app.add.s(0, 0)])(app.tsum.s()).get(timeout=TIMEOUT_S)
    elif scenario == "roundtrip":
        app.add.delay(0, 0).get(timeout=TIMEOUT_S)


def protocol_stream() -> TextIO:
    """A stream on the original stdout; from now on fd 1 (print, logging) goes to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--app", required=True, help="the app module's name")
    parser.add_argument("--scenario", choices=[*sorted(SCENARIOS), "feed"])
    parser.add_argument("--tasks", type=int, default=100, help="tasks (feed: per chunk)")
    parser.add_argument("--provision", action="store_true",
                        help="create the app's queues and table, then exit")
    options = parser.parse_args()
    out = protocol_stream()
    sys.path.insert(0, os.getcwd())
    app = importlib.import_module(options.app)
    if options.provision:
        app.provision()
        return
    if options.scenario is None:
        parser.error("give --scenario or --provision")
    warm_up(app, options.scenario)
    print("ready", file=out)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("the orchestrator went away before saying go")
    started = time.perf_counter()
    if options.scenario == "feed":
        measured = feed(app, options.tasks, sys.stdin, out)
    else:
        measured = SCENARIOS[options.scenario](app, options.tasks)
    measured["elapsed_s"] = time.perf_counter() - started
    print(json.dumps(measured), file=out)


if __name__ == "__main__":
    main()
