"""The awaitable face on the in-memory twins, and coroutine task bodies in the poller's pools.

Sending (``adelay``, ``aapply_async``, ``asend_task``, canvas ``aapply_async``) must put on the
queue exactly what the blocking face puts there; ``aget``/``astate`` read what a worker wrote.
Running: a coroutine body in the thread pool gets one persistent loop per worker thread; in
``--pool asyncio`` it is awaited on one loop with ``concurrency`` bodies at once, with soft time
limits, autoretry, the request context, terminating revokes and shutdown working as in the
other pools. No pytest-asyncio: each test awaits through ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import cloudq
from cloudq import message as wire
from cloudq.aio import TwinFace
from cloudq.canvas.result import GroupResult
from cloudq.errors import SoftTimeLimitExceeded, ValidationError
from cloudq.runners.invocation import thread_loop
from cloudq.runners.poller import Poller
from cloudq.stores.base import TTL_FIELD
from cloudq.stores.memory import MemoryStore
from cloudq.testing import BurstWorker, LambdaContext, invoke_lambda, memory_app
from cloudq.transports.base import OutgoingMessage
from cloudq.transports.memory import MemoryTransport
from tests.unit.conftest import FakeClock
from tests.unit.running import Running

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
FAST = {"poll_wait_s": 0}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def memory(app: cloudq.App) -> MemoryTransport:
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    return transport


def eventually(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def burst(app: cloudq.App, pool: str = "asyncio", concurrency: int = 4, **kwargs: Any) -> Poller:
    poller = Poller(app, pool=pool, concurrency=concurrency, burst=True,  # type: ignore[arg-type]
                    **FAST, **kwargs)
    assert poller.run() == 0
    return poller


# -- sending --------------------------------------------------------------------------------------
class RecordingTransport(MemoryTransport):
    """Remembers every outgoing message (queue, body, delay) as it was handed over."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.sent: list[tuple[str, OutgoingMessage]] = []

    def send(self, queue: str, message: OutgoingMessage) -> str:
        self.sent.append((queue, message))
        return super().send(queue, message)

    def send_batch(self, queue: str, messages: Any) -> list[str]:
        self.sent += [(queue, m) for m in messages]
        return super().send_batch(queue, messages)


@pytest.fixture
def rec_app(clock: FakeClock) -> cloudq.App:
    """An app whose clock stands still, so two sends of one call encode the same ETA."""
    return cloudq.App("t", transport=RecordingTransport(clock), store=MemoryStore(),
                      set_as_current=False)


def sent(app: cloudq.App) -> list[tuple[str, int, dict[str, Any]]]:
    """(queue, delay, envelope without its id) for each message sent, in order."""
    transport = app.transport
    assert isinstance(transport, RecordingTransport)
    out = []
    for queue, message in transport.sent:
        envelope = wire.decode(message.body)
        assert isinstance(envelope, wire.Envelope)
        out.append((queue, message.delay_s,
                    envelope.model_dump(mode="json", exclude={"id", "root_id", "sent_at"})))
    return out


def test_app_aio_is_a_twin_face_for_memory_apps() -> None:
    app = memory_app()

    face = app.aio

    assert isinstance(face, TwinFace)
    assert app.aio is face  # made once
    app.conf.update(task_default_queue="other")
    assert isinstance(app.aio, TwinFace)


def test_adelay_sends_the_same_envelope_as_delay(rec_app: cloudq.App) -> None:
    @rec_app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(2, 3)
    blocking = sent(rec_app)
    memory(rec_app).sent.clear()

    result = run(add.adelay(2, 3))

    assert sent(rec_app) == blocking
    assert isinstance(result, cloudq.AsyncResult)
    assert result.id == wire.decode(memory(rec_app).sent[0][1].body).id  # type: ignore[union-attr]


