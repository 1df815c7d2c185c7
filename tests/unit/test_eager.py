"""Eager mode: ``task_always_eager`` and ``Task.apply`` run the task here, as a worker would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import cloudq
from cloudq.stores.memory import MemoryStore
from cloudq.task import Task
from cloudq.transports.memory import MemoryTransport


@pytest.fixture
def eager_app(make_app: Callable[..., cloudq.App]) -> cloudq.App:
    return make_app(task_always_eager=True)


def assert_no_io(app: cloudq.App) -> None:
    transport, store = app.transport, app.store
    assert isinstance(transport, MemoryTransport) and isinstance(store, MemoryStore)
    assert transport.calls == []
    assert store.calls == []


def test_always_eager_runs_in_process_and_returns_a_ready_result(eager_app: cloudq.App) -> None:
    add = eager_app.task(name="shop.add")(lambda x, y: x + y)

    result = add.delay(2, 3)

    assert result.ready() and result.successful()
    assert result.state == "SUCCESS"
    assert result.get() == 5
    assert_no_io(eager_app)


def test_eager_checks_arguments_like_a_send(eager_app: cloudq.App) -> None:
    @eager_app.task(name="shop.add")
    def add(x: int, y: int) -> int:
        return x + y

    log = eager_app.task(name="shop.log")(lambda *items: None)

    with pytest.raises(cloudq.ValidationError):
        add.delay(1, "two")
    with pytest.raises(cloudq.EncodeError):
        log.delay(object())


def test_eager_request_knows_it_is_eager(eager_app: cloudq.App) -> None:
    seen: list[cloudq.Request] = []

    @eager_app.task(name="shop.who", bind=True)
    def who(self: Task[Any, None]) -> None:
        seen.append(self.request)

    result = who.delay()

    assert seen[0].is_eager
    assert seen[0].id == result.id


def test_eager_retries_run_again_at_once(eager_app: cloudq.App) -> None:
    attempts: list[int] = []

    @eager_app.task(name="shop.flaky", bind=True, max_retries=3)
    def flaky(self: Task[Any, str]) -> str:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(exc=ConnectionError("reset"), countdown=3600)
        return "ok"

    result = flaky.delay()

    assert attempts == [0, 1, 2]
    assert result.get() == "ok"
    assert result.retries == 2
    assert_no_io(eager_app)


def test_eager_retries_stop_at_max_retries(eager_app: cloudq.App) -> None:
    attempts: list[int] = []

    @eager_app.task(name="shop.hopeless", bind=True, max_retries=2)
    def hopeless(self: Task[Any, None]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(exc=ConnectionError("reset"), countdown=1)

    result = hopeless.delay()

    assert attempts == [0, 1, 2]
    assert result.state == "FAILURE"
    with pytest.raises(ConnectionError, match="reset"):
        result.get()


def test_eager_failure_is_a_failed_result_by_default(eager_app: cloudq.App) -> None:
    @eager_app.task(name="shop.breaks")
    def breaks() -> None:
        raise KeyError("sku")

    result = breaks.delay()

    assert result.failed()
    assert isinstance(result.result, KeyError)
    assert "KeyError" in (result.traceback or "")
    with pytest.raises(KeyError):
        result.get()
    assert isinstance(result.get(propagate=False), KeyError)


def test_eager_propagates_reraises_in_the_caller(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_always_eager=True, task_eager_propagates=True)

    @app.task(name="shop.breaks")
    def breaks() -> None:
        raise KeyError("sku")

    with pytest.raises(KeyError, match="sku"):
        breaks.delay()


def test_eager_link_callbacks_run_too(eager_app: cloudq.App) -> None:
    seen: list[Any] = []
    add = eager_app.task(name="shop.add")(lambda x, y: x + y)
    eager_app.task(name="shop.record")(lambda value: seen.append(value))

    add.apply_async((2, 2), link={"task": "shop.record", "args": [], "kwargs": {}})

    assert seen == [4]


def test_eager_result_is_not_stored_and_cannot_be_forgotten_or_revoked(
    eager_app: cloudq.App,
) -> None:
    result = eager_app.task(name="shop.one")(lambda: 1).delay()

    result.forget()
    result.revoke()

    assert result.get() == 1
    assert eager_app.AsyncResult(result.id).state == "PENDING"


def test_apply_runs_here_even_without_eager_mode(app: cloudq.App) -> None:
    mul = app.task(name="shop.mul")(lambda x, y: x * y)

    result = mul.apply((6, 7))

    assert result.get() == 42
    assert app.transport.calls == []  # type: ignore[attr-defined]


def test_apply_ignores_countdown_and_eta(app: cloudq.App) -> None:
    mul = app.task(name="shop.mul")(lambda x, y: x * y)

    assert mul.apply((2, 3), countdown=3600).get() == 6


def test_apply_failure_is_returned_not_raised(app: cloudq.App) -> None:
    @app.task(name="shop.div")
    def div(x: int, y: int) -> float:
        return x / y

    result = div.apply((1, 0))

    assert result.state == "FAILURE"
    assert isinstance(result.result, ZeroDivisionError)


def test_calling_a_task_runs_the_function(app: cloudq.App) -> None:
    add = app.task(name="shop.add")(lambda x, y: x + y)

    assert add(1, 2) == 3
    assert app.transport.calls == []  # type: ignore[attr-defined]
