"""Soft time limits: SoftTimeLimitExceeded raised inside a busy task, in any thread."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import cloudq
from cloudq.runners.execute import process_message
from cloudq.runners.limits import soft_time_limit

BUSY_S = 3.0
"""How long the busy loops would run if nothing interrupted them."""


def busy_loop(seconds: float = BUSY_S) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def run_in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a worker thread (as the thread pool does); return its value or error."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # the test inspects whatever escaped
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(BUSY_S + 2)
    return box


def limited_busy_loop(limit_s: float | None, seconds: float = BUSY_S) -> str:
    with soft_time_limit(limit_s):
        return busy_loop(seconds)


# -- the context manager ---------------------------------------------------------------------------
def test_soft_limit_interrupts_a_busy_loop_in_a_worker_thread() -> None:
    started = time.monotonic()

    box = run_in_thread(lambda: limited_busy_loop(0.1))

    assert isinstance(box.get("error"), cloudq.SoftTimeLimitExceeded)
    assert time.monotonic() - started < 1


@pytest.mark.timeout(0)  # pytest-timeout's own SIGALRM would make the limit use the thread path
def test_soft_limit_interrupts_a_busy_loop_in_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    started = time.monotonic()

    with pytest.raises(cloudq.SoftTimeLimitExceeded, match=r"soft time limit \(0.1s\)"):
        limited_busy_loop(0.1)

    assert time.monotonic() - started < 1
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


@pytest.mark.timeout(0)
def test_soft_limit_leaves_an_alarm_someone_else_set_alone() -> None:
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        with pytest.raises(cloudq.SoftTimeLimitExceeded):
            limited_busy_loop(0.1)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 90
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_block_that_finishes_in_time_is_not_interrupted_later() -> None:
    def quick_then_linger() -> str:
        with soft_time_limit(0.1):
            value = "quick"
        busy_loop(0.3)  # well past the limit, outside the block
        return value

    box = run_in_thread(quick_then_linger)

    assert box == {"value": "quick"}


@pytest.mark.parametrize("limit_s", [None, 0])
def test_no_limit_lets_the_block_run(limit_s: float | None) -> None:
    box = run_in_thread(lambda: limited_busy_loop(limit_s, seconds=0.2))

    assert box == {"value": "finished"}


# -- through process_message -----------------------------------------------------------------------
def test_task_past_its_soft_limit_in_a_thread_fails(
    app: cloudq.App, drain: Callable[..., Any]
) -> None:
    app.task(name="shop.crunch", soft_time_limit=0.1)(busy_loop)
    result = app.send_task("shop.crunch")

    box = run_in_thread(lambda: drain(app))

    assert [h.outcome for h in box["value"]] == ["failure"]
    assert result.state == "FAILURE"
    with pytest.raises(cloudq.SoftTimeLimitExceeded):
        result.get(timeout=1)


def test_task_may_catch_its_soft_limit_to_clean_up(
    app: cloudq.App, drain: Callable[..., Any]
) -> None:
    @app.task(name="shop.careful")
    def careful() -> str:
        try:
            return busy_loop()
        except cloudq.SoftTimeLimitExceeded:
            return "cleaned up"

    result = careful.apply_async(soft_time_limit=0.1)  # per call, like Celery

    run_in_thread(lambda: drain(app))

    assert result.get(timeout=1) == "cleaned up"


def test_soft_limit_setting_applies_to_every_task(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_soft_time_limit=0.1)
    app.task(name="shop.crunch")(busy_loop)
    result = app.send_task("shop.crunch")
    [message] = app.transport.receive("default")

    box = run_in_thread(lambda: process_message(app, message))

    assert box["value"].outcome.value == "failure"
    assert isinstance(result.get(timeout=1, propagate=False), cloudq.SoftTimeLimitExceeded)


def test_runner_deadline_bounds_the_task(app: cloudq.App) -> None:
    app.task(name="shop.crunch")(busy_loop)
    result = app.send_task("shop.crunch")
    [message] = app.transport.receive("default")
    started = time.monotonic()

    # A Lambda with 1.2 s left: one second is kept back to store the outcome.
    box = run_in_thread(lambda: process_message(app, message, deadline=time.monotonic() + 1.2))

    assert box["value"].outcome.value == "failure"
    assert time.monotonic() - started < 1
    assert result.state == "FAILURE"
