"""``beat_schedule`` as EventBridge schedules: expressions, message templates, the wanted set.

Translation never approximates. A crontab becomes ``cron(min hour dom month dow year)`` with
``?`` in exactly one day field and day of week shifted to EventBridge's 1-7 = SUN-SAT; it fires at
the same times as the crontab in the same time zone (tests compare 100 fire times of each). An
interval of whole minutes becomes ``rate(N unit)``. What EventBridge cannot express is either
served another way or refused with the entry's name and the reason:

* an interval of whole seconds that is not whole minutes, whose least common multiple with
  60 s is at most 900 s past the interval (15 s, 20 s, 45 s, 90 s...), becomes a ``rate()`` of
  that multiple whose message is the built-in ``cloudq.fanout`` task: it sends the ticks of
  that span with SQS delays;
* other intervals, and crontabs that restrict both day of month and day of week (cloudq needs
  both to match; EventBridge cannot say that), are refused;
* solar entries become one-time ``at()`` schedules, ``beat_solar_days`` ahead (Scheduler only).

The message EventBridge sends is a template (``cloudq.message.encode_template``): an envelope
without id, whose id the worker derives from the schedule's name and the tick's time.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from cloudq import message as wire
from cloudq.errors import ScheduleError
from cloudq.scheduler.entries import Entry, load_entries
from cloudq.scheduler.schedules import (
    DAY_OF_MONTH,
    HOUR,
    MINUTE,
    MONTH_OF_YEAR,
    CronField,
    Schedule,
    crontab,
    schedule,
    solar,
)

if TYPE_CHECKING:
    from cloudq.app import App

Target = Literal["scheduler", "rules"]
FANOUT_TASK = "cloudq.fanout"
FANOUT_SUFFIX = "#fanout"
MAX_DELAY_S = 900
MAX_INPUT_CHARS = 8192
"""The largest target input EventBridge accepts."""
TEMPLATE_OPTIONS = frozenset({"queue", "priority", "expires", "headers", "time_limit",
                              "soft_time_limit"})
"""Options a template can carry (the others make no sense for a message sent by AWS)."""
RULE_TIME = "<at>"
"""The rule input transformer's placeholder for the event's time."""
NAME_CHARS = re.compile(r"[^0-9A-Za-z_.-]")
MAX_NAME = 64


@dataclass(frozen=True)
class Expression:
    """A schedule expression, and the fan-out that serves sub-minute intervals."""

    expression: str
    every_s: int | None = None
    """With a fan-out: the interval of the ticks the message sends."""
    copies: int = 1
    """With a fan-out: how many ticks one message sends."""


@dataclass(frozen=True)
class Wanted:
    """One EventBridge schedule as it should be."""

    name: str
    """The EventBridge schedule (or rule) name."""
    entry: str
    task: str
    expression: str
    timezone: str
    queue: str
    """The physical SQS queue it sends to."""
    input: str
    one_time: bool = False

    def export(self) -> dict[str, Any]:
        return {"name": self.entry, "schedule_name": self.name, "task": self.task,
                "expression": self.expression, "timezone": self.timezone,
                "target_queue": self.queue, "input": self.input}


# -- expressions --------------------------------------------------------------------------------
def expression_for(name: str, sched: Schedule, *, timezone: str = "UTC",
                   target: Target = "scheduler") -> Expression:
    """The EventBridge expression for entry ``name``'s schedule, or ScheduleError saying why
    there is none."""
    if isinstance(sched, crontab):
        if target == "rules" and timezone != "UTC":
            raise ScheduleError(
                f"schedule {name!r}: EventBridge rules run in UTC only and beat_timezone is "
                f"{timezone!r}; sync to EventBridge Scheduler (the default), which keeps time "
                "zones and daylight saving")
        return Expression(cron_expression(name, sched))
    if isinstance(sched, schedule):
        return rate_expression(name, sched.seconds)
    if isinstance(sched, solar):
        raise ScheduleError(
            f"schedule {name!r}: a solar schedule has no recurring EventBridge expression; "
            "`cloudq schedule sync` keeps one-time schedules for it a few days ahead")
    raise ScheduleError(f"schedule {name!r}: {sched!r} cannot be translated to EventBridge")


def cron_expression(name: str, sched: crontab) -> str:
    if sched.restricts_day_of_month and sched.restricts_day_of_week:
        raise ScheduleError(
            f"schedule {name!r}: EventBridge cannot restrict both day_of_month and day_of_week "
            f"({sched!r}): it needs '?' in one of them, and cloudq's crontab needs a day to "
            "match both. Run it with `cloudq beat`, or keep one day field and check the other "
            "in the task")
    if sched.restricts_day_of_week:
        dom = "?"
        dow = _render({(day % 7) + 1 for day in sched.day_of_week},
                      CronField("day_of_week", 1, 7, {}), steps=False)
    else:
        dom = _render(sched.day_of_month, DAY_OF_MONTH)
        dow = "?"
    fields = (_render(sched.minute, MINUTE), _render(sched.hour, HOUR), dom,
              _render(sched.month_of_year, MONTH_OF_YEAR), dow, "*")
    return f"cron({' '.join(fields)})"


def _render(values: frozenset[int] | set[int], field: CronField, *, steps: bool = True) -> str:
    """A field as EventBridge writes it: ``*``, ``a/step``, or ranges and numbers."""
    ordered = sorted(values)
    if set(ordered) == set(range(field.low, field.high + 1)):
        return "*"
    if steps and len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], field.high + 1, step)):
            return f"{ordered[0]}/{step}"
    parts: list[str] = []
    run: list[int] = []
    for value in [*ordered, None]:
        if value is not None and run and value == run[-1] + 1:
            run.append(value)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [value] if value is not None else []
    return ",".join(parts)


def rate_expression(name: str, seconds: float) -> Expression:
    if seconds % 60 == 0:
        minutes = int(seconds // 60)
        for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
            if minutes % size == 0:
                count = minutes // size
                return Expression(f"rate({count} {unit}{'' if count == 1 else 's'})")
    if seconds == int(seconds):
        span = math.lcm(int(seconds), 60)
        if span - seconds <= MAX_DELAY_S:
            minutes = span // 60
            return Expression(f"rate({minutes} minute{'' if minutes == 1 else 's'})",
                              every_s=int(seconds), copies=span // int(seconds))
    raise ScheduleError(
        f"schedule {name!r}: every {seconds:g} s cannot run on EventBridge, which fires in "
        "whole minutes: cloudq serves an interval of whole seconds by sending the ticks between "
        "two EventBridge runs with SQS delays, which needs the interval's least common multiple "
        f"with 60 s to be at most {MAX_DELAY_S} s past the interval (5, 10, 15, 20, 30, 45, "
        "90 s... qualify). Use such an interval, or run it with `cloudq beat`")


# -- the wanted set -------------------------------------------------------------------------------
def schedule_name(prefix: str, entry: str, suffix: str = "") -> str:
    """An EventBridge name for an entry: its name with other characters as ``-``, and a short
    hash when that changed it or it is too long, so two entries never share a name."""
    clean = NAME_CHARS.sub("-", entry)
    room = MAX_NAME - len(prefix) - len(suffix)
    if clean != entry or len(clean) > room:
        import hashlib

        digest = hashlib.sha256(entry.encode()).hexdigest()[:8]
        clean = f"{clean[:room - 9]}-{digest}"
    return prefix + clean + suffix


def wanted(app: App, *, target: Target = "scheduler", now: datetime | None = None,
           prefix: str = "") -> list[Wanted]:
    """Every EventBridge schedule the app's ``beat_schedule`` needs, checked, in entry order,
    named ``prefix`` + entry name. Raises ScheduleError listing every entry that cannot be
    expressed."""
    settings = app.settings
    timezone = settings.beat_timezone
    now = now or wire.utcnow()
    out: list[Wanted] = []
    problems: list[str] = []
    for entry in load_entries(app):
        try:
            out += _wanted_for(app, entry, target=target, timezone=timezone, now=now,
                               prefix=prefix)
        except ScheduleError as exc:
            problems.append(str(exc))
    if problems:
        raise ScheduleError("; ".join(problems))
    return out


def _wanted_for(app: App, entry: Entry, *, target: Target, timezone: str,
                now: datetime, prefix: str) -> list[Wanted]:
    unsupported = sorted(set(entry.options) - TEMPLATE_OPTIONS)
    if unsupported:
        raise ScheduleError(
            f"schedule {entry.name!r}: option(s) {', '.join(unsupported)} cannot be part of a "
            "message EventBridge sends; use them with `cloudq beat`, or inside the task")
    if isinstance(entry.schedule, solar):
        if target == "rules":
            raise ScheduleError(f"schedule {entry.name!r}: solar schedules need EventBridge "
                                "Scheduler's one-time schedules; rules have none")
        ticks = []
        moment, end = now, now + timedelta(days=app.settings.beat_solar_days)
        while (moment := entry.schedule.next_after(moment)) <= end:
            ticks.append(moment)
        return [_one(app, entry, expression=f"at({at:%Y-%m-%dT%H:%M:%S})", timezone="UTC",
                     at=wire.tick_text(at), one_time=True,
                     name=schedule_name(prefix, entry.name, f".{at:%Y%m%dT%H%M%S}"))
                for at in ticks]
    expression = expression_for(entry.name, entry.schedule, timezone=timezone, target=target)
    return [_one(app, entry, expression=expression.expression, fanout=expression,
                 timezone=timezone if target == "scheduler" else "UTC",
                 at=wire.SCHEDULED_TIME if target == "scheduler" else RULE_TIME,
                 name=schedule_name(prefix, entry.name))]


def _one(app: App, entry: Entry, *, expression: str, timezone: str, at: str, name: str,
         fanout: Expression | None = None, one_time: bool = False) -> Wanted:
    envelope = entry.envelope(app, wire.utcnow())
    expires = entry.options.get("expires")
    if expires is not None and not isinstance(expires, int | float | timedelta):
        raise ScheduleError(f"schedule {entry.name!r}: 'expires' must be seconds (or a "
                            "timedelta) after the tick for EventBridge, not a fixed time")
    expires_s = expires.total_seconds() if isinstance(expires, timedelta) else expires
    if fanout is not None and fanout.every_s is not None:
        from cloudq.sending import build_envelope

        envelope = build_envelope(app, FANOUT_TASK, (), {
            "name": entry.name, "task": entry.task, "args": list(entry.args),
            "kwargs": entry.kwargs, "options": entry.options,
            "every_s": fanout.every_s, "copies": fanout.copies,
        }, queue=envelope.queue)
        expires_s = None
        template_name = f"{entry.name}{FANOUT_SUFFIX}"  # its own task id, not its first tick's
    else:
        template_name = entry.name
    body = wire.encode_template(envelope, template_name, at=at, expires_s=expires_s,
                                signing_key=app.settings.signing_key)
    if len(body) > MAX_INPUT_CHARS:
        raise ScheduleError(f"schedule {entry.name!r}: its message is {len(body)} characters, "
                            f"over EventBridge's {MAX_INPUT_CHARS}; pass less in args/kwargs")
    queue = envelope.queue or app.settings.task_default_queue
    if queue.endswith(".fifo"):
        raise ScheduleError(
            f"schedule {entry.name!r}: EventBridge cannot send to FIFO queue {queue!r}: cloudq's "
            "FIFO queues deduplicate by task id, which EventBridge's message does not have. "
            "Send periodic tasks to a standard queue, or run them with `cloudq beat`")
    return Wanted(name=name, entry=entry.name, task=entry.task, expression=expression,
                  timezone=timezone, queue=app.settings.queue_prefix + queue, input=body,
                  one_time=one_time)


def export_json(wanted_list: list[Wanted]) -> str:
    return json.dumps([w.export() for w in wanted_list], indent=2)
