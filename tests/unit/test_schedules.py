"""Schedules: crontab parsing and errors, next/last ticks across time zones and daylight saving,
Celery's AND rule for the two day fields, interval alignment, and solar events.

Calendar anchors: 2026-01-01 is a Thursday; Europe/Berlin goes CET->CEST on 2026-03-29 at
01:00 UTC (02:00-02:59 local does not exist) and back on 2026-10-25 at 01:00 UTC (02:00-02:59
local happens twice); America/New_York goes EST->EDT on 2026-03-08 at 07:00 UTC and back on
2026-11-01 at 06:00 UTC (01:00-01:59 local happens twice).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloudq.errors import ScheduleError
from cloudq.scheduler.schedules import crontab, schedstate, schedule, solar

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def first(ticks: Iterator[datetime], count: int) -> list[datetime]:
    return list(islice(ticks, count))


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz))


# -- parsing ----------------------------------------------------------------------------------
ALL_DAYS = frozenset(range(7))


@pytest.mark.parametrize(("kwargs", "field", "expected"), [
    # minute / hour: numbers, lists, ranges, steps, wrap-around, iterables
    ({"minute": 5}, "minute", {5}),
    ({"minute": "5"}, "minute", {5}),
    ({"minute": "*/15"}, "minute", {0, 15, 30, 45}),
    ({"minute": "5/20"}, "minute", {5, 25, 45}),
    ({"minute": "0,30"}, "minute", {0, 30}),
    ({"minute": " 0 , 30 "}, "minute", {0, 30}),
    ({"minute": "10-12,40"}, "minute", {10, 11, 12, 40}),
    ({"minute": [0, "15", "40-42"]}, "minute", {0, 15, 40, 41, 42}),
    ({"minute": (1, 2)}, "minute", {1, 2}),
    ({"hour": range(9, 12)}, "hour", {9, 10, 11}),
    ({"hour": {3, 4}}, "hour", {3, 4}),
    ({"hour": "8-17/2"}, "hour", {8, 10, 12, 14, 16}),
    ({"hour": "1-23/2"}, "hour", set(range(1, 24, 2))),
    ({"hour": "22-2"}, "hour", {22, 23, 0, 1, 2}),
    ({"hour": "*"}, "hour", set(range(24))),
    # day of week: 0 and 7 are Sunday, names, ranges, wrap-around, lists, steps
    ({"day_of_week": 0}, "day_of_week", {0}),
    ({"day_of_week": 7}, "day_of_week", {0}),
    ({"day_of_week": "7"}, "day_of_week", {0}),
    ({"day_of_week": "sun"}, "day_of_week", {0}),
    ({"day_of_week": "sunday"}, "day_of_week", {0}),
    ({"day_of_week": "SUN"}, "day_of_week", {0}),
    ({"day_of_week": "Saturday"}, "day_of_week", {6}),
    ({"day_of_week": "mon-fri"}, "day_of_week", {1, 2, 3, 4, 5}),
    ({"day_of_week": "monday-friday"}, "day_of_week", {1, 2, 3, 4, 5}),
    ({"day_of_week": "1-5"}, "day_of_week", {1, 2, 3, 4, 5}),
    ({"day_of_week": "sat,sun"}, "day_of_week", {6, 0}),
    ({"day_of_week": "fri-mon"}, "day_of_week", {5, 6, 0, 1}),
    ({"day_of_week": "sat-sun"}, "day_of_week", {6, 0}),
    ({"day_of_week": "5-7"}, "day_of_week", {5, 6, 0}),
    ({"day_of_week": "1-7"}, "day_of_week", ALL_DAYS),
    ({"day_of_week": "sun-sat"}, "day_of_week", ALL_DAYS),
    ({"day_of_week": "*/2"}, "day_of_week", {0, 2, 4, 6}),
    ({"day_of_week": [1, "wed", "fri"]}, "day_of_week", {1, 3, 5}),
    ({"day_of_week": range(1, 8)}, "day_of_week", ALL_DAYS),
    # day of month and month of year
    ({"day_of_month": 1}, "day_of_month", {1}),
    ({"day_of_month": "1,15"}, "day_of_month", {1, 15}),
    ({"day_of_month": "28-31"}, "day_of_month", {28, 29, 30, 31}),
    ({"day_of_month": "*/10"}, "day_of_month", {1, 11, 21, 31}),
    ({"month_of_year": "jan,apr,jul,oct"}, "month_of_year", {1, 4, 7, 10}),
    ({"month_of_year": "*/3"}, "month_of_year", {1, 4, 7, 10}),
    ({"month_of_year": "nov-feb"}, "month_of_year", {11, 12, 1, 2}),
    ({"month_of_year": "Dec"}, "month_of_year", {12}),
    ({"month_of_year": [12, "jan"]}, "month_of_year", {12, 1}),
], ids=lambda value: repr(value) if isinstance(value, dict) else None)
def test_field_syntax(kwargs: dict[str, Any], field: str, expected: set[int]) -> None:
    assert getattr(crontab(**kwargs), field) == frozenset(expected)


def test_crontab_without_arguments_is_every_minute() -> None:
    every = crontab()
    assert every.minute == frozenset(range(60))
    assert every.hour == frozenset(range(24))
    assert every.day_of_week == ALL_DAYS
    assert every.day_of_month == frozenset(range(1, 32))
    assert every.month_of_year == frozenset(range(1, 13))
    assert not every.restricts_day_of_week and not every.restricts_day_of_month
    assert first(every.ticks(utc(2026, 5, 5, 23, 58, 30)), 3) == [
        utc(2026, 5, 5, 23, 59), utc(2026, 5, 6, 0, 0), utc(2026, 5, 6, 0, 1)]


@pytest.mark.parametrize("sunday", [0, 7, "0", "7", "sun", "sunday", "Sun", ["sun"], (7,)])
def test_all_spellings_of_sunday_are_the_same_schedule(sunday: Any) -> None:
    schedule_ = crontab(0, 12, day_of_week=sunday)
    assert schedule_ == crontab(0, 12, day_of_week=0)
    assert hash(schedule_) == hash(crontab(0, 12, day_of_week=0))
    assert schedule_.restricts_day_of_week
    ticks = first(schedule_.ticks(utc(2026, 1, 1)), 4)
    assert [tick.weekday() for tick in ticks] == [6, 6, 6, 6]  # Python: Sunday is 6
    assert ticks[0] == utc(2026, 1, 4, 12)


def test_day_of_week_1_to_7_is_every_day() -> None:
    every_day = crontab(0, 12, day_of_week="1-7")
    assert every_day == crontab(0, 12)
    assert not every_day.restricts_day_of_week
    ticks = first(every_day.ticks(utc(2026, 1, 1)), 7)
    assert sorted(tick.weekday() for tick in ticks) == list(range(7))


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "fragments"), [
    ({"minute": 60}, ["minute", "60", "0-59"]),
    ({"minute": -1}, ["minute", "-1"]),
    ({"minute": "*/60"}, ["minute", "*/60"]),
    ({"hour": 24}, ["hour", "24", "0-23"]),
    ({"hour": "*/0"}, ["hour", "*/0", "step"]),
    ({"hour": "1-"}, ["hour", "1-"]),
    ({"hour": "a-b"}, ["hour", "a-b"]),
    ({"minute": "5,"}, ["minute", "5,"]),
    ({"minute": "1.5"}, ["minute", "1.5"]),
    ({"day_of_week": "funday"}, ["day_of_week", "funday", "mon"]),
    ({"day_of_week": 8}, ["day_of_week", "8", "0-7"]),
    ({"day_of_week": "mon-funday"}, ["day_of_week", "funday"]),
    ({"day_of_month": 0}, ["day_of_month", "0", "1-31"]),
    ({"day_of_month": 32}, ["day_of_month", "32"]),
    ({"month_of_year": 13}, ["month_of_year", "13", "1-12"]),
    ({"month_of_year": "smarch"}, ["month_of_year", "smarch", "jan"]),
    ({"minute": ""}, ["minute", "empty"]),
    ({"hour": "   "}, ["hour", "empty"]),
    ({"day_of_week": []}, ["day_of_week", "empty"]),
    ({"hour": True}, ["hour", "True"]),
    ({"minute": False}, ["minute", "False"]),
    ({"day_of_week": [True]}, ["day_of_week", "True"]),
    ({"minute": 1.5}, ["minute", "1.5"]),
    ({"minute": None}, ["minute", "None"]),
    ({"day_of_month": 31, "month_of_year": 2}, ["never matches", "31", "[2]"]),
    ({"day_of_month": "30,31", "month_of_year": "feb"}, ["never matches", "30"]),
    ({"day_of_month": 31, "month_of_year": "apr,jun,sep,nov"}, ["never matches", "31"]),
], ids=repr)
def test_invalid_crontab_names_the_field_and_value(kwargs: dict[str, Any],
                                                   fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as caught:
        crontab(**kwargs)
    assert isinstance(caught.value, ValueError)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_day_29_of_february_is_not_refused() -> None:
    leap_days = crontab(0, 0, day_of_month=29, month_of_year=2)
    assert first(leap_days.ticks(utc(2026, 1, 1)), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]


@pytest.mark.parametrize("spec", ["*/", "5/", "1-5/"])
def test_a_slash_without_a_step_is_refused(spec: str) -> None:
    with pytest.raises(ScheduleError, match="minute"):
        crontab(minute=spec)


@pytest.mark.parametrize("method", ["next_after", "last_at_or_before"])
@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "Europe/berlin_", "../etc/passwd"])
def test_unknown_time_zone(method: str, tz: str) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone") as caught:
        getattr(crontab(30, 7), method)(utc(2026, 1, 1), tz)
    assert repr(tz) in str(caught.value)


def test_a_tzinfo_is_as_good_as_its_name() -> None:
    daily = crontab(0, 9)
    moment = utc(2026, 7, 1)
    assert daily.next_after(moment, ZoneInfo(BERLIN)) == daily.next_after(moment, BERLIN)


# -- repr, equality, hash -----------------------------------------------------------------------
@pytest.mark.parametrize(("made", "text"), [
    (crontab(30, 7), "<crontab: 30 7 * * * (m/h/dM/MY/d)>"),
    (crontab(), "<crontab: * * * * * (m/h/dM/MY/d)>"),
    (crontab("*/15", "8-17", "mon-fri"), "<crontab: */15 8-17 * * mon-fri (m/h/dM/MY/d)>"),
    (crontab(0, 0, day_of_month=1, month_of_year="jan,jul"),
     "<crontab: 0 0 1 jan,jul * (m/h/dM/MY/d)>"),
    (crontab(0, [1, 2], day_of_week=(0, 6)), "<crontab: 0 1,2 * * 0,6 (m/h/dM/MY/d)>"),
])
def test_repr_is_celerys(made: crontab, text: str) -> None:
    assert repr(made) == text


def test_equality_compares_meaning_not_spelling() -> None:
    assert crontab(0, 0) == crontab("0", "0", "*", "1-31", "jan-dec")
    assert crontab(minute="*/15") == crontab(minute=[0, 15, 30, 45])
    assert crontab(day_of_week="sat,sun") == crontab(day_of_week="6-7")
    assert crontab(0, 0) != crontab(0, 1)
    assert crontab(0, 0, day_of_week="mon") != crontab(0, 0, day_of_month=1)
    assert crontab() != schedule(60)
    assert crontab() != "* * * * *"
    assert len({crontab(0, 0), crontab("0", "0"), crontab(0, 1)}) == 2
    assert {crontab(day_of_week=7): "x"}[crontab(day_of_week="sun")] == "x"


# -- next_after / last_at_or_before ----------------------------------------------------------
def test_next_after_is_strict_and_last_at_or_before_inclusive() -> None:
    daily = crontab(30, 7)
    tick = utc(2026, 5, 5, 7, 30)
    assert daily.next_after(utc(2026, 5, 5, 7)) == tick
    assert daily.next_after(tick) == utc(2026, 5, 6, 7, 30)
    assert daily.next_after(utc(2026, 5, 5, 7, 29, 59, 999_999)) == tick
    assert daily.next_after(utc(2026, 5, 5, 7, 30, 0, 1)) == utc(2026, 5, 6, 7, 30)
    assert daily.last_at_or_before(tick) == tick
    assert daily.last_at_or_before(utc(2026, 5, 5, 7, 30, 0, 500_000)) == tick
    assert daily.last_at_or_before(utc(2026, 5, 5, 7, 29, 59)) == utc(2026, 5, 4, 7, 30)


def test_naive_moments_are_utc_and_answers_are_aware_utc() -> None:
    daily = crontab(30, 7)
    got = daily.next_after(datetime(2026, 5, 5, 7))
    assert got == utc(2026, 5, 5, 7, 30) and got.tzinfo is UTC
    got = daily.last_at_or_before(datetime(2026, 5, 5, 8))
    assert got == utc(2026, 5, 5, 7, 30) and got.tzinfo is UTC
    # a moment given in another zone means the same instant
    in_tokyo = datetime(2026, 5, 5, 16, tzinfo=ZoneInfo("Asia/Tokyo"))  # 07:00 UTC
    assert daily.next_after(in_tokyo) == utc(2026, 5, 5, 7, 30)


def test_month_ends() -> None:
    last_day = crontab(0, 0, day_of_month=31)
    assert first(last_day.ticks(utc(2026, 1, 31)), 4) == [
        utc(2026, 3, 31), utc(2026, 5, 31), utc(2026, 7, 31), utc(2026, 8, 31)]
    assert last_day.last_at_or_before(utc(2026, 5, 30)) == utc(2026, 3, 31)
    quarterly = crontab(0, 0, day_of_month=1, month_of_year="*/3")
    assert first(quarterly.ticks(utc(2026, 2, 1)), 4) == [
        utc(2026, 4, 1), utc(2026, 7, 1), utc(2026, 10, 1), utc(2027, 1, 1)]


@pytest.mark.parametrize(("tz", "winter_utc_hour", "summer_utc_hour"), [
    ("UTC", 9, 9),
    (BERLIN, 8, 7),
    (NEW_YORK, 14, 13),
    ("Asia/Kolkata", 3, 3),  # 09:00 +05:30 is 03:30 UTC
])
def test_wall_clock_time_in_a_zone(tz: str, winter_utc_hour: int, summer_utc_hour: int) -> None:
    nine = crontab(0, 9)
    minute = 30 if tz == "Asia/Kolkata" else 0
    winter = nine.next_after(utc(2026, 1, 15), tz)
    summer = nine.next_after(utc(2026, 7, 15), tz)
    assert winter == utc(2026, 1, 15, winter_utc_hour, minute)
    assert summer == utc(2026, 7, 15, summer_utc_hour, minute)
    assert local(winter, tz).hour == local(summer, tz).hour == 9
    assert nine.last_at_or_before(winter, tz) == winter
    assert nine.last_at_or_before(winter - timedelta(seconds=1), tz) == winter - timedelta(days=1)


def test_weekday_names_follow_the_local_calendar() -> None:
    # Monday 00:30 in Berlin is still Sunday in UTC
    monday = crontab(30, 0, day_of_week="mon")
    tick = monday.next_after(utc(2026, 11, 20), BERLIN)
    assert tick == utc(2026, 11, 22, 23, 30)
    assert local(tick, BERLIN).weekday() == 0


# -- daylight saving ---------------------------------------------------------------------------
def test_spring_forward_local_time_that_does_not_exist_has_no_tick() -> None:
    half_past_two = crontab(30, 2)
    ticks = first(half_past_two.ticks(utc(2026, 3, 27), BERLIN), 3)
    assert ticks == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]
    assert date(2026, 3, 29) not in {local(tick, BERLIN).date() for tick in ticks}
    assert half_past_two.last_at_or_before(utc(2026, 3, 29, 23), BERLIN) == utc(2026, 3, 28, 1, 30)
    # New York skips 02:00-02:59 on 2026-03-08
    ticks = first(half_past_two.ticks(utc(2026, 3, 7), NEW_YORK), 2)
    assert ticks == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]


def test_spring_forward_every_quarter_hour_jumps_the_gap() -> None:
    quarter = crontab(minute="*/15")
    ticks = first(quarter.ticks(utc(2026, 3, 29, 0, 20), BERLIN), 4)
    # 01:30 and 01:45 CET, then 03:00 and 03:15 CEST
    assert ticks == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 0, 45),
                     utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15)]
    assert [local(tick, BERLIN).strftime("%H:%M") for tick in ticks] == [
        "01:30", "01:45", "03:00", "03:15"]


def test_fall_back_repeated_local_time_ticks_once_the_first_time() -> None:
    half_past_two = crontab(30, 2)
    ticks = first(half_past_two.ticks(utc(2026, 10, 24), BERLIN), 3)
    # 02:30 CEST (+02:00) on the 25th; the 02:30 CET an hour later does not tick
    assert ticks == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert half_past_two.next_after(utc(2026, 10, 25, 0, 30), BERLIN) == utc(2026, 10, 26, 1, 30)
    assert half_past_two.next_after(utc(2026, 10, 25, 1, 0), BERLIN) == utc(2026, 10, 26, 1, 30)
    assert half_past_two.last_at_or_before(utc(2026, 10, 25, 1, 30), BERLIN) == \
        utc(2026, 10, 25, 0, 30)
    # New York repeats 01:00-01:59 on 2026-11-01
    one_thirty = crontab(30, 1)
    assert first(one_thirty.ticks(utc(2026, 10, 31), NEW_YORK), 3) == [
        utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def expected_quarter_hours_across_berlin_fall_back() -> list[datetime]:
    """Every quarter hour from 2026-10-24 23:15Z to 04:00Z, without the repeated 02:xx CET."""
    out, moment = [], utc(2026, 10, 24, 23, 15)
    while moment <= utc(2026, 10, 25, 4):
        if not utc(2026, 10, 25, 1) <= moment < utc(2026, 10, 25, 2):
            out.append(moment)
        moment += timedelta(minutes=15)
    return out


def test_fall_back_every_quarter_hour_stays_strictly_increasing() -> None:
    quarter = crontab(minute="*/15")
    expected = expected_quarter_hours_across_berlin_fall_back()
    ticks = first(quarter.ticks(utc(2026, 10, 24, 23), BERLIN), len(expected))
    assert ticks == expected
    assert all(a < b for a, b in pairwise(ticks))
    walls = [local(tick, BERLIN).replace(tzinfo=None) for tick in ticks]
    assert len(set(walls)) == len(walls)  # no wall-clock time twice


def test_last_at_or_before_agrees_with_ticks_across_spring_forward() -> None:
    quarter = crontab(minute="*/15")
    ticks = first(quarter.ticks(utc(2026, 3, 28, 22), BERLIN), 40)
    moment = utc(2026, 3, 28, 22, 20)
    while moment < ticks[-1]:
        expected = max(tick for tick in ticks if tick <= moment)
        assert quarter.last_at_or_before(moment, BERLIN) == expected, moment
        moment += timedelta(minutes=7)


def test_last_at_or_before_agrees_with_ticks_outside_the_repeated_hour() -> None:
    quarter = crontab(minute="*/15")
    ticks = expected_quarter_hours_across_berlin_fall_back()
    moment = utc(2026, 10, 24, 23, 20)
    checked = 0
    while moment < ticks[-1]:
        if not utc(2026, 10, 25, 1) <= moment < utc(2026, 10, 25, 2):
            expected = max(tick for tick in ticks if tick <= moment)
            assert quarter.last_at_or_before(moment, BERLIN) == expected, moment
            checked += 1
        moment += timedelta(minutes=7)
    assert checked > 30


@pytest.mark.parametrize(("tz", "moment", "expected"), [
    (BERLIN, utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 0, 45)),  # 02:10 CET, second pass
    (NEW_YORK, utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 5, 45)),  # 01:10 EST, second pass
])
def test_last_at_or_before_in_the_second_pass_of_a_repeated_hour(
        tz: str, moment: datetime, expected: datetime) -> None:
    quarter = crontab(minute="*/15")
    ticks = first(quarter.ticks(moment - timedelta(hours=3), tz), 30)
    assert max(tick for tick in ticks if tick <= moment) == expected  # the ticks are right
    assert quarter.last_at_or_before(moment, tz) == expected


def test_a_crontab_that_never_exists_on_the_clock_raises_schedule_error() -> None:
    # 02:30 on Sunday 29 March, then always the last Sunday of March: Berlin's clocks skip it
    never = crontab(30, 2, day_of_week="sun", day_of_month=29, month_of_year="mar")
    with pytest.raises(ScheduleError, match="no tick"):
        never.next_after(utc(2026, 1, 1), BERLIN)


# -- both day fields: a day must match both (Celery) ------------------------------------------
def test_friday_the_13th() -> None:
    friday_13 = crontab(0, 0, day_of_week="fri", day_of_month=13)
    assert friday_13.restricts_day_of_week and friday_13.restricts_day_of_month
    ticks = first(friday_13.ticks(utc(2026, 1, 1)), 10)
    assert all(tick.weekday() == 4 and tick.day == 13 for tick in ticks)
    # none missed: every Friday the 13th in the span, from the calendar
    day, expected = date(2026, 1, 1), []
    while len(expected) < 10:
        if day.day == 13 and day.weekday() == 4:
            expected.append(utc(day.year, day.month, day.day))
        day += timedelta(days=1)
    assert ticks == expected
    assert ticks[:3] == [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]
    assert friday_13.last_at_or_before(utc(2026, 2, 12)) == utc(2025, 6, 13)


def test_first_monday_of_the_month_in_berlin() -> None:
    first_monday = crontab(0, 9, day_of_week="mon", day_of_month="1-7")
    ticks = first(first_monday.ticks(utc(2026, 1, 1), BERLIN), 12)
    walls = [local(tick, BERLIN) for tick in ticks]
    assert all(wall.weekday() == 0 and wall.day <= 7 and wall.hour == 9 for wall in walls)
    assert [wall.month for wall in walls] == list(range(1, 13))


# -- is_due / remaining_estimate ---------------------------------------------------------------
def test_is_due_and_remaining_estimate_of_a_crontab() -> None:
    daily = crontab(30, 7)
    now = utc(2026, 5, 5, 7, 30, 5)
    assert daily.is_due(utc(2026, 5, 4, 7, 30), now=now) == schedstate(True, 86395.0)
    assert daily.remaining_estimate(utc(2026, 5, 4, 7, 30), now=now) == timedelta(seconds=-5)
    assert daily.is_due(utc(2026, 5, 5, 7, 30), now=now) == schedstate(False, 86395.0)
    assert daily.remaining_estimate(utc(2026, 5, 5, 7, 30), now=now) == \
        timedelta(hours=23, minutes=59, seconds=55)
    early = utc(2026, 5, 5, 7)
    assert daily.is_due(utc(2026, 5, 4, 7, 30), now=early) == schedstate(False, 1800.0)
    # naive datetimes are UTC
    assert daily.is_due(datetime(2026, 5, 4, 7, 30), now=datetime(2026, 5, 5, 7, 30, 5)) == \
        schedstate(True, 86395.0)
    state = daily.is_due(utc(2026, 5, 4, 7, 30), now=now)
    assert state.is_due is True and state.next == 86395.0


def test_is_due_in_a_time_zone() -> None:
    nine_in_berlin = crontab(0, 9)
    now = utc(2026, 7, 1, 7, 0, 30)  # 09:00:30 CEST
    last = utc(2026, 7, 1, 6)
    assert nine_in_berlin.is_due(last, BERLIN, now) == schedstate(True, 86370.0)
    assert nine_in_berlin.is_due(last, "UTC", now) == schedstate(False, 7170.0)


def test_is_due_of_an_interval() -> None:
    every_30 = schedule(30)
    last = utc(2026, 1, 1, 0, 0, 0)
    assert every_30.is_due(last, now=utc(2026, 1, 1, 0, 0, 10)) == schedstate(False, 20.0)
    assert every_30.is_due(last, now=utc(2026, 1, 1, 0, 0, 31)) == schedstate(True, 29.0)
    assert every_30.remaining_estimate(last, now=utc(2026, 1, 1, 0, 1)) == \
        timedelta(seconds=-30)


# -- interval ---------------------------------------------------------------------------------
def test_interval_ticks_are_aligned_to_the_epoch() -> None:
    every_30 = schedule(30)
    assert first(every_30.ticks(utc(2026, 1, 1, 0, 0, 10)), 4) == [
        utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 1, 30),
        utc(2026, 1, 1, 0, 2)]
    assert every_30.next_after(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1)
    assert every_30.last_at_or_before(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 0, 30)
    assert every_30.last_at_or_before(utc(2026, 1, 1, 0, 0, 29)) == utc(2026, 1, 1)
    five = schedule(timedelta(minutes=5))
    assert five.seconds == 300.0 and five.run_every == timedelta(minutes=5)
    assert first(five.ticks(utc(2026, 1, 1, 0, 7, 13)), 2) == [
        utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 15)]
    # the zone does not matter to an interval
    assert five.next_after(utc(2026, 3, 29, 0, 58), BERLIN) == utc(2026, 3, 29, 1)
    odd = schedule(7)
    ticks = first(odd.ticks(utc(2026, 1, 1)), 5)
    assert all(tick.timestamp() % 7 == 0 for tick in ticks)
    assert [b - a for a, b in pairwise(ticks)] == [timedelta(seconds=7)] * 4
    assert all(tick.tzinfo is UTC for tick in ticks)


def test_interval_repr_and_equality() -> None:
    assert repr(schedule(30)) == "<freq: 0:00:30>"
    assert repr(schedule(timedelta(hours=1))) == "<freq: 1:00:00>"
    assert schedule(30) == schedule(30.0) == schedule(timedelta(seconds=30))
    assert hash(schedule(30)) == hash(schedule(timedelta(seconds=30)))
    assert schedule(30) != schedule(31)
    assert schedule(60) != crontab()


@pytest.mark.parametrize("bad", [0, -1, -0.5, "x", "30", True, False, None, math.nan, math.inf,
                                 timedelta(0), timedelta(seconds=-5)], ids=repr)
def test_invalid_interval(bad: Any) -> None:
    with pytest.raises(ScheduleError, match="positive number of seconds") as caught:
        schedule(bad)
    assert repr(bad) in str(caught.value)


# -- solar ------------------------------------------------------------------------------------
needs_astral = pytest.mark.skipif(importlib.util.find_spec("astral") is None,
                                  reason="solar schedules need astral")
BERLIN_LAT, BERLIN_LON = 52.52, 13.40


@needs_astral
@pytest.mark.parametrize(("event", "start", "hours"), [
    ("sunrise", utc(2026, 6, 1), range(2, 4)),  # about 04:45 CEST
    ("sunrise", utc(2026, 12, 1), range(6, 8)),  # about 08:00 CET
    ("sunset", utc(2026, 6, 1), range(19, 20)),  # about 21:25 CEST
    ("sunset", utc(2026, 12, 1), range(14, 16)),  # about 15:55 CET
    ("solar_noon", utc(2026, 3, 1), range(11, 12)),  # about 12:07 CET
])
def test_solar_in_berlin(event: str, start: datetime, hours: range) -> None:
    sun = solar(event, BERLIN_LAT, BERLIN_LON)
    ticks = first(sun.ticks(start), 20)
    assert all(tick.tzinfo is UTC and tick.hour in hours for tick in ticks), ticks
    days = [tick.date() for tick in ticks]
    assert days == [start.date() + timedelta(days=n) for n in range(20)]  # one a day
    moment = ticks[5] + timedelta(hours=1)
    assert sun.last_at_or_before(moment) == ticks[5]
    assert sun.last_at_or_before(ticks[5]) == ticks[5]
    assert sun.next_after(ticks[5]) == ticks[6]


@needs_astral
def test_solar_sunrise_and_sunset_alternate_through_a_year() -> None:
    rise, set_ = solar("sunrise", BERLIN_LAT, BERLIN_LON), solar("sunset", BERLIN_LAT, BERLIN_LON)
    moment = utc(2026, 1, 1)
    for _ in range(0, 365, 9):
        sunrise = rise.next_after(moment)
        sunset = set_.next_after(sunrise)
        assert sunrise.date() == sunset.date()
        assert timedelta(hours=7) < sunset - sunrise < timedelta(hours=17)
        moment += timedelta(days=9)


@needs_astral
@pytest.mark.parametrize(("lat", "start", "not_before", "before"), [
    # polar day: no sunrise from late March to late September near the north pole
    (89.0, utc(2026, 6, 1), utc(2026, 9, 1), utc(2026, 10, 1)),
    # polar night: none from late September to mid March
    (89.0, utc(2026, 12, 1), utc(2027, 3, 1), utc(2027, 4, 1)),
    (-89.0, utc(2026, 12, 1), utc(2027, 3, 1), utc(2027, 4, 1)),
    (-89.0, utc(2026, 6, 1), utc(2026, 9, 1), utc(2026, 10, 1)),
])
def test_solar_polar_days_have_no_tick(lat: float, start: datetime, not_before: datetime,
                                       before: datetime) -> None:
    sunrise = solar("sunrise", lat, 0.0)
    tick = sunrise.next_after(start)
    assert not_before < tick < before
    assert sunrise.last_at_or_before(start) < start - timedelta(days=60)


def test_solar_event_that_never_happens_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    sunrise = solar("sunrise", 89.0, 0.0)
    monkeypatch.setattr(solar, "on", lambda self, day: None)
    with pytest.raises(ScheduleError, match="does not happen within a year"):
        sunrise.next_after(utc(2026, 6, 1))
    assert sunrise.last_at_or_before(utc(2026, 6, 1)) is None


def test_solar_without_astral(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "astral", None)
    with pytest.raises(ScheduleError, match="astral"):
        solar("sunrise", BERLIN_LAT, BERLIN_LON).next_after(utc(2026, 6, 1))


@pytest.mark.parametrize(("args", "fragments"), [
    (("moonrise", 0, 0), ["moonrise", "sunrise", "dusk_civil"]),
    (("Sunrise", 0, 0), ["Sunrise"]),
    (("sunrise", 91, 0), ["latitude", "91"]),
    (("sunrise", -90.5, 0), ["latitude", "-90.5"]),
    (("sunrise", math.nan, 0), ["latitude", "nan"]),
    (("sunrise", 0, 181), ["longitude", "181"]),
    (("sunrise", 0, -180.01), ["longitude", "-180.01"]),
], ids=repr)
def test_invalid_solar(args: tuple[Any, ...], fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as caught:
        solar(*args)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_solar_with_a_text_latitude_names_the_field() -> None:
    with pytest.raises(ScheduleError, match="latitude"):
        solar("sunrise", "52.52", 13.4)  # type: ignore[arg-type]


def test_solar_repr_and_equality() -> None:
    sunset = solar("sunset", BERLIN_LAT, BERLIN_LON)
    assert repr(sunset) == "<solar: sunset at latitude 52.52, longitude 13.4>"
    assert sunset == solar("sunset", 52.52, 13.4)
    assert hash(sunset) == hash(solar("sunset", 52.52, 13.4))
    assert sunset != solar("sunrise", BERLIN_LAT, BERLIN_LON)
    assert sunset != solar("sunset", BERLIN_LAT, 13.5)
