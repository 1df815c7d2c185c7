"""Schedules with Celery's semantics: ``crontab``, ``schedule`` (an interval) and ``solar``.

Each answers two questions in a time zone: the first tick after a moment, and the last tick at or
before it. The local beat and the EventBridge translation both ask them, so the two agree.

Wall-clock schedules (``crontab``) follow EventBridge Scheduler across daylight-saving changes:
a local time that does not exist (the hour skipped in spring) has no tick, and a local time that
happens twice (the hour repeated in autumn) ticks once, the first time. croniter does the calendar
maths; it is imported on first use, so ``import cloudq`` stays light.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudq.errors import ScheduleError

MAX_STEPS = 10_000
"""Candidates a search looks at before it gives up (a crontab that never matches, say)."""
REPEATED_HOURS_AHEAD = timedelta(hours=2, seconds=1)
"""How far the clock can go back at a daylight-saving change (any zone, with room)."""


class schedstate(NamedTuple):
    """What ``is_due`` returns: whether to run now, and seconds until it is worth asking again."""

    is_due: bool
    next: float


def zone(name: str | tzinfo) -> tzinfo:
    """A time zone from an IANA name (``"Europe/Berlin"``) or a tzinfo."""
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as "
                            "'Europe/Berlin' or 'UTC')") from exc


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Schedule(abc.ABC):
    """When a periodic task is due."""

    @abc.abstractmethod
    def next_after(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        """The first tick strictly after ``moment`` (aware, UTC)."""

    @abc.abstractmethod
    def last_at_or_before(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime | None:
        """The latest tick at or before ``moment`` (aware, UTC), or None if there is none."""

    def ticks(self, after: datetime, tz: str | tzinfo = UTC) -> Iterator[datetime]:
        """Ticks after ``after``, in order, for ever."""
        moment = _aware(after)
        while True:
            moment = self.next_after(moment, tz)
            yield moment

    def remaining_estimate(self, last_run_at: datetime, tz: str | tzinfo = UTC,
                           now: datetime | None = None) -> timedelta:
        """Time from ``now`` until the first tick after ``last_run_at`` (negative if overdue)."""
        now = _aware(now or datetime.now(UTC))
        return self.next_after(_aware(last_run_at), tz) - now

    def is_due(self, last_run_at: datetime, tz: str | tzinfo = UTC,
               now: datetime | None = None) -> schedstate:
        """Celery's question: is a tick due since ``last_run_at``, and when to ask again."""
        now = _aware(now or datetime.now(UTC))
        remaining = self.remaining_estimate(last_run_at, tz, now).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        return schedstate(True, max(0.0, (self.next_after(now, tz) - now).total_seconds()))


