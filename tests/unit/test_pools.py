"""The pools: forked children with hard time limits, lost children, recycling; the thread pool.

A child runs tasks against its own copy of the in-memory twins, so what these tests observe
from a child is a side effect (a file it writes); results the parent records (time limits,
lost workers) are in the parent's store as usual.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.errors import TimeLimitExceeded, WorkerLostError
from cloudq.runners.poller import Poller
from cloudq.runners.pools import WorkerPool, hard_time_limit, make_pool
from cloudq.stores.memory import MemoryStore
from cloudq.transports.memory import MemoryTransport

FAST = {"poll_wait_s": 0.05, "pool": "processes"}


def new_app(store: MemoryStore | None = None, **settings: Any) -> cloudq.App:
    return cloudq.App("t", transport=MemoryTransport(), store=store or MemoryStore(),
                      set_as_current=False, **settings)


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_task_past_its_hard_time_limit_is_killed_and_recorded(tmp_path: Path) -> None:
    app = new_app()
    log = tmp_path / "pids"

    @app.task(time_limit=0.5)
    def sleepy() -> None:
        time.sleep(10)

    @app.task
    def after() -> None:
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")

    result = sleepy.delay()
    after.delay()
    poller = Poller(app, concurrency=1, burst=True, **FAST)
    began = time.monotonic()

    assert poller.run() == 0

    assert time.monotonic() - began < 3
    assert result.state == "FAILURE"
    assert isinstance(result.result, TimeLimitExceeded)
    assert poller.stats["time_limit"] == 1
    assert app.transport.depth("default") == 0 and app.transport.bodies("default") == []
    assert len(pids(log)) == 1  # a fresh child ran the next message


@pytest.mark.parametrize("where", ["envelope", "setting"])
def test_the_hard_limit_also_comes_from_the_message_or_the_setting(where: str) -> None:
    app = new_app(task_time_limit=0.3 if where == "setting" else None)

    @app.task
    def sleepy() -> None:
        time.sleep(10)

    result = sleepy.apply_async(time_limit=0.3) if where == "envelope" else sleepy.delay()

    assert Poller(app, concurrency=1, burst=True, **FAST).run() == 0

    assert isinstance(result.result, TimeLimitExceeded)


def test_hard_time_limit_prefers_the_message_then_the_task_then_the_setting() -> None:
    app = new_app(task_time_limit=30)

    @app.task(time_limit=20)
    def limited() -> None:
        return None

    @app.task
    def unlimited() -> None:
        return None

    def body(name: str, **fields: Any) -> str:
        return wire.encode(wire.Envelope(id="x", task=name, **fields))

    assert hard_time_limit(app, body(limited.name, time_limit=10)) == ("x", limited.name, 10.0)
    assert hard_time_limit(app, body(limited.name)) == ("x", limited.name, 20.0)
    assert hard_time_limit(app, body(unlimited.name)) == ("x", unlimited.name, 30.0)
    assert hard_time_limit(app, "not json") == (None, None, 30.0)


def test_a_child_that_dies_is_recorded_as_worker_lost_and_replaced(tmp_path: Path) -> None:
    app = new_app()
    log = tmp_path / "pids"

    @app.task
    def crash() -> None:
        os._exit(7)

    @app.task
    def after() -> None:
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")

    result = crash.delay()
    after.delay()
    poller = Poller(app, concurrency=1, burst=True, **FAST)

    assert poller.run() == 0

    assert result.state == "FAILURE"
    assert isinstance(result.result, WorkerLostError)
    assert "exit code 7" in str(result.result)
    assert poller.stats["worker_lost"] == 1
    assert len(pids(log)) == 1
    assert app.transport.bodies("default") == []


def test_max_tasks_per_child_recycles_the_child(tmp_path: Path) -> None:
    app = new_app()
    log = tmp_path / "pids"

    @app.task
    def whoami() -> None:
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")

    for _ in range(4):
        whoami.delay()
    poller = Poller(app, concurrency=1, max_tasks_per_child=2, burst=True, **FAST)

    assert poller.run() == 0

    seen = pids(log)
    assert len(seen) == 4
    assert seen[0] == seen[1] != seen[2] == seen[3]
    assert os.getpid() not in seen
    assert poller.stats["children_recycled"] >= 1


def test_children_leave_sigint_and_sigterm_to_the_parent(tmp_path: Path) -> None:
    app = new_app()
    log = tmp_path / "survived"

    @app.task
    def signalled() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        log.write_text("yes")

    result = signalled.delay()
    poller = Poller(app, concurrency=1, burst=True, **FAST)

    assert poller.run() == 0

    assert log.read_text() == "yes"
    assert result.state == "PENDING"  # the success is in the child's own store copy
    assert poller.stats["success"] == 1 and poller.stats["worker_lost"] == 0


class FlakyStore(MemoryStore):
    def put(self, key: str, item: Any, *, ttl_s: float) -> None:
        raise ConnectionError("the store is down")


def test_an_exception_in_a_child_leaves_the_message_and_the_pool_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = new_app(store=FlakyStore())

    @app.task
    def one() -> int:
        return 1

    first, _ = one.delay(), one.delay()
    poller = Poller(app, concurrency=1, burst=True, **FAST)

    with caplog.at_level(logging.ERROR):
        assert poller.run() == 0

    assert poller.stats["errors"] == 2
    assert len(app.transport.bodies("default")) == 2  # both come back after their timeout
    assert any(first.id in r.getMessage() and "store is down" in r.getMessage()
               for r in caplog.records)


def test_the_thread_pool_ignores_max_tasks_per_child_with_a_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="cloudq.runners.pools"):
        pool = make_pool(new_app(), "threads", 2, max_tasks_per_child=5, record=lambda _: None)

    assert isinstance(pool, WorkerPool)
    assert any("ignored by the threads pool" in r.getMessage() for r in caplog.records)
