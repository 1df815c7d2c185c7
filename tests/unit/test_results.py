"""AsyncResult: reading state and results, waiting, forgetting, revoking, expiring."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest

import cloudq
from cloudq import states
from cloudq.stores.memory import MemoryStore
from cloudq.transports.memory import MemoryTransport


def test_unknown_task_reads_as_pending(app: cloudq.App) -> None:
    result = cloudq.AsyncResult("never-sent", app=app)

    assert result.state == result.status == "PENDING"
    assert not result.ready()
    assert result.result is None
    assert result.date_done is None


def test_success_reads_back_with_its_details(app: cloudq.App) -> None:
    app.backend.save("t-1", states.SUCCESS, {"total": 3}, name="shop.add", retries=2)
    result = app.AsyncResult("t-1")

    assert result.state == "SUCCESS"
    assert result.ready() and result.successful() and not result.failed()
    assert result.result == result.info == {"total": 3}
    assert result.retries == 2
    assert isinstance(result.date_done, datetime)
    assert result.get() == {"total": 3}


def test_get_times_out_quickly_with_cloudqs_timeout_error(app: cloudq.App) -> None:
    result = cloudq.AsyncResult("slow-task", app=app)
    started = time.monotonic()

    with pytest.raises(cloudq.TimeoutError, match=r"\[slow-task\] not ready after 0.05s"):
        result.get(timeout=0.05)

    assert time.monotonic() - started < 0.5
    assert issubclass(cloudq.TimeoutError, cloudq.CloudqError)


def test_get_returns_as_soon_as_another_worker_stores_the_result(app: cloudq.App) -> None:
    result = cloudq.AsyncResult("t-2", app=app)
    writer = threading.Timer(0.05, lambda: app.backend.save("t-2", states.SUCCESS, "done"))
    writer.start()
    started = time.monotonic()

    value = result.get(timeout=5, interval=0.02)

    writer.join()
    assert value == "done"
    assert time.monotonic() - started < 1


def test_get_reraises_a_failure_or_returns_it_without_propagate(app: cloudq.App) -> None:
    app.backend.save("t-3", states.FAILURE, exc=LookupError("no such sku"), traceback="tb")
    result = app.AsyncResult("t-3")

    with pytest.raises(LookupError, match="no such sku"):
        result.get(timeout=1)
    returned = result.get(timeout=1, propagate=False)
    assert isinstance(returned, LookupError)
    assert result.traceback == "tb"
    assert result.failed()


def test_revoked_result_raises_task_revoked_error(app: cloudq.App) -> None:
    result = cloudq.AsyncResult("t-4", app=app)

    result.revoke()

    assert result.state == "REVOKED"
    assert result.ready()
    with pytest.raises(cloudq.TaskRevokedError, match=r"\[t-4\] was revoked"):
        result.get(timeout=1)
    assert result.get(timeout=1, propagate=False) is None


def test_revoking_a_finished_task_keeps_its_result(app: cloudq.App) -> None:
    app.backend.save("t-5", states.SUCCESS, 7)
    result = app.AsyncResult("t-5")

    result.revoke()

    assert result.state == "SUCCESS"
    assert result.get() == 7


def test_retry_state_is_not_ready(app: cloudq.App) -> None:
    app.backend.save("t-6", states.RETRY, exc=ConnectionError("reset"), retries=1)
    result = app.AsyncResult("t-6")

    assert result.state == "RETRY"
    assert not result.ready()
    assert isinstance(result.info, ConnectionError)
    with pytest.raises(cloudq.TimeoutError):
        result.get(timeout=0.02)


def test_custom_state_carries_its_meta(app: cloudq.App) -> None:
    app.backend.save("t-7", "PROGRESS", meta={"current": 5, "total": 10})

    result = app.AsyncResult("t-7")

    assert (result.state, result.info) == ("PROGRESS", {"current": 5, "total": 10})
    assert not result.ready()


def test_forget_drops_the_result(app: cloudq.App) -> None:
    app.backend.save("t-8", states.SUCCESS, 1)
    result = app.AsyncResult("t-8")

    result.forget()

    assert result.state == "PENDING"
    assert result.result is None


def test_result_past_its_ttl_reads_as_pending() -> None:
    now = [1_000_000.0]
    app = cloudq.App("t", transport=MemoryTransport(), store=MemoryStore(clock=lambda: now[0]),
                     set_as_current=False, result_expires=60)
    app.backend.save("t-9", states.SUCCESS, "kept a minute")
    result = app.AsyncResult("t-9")

    now[0] += 59
    assert result.get(timeout=0) == "kept a minute"

    now[0] += 1  # DynamoDB may not have deleted it yet; reads must not see it
    assert result.state == "PENDING"


def test_results_compare_by_id(app: cloudq.App) -> None:
    a, b = cloudq.AsyncResult("same", app=app), app.AsyncResult("same")

    assert a == b and hash(a) == hash(b)
    assert a != cloudq.AsyncResult("other", app=app)
    assert repr(a) == "<AsyncResult: same>"


def test_a_finished_task_result_is_readable_from_a_new_handle(
    app: cloudq.App, drain: Callable[..., object]
) -> None:
    add = app.task(name="shop.add")(lambda x, y: x + y)
    task_id = add.delay(20, 22).id
    drain(app)

    assert cloudq.AsyncResult(task_id, app=app).get(timeout=1) == 42
