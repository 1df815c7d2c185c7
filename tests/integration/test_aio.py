"""The awaitable face on aioboto3, and async tasks in real workers, against moto server.

In this process: ``adelay``/``aget`` and the canvas through aioboto3 clients (one set per
event loop, closed by ``app.aclose()``), the errors a missing queue gives, large arguments
through S3, and the Lambda handler running async tasks. In ``cloudq poll`` subprocesses:
``--pool asyncio`` running many sleeping tasks at once, its shutdown (a body running past the
grace is cancelled and its message delivered again), and async tasks in the thread pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

import cloudq
from cloudq import message as wire
from cloudq.aio import AioFace
from cloudq.aws import RequestCounter
from cloudq.canvas.result import GroupResult
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.poller import Poller
from cloudq.testing import LambdaContext, invoke_lambda
from tests.integration.apps import aio_app
from tests.integration.e2e_harness import ROOT, Harness, counts, wait_for

pytestmark = pytest.mark.integration

T = TypeVar("T")
AIO_APP_PATH = "tests.integration.apps.aio_app:app"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def burst(app: cloudq.App, pool: str = "asyncio", concurrency: int = 10) -> Poller:
    poller = Poller(app, pool=pool, concurrency=concurrency, burst=True,  # type: ignore[arg-type]
                    poll_wait_s=0.2)
    assert poller.run() == 0
    return poller


@contextmanager
def polling(app: cloudq.App, pool: str = "asyncio") -> Iterator[Poller]:
    """A poller running in a thread for the duration of the block."""
    poller = Poller(app, pool=pool, concurrency=10, poll_wait_s=0.2)  # type: ignore[arg-type]
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        yield poller
    finally:
        poller.stop()
        thread.join(10)


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    """A fresh app on fresh queues, table and bucket, provisioned."""
    app = cloudq.App("aio", set_as_current=False, endpoint_url=local_aws.endpoint_url,
                     queue_prefix=unique_prefix, result_table=f"{unique_prefix}results",
                     payload_bucket=f"{unique_prefix}payloads", message_size_limit=1024)
    provision(app)
    yield app
    app.close()


def register(app: cloudq.App) -> tuple[Any, Any, Any]:
    @app.task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task
    async def digest(blob: str) -> str:
        return hashlib.sha256(blob.encode()).hexdigest()

    return add, total, digest


# -- the awaitable face on aioboto3 ---------------------------------------------------------------
def test_adelay_and_aget_round_trip_through_aioboto3(app: cloudq.App) -> None:
    add, total, _ = register(app)

    async def main() -> tuple[Any, ...]:
        first = await add.adelay(2, 3)
        second = await total.aapply_async(([1, 2, 3],), countdown=1)
        named = await app.asend_task(add.name, (10, 20))
        before = await first.astate()
        with polling(app):
            values = (await first.aget(timeout=20), await second.aget(timeout=20),
                      await named.aget(timeout=20))
        after = await first.astate()
        await app.aclose()
        return before, values, after

    assert run(main()) == ("PENDING", (5, 6, 30), "SUCCESS")


def test_group_and_chord_from_async_code(app: cloudq.App) -> None:
    add, total, _ = register(app)

    async def main() -> tuple[Any, list[int], int]:
        group = await cloudq.group(add.s(i, i) for i in range(4)).aapply_async()
        chord = await cloudq.chord([add.s(i, 1) for i in range(5)], total.s()).aapply_async()
        await asyncio.to_thread(burst, app)
        values = await group.aget(timeout=20)
        value = await chord.aget(timeout=20)
        await app.aclose()
        return group, values, value

    group, values, value = run(main())
    assert isinstance(group, GroupResult)
    assert values == [0, 2, 4, 6]
    assert value == sum(i + 1 for i in range(5))


def test_clients_are_made_once_per_event_loop(app: cloudq.App) -> None:
    add, _, _ = register(app)
    face = app.aio
    assert isinstance(face, AioFace)
    assert app.aio is face

    async def clients() -> tuple[Any, Any]:
        await add.adelay(1, 1)
        first = await face._client("sqs")
        await add.adelay(1, 2)
        await app.AsyncResult("nothing").astate()
        return first, await face._client("sqs")

    async def in_loop() -> tuple[Any, Any]:
        try:
            return await clients()
        finally:
            await app.aclose()

    first, again = run(in_loop())
    assert first is again  # reused within the loop

    made: dict[str, tuple[Any, Any]] = {}
    barrier = threading.Barrier(2)

    def thread(name: str) -> None:  # two loops alive at once, in two threads
        async def main() -> tuple[Any, Any]:
            pair = await clients()
            await asyncio.to_thread(barrier.wait, 10)
            await app.aclose()
            return pair

        made[name] = run(main())

    threads = [threading.Thread(target=thread, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert made["a"][0] is made["a"][1] and made["b"][0] is made["b"][1]
    assert len({id(first), id(made["a"][0]), id(made["b"][0])}) == 3
    assert face._loops == {}  # each loop's clients closed and dropped


def test_aclose_then_usable_again_in_this_loop_and_a_new_one(app: cloudq.App) -> None:
    add, _, _ = register(app)

    async def main() -> list[Any]:
        results = [await add.adelay(1, 1)]
        await app.aclose()
        await app.aclose()  # twice is harmless
        results.append(await add.adelay(2, 2))  # new clients in the same loop
        await app.aclose()
        return results

    async def again(results: list[Any]) -> list[int]:
        results.append(await add.adelay(3, 3))
        await asyncio.to_thread(burst, app)
        values = [await r.aget(timeout=20) for r in results]
        await app.aclose()
        return values

    results = run(main())
    assert run(again(results)) == [2, 4, 6]


def test_a_missing_queue_raises_config_error_naming_cloudq_provision(
    local_aws: LocalAws, unique_prefix: str,
) -> None:
    unprovisioned = cloudq.App("bare", set_as_current=False, endpoint_url=local_aws.endpoint_url,
                               queue_prefix=f"{unique_prefix}none-",
                               result_table=f"{unique_prefix}none-results")

    @unprovisioned.task
    async def ping() -> str:
        return "pong"

    async def main() -> None:
        try:
            with pytest.raises(cloudq.ConfigError, match="cloudq provision") as sending:
                await ping.adelay()
            assert f"{unique_prefix}none-default" in str(sending.value)
            with pytest.raises(cloudq.ConfigError, match="cloudq provision"):
                await unprovisioned.AsyncResult("x").aget(timeout=1)
        finally:
            await unprovisioned.aclose()

    run(main())


def test_a_queue_left_out_of_provisioning_raises_config_error(app: cloudq.App) -> None:
    add, _, _ = register(app)

    async def main() -> None:
        try:
            with pytest.raises(cloudq.ConfigError, match="cloudq provision"):
                await add.aapply_async((1, 2), queue="never-provisioned")
        finally:
            await app.aclose()

    run(main())


def test_a_large_argument_goes_through_s3_and_runs(app: cloudq.App) -> None:
    _, _, digest = register(app)
    blob = "x" * 5000  # over message_size_limit (1024)
    bucket = app.settings.payload_bucket

    async def main() -> Any:
        result = await digest.adelay(blob)
        await app.aclose()
        return result

    result = run(main())
    objects = app.aws.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in objects if result.id in o["Key"]]  # the body went to S3
    queued = app.transport.receive("default", max_messages=1, wait_s=1)
    assert len(queued) == 1 and len(queued[0].body) < 1024  # a claim check on the queue
    assert isinstance(wire.decode(queued[0].body), wire.ClaimCheck)
    app.transport.retry_later(queued[0], 0)

    burst(app)

    assert result.get(timeout=10) == hashlib.sha256(blob.encode()).hexdigest()


def test_concurrent_single_sends_go_out_in_batches_of_ten(app: cloudq.App) -> None:
    add, _, _ = register(app)
    counter = RequestCounter()

    async def main() -> list[Any]:
        try:
            warm = [await add.adelay(0, 0)]  # this loop's clients and the queue's URL
            counter.attach(await app.aio._client("sqs"))  # type: ignore[attr-defined]
            return warm + list(await asyncio.gather(*(add.adelay(i, 1) for i in range(25))))
        finally:
            await app.aclose()

    results = run(main())

    assert dict(counter.counts) == {"SQS.SendMessageBatch": 3}
    burst(app)
    assert [r.get(timeout=10) for r in results] == [0] + [i + 1 for i in range(25)]


def test_concurrent_sends_to_a_missing_queue_all_raise(app: cloudq.App) -> None:
    add, _, _ = register(app)

    async def main() -> list[Any]:
        try:
            sends = (add.aapply_async((i, 1), queue="missing") for i in range(12))
            return list(await asyncio.wait_for(
                asyncio.gather(*sends, return_exceptions=True), 20))
        finally:
            await app.aclose()

    outcomes = run(main())

    assert len(outcomes) == 12
    assert all(isinstance(o, cloudq.ConfigError) for o in outcomes), outcomes


# -- the Lambda handler ---------------------------------------------------------------------------
def test_the_lambda_handler_runs_a_batch_of_async_tasks_at_once(app: cloudq.App) -> None:
    running, peak = 0, 0

    @app.task
    async def nap(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.5)
        running -= 1
        return i

    results = [nap.delay(i) for i in range(10)]
    messages = []
    deadline = time.monotonic() + 10
    while len(messages) < 10 and time.monotonic() < deadline:
        messages += app.transport.receive("default", max_messages=10 - len(messages), wait_s=1)
    assert len(messages) == 10
    handler = app.lambda_handler()

    began = time.monotonic()
    response = invoke_lambda(app, handler, messages, LambdaContext(remaining_s=60))
    elapsed = time.monotonic() - began

    assert response == {"batchItemFailures": []}
    assert [r.get(timeout=5) for r in results] == list(range(10))
    assert elapsed < 3, elapsed  # one by one: 5 s
    assert peak == 10
    assert sum(counts(app).values()) == 0  # every record deleted


def test_the_lambda_handler_runs_async_tasks(app: cloudq.App) -> None:
    add, _, _ = register(app)
    results = [add.delay(i, 1) for i in range(3)]
    messages = app.transport.receive("default", max_messages=10, wait_s=1)
    while len(messages) < 3:
        messages += app.transport.receive("default", max_messages=10, wait_s=1)

    response = invoke_lambda(app, app.lambda_handler(), messages, LambdaContext(remaining_s=60))

    assert response == {"batchItemFailures": []}
    assert [r.get(timeout=5) for r in results] == [1, 2, 3]


# -- real workers ---------------------------------------------------------------------------------
class AioHarness(Harness):
    """The e2e harness, running workers of ``aio_app``."""

    def start_worker(self, *args: str,
                     extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = (self.workdir / f"worker-{len(self.workers)}.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloudq.cli", "poll", "-A", AIO_APP_PATH, "--loglevel",
             "info", *args],
            cwd=ROOT, env={**self.env(), **(extra_env or {})}, stdout=log,
            stderr=subprocess.STDOUT, text=True,
        )
        self.workers.append(worker)
        return worker


@pytest.fixture
def h(local_aws: LocalAws, unique_prefix: str, tmp_path: Path,
      monkeypatch: pytest.MonkeyPatch) -> Iterator[AioHarness]:
    monkeypatch.setenv("E2E_DIR", str(tmp_path))  # for aio_app.marks in this process
    harness = AioHarness(aio_app.app, local_aws, unique_prefix, tmp_path,
                         visibility_timeout_s=3).setup()
    try:
        yield harness
    finally:
        harness.stop_workers()


def test_pool_asyncio_runs_fifty_sleeping_tasks_at_once(h: AioHarness) -> None:
    h.start_worker("--pool", "asyncio", "-c", "50")
    results = [aio_app.nap.delay(i, 1.0) for i in range(50)]
    began = time.monotonic()

    values = [r.get(timeout=30) for r in results]

    assert values == list(range(50))
    assert time.monotonic() - began < 10  # one at a time: 50 s
    assert "pool asyncio, concurrency 50" in h.log()


def test_sigterm_abandons_a_body_past_the_grace_and_another_worker_completes_it(
    h: AioHarness,
) -> None:
    first = h.start_worker("--pool", "asyncio", "-c", "4",
                           extra_env={"CLOUDQ_WORKER_SHUTDOWN_TIMEOUT": "1"})
    result = aio_app.long_nap.delay("nap", 30)
    wait_for(lambda: h.marks("nap.started"), timeout_s=20, what="the task to start")

    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 1  # tasks were abandoned

    assert h.marks("nap.cancelled") == [""]
    assert h.marks("nap.done") == []
    assert result.state == "PENDING"  # nothing stored
    counts = h.queue_counts()
    assert counts["visible"] + counts["in_flight"] == 1  # not deleted
    assert "abandon" in h.log(0)

    h.start_worker("--pool", "asyncio", "-c", "4")  # the message is back within 3 s

    assert result.get(timeout=20) == "redelivered"
    assert len(h.marks("nap.started")) == 2
    wait_for(lambda: sum(h.queue_counts().values()) == 0, what="the message to be deleted")


def test_async_tasks_in_the_thread_pool_of_a_real_worker(h: AioHarness) -> None:
    h.start_worker("-c", "2")  # the default pool: threads
    results = [aio_app.where.delay() for _ in range(8)]

    seen = [r.get(timeout=20) for r in results]

    loops_by_thread: dict[str, set[int]] = {}
    for thread, loop in seen:
        loops_by_thread.setdefault(thread, set()).add(loop)
    assert all(name.startswith("cloudq-thread") for name in loops_by_thread)
    assert all(len(loops) == 1 for loops in loops_by_thread.values())  # kept between tasks
    assert len({loop for _, loop in seen}) == len(loops_by_thread)  # one loop per thread
    assert "pool threads" in h.log()
