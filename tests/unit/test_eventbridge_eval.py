"""The test-only EventBridge evaluator against hand-computed fire times.

Calendar anchors used below: 2026-11-23 is a Monday (so 2026-11-20 is a Friday, 2026-11-29 a
Sunday); Europe/Berlin switches CET->CEST on 2026-03-29 at 01:00 UTC and back on 2026-10-25 at
01:00 UTC; America/New_York is UTC-5 in January.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from tests.eventbridge_eval import fire_times


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- cron: basic fields ------------------------------------------------------------------------


def test_daily_noon() -> None:
    assert fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 12),
        utc(2026, 1, 2, 12),
        utc(2026, 1, 3, 12),
    ]


def test_start_is_exclusive() -> None:
    assert fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1, 12), 1) == [utc(2026, 1, 2, 12)]
    assert fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1, 11, 59, 59), 1) == [utc(2026, 1, 1, 12)]


def test_results_are_utc_and_start_may_be_in_any_zone() -> None:
    start = datetime(2026, 1, 1, 13, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 12:00 UTC
    times = fire_times("cron(0 12 * * ? *)", start, 1)
    assert times == [utc(2026, 1, 2, 12)]
    assert times[0].tzinfo is UTC


def test_count_zero() -> None:
    assert fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1), 0) == []


def test_weekdays_monday_to_friday() -> None:
    expected = [
        utc(2026, 11, 23, 8),  # Monday
        utc(2026, 11, 24, 8),
        utc(2026, 11, 25, 8),
        utc(2026, 11, 26, 8),
        utc(2026, 11, 27, 8),  # Friday
        utc(2026, 11, 30, 8),  # next Monday
    ]
    start = utc(2026, 11, 20, 9)  # Friday, after 08:00
    assert fire_times("cron(0 8 ? * 2-6 *)", start, 6) == expected
    assert fire_times("cron(0 8 ? * MON-FRI *)", start, 6) == expected
    assert fire_times("cron(0 8 ? * mon-fri *)", start, 6) == expected
    assert fire_times("cron(0 8 ? * 2,3,4,5,6 *)", start, 6) == expected


def test_day_of_week_1_is_sunday_and_7_is_saturday() -> None:
    sundays = [utc(2026, 11, 29), utc(2026, 12, 6), utc(2026, 12, 13)]
    assert fire_times("cron(0 0 ? * 1 *)", utc(2026, 11, 23), 3) == sundays
    assert fire_times("cron(0 0 ? * SUN *)", utc(2026, 11, 23), 3) == sundays
    assert fire_times("cron(0 0 ? * 7 *)", utc(2026, 11, 23), 1) == [utc(2026, 11, 28)]
    assert fire_times("cron(0 0 ? * SAT *)", utc(2026, 11, 23), 1) == [utc(2026, 11, 28)]
    assert fire_times("cron(0 0 ? * 2 *)", utc(2026, 11, 22), 1) == [utc(2026, 11, 23)]
    assert fire_times("cron(0 0 ? * WED *)", utc(2026, 11, 22), 1) == [utc(2026, 11, 25)]


def test_every_fifteen_minutes() -> None:
    assert fire_times("cron(0/15 * * * ? *)", utc(2026, 1, 1, 10, 7), 5) == [
        utc(2026, 1, 1, 10, 15),
        utc(2026, 1, 1, 10, 30),
        utc(2026, 1, 1, 10, 45),
        utc(2026, 1, 1, 11, 0),
        utc(2026, 1, 1, 11, 15),
    ]


def test_increments() -> None:
    start = utc(2026, 1, 1)
    minutes = [t.minute for t in fire_times("cron(1/10 0 * * ? *)", start, 6)]
    assert minutes == [1, 11, 21, 31, 41, 51]
    minutes = [
        t.minute for t in fire_times("cron(*/20 0 * * ? *)", start - timedelta(minutes=1), 3)
    ]
    assert minutes == [0, 20, 40]
    minutes = [t.minute for t in fire_times("cron(5-20/5 0 * * ? *)", start, 4)]
    assert minutes == [5, 10, 15, 20]
    hours = [t.hour for t in fire_times("cron(0 */6 * * ? *)", start, 4)]
    assert hours == [6, 12, 18, 0]


def test_day_of_month_list_and_increment() -> None:
    assert fire_times("cron(0 0 1/10 * ? *)", utc(2026, 1, 1), 4) == [
        utc(2026, 1, 11),
        utc(2026, 1, 21),
        utc(2026, 1, 31),
        utc(2026, 2, 1),
    ]


def test_day_31_skips_short_months() -> None:
    assert fire_times("cron(0 0 31 * ? *)", utc(2026, 1, 1), 4) == [
        utc(2026, 1, 31),
        utc(2026, 3, 31),
        utc(2026, 5, 31),
        utc(2026, 7, 31),
    ]


def test_month_names() -> None:
    assert fire_times("cron(0 9 1 JAN,JUL ? *)", utc(2026, 1, 1, 9), 3) == [
        utc(2026, 7, 1, 9),
        utc(2027, 1, 1, 9),
        utc(2027, 7, 1, 9),
    ]
    assert fire_times("cron(0 9 1 jan,7 ? *)", utc(2026, 1, 1, 9), 1) == [utc(2026, 7, 1, 9)]
    assert [t.month for t in fire_times("cron(0 0 1 JAN/3 ? *)", utc(2025, 12, 31), 4)] == [
        1,
        4,
        7,
        10,
    ]
    assert [t.month for t in fire_times("cron(0 0 1 MAY-AUG ? *)", utc(2026, 1, 1), 5)] == [
        5,
        6,
        7,
        8,
        5,
    ]


def test_year_field() -> None:
    assert fire_times("cron(0 12 1 1 ? 2030-2032)", utc(2026, 1, 1), 3) == [
        utc(2030, 1, 1, 12),
        utc(2031, 1, 1, 12),
        utc(2032, 1, 1, 12),
    ]
    with pytest.raises(ValueError, match="fires only 3"):
        fire_times("cron(0 12 1 1 ? 2030-2032)", utc(2026, 1, 1), 4)


def test_february_29_only_in_leap_years() -> None:
    assert fire_times("cron(0 0 29 FEB ? *)", utc(2026, 1, 1), 3) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
        utc(2036, 2, 29),
    ]


def test_never_firing_schedule_raises() -> None:
    with pytest.raises(ValueError, match="fires only 0"):
        fire_times("cron(0 0 31 2 ? *)", utc(2026, 1, 1), 1)


# -- cron: time zones --------------------------------------------------------------------------


def test_local_date_differs_from_utc_date() -> None:
    # 2026-01-01 00:00 UTC is 2025-12-31 19:00 in New York: 20:00 that evening still counts.
    assert fire_times("cron(0 20 * * ? *)", utc(2026, 1, 1), 2, "America/New_York") == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 2, 1),
    ]


def test_berlin_across_spring_forward() -> None:
    assert fire_times("cron(0 9 * * ? *)", utc(2026, 3, 27), 4, "Europe/Berlin") == [
        utc(2026, 3, 27, 8),  # CET
        utc(2026, 3, 28, 8),
        utc(2026, 3, 29, 7),  # CEST from 01:00 UTC that morning
        utc(2026, 3, 30, 7),
    ]


def test_berlin_across_fall_back() -> None:
    assert fire_times("cron(0 9 * * ? *)", utc(2026, 10, 24), 3, "Europe/Berlin") == [
        utc(2026, 10, 24, 7),  # CEST
        utc(2026, 10, 25, 8),  # CET from 01:00 UTC that morning
        utc(2026, 10, 26, 8),
    ]


def test_wall_time_in_spring_gap_maps_with_fold_0() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29; fold=0 reads it at CET (+1): 01:30 UTC.
    expected = [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    assert fire_times("cron(30 2 * * ? *)", utc(2026, 3, 28), 3, "Europe/Berlin") == expected


def test_wall_time_in_spring_gap_skipped_on_request() -> None:
    times = fire_times(
        "cron(30 2 * * ? *)", utc(2026, 3, 28), 2, "Europe/Berlin", nonexistent="skip"
    )
    assert times == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]


def test_spring_gap_results_stay_strictly_increasing() -> None:
    # Local 02:00/02:30 (gap, fold=0) and 03:00/03:30 CEST are the same two instants.
    expression = "cron(0,30 2,3 * * ? *)"
    assert fire_times(expression, utc(2026, 3, 29), 3, "Europe/Berlin") == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 0),  # 02:00 CEST
    ]
    times = fire_times(expression, utc(2026, 3, 1), 120, "Europe/Berlin")
    assert all(a < b for a, b in pairwise(times))


def test_ambiguous_wall_time_fires_once() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET).
    assert fire_times("cron(30 2 * * ? *)", utc(2026, 10, 24), 3, "Europe/Berlin") == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    # Half-hourly: the repeated hour (02:00-02:59 CET, 01:00-01:59 UTC) does not fire again.
    start = utc(2026, 10, 24, 23, 30)  # 01:30 CEST
    assert fire_times("cron(0/30 * * * ? *)", start, 3, "Europe/Berlin") == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
    ]


# -- rate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "step"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(2 hours)", timedelta(hours=2)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(3 days)", timedelta(days=3)),
    ],
)
def test_rate_is_anchored_at_start(expression: str, step: timedelta) -> None:
    start = utc(2026, 1, 1, 10, 0, 30)
    assert fire_times(expression, start, 3) == [start + step, start + 2 * step, start + 3 * step]


def test_rate_examples_by_hand() -> None:
    start = utc(2026, 1, 1, 10, 0, 30)
    assert fire_times("rate(5 minutes)", start, 2) == [
        utc(2026, 1, 1, 10, 5, 30),
        utc(2026, 1, 1, 10, 10, 30),
    ]
    assert fire_times("rate(2 hours)", start, 2) == [
        utc(2026, 1, 1, 12, 0, 30),
        utc(2026, 1, 1, 14, 0, 30),
    ]


def test_rate_days_are_24_hours_across_dst() -> None:
    start = utc(2026, 3, 28, 8)  # 09:00 CET
    assert fire_times("rate(1 day)", start, 2, "Europe/Berlin") == [
        utc(2026, 3, 29, 8),  # 10:00 CEST
        utc(2026, 3, 30, 8),
    ]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(1 minutes)", "'minute'"),
        ("rate(5 minute)", "'minutes'"),
        ("rate(1 hours)", "'hour'"),
        ("rate(2 day)", "'days'"),
        ("rate(0 minutes)", "positive"),
        ("rate(5 weeks)", "unit"),
        ("rate(5)", "rate"),
        ("rate(-5 minutes)", "rate"),
        ("cron(0 12 ? * ? *)", "exactly one"),
        ("cron(0 12 * * * *)", "exactly one"),
        ("cron(0 12 1 * MON *)", "exactly one"),
        ("cron(0 12 * * ?)", "6 fields"),
        ("cron(0 12 * * ? * *)", "6 fields"),
        ("cron(60 12 * * ? *)", "minutes"),
        ("cron(-1 12 * * ? *)", "minutes"),
        ("cron(0 24 * * ? *)", "hours"),
        ("cron(0 12 0 * ? *)", "day-of-month"),
        ("cron(0 12 32 * ? *)", "day-of-month"),
        ("cron(0 12 1 13 ? *)", "month"),
        ("cron(0 12 1 FOO ? *)", "month"),
        ("cron(0 12 ? * 0 *)", "day-of-week"),
        ("cron(0 12 ? * 8 *)", "day-of-week"),
        ("cron(0 12 ? * MON-FOO *)", "day-of-week"),
        ("cron(0 12 ? * */2 *)", "day-of-week"),
        ("cron(0 12 ? * FRI-MON *)", "day-of-week"),
        ("cron(0 12 1 * ? 1969)", "year"),
        ("cron(0 12 1 * ? 2200)", "year"),
        ("cron(? 12 1 * ? *)", "minutes"),
        ("cron(*/0 12 1 * ? *)", "minutes"),
        ("cron(0, 12 1 * ? *)", "minutes"),
        ("cron(0 12- 1 * ? *)", "hours"),
        ("cron(0 12 1 * ?,1 *)", "day-of-week"),
        ("CRON(0 12 * * ? *)", "cron"),
        ("0 12 * * *", "cron"),
    ],
)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fire_times(expression, utc(2026, 1, 1), 1)


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("cron(15 10 ? * 6L 2019-2022)", "day-of-week"),
        ("cron(0 12 L * ? *)", "day-of-month"),
        ("cron(0 12 15W * ? *)", "day-of-month"),
        ("cron(0 12 LW * ? *)", "day-of-month"),
        ("cron(0 12 ? * 3#2 *)", "day-of-week"),
    ],
)
def test_l_w_hash_are_unsupported(expression: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"{field}.*unsupported"):
        fire_times(expression, utc(2019, 1, 1), 1)


def test_other_argument_errors() -> None:
    with pytest.raises(ValueError, match="aware"):
        fire_times("cron(0 12 * * ? *)", datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError, match="time zone"):
        fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1), 1, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="count"):
        fire_times("cron(0 12 * * ? *)", utc(2026, 1, 1), -1)


# -- speed -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "count"),
    [
        ("cron(0 0 1 * ? *)", 100),
        ("cron(0 9 1 JAN ? *)", 100),
        ("cron(0 12 ? * 1 *)", 100),
        ("cron(0 0 29 FEB ? *)", 49),  # every leap year 1992..2188 (2100 is not one)
    ],
)
def test_sparse_fire_times_are_fast(expression: str, count: int) -> None:
    began = time.perf_counter()
    times = fire_times(expression, utc(1990, 1, 1), count, "Europe/Berlin")
    assert time.perf_counter() - began < 0.5
    assert len(times) == count
    assert all(a < b for a, b in pairwise(times))
