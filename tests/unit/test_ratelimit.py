"""Rate limits: parsing ``"10/s"``, counting starts per window, and deferring the excess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.ratelimit import RateLimit
from cloudq.stores.memory import MemoryStore

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock, Handled


def away_from_a_window_edge(window_s: int) -> None:
    """Wait (< 0.5 s) until the wall-clock window has 0.5 s left, so quick runs share it."""
    while time.time() % window_s > window_s - 0.5:
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("text", "count", "window_s"),
    [("10/s", 10, 1), ("100/m", 100, 60), ("1000/h", 1000, 3600), ("5", 5, 1), (3, 3, 1),
     (" 20 / m ", 20, 60), ("0.5/s", 30, 60), ("0.5/m", 30, 3600)],
)
def test_rate_limit_text_is_parsed_into_count_per_window(
    text: str | float, count: int, window_s: int
) -> None:
    assert RateLimit.parse(text) == RateLimit(count=count, window_s=window_s)


@pytest.mark.parametrize("text", [None, "", 0])
def test_empty_rate_limit_means_no_limit(text: str | float | None) -> None:
    assert RateLimit.parse(text) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [("fast", "not of the form"), ("10/d", "not of the form"), ("-1/s", "not of the form"),
     ("0.0001/h", "below one per hour")],
)
def test_bad_rate_limit_is_a_config_error(text: str, problem: str) -> None:
    with pytest.raises(cloudq.ConfigError, match=problem):
        RateLimit.parse(text)


def test_acquire_counts_starts_per_window_and_says_how_long_to_wait() -> None:
    store = MemoryStore()
    limit = RateLimit(count=2, window_s=1)

    waits = [limit.acquire(store, "shop.send", now=100.25) for _ in range(5)]

    assert waits == [0, 0, 0.75, 0.75, 1.75]  # the excess spreads over the next windows
    assert limit.acquire(store, "shop.send", now=101.0) == 0  # a new window
    assert limit.acquire(store, "shop.other", now=100.5) == 0  # limits are per task


def test_third_message_in_the_same_second_is_deferred(
    app: cloudq.App, drain: Callable[..., list[Handled]], clock: FakeClock,
    queued: Callable[..., list[wire.Envelope]],
) -> None:
    runs: list[int] = []
    app.task(name="shop.notify", rate_limit="2/s")(lambda n: runs.append(n))
    away_from_a_window_edge(1)
    third = [app.send_task("shop.notify", (n,)) for n in (1, 2, 3)][-1]

    handled = drain(app)

    assert [h.outcome for h in handled] == ["success", "success", "deferred"]
    assert all(h.disposition.ack for h in handled)
    assert runs == [1, 2]
    [deferred] = queued(app)
    assert deferred.id == third.id
    assert deferred.eta is not None
    assert 0 < (deferred.eta - clock.utcnow()).total_seconds() <= 1
    assert third.state == "PENDING"


def test_default_rate_limit_setting_applies_to_tasks_without_one(
    make_app: Callable[..., cloudq.App], drain: Callable[..., list[Handled]],
) -> None:
    app = make_app(task_default_rate_limit="1/m")
    runs: list[Any] = []
    app.task(name="shop.report")(lambda: runs.append(1))
    app.task(name="shop.unlimited", rate_limit="1000/s")(lambda: runs.append(2))

    away_from_a_window_edge(60)
    for _ in range(2):
        app.send_task("shop.report")
        app.send_task("shop.unlimited")
    handled = drain(app)

    assert sorted(h.outcome for h in handled) == ["deferred", "success", "success", "success"]
    assert sorted(runs) == [1, 2, 2]
