"""The core promises against LocalStack instead of moto: same code, another emulator."""

from __future__ import annotations

import hashlib

import pytest

import cloudq
from cloudq import message as wire
from cloudq.runners.poller import Poller
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
