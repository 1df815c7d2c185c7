"""``idempotent=True``: one run per task id, even for copies that arrive together (issue 11: 9).

The first copy takes a lease (``lease#<task id>#<attempt>``, one conditional write) for as
long as it may run; a copy that finds the lease held is deferred without running, and a
lease whose holder crashed expires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.runners.execute import Execution, Outcome, load, process_message
from cloudq.stores.memory import MemoryStore
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from cloudq.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock, Handled

Drain = Callable[..., "list[Handled]"]


@pytest.fixture
def app(clock: FakeClock) -> cloudq.App:
    """An app whose store runs on the test's clock too, so leases expire when it says."""
    return cloudq.App("t", transport=MemoryTransport(clock=clock), store=MemoryStore(clock=clock),
                      set_as_current=False, visibility_timeout=30)


def send_twice(app: cloudq.App, task: cloudq.Task[..., Any], *args: Any) -> wire.Envelope:
    """The same envelope sent twice, as SQS may deliver one message twice."""
    result = task.apply_async(args)
    [first] = app.transport.receive("default")
    app.transport.send("default", OutgoingMessage(body=first.body))
    app.transport.retry_later(first, 0)
    decoded = wire.decode(first.body)
    assert isinstance(decoded, wire.Envelope) and decoded.id == result.id
    return decoded


def receive_both(app: cloudq.App) -> list[ReceivedMessage]:
    both = app.transport.receive("default", max_messages=10)
    assert len(both) == 2
    return both


def test_two_copies_received_together_run_the_body_once(app: cloudq.App, drain: Drain,
                                                        clock: FakeClock) -> None:
    runs: list[str] = []
    inside, release = threading.Event(), threading.Event()

    @app.task(name="shop.charge", idempotent=True)
    def charge(order: str) -> str:
        runs.append(order)
        inside.set()
        release.wait(5)
        return f"charged {order}"

    envelope = send_twice(app, charge, "o-1")
    first, second = receive_both(app)
    running = threading.Thread(target=process_message, args=(app, first))
    running.start()
    assert inside.wait(5)

    deferred = process_message(app, second)
    release.set()
    running.join(5)

    assert runs == ["o-1"]
    assert deferred.outcome is Outcome.DEFERRED and deferred.ack
    app.transport.ack([first, second])
    clock.advance(31)
    assert [h.outcome for h in drain(app)] == ["skipped"]
    assert runs == ["o-1"]
    assert cloudq.AsyncResult(envelope.id, app=app).get(timeout=1) == "charged o-1"


def test_a_crashed_first_copys_lease_expires_and_another_copy_runs(
    app: cloudq.App, drain: Drain, clock: FakeClock,
) -> None:
    runs: list[str] = []
    charge = app.task(name="shop.charge", idempotent=True)(lambda order: runs.append(order))
    send_twice(app, charge, "o-2")
    first, second = receive_both(app)
    crashed = load(app, first)
    assert isinstance(crashed, Execution)
    crashed.begin()  # took the lease, then its worker died before the body ran
    app.transport.ack([first])

    assert process_message(app, second).outcome is Outcome.DEFERRED
    app.transport.ack([second])
    clock.advance(29)
    assert drain(app) == [] and runs == []

    clock.advance(2)  # the lease (visibility_timeout, 30 s) has expired
    assert [h.outcome for h in drain(app)] == ["success"]
    assert runs == ["o-2"]


def test_the_lease_lasts_the_tasks_time_limit_when_that_is_longer(app: cloudq.App,
                                                                  clock: FakeClock) -> None:
    charge = app.task(name="shop.charge", idempotent=True, time_limit=300)(lambda order: order)
    envelope = send_twice(app, charge, "o-3")
    first, _ = receive_both(app)
    execution = load(app, first)
    assert isinstance(execution, Execution)

    execution.begin()

    lease = app.store.get(f"lease#{envelope.id}#0")
    assert lease is not None and lease["ttl"] == int(clock.now) + 300


def test_a_retry_of_an_idempotent_task_is_not_held_back_by_its_own_lease(
    app: cloudq.App, drain: Drain,
) -> None:
    attempts: list[int] = []

    @app.task(name="shop.charge", bind=True, idempotent=True, max_retries=2)
    def charge(self: cloudq.Task[..., int], order: str) -> int:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return self.request.retries

    result = charge.delay("o-4")

    assert [h.outcome for h in drain(app)] == ["retry", "success"]
    assert attempts == [0, 1] and result.get(timeout=1) == 1


def test_a_late_copy_of_an_attempt_that_was_retried_is_not_run(
    app: cloudq.App, drain: Drain, clock: FakeClock,
) -> None:
    attempts: list[int] = []

    @app.task(name="shop.charge", bind=True, idempotent=True, max_retries=2)
    def charge(self: cloudq.Task[..., int], order: str) -> int:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=60)
        return self.request.retries

    send_twice(app, charge, "o-5")
    first, second = receive_both(app)
    assert process_message(app, first).outcome is Outcome.RETRY
    app.transport.ack([first])
    clock.advance(31)  # the first attempt's lease has expired; its retry is not yet due

    assert process_message(app, second).outcome is Outcome.SKIPPED
    assert attempts == [0]


def test_an_idempotent_task_costs_one_conditional_write_for_its_lease(app: cloudq.App,
                                                                     drain: Drain) -> None:
    store = app.store
    assert isinstance(store, MemoryStore)
    charge = app.task(name="shop.charge", idempotent=True)(lambda order: order)
    plain = app.task(name="shop.plain")(lambda order: order)
    result = charge.delay("o-6")
    plain.delay("o-7")
    store.calls.clear()

    drain(app)

    leases = [call for call in store.calls if call[1].startswith("lease#")]
    assert leases == [("PutItem?", f"lease#{result.id}#0")]