@pytest.mark.parametrize("options", [
    {"countdown": 30},
    {"queue": "emails"},
    {"priority": 9},
    {"queue": "emails", "priority": 0, "countdown": 5, "expires": 3600,
     "headers": {"trace": "abc"}, "soft_time_limit": 2.5},
], ids=["countdown", "queue", "priority", "many"])
def test_aapply_async_respects_options_as_apply_async_does(
    rec_app: cloudq.App, options: dict[str, Any],
) -> None:
    @rec_app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((1, 2), {}, **options)
    blocking = sent(rec_app)
    memory(rec_app).sent.clear()

    run(add.aapply_async((1, 2), {}, **options))

    assert sent(rec_app) == blocking
    queue, delay_s, envelope = blocking[0]
    if "countdown" in options:
        assert delay_s == options["countdown"]
    if "queue" in options:
        assert queue.startswith(options["queue"])
    if "priority" in options:
        assert envelope["priority"] == options["priority"]


def test_asend_task_sends_what_send_task_sends_even_for_an_unknown_task(
    rec_app: cloudq.App,
) -> None:
    rec_app.send_task("elsewhere.resize", ("img.png",), {"width": 10}, countdown=3, queue="media")
    blocking = sent(rec_app)
    memory(rec_app).sent.clear()

    result = run(rec_app.asend_task("elsewhere.resize", ("img.png",), {"width": 10}, countdown=3,
                                    queue="media"))

    assert sent(rec_app) == blocking
    assert result.task_name == "elsewhere.resize"


def test_apublish_sends_ready_made_envelopes_like_publish(rec_app: cloudq.App) -> None:
    from cloudq.sending import build_envelope

    envelopes = [build_envelope(rec_app, "x.y", (i,), {}) for i in range(12)]

    rec_app.publish(envelopes)
    blocking = sent(rec_app)
    memory(rec_app).sent.clear()
    run(rec_app.apublish(envelopes))

    assert sent(rec_app) == blocking
    assert [c for c in memory(rec_app).calls if c[0] == "SendMessageBatch"] == \
        [("SendMessageBatch", "default")] * 4  # 12 messages, 10 per call, twice


@pytest.mark.parametrize("send", [
    lambda add: add.adelay("two", 3),  # does not fit the annotation
    lambda add: add.adelay(1),  # a missing argument
    lambda add: add.aapply_async((1, 2), bogus=True),  # an unknown option
    lambda add: add.aapply_async((1, 2), countdown=5, eta=wire.utcnow()),
    lambda add: add.aapply_async((1, 2), priority=99),
    lambda add: add.aapply_async((1, 2), message_group_id="g"),  # not a FIFO queue
    lambda add: add.aapply_async((1, 2), compression="brotli"),
    lambda add: add.app.asend_task(add.name, (1, 2), {1: "not a str key"}),
], ids=["type", "missing", "option", "countdown+eta", "priority", "group", "compression",
        "kwargs"])
def test_bad_arguments_raise_validation_error_before_anything_is_sent(
    send: Callable[[cloudq.Task[..., int]], Coroutine[Any, Any, Any]],
) -> None:
    app = memory_app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ValidationError):
        run(send(add))

    assert memory(app).calls == []


def test_an_argument_that_is_not_json_raises_before_anything_is_sent() -> None:
    app = memory_app()

    @app.task
    def keep(value: Any) -> None:
        return None

    with pytest.raises(cloudq.EncodeError):
        run(keep.adelay(object()))

    assert memory(app).calls == []


# -- reading results ------------------------------------------------------------------------------
def test_aget_returns_the_value_once_a_burst_worker_ran_the_task() -> None:
    app = memory_app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> tuple[int, int, str, str]:
        first, second = await add.adelay(2, 3), await double.adelay(21)
        before = await first.astate()
        await asyncio.to_thread(BurstWorker(app).join, fail_fast=True)
        return await first.aget(timeout=5), await second.aget(timeout=5), before, \
            await first.astate()

    assert run(main()) == (5, 42, "PENDING", "SUCCESS")


