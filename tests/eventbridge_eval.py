"""Reference evaluator of AWS EventBridge schedule expressions, for tests only.

Written from the EventBridge documentation (cron expression reference, and EventBridge Scheduler
"Schedule types"), independently of cloudq, so tests can check that a crontab translated to an
EventBridge expression fires at exactly the right instants.

Supported:

* ``cron(minutes hours day-of-month month day-of-week year)`` -- exactly six fields.

  ======================  ===================  =================
  field                   values               wildcards
  ======================  ===================  =================
  minutes                 0-59                 ``, - * /``
  hours                   0-23                 ``, - * /``
  day-of-month            1-31                 ``, - * ? /``
  month                   1-12 or JAN-DEC      ``, - * /``
  day-of-week             1-7 or SUN-SAT       ``, - * ?``
  year                    1970-2199            ``, - * /``
  ======================  ===================  =================

  Day-of-week counts 1 = SUN ... 7 = SAT. Names are case-insensitive. ``a/n`` means a, a+n, ...
  up to the field maximum; ``*/n`` starts at the field minimum; ``a-b/n`` steps within a..b.
  Exactly one of day-of-month and day-of-week must be ``?``; the other one alone selects days.
  ``L``, ``W`` and ``#`` are valid EventBridge but refused here (ValueError). Day-of-week has
  no ``/`` in the EventBridge table, so it is refused too. Wrap-around ranges (``FRI-MON``)
  are refused as well.

* ``rate(N unit)`` with unit ``minute``/``hour``/``day`` when N == 1 and ``minutes``/``hours``/
  ``days`` otherwise; fires at ``start + k * N * unit`` (absolute durations, as Scheduler does).

Time zones: cron fields match local wall-clock time in ``tz``. A wall time inside a DST gap is
mapped with ``fold=0`` by default (``nonexistent="fold0"``, i.e. 02:30 in a 02:00->03:00 gap
becomes 02:30 at the pre-transition offset, which is 03:30 after it). Note that the Scheduler
documentation says such an invocation is *skipped*; pass ``nonexistent="skip"`` for that. An
ambiguous wall time (DST fall-back) fires once, at its first occurrence (``fold=0``).
"""

from __future__ import annotations

import calendar
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["fire_times"]

Nonexistent = Literal["fold0", "skip"]

#: How far past ``start`` the cron search looks before giving up.
SEARCH_YEARS = 200

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        start=1,
    )
}
_DOW_NAMES = {
    name: number
    for number, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    allows_step: bool
    allows_question: bool


_MINUTES = _Field("minutes", 0, 59, {}, allows_step=True, allows_question=False)
_HOURS = _Field("hours", 0, 23, {}, allows_step=True, allows_question=False)
_DOM = _Field("day-of-month", 1, 31, {}, allows_step=True, allows_question=True)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, allows_step=True, allows_question=False)
_DOW = _Field("day-of-week", 1, 7, _DOW_NAMES, allows_step=False, allows_question=True)
_YEAR = _Field("year", 1970, 2199, {}, allows_step=True, allows_question=False)
_FIELDS = (_MINUTES, _HOURS, _DOM, _MONTH, _DOW, _YEAR)