# -- interval -----------------------------------------------------------------------------------
class schedule(Schedule):
    """Every ``run_every`` (seconds or a timedelta).

    Ticks are aligned to whole multiples of the interval since the Unix epoch, so every beat
    process agrees on which tick is due without talking to the others (``schedule(30)`` ticks at
    :00 and :30 of each minute). Celery counts from the last run instead."""

    def __init__(self, run_every: float | timedelta) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise ScheduleError(
                f"an interval schedule needs a positive number of seconds, got {run_every!r}")
        self.seconds = float(seconds)

    @property
    def run_every(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def next_after(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        ts = _aware(moment).timestamp()
        return datetime.fromtimestamp((math.floor(ts / self.seconds) + 1) * self.seconds, UTC)

    def last_at_or_before(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        ts = _aware(moment).timestamp()
        return datetime.fromtimestamp(math.floor(ts / self.seconds) * self.seconds, UTC)

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(("schedule", self.seconds))


# -- crontab ------------------------------------------------------------------------------------
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
WEEKDAYS = {name: n for n, day in enumerate(_DAYS) for name in (day, day[:3])}
MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: dict[str, int]
    top: int | None = None
    """A value accepted above ``high`` and folded to ``low`` (7 = Sunday in day_of_week)."""

    @property
    def values(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))


MINUTE = CronField("minute", 0, 59, {})
HOUR = CronField("hour", 0, 23, {})
DAY_OF_WEEK = CronField("day_of_week", 0, 6, WEEKDAYS, top=7)
DAY_OF_MONTH = CronField("day_of_month", 1, 31, {})
MONTH_OF_YEAR = CronField("month_of_year", 1, 12, MONTHS)


def parse_field(spec: Any, field: CronField) -> frozenset[int]:
    """The set of values a crontab field means: ``*``, ``*/15``, ``1-5``, ``mon-fri``, ``1,3``,
    ``8-17/2``, ints, or an iterable of those. Ranges may wrap (``fri-mon``)."""
    if isinstance(spec, bool):
        raise _bad(field, spec, "expected an int, a string or a list")
    if isinstance(spec, int):
        values = {_number(str(spec), field, spec)}
    elif isinstance(spec, str):
        if not spec.strip():
            raise _bad(field, spec, "it is empty")
        values = set().union(*(_part(part.strip(), field, spec) for part in spec.split(",")))
    elif isinstance(spec, Iterable):
        items = list(spec)
        if not items:
            raise _bad(field, spec, "it is empty")
        values = set().union(*(parse_field(item, field) for item in items))
    else:
        raise _bad(field, spec, "expected an int, a string or a list")
    if field.top is not None and field.top in values:
        values = (values - {field.top}) | {field.low}
    return frozenset(values)


def _part(part: str, field: CronField, spec: Any) -> set[int]:
    body, _, step_text = part.partition("/")
    step = 1
    if "/" in part:
        if not step_text.strip():
            raise _bad(field, spec, f"{part!r} has no step after '/'")
        step = _number(step_text, field, spec, names=False)
        if step < 1:
            raise _bad(field, spec, f"step {step_text!r} must be at least 1")
    if body == "*":
        span = list(range(field.low, field.high + 1))
    elif "-" in body:
        first_text, _, last_text = body.partition("-")
        first, last = _number(first_text, field, spec), _number(last_text, field, spec)
        if first <= last:
            span = list(range(first, last + 1))
        else:  # wraps around, as Celery allows: fri-mon, 22-2
            span = list(range(first, (field.top or field.high) + 1)) + \
                list(range(field.low, last + 1))
    else:
        first = _number(body, field, spec)
        span = list(range(first, field.high + 1)) if step_text else [first]
    return set(span[::step])


def _number(text: str, field: CronField, spec: Any, *, names: bool = True) -> int:
    text = text.strip().lower()
    if names and text in field.names:
        return field.names[text]
    try:
        value = int(text)
    except ValueError:
        short = [name for name in field.names if len(name) == 3]
        raise _bad(field, spec, f"{text!r} is not a number" +
                   (f" or a name ({', '.join(short)})" if short else "")) from None
    if not field.low <= value <= (field.top or field.high):
        raise _bad(field, spec, f"{value} is outside {field.low}-{field.top or field.high}")
    return value


def _bad(field: CronField, spec: Any, why: str) -> ScheduleError:
    return ScheduleError(f"crontab {field.name}={spec!r} is invalid: {why}")


class crontab(Schedule):
    """Celery's crontab: ``crontab(minute=30, hour=7)``, ``crontab(day_of_week="mon-fri")``.

    Day of week 0 or 7 is Sunday. When both ``day_of_month`` and ``day_of_week`` are
    restricted a day must match both (Celery's rule; classic cron would take either)."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*") -> None:
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = parse_field(minute, MINUTE)
        self.hour = parse_field(hour, HOUR)
        self.day_of_week = parse_field(day_of_week, DAY_OF_WEEK)
        self.day_of_month = parse_field(day_of_month, DAY_OF_MONTH)
        self.month_of_year = parse_field(month_of_year, MONTH_OF_YEAR)
        self._check_some_day_exists()

    def _check_some_day_exists(self) -> None:
        longest = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                   11: 30, 12: 31}
        if min(self.day_of_month) > max(longest[m] for m in self.month_of_year):
            raise ScheduleError(f"{self!r} never matches: no month of {sorted(self.month_of_year)} "
                                f"has day {min(self.day_of_month)}")

    @property
    def restricts_day_of_week(self) -> bool:
        return self.day_of_week != DAY_OF_WEEK.values

    @property
    def restricts_day_of_month(self) -> bool:
        return self.day_of_month != DAY_OF_MONTH.values

    @property
    def expression(self) -> str:
        """The five-field cron expression croniter evaluates (day of week 0 = Sunday)."""
        fields = (
            (self.minute, MINUTE), (self.hour, HOUR), (self.day_of_month, DAY_OF_MONTH),
            (self.month_of_year, MONTH_OF_YEAR), (self.day_of_week, DAY_OF_WEEK),
        )
        return " ".join("*" if values == field.values else ",".join(map(str, sorted(values)))
                        for values, field in fields)

    def _walk(self, local: datetime, *, forward: bool) -> Iterator[datetime]:
        from croniter import croniter

        walker = croniter(self.expression, local, day_or=False)
        for _ in range(MAX_STEPS):
            try:
                yield walker.get_next(datetime) if forward else walker.get_prev(datetime)
            except (ValueError, OverflowError):  # ran off the calendar (year 1 or 9999)
                break
        raise ScheduleError(f"{self!r}: no tick found (it may never exist on the clock of "
                            "this time zone)")

    def next_after(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        moment, where = _aware(moment), zone(tz)
        local = moment.astimezone(where).replace(tzinfo=None)
        for wall in self._walk(local, forward=True):
            at = _on_the_clock(wall, where)
            if at is not None and at > moment:
                return at
        raise AssertionError("unreachable")

    def last_at_or_before(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        moment, where = _aware(moment), zone(tz)
        local = moment.astimezone(where).replace(tzinfo=None, microsecond=0)
        # from a little ahead on the clock: in a repeated hour, ticks later on the clock may
        # be earlier in time (the first pass)
        for wall in self._walk(local + REPEATED_HOURS_AHEAD, forward=False):
            at = _on_the_clock(wall, where)
            if at is not None and at <= moment:
                return at
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        minute, hour, dow, dom, moy = (_spec_text(v) for v in self._orig)
        return f"<crontab: {minute} {hour} {dom} {moy} {dow} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(("crontab", self.expression))


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str | int):
        return str(spec)
    return ",".join(str(item) for item in spec)


def _on_the_clock(wall: datetime, where: tzinfo) -> datetime | None:
    """A local wall-clock time as UTC: its first occurrence, or None if the clock skips it."""
    at = wall.replace(tzinfo=where, fold=0).astimezone(UTC)
    if at.astimezone(where).replace(tzinfo=None) != wall:
        return None  # in the gap of a spring-forward change
    return at


# -- solar --------------------------------------------------------------------------------------
SOLAR_EVENTS = {
    # event: (astral function, depression in degrees below the horizon)
    "dawn_astronomical": ("dawn", 18.0),
    "dawn_nautical": ("dawn", 12.0),
    "dawn_civil": ("dawn", 6.0),
    "sunrise": ("sunrise", None),
    "solar_noon": ("noon", None),
    "sunset": ("sunset", None),
    "dusk_civil": ("dusk", 6.0),
    "dusk_nautical": ("dusk", 12.0),
    "dusk_astronomical": ("dusk", 18.0),
}
SOLAR_SEARCH_DAYS = 370


class solar(Schedule):
    """Celery's solar schedule: ``solar("sunset", 52.52, 13.40)`` ticks at each sunset there.

    Needs the ``astral`` package (``pip install 'cloudq[solar]'``). Days on which the event does
    not happen (polar day or night) have no tick."""

    def __init__(self, event: str, lat: float, lon: float) -> None:
        for label, value in (("latitude", lat), ("longitude", lon)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ScheduleError(f"solar {label} must be a number, got {value!r}")
        if event not in SOLAR_EVENTS:
            raise ScheduleError(f"unknown solar event {event!r}; choose one of "
                                f"{', '.join(SOLAR_EVENTS)}")
        if not -90 <= lat <= 90:
            raise ScheduleError(f"solar latitude {lat!r} is outside -90..90")
        if not -180 <= lon <= 180:
            raise ScheduleError(f"solar longitude {lon!r} is outside -180..180")
        self.event, self.lat, self.lon = event, float(lat), float(lon)

    def on(self, day: date) -> datetime | None:
        """The event's time on ``day`` (a UTC calendar day), or None if it does not happen."""
        try:
            from astral import Observer, sun
        except ImportError as exc:
            raise ScheduleError("solar schedules need the astral package: "
                                "pip install 'cloudq[solar]'") from exc
        function, depression = SOLAR_EVENTS[self.event]
        observer = Observer(latitude=self.lat, longitude=self.lon)
        kwargs: dict[str, Any] = {"date": day, "tzinfo": UTC}
        if depression is not None:
            kwargs["depression"] = depression
        try:
            at: datetime = getattr(sun, function)(observer, **kwargs)
        except ValueError:  # the sun does not reach that elevation that day
            return None
        return at.replace(microsecond=0)

    def next_after(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime:
        moment = _aware(moment)
        first = moment.astimezone(UTC).date() - timedelta(days=1)
        for offset in range(SOLAR_SEARCH_DAYS):
            at = self.on(first + timedelta(days=offset))
            if at is not None and at > moment:
                return at
        raise ScheduleError(f"{self!r} does not happen within a year of {moment:%Y-%m-%d}")

    def last_at_or_before(self, moment: datetime, tz: str | tzinfo = UTC) -> datetime | None:
        moment = _aware(moment)
        last = moment.astimezone(UTC).date() + timedelta(days=1)
        for offset in range(SOLAR_SEARCH_DAYS):
            at = self.on(last - timedelta(days=offset))
            if at is not None and at <= moment:
                return at
        return None

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude {self.lon}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, solar) and (other.event, other.lat, other.lon) == (
            self.event, self.lat, self.lon)

    def __hash__(self) -> int:
        return hash(("solar", self.event, self.lat, self.lon))