def test_aget_waits_while_a_poller_runs_the_task_without_blocking_the_loop() -> None:
    app = memory_app()

    @app.task
    async def slow(x: int) -> int:
        await asyncio.sleep(0.3)
        return x

    async def main() -> tuple[int, int]:
        result = await slow.adelay(7)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        worker = asyncio.create_task(asyncio.to_thread(burst, app))
        value = await result.aget(timeout=10)
        ticker.cancel()
        await worker
        return value, ticks

    value, ticks = run(main())
    assert value == 7
    assert ticks >= 10  # the loop went on while aget waited


def test_aget_with_a_timeout_raises_cloudq_timeout_error() -> None:
    app = memory_app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> None:
        result = await add.adelay(1, 1)
        with pytest.raises(cloudq.TimeoutError, match=r"not ready after 0\.2s"):
            await result.aget(timeout=0.2)

    began = time.monotonic()
    run(main())
    assert 0.2 <= time.monotonic() - began < 1.5


class OrderError(Exception):
    pass


def test_aget_propagates_the_tasks_exception_or_returns_it() -> None:
    app = memory_app()

    @app.task
    async def fail(order: str) -> None:
        raise OrderError(f"no stock for {order}")

    async def main() -> Any:
        result = await fail.adelay("o-1")
        await asyncio.to_thread(BurstWorker(app).join)
        with pytest.raises(OrderError, match="no stock for o-1"):
            await result.aget(timeout=5)
        assert await result.astate() == "FAILURE"
        return await result.aget(timeout=5, propagate=False)

    returned = run(main())
    assert isinstance(returned, OrderError)


def test_aget_of_a_revoked_task_raises_task_revoked_error() -> None:
    app = memory_app()

    @app.task
    async def never() -> None:
        raise AssertionError("revoked: must not run")

    async def main() -> None:
        result = await never.adelay()
        result.revoke()
        await asyncio.to_thread(BurstWorker(app).join)
        with pytest.raises(cloudq.TaskRevokedError):
            await result.aget(timeout=5)

    run(main())


# -- the canvas from async code -------------------------------------------------------------------
def canvas_app() -> tuple[cloudq.App, Any, Any]:
    app = memory_app()

    @app.task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    return app, add, total


def test_group_aapply_async_and_group_result_aget() -> None:
    app, add, _ = canvas_app()

    async def main() -> tuple[Any, list[int]]:
        result = await cloudq.group(add.s(i, i) for i in range(7)).aapply_async()
        await asyncio.to_thread(burst, app)
        return result, await result.aget(timeout=5)

    result, values = run(main())
    assert isinstance(result, GroupResult)
    assert values == [2 * i for i in range(7)]


def test_group_result_aget_times_out_and_propagates() -> None:
    app, add, _ = canvas_app()

    @app.task
    def boom() -> None:
        raise OrderError("member failed")

    async def main() -> None:
        result = await cloudq.group(add.s(1, 1), boom.s()).aapply_async()
        with pytest.raises(cloudq.TimeoutError, match="2 of 2 results not ready"):
            await result.aget(timeout=0.1)
        await asyncio.to_thread(burst, app)
        with pytest.raises(OrderError):
            await result.aget(timeout=5)
        values = await result.aget(timeout=5, propagate=False)
        assert values[0] == 2 and isinstance(values[1], OrderError)

    run(main())


def test_chain_aapply_async_and_signature_adelay() -> None:
    app, add, _ = canvas_app()

    async def main() -> tuple[int, int]:
        chained = await (add.s(1, 2) | add.s(10) | add.s(100)).aapply_async()
        single = await add.s(5).adelay(6)
        await asyncio.to_thread(burst, app)
        return await chained.aget(timeout=5), await single.aget(timeout=5)

    assert run(main()) == (113, 11)


