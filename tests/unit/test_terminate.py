"""``revoke(terminate=True)`` stops a task the poller is running; ``terminate=False`` does not.

Real clock and real pollers on the in-memory twins, as in ``test_poller``. A process-pool child
writes results to its own copy of the store, so those tests observe side effects (files the
task writes), the poller's stats and what the parent records itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq import signals
from cloudq.runners import pools
from cloudq.runners.limits import Interrupt
from cloudq.runners.poller import Poller
from cloudq.stores.memory import MemoryStore
from cloudq.testing import BurstWorker
from cloudq.transports.memory import MemoryTransport

INTERVAL_S = 0.2
"""``worker_revoke_check_interval`` of these tests."""


def new_app(**settings: Any) -> cloudq.App:
    settings.setdefault("worker_revoke_check_interval", INTERVAL_S)
    return cloudq.App("t", transport=MemoryTransport(), store=MemoryStore(),
                      set_as_current=False, **settings)


def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def store_of(app: cloudq.App) -> MemoryStore:
    assert isinstance(app.store, MemoryStore)
    return app.store


def bodies(app: cloudq.App) -> list[str]:
    assert isinstance(app.transport, MemoryTransport)
    return app.transport.bodies("default")


def revoke_checks(app: cloudq.App) -> list[str]:
    """The keys of every BatchGetItem so far (the watch's reads)."""
    return [keys for action, keys in store_of(app).calls if action == "BatchGetItem"]


@pytest.fixture
def start() -> Iterator[Callable[..., Poller]]:
    """``start(app, **options)``: a poller running in a thread, stopped after the test."""
    running: list[tuple[Poller, threading.Thread]] = []

    def start(app: cloudq.App, **options: Any) -> Poller:
        poller = Poller(app, poll_wait_s=0.05, **options)
        thread = threading.Thread(target=poller.run, daemon=True)
        thread.start()
        running.append((poller, thread))
        return poller

    yield start
    for poller, thread in running:
        poller.stop()
        thread.join(10)


@pytest.fixture
def revoked_signals() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def on_revoked(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.task_revoked.connect(on_revoked)
    yield seen
    signals.task_revoked.disconnect(on_revoked)


# -- the thread pool ------------------------------------------------------------------------------
def test_a_running_thread_task_is_stopped_recorded_revoked_and_acked(
    start: Callable[..., Poller], revoked_signals: list[dict[str, Any]],
) -> None:
    app = new_app()
    spinning = threading.Event()

    @app.task(track_started=True, autoretry_for=(Exception,))  # terminate is not retried
    def spin() -> None:
        spinning.set()
        while True:
            time.sleep(0.01)

    @app.task
    def after() -> str:
        return "after"

    result = spin.delay()
    poller = start(app, concurrency=1)
    assert spinning.wait(5)
    assert result.state == "STARTED"

    result.revoke(terminate=True)
    revoked_at = time.monotonic()

    eventually(lambda: result.state == "REVOKED", timeout_s=INTERVAL_S + 1)
    assert time.monotonic() - revoked_at < INTERVAL_S + 1
    assert app.backend.get(result.id).extra["reason"] == "terminated"
    with pytest.raises(cloudq.TaskRevokedError, match="terminated"):
        result.get(timeout=0)
    eventually(lambda: poller.stats["acked"] == 1)
    assert bodies(app) == []
    assert poller.stats["terminated"] == 1 and poller.stats["revoked"] == 1
    assert [(s["request"].id, s["terminated"]) for s in revoked_signals] == [(result.id, True)]
    assert after.delay().get(timeout=5) == "after"  # the same (only) thread runs the next task


def test_terminate_false_lets_a_running_task_finish(start: Callable[..., Poller]) -> None:
    app = new_app()
    release = threading.Event()
    running: set[str] = set()

    @app.task(bind=True, track_started=True)
    def wait(self: cloudq.Task[Any, Any]) -> str:
        running.add(self.request.id or "")
        while not release.is_set():
            time.sleep(0.01)
        return "finished"

    kept, stopped = wait.delay(), wait.delay()
    poller = start(app, concurrency=2)
    eventually(lambda: running == {kept.id, stopped.id})

    kept.revoke()
    stopped.revoke(terminate=True)

    eventually(lambda: stopped.state == "REVOKED", timeout_s=INTERVAL_S + 1)
    time.sleep(3 * INTERVAL_S)  # several more checks
    assert kept.state == "STARTED"
    release.set()
    assert kept.get(timeout=5) == "finished"
    assert poller.stats["terminated"] == 1


def test_no_revocation_checks_while_idle_one_batch_per_interval_while_busy(
    start: Callable[..., Poller],
) -> None:
    app = new_app(worker_revoke_check_interval=0.05)
    release = threading.Event()
    holding = threading.Semaphore(0)

    @app.task
    def hold() -> None:
        holding.release()
        release.wait(10)

    start(app, concurrency=4)
    time.sleep(0.5)
    assert revoke_checks(app) == []  # idle

    results = [hold.delay() for _ in range(3)]
    for _ in results:
        assert holding.acquire(timeout=5)
    before, began = len(revoke_checks(app)), time.monotonic()
    time.sleep(0.5)
    busy = revoke_checks(app)
    assert 3 <= len(busy) - before <= (time.monotonic() - began) / 0.05 + 1  # one per interval
    assert set(busy[-1].split(",")) == {f"revoked#{r.id}" for r in results}  # one call for all

    release.set()
    eventually(lambda: bodies(app) == [])
    time.sleep(0.1)
    checked = len(revoke_checks(app))
    time.sleep(0.5)
    assert len(revoke_checks(app)) == checked  # idle again


def test_checks_are_off_with_an_interval_of_zero(start: Callable[..., Poller]) -> None:
    app = new_app(worker_revoke_check_interval=0)
    release = threading.Event()

    @app.task
    def hold() -> None:
        release.wait(10)

    hold.delay()
    start(app, concurrency=1)
    time.sleep(0.3)
    release.set()
    eventually(lambda: bodies(app) == [])

    assert revoke_checks(app) == []


# -- the process pool -----------------------------------------------------------------------------
def read_pid(path: Path) -> int:
    return int(path.read_text())


def test_a_running_child_gets_terminated_cleans_up_and_is_replaced(
    start: Callable[..., Poller], tmp_path: Path,
) -> None:
    app = new_app()

    @app.task
    def sleepy() -> None:
        (tmp_path / "started").write_text(str(os.getpid()))
        try:
            time.sleep(60)
        finally:  # TaskTerminated is raised in the body: cleanup runs
            (tmp_path / "cleaned").write_text("yes")

    @app.task
    def after() -> None:
        (tmp_path / "after").write_text(str(os.getpid()))

    result = sleepy.delay()
    poller = start(app, concurrency=1, pool="processes")
    eventually(lambda: (tmp_path / "started").exists())
    began = time.monotonic()

    result.revoke(terminate=True)
    after.delay()

    eventually(lambda: (tmp_path / "after").exists(), timeout_s=INTERVAL_S + 2)
    assert time.monotonic() - began < INTERVAL_S + 2
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert read_pid(tmp_path / "after") != read_pid(tmp_path / "started")  # a fresh child
    eventually(lambda: poller.stats["acked"] == 2)
    assert bodies(app) == []
    assert poller.stats["terminated"] == 1
    assert poller.stats["revoked"] == 1  # the child recorded REVOKED (in its store copy)
    assert poller.stats["terminate_killed"] == 0


def test_a_child_that_ignores_the_terminate_is_killed_and_the_parent_records_revoked(
    start: Callable[..., Poller], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    revoked_signals: list[dict[str, Any]],
) -> None:
    monkeypatch.setattr(pools, "TERMINATE_GRACE_S", 0.3)
    app = new_app()

    @app.task
    def stubborn() -> None:
        (tmp_path / "started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                time.sleep(60)
            except cloudq.TaskTerminated:
                (tmp_path / "ignored").write_text("yes")

    @app.task
    def after() -> None:
        (tmp_path / "after").write_text(str(os.getpid()))

    result = stubborn.delay()
    poller = start(app, concurrency=1, pool="processes")
    eventually(lambda: (tmp_path / "started").exists())

    result.revoke(terminate=True)
    after.delay()

    eventually(lambda: (tmp_path / "after").exists(), timeout_s=INTERVAL_S + 3)
    assert (tmp_path / "ignored").exists()
    assert read_pid(tmp_path / "after") != read_pid(tmp_path / "started")
    assert result.state == "REVOKED"
    assert app.backend.get(result.id).extra["reason"] == "terminated"  # written by the parent
    assert poller.stats["terminate_killed"] == 1 and poller.stats["revoked"] == 1
    assert [(s["request"].id, s["terminated"]) for s in revoked_signals] == [(result.id, True)]
    eventually(lambda: poller.stats["acked"] == 2)
    assert bodies(app) == []


# -- the mechanism --------------------------------------------------------------------------------
def test_an_interrupt_fires_only_inside_its_block_and_for_its_task() -> None:
    interrupt = Interrupt()
    box: dict[str, Any] = {}
    inside, leave = threading.Event(), threading.Event()

    def target() -> None:
        with interrupt.armed("t-1"):
            inside.set()
            try:
                while not leave.is_set():
                    time.sleep(0.01)
            except cloudq.TaskTerminated as exc:
                box["error"] = exc

    assert not interrupt.fire(cloudq.TaskTerminated, "t-1")  # nothing armed yet
    thread = threading.Thread(target=target)
    thread.start()
    assert inside.wait(5)

    assert not interrupt.fire(cloudq.TaskTerminated, "t-2")  # another task
    assert interrupt.fire(cloudq.TaskTerminated, "t-1")
    assert not interrupt.fire(cloudq.TaskTerminated, "t-1")  # once per block
    thread.join(5)

    assert isinstance(box.get("error"), cloudq.TaskTerminated)
    assert not interrupt.fire(cloudq.TaskTerminated, "t-1")  # disarmed


def test_a_task_raising_task_revoked_error_itself_still_fails(app: cloudq.App) -> None:
    @app.task
    def waits_for_a_revoked_one() -> None:
        raise cloudq.TaskRevokedError("task x was revoked")  # as AsyncResult.get() would

    result = waits_for_a_revoked_one.delay()
    BurstWorker(app).join()

    assert result.state == "FAILURE"
