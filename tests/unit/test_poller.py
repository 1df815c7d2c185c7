"""The poller on the in-memory twins: prefetch bound, priorities, heartbeat, acks, shutdown.

These tests use the real clock (the memory transport's long polls and visibility timeouts
must pass in real time), so they build their apps here rather than with ``make_app``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import cloudq
from cloudq import signals
from cloudq.errors import Reject
from cloudq.runners.poller import Poller
from cloudq.stores.memory import MemoryStore
from cloudq.transports.base import ReceivedMessage
from cloudq.transports.memory import MemoryTransport
from tests.unit.running import Running

FAST = {"poll_wait_s": 0.05}


def new_app(transport: MemoryTransport | None = None, store: MemoryStore | None = None,
            **settings: Any) -> cloudq.App:
    return cloudq.App("t", transport=transport or MemoryTransport(), store=store or MemoryStore(),
                      set_as_current=False, **settings)


def eventually(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def memory(app: cloudq.App) -> MemoryTransport:
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    return transport


# -- running and acknowledging --------------------------------------------------------------------
def test_burst_runs_everything_then_returns_zero() -> None:
    app = new_app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    results = [add.delay(i, i) for i in range(25)]

    assert Poller(app, concurrency=4, burst=True, **FAST).run() == 0

    assert [r.get(timeout=0) for r in results] == [2 * i for i in range(25)]
    assert memory(app).bodies("default") == []


def test_finished_messages_are_deleted_in_batches() -> None:
    app = new_app()

    @app.task
    def noop() -> None:
        return None

    for _ in range(30):
        noop.delay()
    poller = Poller(app, concurrency=4, burst=True, **FAST)

    poller.run()

    deletes = [c for c in memory(app).calls if c[0] == "DeleteMessageBatch"]
    assert poller.stats["acked"] == 30
    assert 3 <= len(deletes) <= 10  # 30 messages, up to 10 per call


class SlowRetryTransport(MemoryTransport):
    def retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        time.sleep(0.3)  # a burst must not end while the message is on its way back
        super().retry_later(message, delay_s)


def test_a_disposition_that_is_not_acked_makes_the_message_visible_again() -> None:
    app = new_app(SlowRetryTransport())
    runs: list[int] = []

    @app.task(bind=True)
    def picky(self: cloudq.Task[Any, Any]) -> str:
        runs.append(self.request.delivery_info["receive_count"])
        if len(runs) == 1:
            raise Reject("not yet", requeue=True)
        return "ok"

    result = picky.delay()
    poller = Poller(app, concurrency=1, burst=True, **FAST)

    assert poller.run() == 0

    assert runs == [1, 2]
    assert result.get(timeout=0) == "ok"
    assert poller.stats["retried_later"] == 1
    assert ("ChangeMessageVisibility", "default") in memory(app).calls


class FlakyStore(MemoryStore):
    """A store that is 'down' for one task's result."""

    def __init__(self) -> None:
        super().__init__()
        self.broken_key = ""

    def put(self, key: str, item: Any, *, ttl_s: float) -> None:
        if key == self.broken_key:
            raise ConnectionError("the store is down")
        super().put(key, item, ttl_s=ttl_s)


def test_an_exception_from_process_message_leaves_the_message_and_the_worker_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    app = new_app(store=store)

    @app.task
    def double(x: int) -> int:
        return 2 * x

    bad = double.delay(0)
    store.broken_key = f"task#{bad.id}"
    good = [double.delay(i) for i in range(1, 4)]
    poller = Poller(app, concurrency=2, burst=True, **FAST)

    with caplog.at_level(logging.ERROR, logger="cloudq.runners.poller"):
        assert poller.run() == 0

    assert [r.get(timeout=0) for r in good] == [2, 4, 6]
    assert poller.stats["errors"] == 1
    assert len(memory(app).bodies("default")) == 1  # not deleted: it comes back later
    assert ("ChangeMessageVisibility", "default") not in memory(app).calls  # left alone
    assert any(bad.id in r.getMessage() and "store is down" in r.getMessage()
               for r in caplog.records)


