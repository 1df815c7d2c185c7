"""Crontabs and intervals as EventBridge expressions, checked by fire times, not by strings.

The key test: for each crontab and time zone, the next 100 ticks of the crontab (cloudq's own
calendar maths) equal the next 100 fire times of the translated expression according to
``tests.eventbridge_eval``, an evaluator written from the EventBridge documentation. The
evaluator runs with ``nonexistent="skip"``: EventBridge Scheduler skips local times that do not
exist, and so does cloudq.

Daylight-saving changes the start moments straddle (UTC): Europe/Berlin 2026-03-29 01:00 and
2026-10-25 01:00; America/New_York 2026-03-08 07:00 and 2026-11-01 06:00;
Australia/Lord_Howe (a 30-minute change) 2026-04-04 15:00 (02:00 -> 01:30 local) and
2026-10-03 15:30 (02:00 -> 02:30 local).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloudq.errors import ScheduleError
from cloudq.scheduler.eventbridge import (
    Expression,
    cron_expression,
    expression_for,
    rate_expression,
)
from cloudq.scheduler.schedules import Schedule, crontab, schedule, solar
from tests.eventbridge_eval import fire_times

COUNT = 100


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def eventbridge(expression: str, start: datetime, count: int, tz: str) -> list[datetime]:
    return fire_times(expression, start, count, tz, nonexistent="skip")


CRONTABS: dict[str, crontab] = {
    "every_minute": crontab(),
    "every_15_minutes": crontab(minute="*/15"),
    "every_7_minutes": crontab(minute="*/7"),
    "quarter_past_every_3_hours": crontab(minute="7-52/15", hour="*/3"),
    "every_minute_of_hour_2": crontab(minute="*", hour=2),
    "hourly_9_to_17": crontab(0, "9-17"),
    "lists": crontab("0,30", "8,12,18"),
    "half_hours_1_to_3": crontab("0,30", "1-3"),
    "daily_0230": crontab(30, 2),
    "odd_hours": crontab(0, "1-23/2"),
    "hours_22_to_2_on_sunday": crontab(0, "22-2", "sun"),
    "weekdays_mon_fri": crontab(0, 9, "mon-fri"),
    "weekend_sat_sun": crontab(30, 10, "sat,sun"),
    "sunday_as_0": crontab(0, 3, 0),
    "sunday_as_7": crontab(0, 3, 7),
    "saturday_as_6": crontab(45, 23, 6),
    "fri_mon_wrap": crontab(15, 22, "fri-mon"),
    "dow_1_7_every_day": crontab(0, 5, "1-7"),
    "friday_0800": crontab(0, 8, "fri"),
    "tue_thu_steps": crontab("5/20", "8-17/2", "tue,thu"),
    "day_1": crontab(0, 0, day_of_month=1),
    "day_15": crontab(0, 6, day_of_month=15),
    "day_31": crontab(0, 12, day_of_month=31),
    "last_days_28_31": crontab(0, 23, day_of_month="28-31"),
    "every_10th_day": crontab(0, 4, day_of_month="*/10"),
    "months_list": crontab(0, 0, day_of_month=1, month_of_year="jan,apr,jul,oct"),
    "quarterly_step": crontab(0, 0, day_of_month=1, month_of_year="*/3"),
    "winter_months_wrap": crontab(45, 1, month_of_year="nov-feb"),
    "first_and_15th_mar_to_oct": crontab(30, 1, day_of_month="1,15", month_of_year="mar-oct"),
    "leap_days_half_hourly": crontab("*/30", day_of_month=29, month_of_year="feb"),
}

# Each zone's start moments: shortly before its DST changes (so that even every-minute crontabs
# cross them within 100 ticks; sparse crontabs cross many of them anyway), and a year end.
STARTS: dict[str, list[datetime]] = {
    "UTC": [utc(2026, 12, 31, 23, 20)],
    "Asia/Kolkata": [utc(2026, 3, 28, 23)],  # +05:30, no DST
    "Europe/Berlin": [utc(2026, 3, 29, 0, 20), utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 20)],
    # the second one is 01:30 EDT, inside the hour that repeats
    "America/New_York": [utc(2026, 3, 8, 6, 20), utc(2026, 11, 1, 5, 30)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 14, 20), utc(2026, 10, 3, 15)],
}


def expression(name: str, tz: str = "UTC") -> str:
    return expression_for(name, CRONTABS[name], timezone=tz).expression


def first_difference(ours: list[datetime], theirs: list[datetime]) -> str:
    for number, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        if mine != reference:
            return (f"tick #{number} is {mine:%Y-%m-%dT%H:%MZ}, "
                    f"EventBridge {reference:%Y-%m-%dT%H:%MZ}")
    return "same ticks"


@pytest.mark.parametrize("tz", list(STARTS))
@pytest.mark.parametrize("name", list(CRONTABS))
def test_crontab_and_its_expression_fire_at_the_same_times(name: str, tz: str) -> None:
    sched = CRONTABS[name]
    translated = expression(name, tz)
    for start in STARTS[tz]:
        ours = list(islice(sched.ticks(start, tz), COUNT))
        theirs = eventbridge(translated, start, COUNT, tz)
        assert ours == theirs, (
            f"{name} {sched!r} as {translated} in {tz}, from {start:%Y-%m-%dT%H:%MZ}: "
            f"{first_difference(ours, theirs)}")


def test_the_comparison_covers_the_daylight_saving_changes() -> None:
    """The starts are close enough to the changes that they are crossed, even every minute."""
    sched = CRONTABS["every_minute"]
    for tz, starts in STARTS.items():
        offsets = set()
        for start in starts:
            ticks = list(islice(sched.ticks(start, tz), COUNT))
            offsets |= {tick.astimezone(ZoneInfo(tz)).utcoffset() for tick in ticks}
        assert len(offsets) == (1 if tz in ("UTC", "Asia/Kolkata") else 2), tz


def test_skipped_and_repeated_local_times_agree_with_eventbridge() -> None:
    # a hand-checked slice of the big comparison: 02:30 in Berlin across both changes
    daily = crontab(30, 2)
    translated = expression_for("daily", daily, timezone="Europe/Berlin").expression
    spring = eventbridge(translated, utc(2026, 3, 27), 3, "Europe/Berlin")
    assert spring == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]
    autumn = eventbridge(translated, utc(2026, 10, 24), 3, "Europe/Berlin")
    assert autumn == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # Lord Howe: 02:00-02:29 does not exist on 2026-10-04, 01:30-01:59 repeats on 2026-04-05
    half_hours = CRONTABS["half_hours_1_to_3"]
    tz = "Australia/Lord_Howe"
    walls = [tick.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M")
             for tick in islice(half_hours.ticks(utc(2026, 10, 3, 14), tz), 5)]
    assert walls == ["10-04 01:00", "10-04 01:30", "10-04 02:30", "10-04 03:00", "10-04 03:30"]
    # 01:00 and 01:30 at +11:00, not 01:30 again at +10:30, then 02:00 and 02:30 at +10:30
    ticks = list(islice(half_hours.ticks(utc(2026, 4, 4, 13, 50), tz), 4))
    assert ticks == [utc(2026, 4, 4, 14), utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 30),
                     utc(2026, 4, 4, 16)]
    assert eventbridge(expression("half_hours_1_to_3", tz),
                       utc(2026, 4, 4, 13, 50), 4, tz) == ticks


@pytest.mark.parametrize("name", list(CRONTABS))
def test_cron_expression_shape(name: str) -> None:
    sched = CRONTABS[name]
    result = expression_for(name, sched)
    assert result == Expression(result.expression)  # no fan-out
    assert result.expression.startswith("cron(") and result.expression.endswith(")")
    fields = result.expression[len("cron("):-1].split(" ")
    assert len(fields) == 6
    assert [fields[2], fields[4]].count("?") == 1
    assert (fields[2] == "?") == sched.restricts_day_of_week
    assert fields[5] == "*"
    assert cron_expression(name, sched) == result.expression
    # the time zone is a separate setting, never part of the expression; rules in UTC are the same
    assert expression_for(name, sched, timezone="Asia/Kolkata").expression == result.expression
    assert expression_for(name, sched, target="rules").expression == result.expression


# -- day of week, by fire times -----------------------------------------------------------------
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)  # Python's weekday()


@pytest.mark.parametrize(("day_of_week", "weekdays"), [
    (0, {SUN}), (7, {SUN}), ("sun", {SUN}), ("sunday", {SUN}), ("7", {SUN}),
    (1, {MON}), ("mon", {MON}), (2, {TUE}), (3, {WED}), (4, {THU}),
    (5, {FRI}), ("fri", {FRI}), (6, {SAT}), ("saturday", {SAT}),
    ("mon-fri", {MON, TUE, WED, THU, FRI}),
    ("sat,sun", {SAT, SUN}),
    ("fri-mon", {FRI, SAT, SUN, MON}),
    ("5-7", {FRI, SAT, SUN}),
    ("*/2", {SUN, TUE, THU, SAT}),
    ([0, "wed"], {SUN, WED}),
], ids=repr)
@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_day_of_week_maps_to_the_same_days(day_of_week: Any, weekdays: set[int],
                                            tz: str) -> None:
    sched = crontab(30, 0, day_of_week=day_of_week)  # 00:30: the UTC date differs at +14/-11
    translated = expression_for("dow", sched, timezone=tz).expression
    fires = eventbridge(translated, utc(2026, 1, 1), 3 * len(weekdays), tz)
    assert {fire.astimezone(ZoneInfo(tz)).weekday() for fire in fires} == weekdays
    assert fires == list(islice(sched.ticks(utc(2026, 1, 1), tz), len(fires)))


def test_a_sunday_crontab_fires_on_sundays() -> None:
    for sunday in (0, 7, "sun"):
        translated = expression_for("sunday", crontab(0, 12, day_of_week=sunday)).expression
        fires = eventbridge(translated, utc(2026, 1, 1), 5, "UTC")
        assert fires[0] == utc(2026, 1, 4, 12)
        assert all(fire.weekday() == SUN for fire in fires)


# -- intervals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("every", "text"), [
    (60, "rate(1 minute)"),
    (120, "rate(2 minutes)"),
    (3600, "rate(1 hour)"),
    (7200, "rate(2 hours)"),
    (86400, "rate(1 day)"),
    (172800, "rate(2 days)"),
    (5400, "rate(90 minutes)"),
    (90000, "rate(25 hours)"),
    (timedelta(minutes=5), "rate(5 minutes)"),
    (timedelta(days=7), "rate(7 days)"),
])
def test_whole_minutes_become_a_rate(every: float | timedelta, text: str) -> None:
    sched = schedule(every)
    assert expression_for("job", sched) == Expression(text)
    assert rate_expression("job", sched.seconds) == Expression(text)
    # a time zone or the rules target makes no difference to a rate
    assert expression_for("job", sched, timezone="Europe/Berlin", target="rules") == \
        Expression(text)
    fires = eventbridge(text, utc(2026, 3, 28, 23, 59), 3, "Europe/Berlin")
    assert [b - a for a, b in pairwise(fires)] == [sched.run_every] * 2


@pytest.mark.parametrize(("seconds", "text", "copies"), [
    (15, "rate(1 minute)", 4),
    (30, "rate(1 minute)", 2),
    (45, "rate(3 minutes)", 4),
    (90, "rate(3 minutes)", 2),
    (7, "rate(7 minutes)", 60),  # lcm(7, 60) = 420 s; the last copy waits 413 s
    (1, "rate(1 minute)", 60),
    (870, "rate(29 minutes)", 2),  # lcm 1740 s; the last copy waits 870 s <= 900
])
def test_sub_minute_intervals_fan_out(seconds: int, text: str, copies: int) -> None:
    got = expression_for("fast", schedule(seconds))
    assert got == Expression(text, every_s=seconds, copies=copies)
    period = eventbridge(got.expression, utc(2026, 1, 1), 2, "UTC")
    span = (period[1] - period[0]).total_seconds()
    assert span == copies * seconds == math.lcm(seconds, 60)  # the copies fill the period
    assert (copies - 1) * seconds <= 900  # SQS's longest delay


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.5, "0.5 s"), (7.5, "7.5 s"), (1000, "1000 s"), (930, "930 s"), (59, "59 s"),
    (61, "61 s"), (90.5, "90.5 s"),
])
def test_intervals_eventbridge_cannot_serve_are_refused(seconds: float, shown: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        expression_for("too-odd", schedule(seconds))
    message = str(caught.value)
    assert "'too-odd'" in message
    assert f"every {shown}" in message
    assert "cloudq beat" in message


# -- refusals -------------------------------------------------------------------------------------
def test_both_day_fields_are_refused() -> None:
    friday_13 = crontab(0, 0, day_of_week="fri", day_of_month=13)
    for target in ("scheduler", "rules"):
        with pytest.raises(ScheduleError) as caught:
            expression_for("friday-13", friday_13, target=target)  # type: ignore[arg-type]
        message = str(caught.value)
        assert "'friday-13'" in message
        assert "both day_of_month and day_of_week" in message
        assert repr(friday_13) in message
    with pytest.raises(ScheduleError, match="both day_of_month and day_of_week"):
        cron_expression("first-monday", crontab(0, 9, day_of_week="mon", day_of_month="1-7"))


def test_a_day_field_that_is_everything_is_not_a_restriction() -> None:
    # day_of_week="1-7" and day_of_month="1-31" are "*": nothing to refuse
    sched = crontab(0, 0, day_of_week="1-7", day_of_month=15)
    fires = eventbridge(expression_for("mid", sched).expression, utc(2026, 1, 1), 3, "UTC")
    assert fires == [utc(2026, 1, 15), utc(2026, 2, 15), utc(2026, 3, 15)]
    sched = crontab(0, 0, day_of_week="mon", day_of_month="1-31")
    fires = eventbridge(expression_for("mondays", sched).expression, utc(2026, 1, 1), 2, "UTC")
    assert fires == [utc(2026, 1, 5), utc(2026, 1, 12)]


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Etc/GMT-1"])
def test_rules_run_in_utc_only(tz: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        expression_for("nightly", crontab(0, 3), timezone=tz, target="rules")
    message = str(caught.value)
    assert "'nightly'" in message and "UTC only" in message and repr(tz) in message
    assert expression_for("nightly", crontab(0, 3), target="rules") == \
        Expression("cron(0 3 * * ? *)")


def test_solar_has_no_recurring_expression() -> None:
    with pytest.raises(ScheduleError) as caught:
        expression_for("dusk-lights", solar("sunset", 52.52, 13.4))
    message = str(caught.value)
    assert "'dusk-lights'" in message and "solar" in message


def test_an_unknown_schedule_type_is_refused() -> None:
    class Never(Schedule):
        def next_after(self, moment: datetime, tz: Any = UTC) -> datetime:
            raise NotImplementedError

        def last_at_or_before(self, moment: datetime, tz: Any = UTC) -> datetime | None:
            return None

        def __repr__(self) -> str:
            return "<never>"

    with pytest.raises(ScheduleError, match=r"schedule 'odd': <never> cannot be translated"):
        expression_for("odd", Never())