def test_chord_aapply_async_runs_the_callback_on_the_header_results() -> None:
    app, add, total = canvas_app()

    async def main() -> int:
        result = await cloudq.chord([add.s(i, 1) for i in range(5)], total.s()).aapply_async()
        await asyncio.to_thread(burst, app)
        value: int = await result.aget(timeout=5)
        return value

    assert run(main()) == sum(i + 1 for i in range(5))


def test_canvas_aapply_async_sends_what_apply_async_sends(
    rec_app: cloudq.App, monkeypatch: pytest.MonkeyPatch,
) -> None:
    @rec_app.task
    def add(x: int, y: int) -> int:
        return x + y

    @rec_app.task
    def total(values: list[int]) -> int:
        return sum(values)

    def canvas() -> Any:
        return cloudq.chord([add.s(i, 1) for i in range(3)], total.s())

    store = rec_app.store
    assert isinstance(store, MemoryStore)

    def items() -> dict[str, Any]:  # the join items written, without their expiry stamps
        found = {key: {k: v for k, v in item.items() if k != TTL_FIELD}
                 for key, item in store._items.items()}
        store._items.clear()
        return found

    def fresh_ids() -> None:  # the same ids for both sends
        counter = itertools.count()
        monkeypatch.setattr("cloudq.canvas.apply.new_id",
                            lambda: f"00000000-0000-4000-8000-{next(counter):012d}")

    fresh_ids()
    cloudq.chain(canvas(), add.s(1)).apply_async()
    blocking, blocking_items = sent(rec_app), items()
    memory(rec_app).sent.clear()

    fresh_ids()
    run(cloudq.chain(canvas(), add.s(1)).aapply_async())

    assert sent(rec_app) == blocking
    assert items() == blocking_items
    assert blocking_items  # the chord's counter