_ITEM = re.compile(r"^(?P<base>\*|[A-Z0-9]+(?:-[A-Z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int] | None  # None: "?"
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # None: "?"; 1 = SUN ... 7 = SAT
    years: frozenset[int]

    def matches_day(self, day: date) -> bool:
        if self.days_of_month is not None:
            return day.day in self.days_of_month
        assert self.days_of_week is not None
        return _eventbridge_weekday(day) in self.days_of_week


def _eventbridge_weekday(day: date) -> int:
    """1 = Sunday ... 7 = Saturday (Python: Monday = 0 ... Sunday = 6)."""
    return (day.weekday() + 1) % 7 + 1


# -- parsing ---------------------------------------------------------------------------------


def _unsupported(field: _Field, item: str) -> ValueError:
    return ValueError(
        f"{field.name}: {item!r} uses L, W or # (valid EventBridge, but unsupported by this "
        "test evaluator)"
    )


def _value(token: str, field: _Field, item: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token in field.names:
        number = field.names[token]
    elif field.allows_question and any(char in token for char in "LW"):
        raise _unsupported(field, item)
    else:
        raise ValueError(f"{field.name}: invalid value {token!r}")
    if not field.low <= number <= field.high:
        raise ValueError(f"{field.name}: {number} out of range {field.low}-{field.high}")
    return number


def _item(item: str, field: _Field) -> set[int]:
    if "#" in item and field is _DOW:
        raise _unsupported(field, item)
    match = _ITEM.match(item)
    if match is None:
        raise ValueError(f"{field.name}: malformed item {item!r}")
    base, step_text = match.group("base"), match.group("step")
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, last = base.split("-")
        low, high = _value(first, field, item), _value(last, field, item)
        if low > high:
            raise ValueError(f"{field.name}: wrap-around range {item!r} unsupported")
    else:
        low = _value(base, field, item)
        high = field.high if step_text is not None else low
    if step_text is None:
        return set(range(low, high + 1))
    if not field.allows_step:
        raise ValueError(f"{field.name}: '/' increments are not allowed in this field")
    step = int(step_text)
    if step < 1:
        raise ValueError(f"{field.name}: increment must be positive in {item!r}")
    return set(range(low, high + 1, step))


def _parse_field(text: str, field: _Field) -> frozenset[int] | None:
    """The set of values the field selects, or None for '?'."""
    text = text.upper()
    if text == "?":
        if not field.allows_question:
            raise ValueError(f"{field.name}: '?' is only allowed in day-of-month/day-of-week")
        return None
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{field.name}: empty list item in {text!r}")
        values |= _item(item, field)
    return frozenset(values)


def _required(values: frozenset[int] | None, field: _Field) -> frozenset[int]:
    if values is None:
        raise ValueError(f"{field.name}: '?' not allowed")
    return values


def _parse_cron(body: str) -> _Cron:
    parts = body.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(f"cron expression needs exactly 6 fields, got {len(parts)}: {body!r}")
    minutes, hours, dom, month, dow, year = (
        _parse_field(text, field) for text, field in zip(parts, _FIELDS, strict=True)
    )
    if (dom is None) == (dow is None):
        raise ValueError(
            "day-of-month/day-of-week: exactly one of the two must be '?' "
            f"(got {parts[2]!r} and {parts[4]!r})"
        )
    return _Cron(
        minutes=tuple(sorted(_required(minutes, _MINUTES))),
        hours=tuple(sorted(_required(hours, _HOURS))),
        days_of_month=dom,
        months=_required(month, _MONTH),
        days_of_week=dow,
        years=_required(year, _YEAR),
    )


_RATE = re.compile(r"^(?P<value>[0-9]+) +(?P<unit>[a-z]+)$")
_RATE_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _parse_rate(body: str) -> timedelta:
    match = _RATE.match(body.strip())
    if match is None:
        raise ValueError(f"rate expression must be 'rate(N unit)', got {body!r}")
    value, unit = int(match.group("value")), match.group("unit")
    if value < 1:
        raise ValueError(f"rate value must be a positive integer, got {value}")
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ValueError(f"rate unit must be minute(s), hour(s) or day(s), got {unit!r}")
    expected = singular if value == 1 else singular + "s"
    if unit != expected:
        raise ValueError(f"rate({value} {unit}): use {expected!r} for a value of {value}")
    return value * _RATE_UNITS[singular]


def _split_expression(expression: str) -> tuple[str, str]:
    text = expression.strip()
    for kind in ("cron", "rate"):
        if text.startswith(kind + "(") and text.endswith(")"):
            return kind, text[len(kind) + 1 : -1]
    raise ValueError(f"not a cron(...) or rate(...) expression: {expression!r}")


# -- evaluation ------------------------------------------------------------------------------


def _matching_days(cron: _Cron, first: date, last_year: int) -> Iterator[date]:
    """Local calendar days from ``first`` through ``last_year`` that match the day fields."""
    for year in range(first.year, last_year + 1):
        if year not in cron.years:
            continue
        for month in sorted(cron.months):
            if (year, month) < (first.year, first.month):
                continue
            start_day = first.day if (year, month) == (first.year, first.month) else 1
            for day_number in range(start_day, calendar.monthrange(year, month)[1] + 1):
                day = date(year, month, day_number)
                if cron.matches_day(day):
                    yield day


def _to_utc(
    day: date, hour: int, minute: int, zone: ZoneInfo, nonexistent: Nonexistent
) -> datetime | None:
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)  # fold=0
    instant = local.astimezone(UTC)
    round_trip = instant.astimezone(zone).replace(tzinfo=None)
    if nonexistent == "skip" and round_trip != local.replace(tzinfo=None):
        return None  # the wall time does not exist in ``zone`` (DST gap)
    return instant


def _cron_instants(
    cron: _Cron, start: datetime, zone: ZoneInfo, nonexistent: Nonexistent
) -> Iterator[datetime]:
    """UTC fire instants after ``start``, strictly increasing, de-duplicated.

    Days are walked in local order, but across a DST gap local order and UTC order can differ
    (and fold=0 can map two wall times onto one instant), so instants go through a heap and
    are released only once no later local day can produce an earlier instant: a wall time on
    local day D maps to UTC >= D 00:00 - 1 day, because UTC offsets are less than a day.
    """
    first = start.astimezone(zone).date() - timedelta(days=2)
    last_year = min(_YEAR.high, start.astimezone(zone).year + SEARCH_YEARS)
    pending: list[datetime] = []
    last: datetime = start
    for day in _matching_days(cron, first, last_year):
        floor = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
        while pending and pending[0] < floor:
            instant = heapq.heappop(pending)
            if instant > last:
                last = instant
                yield instant
        for hour in cron.hours:
            for minute in cron.minutes:
                instant = _to_utc(day, hour, minute, zone, nonexistent)
                if instant is not None and instant > start:
                    heapq.heappush(pending, instant)
    while pending:
        instant = heapq.heappop(pending)
        if instant > last:
            last = instant
            yield instant


def fire_times(
    expression: str,
    start: datetime,
    count: int,
    tz: str = "UTC",
    *,
    nonexistent: Nonexistent = "fold0",
) -> list[datetime]:
    """The next ``count`` fire times of ``expression`` strictly after ``start``, in UTC.

    ``start`` must be timezone-aware. ``tz`` is the IANA zone the schedule is evaluated in
    (EventBridge Scheduler's ScheduleExpressionTimezone). For ``rate(...)`` the schedule is
    anchored at ``start``: the results are ``start + k * rate`` for k = 1..count. Raises
    ValueError for an invalid or unsupported expression, or when fewer than ``count`` cron
    fire times exist within :data:`SEARCH_YEARS` years (or before the year 2200).
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be a timezone-aware datetime")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if nonexistent not in ("fold0", "skip"):
        raise ValueError(f"nonexistent must be 'fold0' or 'skip', got {nonexistent!r}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc
    kind, body = _split_expression(expression)
    if kind == "rate":
        period = _parse_rate(body)
        anchor = start.astimezone(UTC)
        return [anchor + k * period for k in range(1, count + 1)]
    cron = _parse_cron(body)
    results: list[datetime] = []
    if count == 0:
        return results
    for instant in _cron_instants(cron, start.astimezone(UTC), zone, nonexistent):
        results.append(instant)
        if len(results) == count:
            return results
    raise ValueError(
        f"{expression!r} fires only {len(results)} time(s) after {start.isoformat()} within "
        f"{SEARCH_YEARS} years (need {count})"
    )
