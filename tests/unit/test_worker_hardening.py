"""The poller on the in-memory twins under backlog, store outages, burst and hard time limits.

Real clock, as in ``test_poller``: the memory transport's waits and visibility timeouts pass in
real time, so the apps are built here with short waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import cloudq
from cloudq import signals
from cloudq.errors import StoreUnavailable, TimeLimitExceeded
from cloudq.runners.admission import Admission
from cloudq.runners.breaker import StoreBreaker, is_store_outage
from cloudq.runners.poller import Poller
from cloudq.stores.memory import MemoryStore
from cloudq.transports.base import OutgoingMessage, ReceivedMessage, dead_letter_queue_name
from cloudq.transports.memory import MemoryTransport
from cloudq.transports.sqs_wire import NO_REASON, dead_letter_reason
from tests.unit.running import Running

FAST = {"poll_wait_s": 0.05}


def new_app(transport: MemoryTransport | None = None, store: MemoryStore | None = None,
            **settings: Any) -> cloudq.App:
    return cloudq.App("t", transport=transport or MemoryTransport(), store=store or MemoryStore(),
                      set_as_current=False, **settings)


def memory(app: cloudq.App) -> MemoryTransport:
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    return transport


def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
    return value


# -- item 10: strict priorities under backlog --------------------------------------------------
def test_under_backlog_every_high_message_runs_before_normal_ones_and_those_before_low() -> None:
    app = new_app()
    order: list[str] = []

    @app.task
    def record(label: str) -> None:
        order.append(label)

    for band, priority in (("low", 0), ("normal", None), ("high", 9)):  # the worst order
        for i in range(3):
            record.apply_async((f"{band}{i}",), priority=priority)

    assert Poller(app, concurrency=1, burst=True, **FAST).run() == 0

    assert [label.rstrip("012") for label in order] == ["high"] * 3 + ["normal"] * 3 + ["low"] * 3


class ResultsTransport(MemoryTransport):
    """Records ``(queue, "call")`` as each receive starts and ``(queue, n)`` as it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str | int]] = []

    def receive(self, queue: str, max_messages: int = 1,
                wait_s: float = 0.0) -> list[ReceivedMessage]:
        self.log.append((queue, "call"))
        got = super().receive(queue, max_messages, wait_s)
        self.log.append((queue, len(got)))
        return got


def test_a_lower_band_is_read_only_after_each_higher_band_came_back_empty() -> None:
    transport = ResultsTransport()
    app = new_app(transport)

    @app.task
    def noop() -> None:
        return None

    for priority in (0, None, 9):
        noop.apply_async(priority=priority)
    Poller(app, concurrency=1, burst=True, **FAST).run()

    log = transport.log
    first = {band: log.index((band, "call")) for band in ("default-high", "default",
                                                          "default-low")}
    assert first["default-high"] < first["default"] < first["default-low"]
    # the cost: one empty call on each higher band before the next band's first call
    assert [n for q, n in log[:first["default"]] if q == "default-high" and n != "call"] == [1, 0]
    assert [n for q, n in log[first["default"]:first["default-low"]]
            if q == "default" and n != "call"] == [1, 0]


def test_a_freed_slot_goes_to_the_high_band_with_work_not_to_a_lower_one(
    start: Callable[[Poller], Running],
) -> None:
    app = new_app()
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    @app.task
    def record(label: str) -> None:
        order.append(label)
        if label == "blocker":
            started.set()
            release.wait(5)

    poller = Poller(app, concurrency=1, **FAST)  # one slot (prefetch 1)
    running = start(poller)
    eventually(lambda: not any(poller._admission.has_work.values()))  # idle: probing
    record.apply_async(("blocker",), priority=0)  # the low band's probe takes it: it runs
    assert started.wait(2)
    record.apply_async(("low",), priority=0)  # waits in SQS: the low band has no free slot
    for i in range(3):
        record.apply_async((f"high{i}",), priority=9)  # the high probe takes one, on its token
    eventually(lambda: poller.held == 2)

    release.set()
    eventually(lambda: len(order) == 5)

    assert [label.rstrip("012") for label in order] == ["blocker", "high", "high", "high", "low"]
    assert running.stop() == 0