# -- the cold import ------------------------------------------------------------------------------
PROBE = """
import asyncio, json, sys
import cloudq
from cloudq.testing import memory_app, BurstWorker
app = memory_app()
add = app.task(name="probe.add")(lambda x, y: x + y)
async def main():
    r = await add.adelay(1, 2)
    await asyncio.to_thread(BurstWorker(app).join)
    assert await r.aget(timeout=5) == 3
asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_import_cloudq_and_the_awaitable_face_on_twins_load_no_async_sdk() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO)
    loaded = set(json.loads(done.stdout))

    assert "cloudq.aio" in loaded  # the probe did use the awaitable face
    heavy = sorted(m for m in loaded
                   if m.split(".")[0] in ("aioboto3", "aiobotocore", "aiohttp", "boto3"))
    assert heavy == []


# -- coroutine bodies in the thread pool --------------------------------------------------------
def test_async_tasks_in_one_pool_thread_share_a_persistent_loop() -> None:
    app = memory_app()
    seen: list[tuple[int, int]] = []  # (thread, loop) per run
    state: dict[str, Any] = {}

    async def echo(inbox: asyncio.Queue[Any]) -> None:
        while True:
            item, reply = await inbox.get()
            if item is None:
                return
            reply.set_result(item * 2)

    @app.task
    async def use_client(value: int) -> int:
        loop = asyncio.get_running_loop()
        seen.append((threading.get_ident(), id(loop)))
        if "inbox" not in state:  # a loop-bound "client": a queue and a task serving it
            state["inbox"] = asyncio.Queue()
            state["server"] = asyncio.create_task(echo(state["inbox"]))
            state["lock"] = asyncio.Lock()
        async with state["lock"]:
            reply = loop.create_future()
            await state["inbox"].put((value, reply))
            return int(await asyncio.wait_for(reply, 2))

    @app.task
    async def close_client() -> bool:
        await state["inbox"].put((None, None))
        await state["server"]
        return True

    results = [use_client.delay(v) for v in (1, 2, 3)]
    closed = close_client.delay()  # received last: the memory queue keeps sending order
    burst(app, pool="threads", concurrency=1)

    assert [r.get(timeout=0) for r in results] == [2, 4, 6]
    assert closed.get(timeout=0) is True
    assert len({thread for thread, _ in seen}) == 1
    assert len({loop for _, loop in seen}) == 1


def test_each_pool_thread_has_its_own_loop_kept_between_tasks() -> None:
    app = memory_app()
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    @app.task
    async def where() -> None:
        with lock:
            seen.append((threading.get_ident(), id(asyncio.get_running_loop())))
        time.sleep(0.02)  # blocks its thread, so the other threads take the others
        await asyncio.sleep(0)

    for _ in range(12):
        where.delay()
    burst(app, pool="threads", concurrency=3)

    loops_by_thread: dict[int, set[int]] = {}
    for thread, loop in seen:
        loops_by_thread.setdefault(thread, set()).add(loop)
    assert len(seen) == 12
    assert all(len(loops) == 1 for loops in loops_by_thread.values())
    assert len({loop for _, loop in seen}) == len(loops_by_thread)


def test_thread_loop_is_one_runner_per_thread() -> None:
    here = thread_loop()
    there: list[asyncio.Runner] = []
    thread = threading.Thread(target=lambda: there.append(thread_loop()))
    thread.start()
    thread.join()

    assert thread_loop() is here
    assert there[0] is not here


def test_soft_time_limit_of_an_async_task_in_the_thread_pool() -> None:
    app = memory_app()

    @app.task(soft_time_limit=0.2)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    result = sleepy.delay()
    began = time.monotonic()
    burst(app, pool="threads", concurrency=1)

    assert time.monotonic() - began < 2
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=0)


def test_a_bound_async_task_in_the_thread_pool_sees_its_own_request() -> None:
    app = memory_app()

    @app.task(bind=True)
    async def who(self: cloudq.Task[..., str]) -> str | None:
        await asyncio.sleep(0)
        return self.request.id

    results = [who.delay() for _ in range(3)]
    burst(app, pool="threads", concurrency=1)

    assert [r.get(timeout=0) for r in results] == [r.id for r in results]


# -- --pool asyncio -------------------------------------------------------------------------------
def test_two_hundred_sleeping_tasks_run_at_once_on_few_threads() -> None:
    app = memory_app()

    @app.task
    async def nap(i: int) -> int:
        await asyncio.sleep(0.5)
        return i

    results = [nap.delay(i) for i in range(200)]
    baseline = threading.active_count()
    counts: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            counts.append(threading.active_count())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.monotonic()
    poller = burst(app, concurrency=200)
    elapsed = time.monotonic() - began
    done.set()
    sampler.join()

    assert [r.get(timeout=0) for r in results] == list(range(200))
    assert poller.stats["success"] == 200
    assert elapsed < 5, elapsed  # one at a time would take 100 s
    assert max(counts) - baseline < 50, (baseline, max(counts))
    assert max(counts) < 50 + baseline  # and well under one thread per task


def test_concurrency_bounds_the_bodies_running_at_once() -> None:
    app = memory_app()
    running = peak = 0

    @app.task
    async def hold() -> None:
        nonlocal running, peak
        running += 1  # every body runs on the one loop: no lock needed
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    for _ in range(20):
        hold.delay()
    poller = burst(app, concurrency=5)

    assert poller.stats["success"] == 20
    assert peak == 5


def test_soft_time_limit_cancels_the_body_and_fails_the_task_quickly() -> None:
    app = memory_app()
    cancelled: list[bool] = []

    @app.task(soft_time_limit=0.2)
    async def sleepy() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    result = sleepy.delay()
    began = time.monotonic()
    burst(app, concurrency=2)

    assert time.monotonic() - began < 2
    assert result.state == "FAILURE"
    assert cancelled == [True]
    with pytest.raises(SoftTimeLimitExceeded, match=r"0\.2s"):
        result.get(timeout=0)


def test_the_soft_time_limit_sent_with_the_message_wins() -> None:
    app = memory_app()

    @app.task(soft_time_limit=30)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    result = sleepy.apply_async(soft_time_limit=0.2)
    began = time.monotonic()
    burst(app, concurrency=1)

    assert time.monotonic() - began < 2
    assert isinstance(result.result, SoftTimeLimitExceeded)


def test_a_timeout_error_raised_by_the_body_is_its_own_failure() -> None:
    app = memory_app()

    @app.task
    async def call_upstream() -> None:
        await asyncio.wait_for(asyncio.sleep(5), 0.01)  # raises TimeoutError

    result = call_upstream.delay()
    burst(app, concurrency=1)

    assert result.state == "FAILURE"
    assert type(result.result) is TimeoutError


def test_a_timeout_error_raised_by_the_body_is_not_a_soft_time_limit() -> None:
    app = memory_app()

    @app.task(soft_time_limit=30)
    async def call_upstream() -> None:
        raise TimeoutError("upstream took too long")

    result = call_upstream.delay()
    burst(app, concurrency=1)

    assert type(result.result) is TimeoutError


def test_autoretry_for_an_async_task_in_the_asyncio_pool() -> None:
    app = memory_app()
    attempts: list[int] = []

    @app.task(bind=True, autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0},
              max_retries=3)
    async def flaky(self: cloudq.Task[..., int]) -> int:
        attempts.append(self.request.retries)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return self.request.retries

    result = flaky.delay()
    poller = burst(app, concurrency=2)

    assert result.get(timeout=0) == 2
    assert attempts == [0, 1, 2]
    assert poller.stats["retry"] == 2
    assert result.retries == 2


def test_a_soft_time_limit_is_retried_when_it_is_in_autoretry_for() -> None:
    app = memory_app()
    attempts: list[int] = []

    @app.task(bind=True, soft_time_limit=0.1, autoretry_for=(SoftTimeLimitExceeded,),
              retry_kwargs={"countdown": 0}, max_retries=2)
    async def slow_then_fast(self: cloudq.Task[..., int]) -> int:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            await asyncio.sleep(5)
        return self.request.retries

    result = slow_then_fast.delay()
    began = time.monotonic()
    burst(app, concurrency=1)

    assert time.monotonic() - began < 2
    assert result.get(timeout=0) == 1
    assert attempts == [0, 1]


def test_autoretry_gives_up_after_max_retries() -> None:
    app = memory_app()

    @app.task(autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0}, max_retries=1)
    async def down() -> None:
        raise ConnectionError("still down")

    result = down.delay()
    poller = burst(app, concurrency=2)

    assert poller.stats["retry"] == 1
    with pytest.raises(ConnectionError, match="still down"):
        result.get(timeout=0)


@pytest.mark.parametrize("pool", ["asyncio", "threads"])
def test_an_async_task_that_exhausts_its_retries_is_dead_lettered(pool: str) -> None:
    app = memory_app()

    @app.task(bind=True, max_retries=0)
    async def give_up(self: cloudq.Task[..., None]) -> None:
        raise self.retry(exc=ValueError("boom"), countdown=0)

    result = give_up.delay()
    burst(app, pool=pool, concurrency=1)

    assert result.state == "FAILURE"
    assert len(memory(app).bodies("default-dlq")) == 1


def test_an_ordinary_async_failure_is_not_dead_lettered_after_a_sync_one_was() -> None:
    app = memory_app()

    @app.task(bind=True, max_retries=0)
    def give_up(self: cloudq.Task[..., None]) -> None:
        raise self.retry(exc=ValueError("boom"), countdown=0)

    @app.task
    async def fail() -> None:
        raise KeyError("an ordinary failure")

    gave_up, failed = give_up.delay(), fail.delay()
    burst(app, concurrency=1)  # one offload thread runs both finishes, in this order

    assert gave_up.state == failed.state == "FAILURE"
    dead = [wire.peek(body)[0] for body in memory(app).bodies("default-dlq")]
    assert dead == [gave_up.id]


def test_a_blocking_task_in_the_asyncio_pool_runs_beside_the_loop() -> None:
    app = memory_app()

    @app.task
    def block(seconds: float) -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    @app.task
    async def tick() -> str:
        await asyncio.sleep(0.01)
        return threading.current_thread().name

    blocking = [block.delay(0.3) for _ in range(4)]
    ticks = [tick.delay() for _ in range(4)]
    began = time.monotonic()
    burst(app, concurrency=8)

    assert time.monotonic() - began < 1.5  # the four sleeps overlapped
    names = {r.get(timeout=0) for r in blocking}
    assert all(name.startswith("cloudq-io") for name in names)
    assert {r.get(timeout=0) for r in ticks} == {"cloudq-asyncio"}


def test_each_concurrent_async_task_sees_its_own_request() -> None:
    app = memory_app()

    @app.task(bind=True)
    async def child(self: cloudq.Task[..., Any]) -> str | None:
        return self.request.parent_id

    @app.task(bind=True)
    async def who(self: cloudq.Task[..., Any], n: int) -> list[Any]:
        before = self.request.id
        await asyncio.sleep(random.uniform(0, 0.05))
        sent_child = await child.adelay()
        await asyncio.sleep(random.uniform(0, 0.05))
        return [before, self.request.id, self.request.args, sent_child.id]

    results = [who.delay(n) for n in range(30)]
    burst(app, concurrency=30)

    for n, result in enumerate(results):
        before, after, args, child_id = result.get(timeout=0)
        assert before == after == result.id
        assert args == (n,)
        assert app.AsyncResult(child_id).get(timeout=0) == result.id


def test_revoke_with_terminate_cancels_a_running_async_body(
    start: Callable[[Poller], Running],
) -> None:
    app = memory_app(worker_revoke_check_interval=0.1)
    started = threading.Event()
    cancelled: list[bool] = []

    @app.task
    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    result = forever.delay()
    running = start(Poller(app, pool="asyncio", concurrency=2, poll_wait_s=0.05))
    assert started.wait(3)

    result.revoke(terminate=True)
    revoked_at = time.monotonic()

    eventually(lambda: app.backend.get(result.id).extra.get("reason") == "terminated",
               timeout_s=3)
    assert time.monotonic() - revoked_at < 1.5
    assert result.state == "REVOKED"
    assert cancelled == [True]
    assert app.backend.get(result.id).extra.get("reason") == "terminated"
    with pytest.raises(cloudq.TaskRevokedError, match="terminated"):
        result.get(timeout=0)
    assert add.delay(2, 3).get(timeout=5) == 5  # the worker goes on
    assert running.stop() == 0
    assert running.poller.stats["terminated"] == 1
    assert memory(app).bodies("default") == []  # acked


def shutdown_app() -> tuple[cloudq.App, Any, threading.Event, list[str]]:
    """An app whose ``long`` task runs 10 s the first time and returns at once after that."""
    app = memory_app(visibility_timeout=1)
    memory(app).ensure_queue("default", visibility_timeout_s=1, max_receive_count=10)
    started = threading.Event()
    events: list[str] = []

    @app.task(track_started=True)
    async def long() -> str:
        events.append("start")
        if events.count("start") > 1:
            return "second run"
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("finished")
        return "first run"

    return app, long, started, events


def assert_abandoned_then_redelivered(app: cloudq.App, result: Any, events: list[str]) -> None:
    assert events == ["start", "cancelled"]
    assert result.state == "STARTED"  # nothing stored after the start
    assert len(memory(app).bodies("default")) == 1  # not acked...
    assert memory(app).depth("default") == 0  # ...and still in flight
    eventually(lambda: memory(app).depth("default") == 1, timeout_s=3)  # visible again

    burst(app, concurrency=1)

    assert result.get(timeout=0) == "second run"
    assert memory(app).bodies("default") == []


def test_stop_cancels_a_body_running_past_the_shutdown_timeout(
    start: Callable[[Poller], Running], caplog: pytest.LogCaptureFixture,
) -> None:
    app, long, started, events = shutdown_app()
    result = long.delay()
    running = start(Poller(app, pool="asyncio", concurrency=2, poll_wait_s=0.05,
                           shutdown_timeout_s=0.3))
    assert started.wait(3)

    began = time.monotonic()
    assert running.stop() == 1
    assert time.monotonic() - began < 2

    assert "abandoned at shutdown" in caplog.text
    assert_abandoned_then_redelivered(app, result, events)


def test_sigterm_cancels_a_body_running_past_the_shutdown_timeout() -> None:
    app, long, started, events = shutdown_app()
    result = long.delay()
    threading.Thread(target=lambda: started.wait(3) and os.kill(os.getpid(), signal.SIGTERM),
                     daemon=True).start()

    began = time.monotonic()
    code = Poller(app, pool="asyncio", concurrency=2, poll_wait_s=0.05,
                  shutdown_timeout_s=0.3).run()

    assert code == 1
    assert time.monotonic() - began < 4
    assert_abandoned_then_redelivered(app, result, events)


def test_stop_waits_for_bodies_that_finish_within_the_shutdown_timeout(
    start: Callable[[Poller], Running],
) -> None:
    app = memory_app()
    started = threading.Event()

    @app.task
    async def short() -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "done"

    result = short.delay()
    running = start(Poller(app, pool="asyncio", concurrency=2, poll_wait_s=0.05,
                           shutdown_timeout_s=5))
    assert started.wait(3)

    assert running.stop() == 0
    assert result.get(timeout=0) == "done"
    assert memory(app).bodies("default") == []


# -- eager mode -----------------------------------------------------------------------------------
def test_eager_delay_of_an_async_task_from_blocking_code() -> None:
    """(From inside a running loop eager mode cannot run a coroutine task: docs/asyncio.md.)"""
    app = memory_app(task_always_eager=True)

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert double.delay(4).get() == 8


# -- the Lambda handler ---------------------------------------------------------------------------
def test_lambda_runs_a_batch_of_async_tasks_at_most_lambda_async_concurrency_at_once() -> None:
    app = memory_app(lambda_async_concurrency=3)
    running = peak = 0

    @app.task(bind=True)
    async def nap(self: cloudq.Task[..., Any]) -> str | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        return self.request.id

    results = [nap.delay() for _ in range(9)]
    messages = memory(app).receive("default", max_messages=10)
    assert app.lambda_handler().concurrent

    began = time.monotonic()
    response = invoke_lambda(app, app.lambda_handler(), messages, LambdaContext(remaining_s=60))

    assert response == {"batchItemFailures": []}
    assert 0.6 <= time.monotonic() - began < 1.5  # three waves of three
    assert peak == 3
    assert [r.get(timeout=0) for r in results] == [r.id for r in results]
    assert memory(app).bodies("default") == []


def test_lambda_dead_letters_an_async_task_that_exhausts_its_retries() -> None:
    app = memory_app()

    @app.task(bind=True, max_retries=0)
    async def give_up(self: cloudq.Task[..., None]) -> None:
        raise self.retry(exc=ValueError("boom"), countdown=0)

    result = give_up.delay()
    response = invoke_lambda(app, app.lambda_handler(),
                             memory(app).receive("default", max_messages=10))

    assert response == {"batchItemFailures": []}
    assert result.state == "FAILURE"
    assert len(memory(app).bodies("default-dlq")) == 1


def test_an_async_task_run_eagerly_inside_a_running_loop_says_what_to_do() -> None:
    app = memory_app(task_always_eager=True, task_eager_propagates=True)

    @app.task(name="t.eager_async")
    async def eager_async() -> int:
        return 1

    async def main() -> None:
        await eager_async.adelay()

    with pytest.raises(cloudq.CloudqError, match="inside a running event loop"):
        asyncio.run(main())
