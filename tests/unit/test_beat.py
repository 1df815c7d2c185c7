"""The local beat on the in-memory twins, with a hand-moved clock: each tick sent once, by
one of several beats, never repeated or skipped across a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import cloudq
from cloudq import crontab, message
from cloudq.errors import ScheduleError
from cloudq.scheduler.beat import LEASE_S, Beat, state_key
from cloudq.stores.memory import MemoryStore
from cloudq.testing import memory_app
from cloudq.transports.memory import MemoryTransport

START = datetime(2026, 11, 24, 7, 29, 51, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def make_app(schedule: dict[str, Any], **settings: Any) -> cloudq.App:
    app = memory_app(**settings)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.report")
    def report(kind: str) -> str:
        return kind

    app.conf.beat_schedule = schedule
    return app


def sent(app: cloudq.App, queue: str = "default") -> list[dict[str, Any]]:
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    names = [name for name in transport.queue_names() if name.startswith(queue)]
    return [json.loads(body) for name in names for body in transport.bodies(name)]


def run_until(beat: Beat, clock: Clock, end: datetime, step_s: float = 1.0) -> None:
    while clock.at < end:
        beat.tick()
        clock.advance(step_s)
    beat.tick()


EVERY_10S = {"ten": {"task": "t.add", "schedule": 10.0, "args": (1, 2)}}


def test_an_interval_entry_is_sent_once_per_tick_with_its_tick_id() -> None:
    app, clock = make_app(EVERY_10S), Clock()
    beat = Beat(app, clock=clock)

    run_until(beat, clock, START + timedelta(seconds=31))

    bodies = sent(app)
    ticks = [datetime(2026, 11, 24, 7, 30, s, tzinfo=UTC) for s in (0, 10, 20)]
    assert [b["id"] for b in bodies] == [message.tick_id("ten", t) for t in ticks]
    assert all(b["task"] == "t.add" and b["args"] == [1, 2] for b in bodies)
    assert all(b["headers"]["periodic_task_name"] == "ten" for b in bodies)


def test_a_crontab_entry_follows_beat_timezone() -> None:
    app = make_app({"daily": {"task": "t.report", "schedule": crontab(hour=8, minute=30),
                              "kwargs": {"kind": "sales"}, "options": {"queue": "reports"}}},
                   beat_timezone="Europe/Berlin")
    clock = Clock()  # 07:29:51 UTC = 08:29:51 in Berlin (winter)
    beat = Beat(app, clock=clock)

    run_until(beat, clock, START + timedelta(seconds=15))

    bodies = sent(app, "reports")
    assert len(bodies) == 1
    assert bodies[0]["id"] == message.tick_id("daily", datetime(2026, 11, 24, 7, 30, tzinfo=UTC))
    assert bodies[0]["kwargs"] == {"kind": "sales"}


def test_tick_returns_the_time_until_the_next_tick() -> None:
    app, clock = make_app(EVERY_10S), Clock()
    beat = Beat(app, clock=clock, max_interval=60)

    assert beat.tick() == pytest.approx(9.0)  # 07:29:51 -> 07:30:00
    clock.advance(3)
    assert beat.tick() == pytest.approx(6.0)


def test_the_wait_is_capped_by_max_interval() -> None:
    app = make_app({"daily": {"task": "t.report", "schedule": crontab(hour=3, minute=0),
                              "args": ("x",)}})
    beat = Beat(app, clock=Clock(), max_interval=5)

    assert beat.tick() == 5


def test_an_entry_that_never_ran_starts_with_the_next_tick() -> None:
    app, clock = make_app(EVERY_10S), Clock(START + timedelta(seconds=4))  # 07:29:55
    beat = Beat(app, clock=clock)

    beat.tick()  # the 07:29:50 tick was before the beat started: not sent

    assert sent(app) == []
    clock.advance(5)
    beat.tick()
    assert len(sent(app)) == 1


def test_two_beats_never_both_send_a_tick() -> None:
    app, clock = make_app(EVERY_10S), Clock()
    beats = [Beat(app, clock=clock, owner="a"), Beat(app, clock=clock, owner="b")]

    while clock.at < START + timedelta(seconds=60):
        for beat in beats:
            beat.tick()
        clock.advance(0.5)

    ids = [b["id"] for b in sent(app)]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert sum(b.stats["sent"] for b in beats) == 6


def test_two_beats_with_their_own_stores_views_race_on_the_claim() -> None:
    app, clock = make_app(EVERY_10S), Clock(START + timedelta(seconds=10))
    first, second = Beat(app, clock=clock, owner="a"), Beat(app, clock=clock, owner="b")
    first.started = second.started = START

    first.tick()
    second.tick()

    assert len(sent(app)) == 1
    assert first.stats["sent"] + second.stats["sent"] == 1


def test_a_restarted_beat_does_not_repeat_a_tick_it_sent() -> None:
    app, clock = make_app(EVERY_10S), Clock()
    run_until(Beat(app, clock=clock), clock, START + timedelta(seconds=12))  # sends 07:30:00
    assert len(sent(app)) == 1

    Beat(app, clock=clock).tick()  # restarted at 07:30:02

    assert len(sent(app)) == 1


def test_a_restarted_beat_sends_the_latest_missed_tick_once() -> None:
    app, clock = make_app(EVERY_10S), Clock()
    run_until(Beat(app, clock=clock), clock, START + timedelta(seconds=12))
    clock.advance(50)  # down over 07:30:10 .. 07:30:50, back at 07:30:53

    restarted = Beat(app, clock=clock)
    restarted.tick()
    restarted.tick()

    ids = [b["id"] for b in sent(app)]
    assert ids[1:] == [message.tick_id("ten", datetime(2026, 11, 24, 7, 30, 50, tzinfo=UTC))]


def test_a_claim_left_by_a_crashed_beat_is_taken_over_after_its_lease() -> None:
    app = make_app({"ten": {"task": "t.add", "schedule": 600.0, "args": (1, 2)}})
    clock, due = Clock(START + timedelta(seconds=10)), datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
    app.store.put(state_key("ten"), {"tick": message.tick_text(due), "sent": False,
                                     "owner": "crashed", "claimed_at": clock.at.timestamp(),
                                     "version": 3}, ttl_s=3600)
    beat = Beat(app, clock=clock)
    beat.started = START

    beat.tick()
    assert sent(app) == []  # the claim is fresh: someone may be sending it

    clock.advance(LEASE_S + 1)
    beat.tick()
    assert [b["id"] for b in sent(app)] == [message.tick_id("ten", due)]


def test_a_failed_send_is_retried_and_the_tick_not_lost() -> None:
    app, clock = make_app(EVERY_10S), Clock(START + timedelta(seconds=10))
    beat = Beat(app, clock=clock)
    beat.started = START
    transport = app.transport
    real_send = transport.send
    calls: list[int] = []

    def flaky(queue: str, outgoing: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("SQS is down")
        return real_send(queue, outgoing)

    transport.send = flaky  # type: ignore[method-assign]
    assert beat.tick() <= 1.0  # asks to look again soon
    assert beat.stats["send_errors"] == 1
    beat.tick()

    assert len(sent(app)) == 1 and beat.stats["sent"] == 1


def test_the_state_item_records_the_tick_and_carries_a_ttl() -> None:
    app, clock = make_app(EVERY_10S), Clock(START + timedelta(seconds=10))
    beat = Beat(app, clock=clock, owner="me")
    beat.started = START
    beat.tick()

    store = app.store
    assert isinstance(store, MemoryStore)
    item = store.get(state_key("ten"))
    assert item is not None
    assert item["tick"] == "2026-11-24T07:30:00Z" and item["sent"] is True
    assert item["owner"] == "me" and item["ttl"] > clock.at.timestamp() + 86400


def test_reads_happen_only_when_a_tick_is_due() -> None:
    app, clock = make_app(EVERY_10S), Clock(START + timedelta(seconds=10))
    beat = Beat(app, clock=clock)
    beat.started = START
    store = app.store
    assert isinstance(store, MemoryStore)
    beat.tick()
    before = len(store.calls)

    for _ in range(8):  # 07:30:02 .. 07:30:09: nothing due
        clock.advance(1)
        beat.tick()

    assert len(store.calls) == before


@pytest.mark.parametrize(("schedule", "problem"), [
    ({"x": {"task": "t.add", "schedule": "daily"}}, "'schedule' must be seconds"),
    ({"x": {"task": "t.add", "schedule": 5, "arg": (1,)}}, "did you mean 'args'"),
    ({"x": {"schedule": 5}}, "'task' must be the task's name"),
    ({"x": {"task": "t.add", "schedule": 5, "args": (1, "two")}}, "beat_schedule['x']"),
    ({"x": {"task": "t.add", "schedule": 5, "args": (1, 2),
            "options": {"priority": 42}}}, "beat_schedule['x']"),
    ({"x": {"task": "t.add", "schedule": 5, "options": {"routing": "q"}}}, "unknown option"),
    ({"x": {"task": "t.add", "schedule": -5}}, "positive number of seconds"),
    ({"x": {"task": "t.add", "schedule": 5, "relative": True}}, "relative=True"),
])
def test_a_bad_entry_is_refused_when_the_beat_starts(schedule: dict[str, Any],
                                                     problem: str) -> None:
    app = make_app(schedule)

    with pytest.raises(ScheduleError) as info:
        Beat(app)

    assert problem in str(info.value)


def test_an_entry_that_is_not_a_dict_is_refused_when_set() -> None:
    app = make_app({})

    with pytest.raises(cloudq.ConfigError, match=r"beat_schedule\.x"):
        app.conf.beat_schedule = {"x": ["t.add", 5]}


def test_an_unknown_time_zone_is_refused() -> None:
    app = make_app(EVERY_10S, beat_timezone="Mars/Olympus")

    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        Beat(app)


def test_run_stops_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(EVERY_10S)
    beat = Beat(app, max_interval=0.01)
    calls: list[Callable[[], Any]] = []
    original = beat.tick

    def tick() -> float:
        calls.append(original)
        if len(calls) == 3:
            beat.stop()
        return original()

    monkeypatch.setattr(beat, "tick", tick)
    assert beat.run() == 0
    assert len(calls) == 3