# -- item 6: the store's circuit breaker -------------------------------------------------------
class OutageStore(MemoryStore):
    """Every call fails as DynamoDB's do when it cannot be reached, while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.calls_while_down = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.calls_while_down += 1
            raise StoreUnavailable("DynamoDB GetItem on table 't' failed: ServiceUnavailable")

    def get(self, key: str) -> Any:
        self._check()
        return super().get(key)

    def put(self, key: str, item: Any, *, ttl_s: float) -> None:
        self._check()
        super().put(key, item, ttl_s=ttl_s)


def test_store_failures_pause_receiving_hand_messages_back_and_resume_after_a_probe(
    caplog: pytest.LogCaptureFixture, start: Callable[[Poller], Running],
) -> None:
    store = OutageStore()
    app = new_app(store=store, worker_store_failure_threshold=2,
                  worker_store_probe_max_interval=0.2)
    memory(app).ensure_queue("default", visibility_timeout_s=30, max_receive_count=3)
    events: list[str] = []

    def paused(sender: Any, **kwargs: Any) -> None:
        events.append(f"paused {kwargs['failures']} {kwargs['handed_back']}")

    def resumed(sender: Any, **kwargs: Any) -> None:
        events.append("resumed")

    @app.task
    def double(x: int) -> int:
        return 2 * x

    store.down.set()
    results = [double.delay(i) for i in range(4)]
    poller = Poller(app, concurrency=1, prefetch_multiplier=2, **FAST)
    signals.store_unavailable.connect(paused)
    signals.store_available.connect(resumed)
    try:
        with caplog.at_level(logging.INFO, logger="cloudq.runners"):
            running = start(poller)
            eventually(lambda: poller.stats["store_pauses"] == 1)
            receives = sum(1 for action, _ in memory(app).calls if action == "ReceiveMessage")
            time.sleep(0.5)  # the outage goes on: no receive is made meanwhile
            assert sum(1 for a, _ in memory(app).calls if a == "ReceiveMessage") == receives
            assert poller.held == 0  # everything not started was handed back
            store.down.clear()
            eventually(lambda: all(r.state == "SUCCESS" for r in results))
    finally:
        signals.store_unavailable.disconnect(paused)
        signals.store_available.disconnect(resumed)
    assert running.stop() == 0

    assert [r.get(timeout=0) for r in results] == [0, 2, 4, 6]
    assert memory(app).bodies(dead_letter_queue_name("default")) == []
    lines = [r.getMessage() for r in caplog.records]
    assert any(re.match(r"DynamoDB unreachable: pausing receives, \d+ messages handed back",
                        line) for line in lines), lines
    assert any("resuming receives" in line for line in lines), lines
    assert [e.rsplit(" ", 1)[0] for e in events] == ["paused 2", "resumed"]
    assert poller.stats["store_unavailable"] == 2 and poller.stats["store_probes"] >= 1


class SharedOutageStore(OutageStore):
    """An OutageStore whose ``down`` flag forked pool children share with the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.down = multiprocessing.get_context("fork").Event()  # type: ignore[assignment]


def test_a_store_outage_seen_in_a_pool_child_pauses_the_parent_too() -> None:
    store = SharedOutageStore()
    app = new_app(store=store, worker_store_failure_threshold=1,
                  worker_store_probe_max_interval=0.2)

    @app.task
    def noop() -> None:
        return None

    store.down.set()
    noop.delay()
    poller = Poller(app, pool="processes", concurrency=1, burst=True, **FAST)
    threading.Timer(1.0, store.down.clear).start()

    assert poller.run() == 0

    assert poller.stats["store_pauses"] == 1 and poller.stats["success"] == 1


def test_the_breaker_counts_failures_in_a_row_and_backs_off_its_probes() -> None:
    breaker = StoreBreaker(threshold=3, max_interval_s=4)

    assert [breaker.failed(), breaker.failed()] == [False, False]
    breaker.succeeded()  # a message handled to the end: the count starts again
    assert [breaker.failed(), breaker.failed(), breaker.failed()] == [False, False, True]
    assert breaker.open and not breaker.failed()  # opens once
    delays = breaker.probe_delays()
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert breaker.close() >= 0 and not breaker.open and breaker.failures == 0


def test_an_outage_is_told_from_other_errors_through_the_causes() -> None:
    try:
        try:
            raise StoreUnavailable("DynamoDB PutItem failed: 503")
        except StoreUnavailable as exc:
            raise RuntimeError("while storing the result") from exc
    except RuntimeError as wrapped:
        assert is_store_outage(wrapped)
    assert not is_store_outage(ConnectionError("SQS"))


