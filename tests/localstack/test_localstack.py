"""The core promises against LocalStack instead of moto: same code, another emulator."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import pytest

import cloudq
from cloudq import message as wire
from cloudq.runners.poller import Poller
from cloudq.scheduler.beat import Beat
from cloudq.scheduler.sync import sync
from cloudq.sending import build_envelope
from cloudq.transports.base import OutgoingMessage


def run_burst(app: cloudq.App) -> None:
    assert Poller(app, burst=True, concurrency=2).run() == 0


def test_round_trip_retry_and_failure(ls_app: cloudq.App) -> None:
    @ls_app.task(bind=True, max_retries=2)
    def flaky(self: cloudq.Task[..., int], x: int) -> int:
        if self.request.retries < 1:
            raise self.retry(countdown=1)
        return x * 2

    @ls_app.task
    def broken() -> None:
        raise LookupError("nope")

    ok, bad = flaky.delay(21), broken.delay()
    run_burst(ls_app)
    run_burst(ls_app)  # the retry was sent with a 1 s delay

    assert ok.get(timeout=10) == 42 and ok.retries == 1
    with pytest.raises(LookupError, match="nope"):
        bad.get(timeout=10)


def test_large_argument_through_s3(ls_app: cloudq.App) -> None:
    @ls_app.task
    def digest(blob: bytes) -> str:
        return hashlib.sha256(blob).hexdigest()

    blob = b"x" * (300 * 1024)
    result = digest.delay(blob)
    run_burst(ls_app)

    assert result.get(timeout=10) == hashlib.sha256(blob).hexdigest()


def test_poison_goes_to_the_dead_letter_queue(ls_app: cloudq.App) -> None:
    ghost = build_envelope(ls_app, "ls.missing", (), {})
    ls_app.transport.send("default", OutgoingMessage(body=wire.encode(ghost)))
    run_burst(ls_app)

    assert isinstance(ls_app.AsyncResult(ghost.id).result, cloudq.NotRegistered)
    [dead] = ls_app.transport.receive("default-dlq", max_messages=10, wait_s=2)
    assert dead.attributes["cloudq-reason"].startswith("NotRegistered")


def test_adelay_and_aget_through_aioboto3(ls_app: cloudq.App) -> None:
    @ls_app.task(name="ls.twice")
    async def twice(x: int) -> int:
        return x * 2

    async def send() -> list[str]:
        results = await asyncio.gather(*(twice.adelay(i) for i in range(12)))
        await ls_app.aclose()
        return [r.id for r in results]

    ids = asyncio.run(send())
    run_burst(ls_app)

    async def collect() -> list[int]:
        values = [await ls_app.AsyncResult(i).aget(timeout=10) for i in ids]
        await ls_app.aclose()
        return values

    assert asyncio.run(collect()) == [i * 2 for i in range(12)]


def test_two_beats_send_each_tick_once(ls_app: cloudq.App) -> None:
    @ls_app.task(name="ls.tick")
    def tick() -> None:
        return None

    ls_app.conf.beat_schedule = {"tick": {"task": "ls.tick", "schedule": 1.0}}
    beats = [Beat(ls_app, owner="a", max_interval=0.2), Beat(ls_app, owner="b", max_interval=0.2)]
    threads = [threading.Thread(target=beat.run, daemon=True) for beat in beats]
    for thread in threads:
        thread.start()
    time.sleep(3.5)
    for beat in beats:
        beat.stop()
    for thread in threads:
        thread.join(5)

    bodies = [m.body for m in ls_app.transport.receive("default", max_messages=10, wait_s=1)]
    ids = [json.loads(body)["id"] for body in bodies]
    assert len(ids) >= 3 and len(ids) == len(set(ids))
    assert sum(beat.stats["sent"] for beat in beats) == len(ids)


def test_schedule_sync_is_idempotent(ls_app: cloudq.App) -> None:
    ls_app.conf.update(
        beat_schedule={"daily": {"task": "ls.report", "schedule": cloudq.crontab(hour=7,
                                                                                 minute=30)}},
        beat_timezone="Europe/Berlin", beat_role_arn="arn:aws:iam::000000000000:role/cloudq")

    first = sync(ls_app)
    again = sync(ls_app)
    ls_app.conf.beat_schedule = {}
    removed = sync(ls_app)

    assert [c.action for c in first.changes] == ["create"]
    assert again.changes == [] and again.unchanged == ["daily"]
    assert [c.action for c in removed.changes] == ["delete"]
