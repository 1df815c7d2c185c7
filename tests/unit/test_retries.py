"""Retries: ``self.retry``, ``autoretry_for`` with back-off, and what happens at the limit."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.task import Task
from cloudq.transports.base import ReceivedMessage

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock, Handled

Drain = Callable[..., "list[Handled]"]
DeadLetters = Callable[..., list[ReceivedMessage]]
Queued = Callable[..., list[wire.Envelope]]


def outcomes(handled: list[Handled]) -> list[str]:
    return [h.outcome for h in handled]


def wait_of_next_attempt(app: cloudq.App, queued: Queued, clock: FakeClock) -> float:
    [envelope] = queued(app)
    assert envelope.eta is not None
    return (envelope.eta - clock.utcnow()).total_seconds()


# -- self.retry ------------------------------------------------------------------------------------
def test_retry_resends_with_one_more_retry_and_an_eta(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    attempts: list[int] = []

    @app.task(name="shop.sync", bind=True)
    def sync(self: Task[Any, str], account: str) -> str:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(exc=ConnectionError("api down"), countdown=30)
        return f"synced {account}"

    result = sync.delay("acme")
    handled = drain(app)

    assert outcomes(handled) == ["retry"]
    [again] = queued(app)
    assert (again.id, again.retries, again.args) == (result.id, 1, ["acme"])
    assert wait_of_next_attempt(app, queued, clock) == 30
    assert result.state == "RETRY"
    assert result.retries == 1
    assert isinstance(result.info, ConnectionError)
    clock.advance(29)
    assert drain(app) == []  # not visible before its countdown
    clock.advance(1)
    drain(app)
    assert attempts == [0, 1]
    assert result.get(timeout=1) == "synced acme"


def test_retry_without_countdown_waits_the_default_retry_delay(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    @app.task(name="shop.poll", bind=True, default_retry_delay=45)
    def poll(self: Task[Any, None]) -> None:
        raise self.retry()

    poll.delay()
    drain(app)

    assert wait_of_next_attempt(app, queued, clock) == 45


def test_retry_at_an_eta(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    at = clock.utcnow() + timedelta(minutes=10)

    @app.task(name="shop.later", bind=True)
    def later(self: Task[Any, None]) -> None:
        raise self.retry(eta=at)

    later.delay()
    drain(app)

    assert queued(app)[0].eta == at


def test_retry_with_new_arguments_keeps_their_types(app: cloudq.App, drain: Drain) -> None:
    seen: list[tuple[Any, ...]] = []

    @app.task(name="shop.reprice", bind=True)
    def reprice(self, price, sizes=()):  # type: ignore[no-untyped-def]
        seen.append((price, sizes))
        if self.request.retries == 0:
            raise self.retry(args=(Decimal("9.99"),), kwargs={"sizes": (1, 2)}, countdown=0)

    reprice.delay(Decimal("10.00"))
    drain(app)

    assert seen == [(Decimal("10.00"), ()), (Decimal("9.99"), (1, 2))]
    assert type(seen[1][0]) is Decimal and type(seen[1][1]) is tuple


def test_retry_with_arguments_that_are_not_json_fails_the_task(
    app: cloudq.App, drain: Drain
) -> None:
    @app.task(name="shop.odd", bind=True)
    def odd(self, value=None):  # type: ignore[no-untyped-def]
        raise self.retry(args=(object(),), countdown=0)

    result = odd.delay()
    handled = drain(app)

    assert outcomes(handled) == ["failure"]
    with pytest.raises(cloudq.EncodeError, match=r"args\[0\]"):
        result.get(timeout=1)


# -- the limit -------------------------------------------------------------------------------------
def test_max_retries_allows_exactly_that_many_retries(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    attempts: list[int] = []

    @app.task(name="shop.stubborn", bind=True, max_retries=2)
    def stubborn(self: Task[Any, None]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(countdown=0)

    result = stubborn.delay()
    handled = drain(app)

    assert attempts == [0, 1, 2]  # the first run and two retries
    assert outcomes(handled) == ["retry", "retry", "failure"]
    assert result.state == "FAILURE"
    with pytest.raises(cloudq.MaxRetriesExceededError, match="max_retries=2"):
        result.get(timeout=1)
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith(
        "max retries (2) exceeded: MaxRetriesExceededError")


def test_exhausted_retries_fail_with_the_given_exception_and_dead_letter_a_copy(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    @app.task(name="shop.upload", bind=True, max_retries=1)
    def upload(self: Task[Any, None]) -> None:
        raise self.retry(exc=TimeoutError("s3 slow"), countdown=0)

    result = upload.delay()
    drain(app)

    with pytest.raises(TimeoutError, match="s3 slow"):
        result.get(timeout=1)
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"] == "max retries (1) exceeded: TimeoutError: s3 slow"
    assert app.transport.bodies("default") == []  # type: ignore[attr-defined]


def test_max_retries_given_to_retry_overrides_the_tasks(app: cloudq.App, drain: Drain) -> None:
    attempts: list[int] = []

    @app.task(name="shop.patient", bind=True, max_retries=1)
    def patient(self: Task[Any, None]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(countdown=0, max_retries=4)

    patient.delay()
    drain(app)

    assert attempts == [0, 1, 2, 3, 4]


def test_max_retries_none_retries_until_it_succeeds(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.eventually", bind=True, max_retries=None)
    def eventually(self: Task[Any, int]) -> int:
        if self.request.retries < 12:
            raise self.retry(countdown=0)
        return self.request.retries

    result = eventually.delay()
    drain(app)

    assert result.get(timeout=1) == 12


def test_a_plain_failure_is_not_dead_lettered(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    app.task(name="shop.breaks")(lambda: 1 / 0).delay()

    drain(app)

    assert dead_letters(app) == []


# -- autoretry_for ---------------------------------------------------------------------------------
def test_autoretry_for_retries_listed_exceptions_with_exponential_backoff(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock, dead_letters: DeadLetters
) -> None:
    attempts: list[int] = []

    @app.task(name="shop.fetch", bind=True, autoretry_for=(ConnectionError,), retry_backoff=2,
              retry_jitter=False, retry_kwargs={"max_retries": 3})
    def fetch(self: Task[Any, None]) -> None:
        attempts.append(self.request.retries)
        raise ConnectionError("refused")

    result = fetch.delay()
    waits = []
    for _ in range(3):
        drain(app)
        waits.append(wait_of_next_attempt(app, queued, clock))
        clock.advance(waits[-1])
    drain(app)

    assert waits == [2, 4, 8]  # retry_backoff * 2**retries
    assert attempts == [0, 1, 2, 3]
    with pytest.raises(ConnectionError, match="refused"):
        result.get(timeout=1)
    assert "ConnectionError: refused" in dead_letters(app)[0].attributes["cloudq-reason"]


def test_backoff_is_capped_by_retry_backoff_max(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    @app.task(name="shop.capped", bind=True, autoretry_for=(OSError,), retry_backoff=True,
              retry_backoff_max=5, retry_jitter=False, max_retries=10)
    def capped(self: Task[Any, None]) -> None:
        raise OSError("disk")

    capped.apply_async()
    waits = []
    for _ in range(5):
        drain(app)
        waits.append(wait_of_next_attempt(app, queued, clock))
        clock.advance(waits[-1])

    assert waits == [1, 2, 4, 5, 5]


@pytest.mark.parametrize("retries", [0, 1, 3, 6, 12])
def test_jitter_draws_the_wait_between_zero_and_the_backoff(
    app: cloudq.App, retries: int
) -> None:
    random.seed(retries)
    task = app.task(name="shop.jittery", autoretry_for=(OSError,), retry_backoff=3,
                    retry_backoff_max=100, retry_jitter=True)(lambda: None)
    ceiling = min(100, 3 * 2**retries)

    waits = [task.autoretry_countdown_s(retries) for _ in range(200)]

    assert all(0 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 100  # drawn, not fixed
    assert max(waits) > ceiling * 0.8  # spread over the whole range


def test_jittered_autoretry_is_sent_within_the_bounds(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    @app.task(name="shop.jitter", autoretry_for=(OSError,), retry_backoff=10, retry_jitter=True)
    def jitter() -> None:
        raise OSError("busy")

    jitter.delay()
    drain(app)

    assert 0 <= wait_of_next_attempt(app, queued, clock) <= 10


def test_retry_kwargs_countdown_fixes_the_wait(
    app: cloudq.App, drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    @app.task(name="shop.fixed", autoretry_for=(OSError,), retry_backoff=True,
              retry_kwargs={"countdown": 7})
    def fixed() -> None:
        raise OSError("again")

    fixed.delay()
    drain(app)

    assert wait_of_next_attempt(app, queued, clock) == 7


def test_exceptions_not_listed_fail_at_once(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.picky", autoretry_for=(ConnectionError,),
              dont_autoretry_for=(ConnectionRefusedError,))
    def picky(kind: str) -> None:
        raise {"value": ValueError, "refused": ConnectionRefusedError}[kind]("no")

    value_error = picky.delay("value")
    refused = picky.delay("refused")
    handled = drain(app)

    assert outcomes(handled) == ["failure", "failure"]
    assert value_error.state == refused.state == "FAILURE"
    assert app.transport.bodies("default") == []  # type: ignore[attr-defined]


# -- FIFO ------------------------------------------------------------------------------------------
def test_retry_on_a_fifo_queue_is_not_lost(
    app: cloudq.App, drain: Drain, clock: FakeClock
) -> None:
    @app.task(name="shop.ordered", bind=True, queue="orders.fifo")
    def ordered(self: Task[Any, str]) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=5)
        return "done"

    result = ordered.delay()
    drain(app)
    clock.advance(5)
    drain(app)

    assert result.state == "SUCCESS"