# -- the prefetch bound and priorities ------------------------------------------------------------
class CountingTransport(MemoryTransport):
    """Tracks messages received but not yet finished (the task reports when it is done)."""

    def __init__(self) -> None:
        super().__init__()
        self.outstanding: set[str] = set()
        self.peak = 0
        self._count_lock = threading.Lock()

    def receive(self, queue: str, max_messages: int = 1,
                wait_s: float = 0.0) -> list[ReceivedMessage]:
        got = super().receive(queue, max_messages, wait_s)
        with self._count_lock:
            self.outstanding.update(m.message_id for m in got)
            self.peak = max(self.peak, len(self.outstanding))
        return got

    def finished(self, message_id: str) -> None:
        with self._count_lock:
            self.outstanding.discard(message_id)


@pytest.mark.parametrize(("concurrency", "multiplier"), [(2, 1), (1, 3)])
def test_never_more_messages_in_memory_than_concurrency_times_prefetch(
    concurrency: int, multiplier: int,
) -> None:
    transport = CountingTransport()
    app = new_app(transport)

    @app.task(bind=True)
    def slow(self: cloudq.Task[Any, Any]) -> None:
        time.sleep(0.03)
        transport.finished(self.request.delivery_info["message_id"])

    for _ in range(12):
        slow.delay()
    poller = Poller(app, concurrency=concurrency, prefetch_multiplier=multiplier, burst=True,
                    **FAST)

    assert poller.run() == 0

    assert poller.stats["success"] == 12
    assert transport.peak == concurrency * multiplier  # filled up to the bound, never past it
    assert poller.stats["max_held"] == concurrency * multiplier