def test_a_message_sqs_moved_to_the_dlq_is_named_as_such_and_redrives_unchanged() -> None:
    app = new_app()
    transport = memory(app)
    transport.ensure_queue("default", visibility_timeout_s=30, max_receive_count=1)
    ran: list[int] = []

    @app.task
    def once(x: int) -> None:
        ran.append(x)

    once.delay(7)
    sent_body = transport.bodies("default")[0]
    first = transport.receive("default")  # received, never deleted (a worker was killed)
    transport.retry_later(first[0], 0)
    assert transport.receive("default") == []  # the redrive policy moved it

    dead = transport.receive(dead_letter_queue_name("default"))
    assert dead_letter_reason(dead[0].attributes) == NO_REASON
    assert "delivery limit" in NO_REASON
    transport.send("default", OutgoingMessage(body="not json"))
    poison = transport.receive("default")
    transport.dead_letter(poison[0], "DecodeError: bad")  # cloudq's own, with its reason
    transport.ack(poison)
    quarantined = transport.receive(dead_letter_queue_name("default"), 10)
    assert [dead_letter_reason(m.attributes) for m in quarantined] == ["DecodeError: bad"]

    transport.send("default", OutgoingMessage(body=dead[0].body))  # a plain redrive
    assert dead[0].body == sent_body
    assert Poller(app, concurrency=1, burst=True, **FAST).run() == 0
    assert ran == [7]


# -- item 11: burst waits until the queues are drained ------------------------------------------
def test_burst_on_a_fifo_group_runs_every_message() -> None:
    app = new_app()
    ran: list[int] = []

    @app.task
    def step(i: int) -> None:
        ran.append(i)

    for i in range(5):
        step.apply_async((i,), queue="orders.fifo", message_group_id="g")

    assert Poller(app, ["orders.fifo"], concurrency=1, burst=True, **FAST).run() == 0
    assert ran == [0, 1, 2, 3, 4]


def test_burst_waits_for_a_delayed_message_and_a_retry_on_its_way_back() -> None:
    app = new_app()
    ran: list[str] = []

    @app.task(bind=True, max_retries=1)
    def flaky(self: cloudq.Task[..., None], label: str) -> None:
        ran.append(label)
        if label == "retry" and self.request.retries == 0:
            raise self.retry(countdown=1)

    flaky.apply_async(("late",), countdown=1)
    flaky.delay("retry")
    began = time.monotonic()

    assert Poller(app, concurrency=2, burst=True, **FAST).run() == 0

    assert sorted(ran) == ["late", "retry", "retry"]
    assert time.monotonic() - began >= 1


def test_burst_waits_for_what_it_cannot_see_at_most_worker_burst_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = new_app(worker_burst_wait=0.5)

    @app.task
    def later() -> None:
        return None

    later.apply_async(countdown=600)
    began = time.monotonic()

    with caplog.at_level(logging.WARNING, logger="cloudq.runners.poller"):
        assert Poller(app, burst=True, **FAST).run() == 1  # not drained

    assert time.monotonic() - began < 3
    assert any("1 messages still in flight or delayed" in r.getMessage() for r in caplog.records)


# -- item 12: hard time limits in the threads and asyncio pools --------------------------------
def failure(app: cloudq.App, task_id: str) -> dict[str, Any]:
    return app.store.get(f"task#{task_id}") or {}


def test_a_blocked_thread_past_its_hard_limit_is_recorded_at_the_limit_and_replaced(
    caplog: pytest.LogCaptureFixture, start: Callable[[Poller], Running],
) -> None:
    app = new_app()

    @app.task(time_limit=0.3)
    def stuck() -> str:
        time.sleep(1.5)  # one blocking call: nothing raised in the thread can stop it
        return "late"

    @app.task
    def quick() -> str:
        return "quick"

    with caplog.at_level(logging.WARNING, logger="cloudq.runners"):
        poller = Poller(app, concurrency=1, **FAST)
        running = start(poller)
        began = time.monotonic()
        result = stuck.delay()
        eventually(lambda: result.state == "FAILURE")
        failed_after_s = time.monotonic() - began
        assert quick.delay().get(timeout=3) == "quick"  # the pool has a thread again
        eventually(lambda: any("outcome discarded" in r.getMessage() for r in caplog.records))
    assert running.stop() == 0

    assert failed_after_s < 1.0
    assert failure(app, result.id)["exc_type"].endswith("TimeLimitExceeded")
    assert result.state == "FAILURE"  # the late "late" was not stored
    assert memory(app).bodies("default") == []  # acked at the limit


