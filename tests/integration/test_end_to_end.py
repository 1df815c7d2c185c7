"""The core promises, checked the way a user meets them: real `cloudq poll` processes,
a real (emulated) AWS endpoint over HTTP, results read back through AsyncResult."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import cloudq
from cloudq import message as wire
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.sending import build_envelope
from cloudq.transports.base import OutgoingMessage
from tests.integration.apps import e2e
from tests.integration.e2e_harness import Harness, harness, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def h(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[Harness]:
    yield from harness(e2e.app, local_aws, unique_prefix, tmp_path)


@pytest.fixture
def worker(h: Harness) -> Iterator[Harness]:
    h.start_worker("-Q", "default,emails")
    yield h


def test_delay_and_get_round_trip(worker: Harness) -> None:
    result = e2e.add.delay(4, 6)

    assert result.get(timeout=15) == 10
    assert result.state == "SUCCESS" and result.successful()
    assert result.date_done is not None


def test_queue_and_priority_reach_a_worker_of_that_queue(worker: Harness) -> None:
    urgent = e2e.add.apply_async((1, 1), queue="emails", priority=9)
    low = e2e.add.apply_async((2, 2), queue="emails", priority=0)

    assert urgent.get(timeout=15) == 2
    assert low.get(timeout=15) == 4


def test_countdown_is_respected(worker: Harness) -> None:
    sent = time.time()
    result = e2e.add.apply_async((2, 2), countdown=3)

    time.sleep(1.5)
    assert result.state == "PENDING"
    assert result.get(timeout=15) == 4
    assert result.date_done is not None
    assert result.date_done.timestamp() - sent >= 3.0


def test_two_hour_countdown_is_accepted_and_no_worker_holds_it(worker: Harness) -> None:
    result = e2e.add.apply_async((1, 2), countdown=7200)
    # SQS's own delay tops out at 900 s; what a worker gets early hops back for the remainder.
    early = build_envelope(e2e.app, e2e.add.name, (5, 5), {}, countdown=7200)
    e2e.app.transport.send("default", OutgoingMessage(body=wire.encode(early)))

    hopped = {"visible": 0, "in_flight": 0, "delayed": 2}
    wait_for(lambda: worker.queue_counts() == hopped, what="the early copy to hop")
    time.sleep(1)
    assert worker.queue_counts() == hopped  # and it stays that way: nothing is held
    assert result.state == "PENDING"
    assert cloudq.AsyncResult(early.id, app=e2e.app).state == "PENDING"


def test_expired_task_is_revoked_and_not_run(worker: Harness) -> None:
    result = e2e.touch.apply_async(("expired",), countdown=2, expires=1)

    wait_for(lambda: result.state == "REVOKED", what="REVOKED")
    with pytest.raises(cloudq.TaskRevokedError):
        result.get(timeout=1)
    wait_for(lambda: sum(worker.queue_counts().values()) == 0, what="the queue to drain")
    assert worker.marks("expired") == []


def test_revoked_before_it_runs_is_not_run(worker: Harness) -> None:
    result = e2e.touch.apply_async(("revoked",), countdown=2)
    result.revoke()

    wait_for(lambda: sum(worker.queue_counts().values()) == 0, timeout_s=20,
             what="the worker to drop the message")
    assert result.state == "REVOKED"
    assert worker.marks("revoked") == []


def test_progress_is_visible_from_another_client(worker: Harness) -> None:
    result = e2e.progress.delay(2)
    observer = cloudq.AsyncResult(result.id, app=e2e.app)

    wait_for(lambda: observer.state == "PROGRESS", what="PROGRESS")
    assert observer.info == {"current": 1, "total": 2}
    (worker.workdir / "release-1").touch()
    wait_for(lambda: observer.info == {"current": 2, "total": 2}, what="second step")
    (worker.workdir / "release-2").touch()
    assert result.get(timeout=15) == 2


def test_retries_are_counted(worker: Harness) -> None:
    result = e2e.flaky.delay(2)

    assert result.get(timeout=20) == 2
    assert worker.marks(f"flaky-{result.id}") == ["0", "1", "2"]
    assert result.retries == 2


def test_the_tasks_exception_type_comes_back(worker: Harness) -> None:
    result = e2e.charge.delay(Decimal("12.50"))

    with pytest.raises(e2e.PaymentDeclined, match=r"card declined for 12\.50"):
        result.get(timeout=15)
    assert result.failed()
    assert "PaymentDeclined" in (result.traceback or "")


def test_two_mebibyte_argument_travels_through_s3(worker: Harness) -> None:
    import hashlib

    blob = bytes(range(256)) * 8192  # 2 MiB
    result = e2e.digest.delay(blob)

    assert result.get(timeout=30) == hashlib.sha256(blob).hexdigest()


def test_poison_goes_to_the_dead_letter_queue_and_later_tasks_still_run(worker: Harness) -> None:
    transport = e2e.app.transport
    transport.send("default", OutgoingMessage(body="this is not json"))
    ghost = build_envelope(e2e.app, "e2e.no_such_task", (), {})
    transport.send("default", OutgoingMessage(body=wire.encode(ghost)))

    assert e2e.add.delay(20, 22).get(timeout=15) == 42

    ghost_result = cloudq.AsyncResult(ghost.id, app=e2e.app)
    wait_for(lambda: ghost_result.state == "FAILURE", what="FAILURE for the unknown task")
    assert isinstance(ghost_result.result, cloudq.NotRegistered)
    dead = transport.receive("default-dlq", max_messages=10, wait_s=2)
    dead += transport.receive("default-dlq", max_messages=10, wait_s=1)
    reasons = sorted(m.attributes.get("cloudq-reason", "") for m in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("DecodeError") and reasons[1].startswith("NotRegistered")


def test_bad_arguments_fail_in_the_caller_before_any_request(h: Harness) -> None:
    counter = RequestCounter()
    counter.attach(e2e.app.aws.sqs)

    with pytest.raises(cloudq.EncodeError, match=r"kwargs\['when'\]"):
        e2e.app.send_task("elsewhere.remind", kwargs={"when": object()})
    with pytest.raises(cloudq.ValidationError, match="'x'"):
        e2e.add.delay("four", 6)  # type: ignore[arg-type]

    assert counter.total == 0


def test_sigterm_finishes_the_task_in_flight_then_exits_0(h: Harness) -> None:
    worker = h.start_worker()
    result = e2e.slow.delay("term", 2.0)
    wait_for(lambda: h.marks("term.started"), what="the task to start")

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=20) == 0
    assert h.marks("term.done") == [""]
    assert result.get(timeout=5) == "term"
    assert sum(h.queue_counts().values()) == 0


def test_idle_worker_exits_within_a_second_of_sigterm(h: Harness) -> None:
    worker = h.start_worker()
    wait_for(lambda: "ready" in h.log().lower() or "poll" in h.log().lower(), what="start-up")
    time.sleep(0.5)  # let it settle into a long poll

    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started <= 1.0


@pytest.fixture
def h_short_visibility(local_aws: LocalAws, unique_prefix: str,
                       tmp_path: Path) -> Iterator[Harness]:
    yield from harness(e2e.app, local_aws, unique_prefix, tmp_path, visibility_timeout_s=2)


def test_sigkill_mid_task_loses_nothing(h_short_visibility: Harness) -> None:
    h = h_short_visibility
    first = h.start_worker()
    result = e2e.slow.delay("killed", 3.0)
    wait_for(lambda: h.marks("killed.started"), what="the task to start")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert result.state == "PENDING"
    h.start_worker()

    assert result.get(timeout=30) == "killed"
    assert len(h.marks("killed.started")) == 2


def test_worker_log_names_task_and_id(worker: Harness) -> None:
    result = e2e.add.delay(1, 1)
    result.get(timeout=15)

    wait_for(lambda: result.id in worker.log(), what="a log line with the task id")
    line = next(line for line in worker.log().splitlines() if result.id in line)
    assert "e2e.add" in line