def test_a_high_band_message_runs_before_normal_ones_already_waiting(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    @app.task
    def blocker() -> None:
        started.set()
        release.wait(5)

    @app.task
    def record(label: str) -> None:
        order.append(label)

    blocker.delay()
    poller = Poller(app, concurrency=1, prefetch_multiplier=4, **FAST)
    running = start(poller)
    assert started.wait(2)
    for label in ("n1", "n2", "n3"):
        record.delay(label)
    eventually(lambda: poller.held == 4)  # the blocker and three normal messages, buffered
    record.apply_async(("high",), priority=9)
    eventually(lambda: poller.held == 5)  # over the bound by the high band's one probe

    release.set()
    eventually(lambda: len(order) == 4)

    assert order == ["high", "n1", "n2", "n3"]
    assert running.stop() == 0


def test_every_queue_is_picked_up_with_fewer_slots_than_queues() -> None:
    app = new_app()

    @app.task
    def where(queue: str) -> str:
        return queue

    results = [where.apply_async((q,), queue=q) for q in ("a", "b", "c", "d")]
    poller = Poller(app, ["a", "b", "c", "d"], concurrency=1, burst=True, **FAST)

    assert poller.run() == 0

    assert [r.get(timeout=0) for r in results] == ["a", "b", "c", "d"]


# -- visibility -----------------------------------------------------------------------------------
def test_heartbeat_keeps_a_long_task_hidden_so_it_is_not_delivered_twice() -> None:
    app = new_app(visibility_timeout=1)
    memory(app).ensure_queue("default", visibility_timeout_s=1, max_receive_count=10)
    runs: list[float] = []

    @app.task
    def long_task() -> None:
        runs.append(time.monotonic())
        time.sleep(2.5)

    long_task.delay()
    poller = Poller(app, concurrency=2, burst=True, **FAST)

    assert poller.run() == 0

    assert len(runs) == 1
    assert poller.stats["heartbeats"] >= 3
    assert memory(app).bodies("default") == []


# -- stopping -------------------------------------------------------------------------------------
def test_stop_finishes_the_task_in_flight_acks_it_and_gives_back_the_buffered_one(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()
    started = threading.Event()
    runs: list[int] = []

    @app.task
    def slow(n: int) -> int:
        runs.append(n)
        started.set()
        time.sleep(0.3)
        return n

    first, _second = slow.delay(1), slow.delay(2)
    poller = Poller(app, concurrency=1, prefetch_multiplier=2)  # long polls of 20 s
    running = start(poller)
    assert started.wait(2)
    eventually(lambda: poller.held == 2)

    assert running.stop() == 0

    assert first.get(timeout=0) == 1
    assert runs == [1]
    assert poller.stats["released"] == 1
    assert memory(app).depth("default") == 1  # the second message is visible again


def test_tasks_still_running_after_the_shutdown_timeout_are_abandoned(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()
    started, release = threading.Event(), threading.Event()

    @app.task
    def stuck() -> None:
        started.set()
        release.wait(5)

    stuck.delay()
    running = start(Poller(app, concurrency=1, shutdown_timeout_s=0.2, **FAST))
    assert started.wait(2)
    try:
        began = time.monotonic()
        assert running.stop() == 1
        assert time.monotonic() - began < 1.0
        assert len(memory(app).bodies("default")) == 1  # delivered again after its timeout
    finally:
        release.set()


def test_an_idle_poller_stops_within_a_second_while_its_receivers_long_poll(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()
    poller = Poller(app, concurrency=2, poll_wait_s=20)
    running = start(poller)
    eventually(lambda: len(memory(app).calls) >= 3)  # each band is in a 20 s long poll
    time.sleep(0.1)

    began = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - began < 1.0


def test_a_long_poll_that_returns_after_stop_gives_its_message_back(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()

    @app.task
    def never() -> None:
        raise AssertionError("must not run after stop")

    poller = Poller(app, concurrency=1, poll_wait_s=20)
    running = start(poller)
    eventually(lambda: len(memory(app).calls) >= 3)
    assert running.stop() == 0

    never.delay()  # a receiver still in its long poll takes it, and must give it back

    eventually(lambda: poller.stats["released"] == 1)
    assert memory(app).depth("default") == 1


def test_sigterm_in_the_main_thread_stops_after_the_task_in_flight() -> None:
    app = new_app()
    started = threading.Event()

    @app.task
    def slow() -> str:
        started.set()
        time.sleep(0.3)
        return "done"

    result = slow.delay()
    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=lambda: started.wait(2) and os.kill(os.getpid(), signal.SIGTERM),
                     daemon=True).start()

    assert Poller(app, concurrency=1).run() == 0

    assert result.get(timeout=0) == "done"
    assert memory(app).bodies("default") == []
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_second_signal_exits_at_once_leaving_the_message_for_later() -> None:
    app = new_app()
    started, release = threading.Event(), threading.Event()

    @app.task
    def stuck() -> None:
        started.set()
        release.wait(10)

    stuck.delay()

    def interrupt_twice() -> None:
        started.wait(2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_twice, daemon=True).start()
    began = time.monotonic()
    try:
        assert Poller(app, concurrency=1).run() == 1
        assert time.monotonic() - began < 1.5
        assert len(memory(app).bodies("default")) == 1  # not deleted
    finally:
        release.set()


def test_burst_mode_stops_soon_when_there_is_nothing_to_do() -> None:
    began = time.monotonic()
    assert Poller(new_app(), burst=True).run() == 0  # default poll wait, capped at 1 s
    assert time.monotonic() - began < 3.5  # one empty 1 s call per priority tier, in turn


# -- setup, signals and logging -------------------------------------------------------------------
def test_worker_signals_are_sent_at_start_and_stop() -> None:
    app = new_app()
    seen: list[str] = []

    def ready(sender: Any, **_: Any) -> None:
        seen.append("ready")

    def shutdown(sender: Any, **_: Any) -> None:
        seen.append("shutdown")

    signals.worker_ready.connect(ready)
    signals.worker_shutdown.connect(shutdown)
    try:
        Poller(app, burst=True, **FAST).run()
    finally:
        signals.worker_ready.disconnect(ready)
        signals.worker_shutdown.disconnect(shutdown)
    assert seen == ["ready", "shutdown"]


def test_start_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = new_app()

    @app.task(time_limit=5)
    def limited() -> None:
        return None

    with caplog.at_level(logging.INFO, logger="cloudq.runners.poller"):
        Poller(app, ["mail"], concurrency=3, burst=True, **FAST).run()

    lines = [r.getMessage() for r in caplog.records]
    assert any("mail-high, mail, mail-low" in line and "threads" in line and "concurrency 3"
               in line for line in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # limits enforced


def test_failed_receives_are_logged_and_retried() -> None:
    class Flaky(MemoryTransport):
        failures = 1

        def receive(self, queue: str, max_messages: int = 1,
                    wait_s: float = 0.0) -> list[ReceivedMessage]:
            if queue == "default" and self.failures:
                self.failures -= 1
                raise ConnectionError("SQS is unreachable")
            return super().receive(queue, max_messages, wait_s)

    app = new_app(Flaky())

    @app.task
    def one() -> int:
        return 1

    result = one.delay()

    assert Poller(app, burst=True, **FAST).run() == 0
    assert result.get(timeout=0) == 1