def test_pure_python_code_past_its_hard_limit_stops_with_time_limit_exceeded() -> None:
    app = new_app()

    @app.task(time_limit=0.2)
    def spin() -> None:
        while True:
            pass

    result = spin.delay()
    began = time.monotonic()

    assert Poller(app, concurrency=1, burst=True, **FAST).run() == 0

    assert time.monotonic() - began < 2
    item = failure(app, result.id)
    assert item["state"] == "FAILURE" and item["exc_type"].endswith("TimeLimitExceeded")
    assert "spin" in item.get("traceback", "")  # raised in the body: its own traceback


def test_a_body_that_swallows_time_limit_exceeded_still_fails_with_it() -> None:
    app = new_app()

    @app.task(time_limit=0.2)
    def stubborn() -> str:
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # what a careless task does
                time.sleep(0.01)
        return "ok"

    result = stubborn.delay()

    assert Poller(app, concurrency=1, burst=True, **FAST).run() == 0

    item = failure(app, result.id)
    assert item["state"] == "FAILURE" and item["exc_type"].endswith("TimeLimitExceeded"), item


def test_a_coroutine_task_in_the_threads_pool_is_cancelled_at_its_hard_limit() -> None:
    app = new_app()
    finished: list[str] = []

    @app.task(time_limit=0.3)
    async def slow() -> None:
        await asyncio.sleep(3)
        finished.append("late")

    result = slow.delay()
    began = time.monotonic()

    assert Poller(app, pool="threads", concurrency=1, burst=True, **FAST).run() == 0

    assert time.monotonic() - began < 2.5
    item = failure(app, result.id)
    assert item["state"] == "FAILURE" and item["exc_type"].endswith("TimeLimitExceeded")
    assert finished == []


@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_the_asyncio_pool_fails_a_task_at_its_hard_limit(kind: str) -> None:
    app = new_app()

    if kind == "coroutine":
        @app.task(time_limit=0.3, name="slow")
        async def slow_async() -> str:
            await asyncio.sleep(3)
            return "late"
    else:
        @app.task(time_limit=0.3, name="slow")
        def slow_blocking() -> str:
            time.sleep(1)
            return "late"

    result = app.send_task("slow")
    began = time.monotonic()
    poller = Poller(app, pool="asyncio", concurrency=2, burst=True, **FAST)

    assert poller.run() == 0

    item = failure(app, result.id)
    assert item["state"] == "FAILURE" and item["exc_type"].endswith("TimeLimitExceeded"), item
    assert time.monotonic() - began < 2.5
    assert TimeLimitExceeded.__name__ in item["exc_type"]


def test_admission_grants_a_lower_tier_only_once_every_higher_band_came_back_empty() -> None:
    admission = Admission([["q-high"], ["q"], ["q-low"]], limit=1)

    assert admission.grant("q", 0) is None and admission.grant("q-low", 0) is None  # at start
    high = admission.grant("q-high", 0)
    assert high is not None and not high.probe and high.count == 1
    admission.returned("q-high", high, 0)  # empty: the high band probes from now on
    assert admission.grant("q-low", 0) is None
    normal = admission.grant("q", 0)
    assert normal is not None and not normal.probe
    probe = admission.grant("q-high", 0)
    assert probe is not None and probe.probe  # a probe waits for new messages, holds no slot


@pytest.mark.parametrize(("limit", "waits"), [(2, True), (1, False)])
def test_admission_holds_a_buffered_message_back_while_a_higher_band_can_bring_its_own(
    limit: int, waits: bool,
) -> None:
    admission = Admission([["q-high"], ["q"]], limit=limit)
    high = admission.grant("q-high", 0)
    assert high is not None
    admission.returned("q-high", high, 0)
    normal = admission.grant("q", 0)
    assert normal is not None
    admission.returned("q", normal, 1)
    admission.hold("q", ReceivedMessage("q", "{}", "m1", "r1"), now=0.0)
    probe = admission.grant("q-high", 0)
    assert probe is not None
    admission.returned("q-high", probe, 1)  # the high band has work again

    assert admission.grant("q", 0) is None  # the normal band is not read meanwhile
    # with a free slot the high band can fetch its message first; with none (the normal one
    # already holds the only slot) waiting would block both, so the normal one runs
    assert (admission.next_to_run() is None) is waits
