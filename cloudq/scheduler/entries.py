"""``beat_schedule`` read into entries, checked as early as possible.

Every problem names the entry: an unknown key, a task name that is not a string, a schedule
that is not a number, timedelta or schedule object, arguments that do not fit the task, an
option ``apply_async`` would refuse. The checks build each entry's envelope once, without I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from cloudq import message as wire
from cloudq.errors import CloudqError, ScheduleError
from cloudq.scheduler.schedules import Schedule, schedule, zone

if TYPE_CHECKING:
    from cloudq.app import App

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative")
BEAT_OPTIONS = frozenset({"queue", "priority", "expires", "headers", "time_limit",
                          "soft_time_limit", "message_group_id", "compression", "link",
                          "link_error", "countdown", "eta"})
"""What ``options`` may hold (the local beat passes them to ``apply_async``)."""
PERIODIC_TASK_NAME = "periodic_task_name"
"""The header every periodic task message carries (Celery's); ``periodic_tick`` is the other."""


def periodic_headers(name: str, at: datetime) -> dict[str, str]:
    """The headers of entry ``name``'s tick at ``at`` (as ``message.decode`` gives a template)."""
    return {PERIODIC_TASK_NAME: name, "periodic_tick": wire.tick_text(at)}


@dataclass(frozen=True)
class Entry:
    """One periodic task."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def envelope(self, app: App, at: datetime) -> wire.Envelope:
        """The message of this entry's tick at ``at`` (its id derived from name and time)."""
        from cloudq.sending import build_envelope

        options = dict(self.options)
        headers = {**(options.pop("headers", None) or {}), **periodic_headers(self.name, at)}
        try:
            return build_envelope(app, self.task, self.args, self.kwargs,
                                  task_id=wire.tick_id(self.name, at), headers=headers, **options)
        except CloudqError as exc:
            raise ScheduleError(f"beat_schedule[{self.name!r}]: {exc}") from exc


def load_entries(app: App) -> list[Entry]:
    """The app's ``beat_schedule`` as entries; raises ScheduleError naming the bad entry."""
    zone(app.settings.beat_timezone)
    entries = [parse_entry(name, spec) for name, spec in app.settings.beat_schedule.items()]
    now = wire.utcnow()
    for entry in entries:
        entry.envelope(app, now)  # arguments, options, routing: checked now, not at the tick
    return entries


def parse_entry(name: Any, spec: Any) -> Entry:
    where = f"beat_schedule[{name!r}]"
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"{where}: an entry's name must be a non-empty string")
    if not isinstance(spec, Mapping):
        raise ScheduleError(f"{where}: expected a dict with 'task' and 'schedule', "
                            f"got {type(spec).__name__}")
    for key in spec:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScheduleError(f"{where}: unknown key {key!r}{hint}; an entry takes "
                                f"{', '.join(ENTRY_KEYS)}")
    task = spec.get("task")
    if not isinstance(task, str) or not task:
        raise ScheduleError(f"{where}: 'task' must be the task's name, got {task!r}")
    if spec.get("relative"):
        raise ScheduleError(f"{where}: relative=True is not supported (interval ticks are "
                            "aligned to the epoch so every beat agrees on them)")
    args, kwargs, options = spec.get("args", ()), spec.get("kwargs", {}), spec.get("options", {})
    if not isinstance(args, list | tuple):
        raise ScheduleError(f"{where}: 'args' must be a list or tuple, got {args!r}")
    if not isinstance(kwargs, Mapping):
        raise ScheduleError(f"{where}: 'kwargs' must be a dict, got {kwargs!r}")
    if not isinstance(options, Mapping):
        raise ScheduleError(f"{where}: 'options' must be a dict, got {options!r}")
    unknown = sorted(set(options) - BEAT_OPTIONS)
    if unknown:
        raise ScheduleError(f"{where}: unknown option(s) {', '.join(unknown)}; options take "
                            f"{', '.join(sorted(BEAT_OPTIONS))}")
    return Entry(name=name, task=task, schedule=as_schedule(spec.get("schedule"), where),
                 args=tuple(args), kwargs=dict(kwargs), options=dict(options))


def as_schedule(value: Any, where: str) -> Schedule:
    if isinstance(value, Schedule):
        return value
    if isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        try:
            return schedule(value)
        except ScheduleError as exc:
            raise ScheduleError(f"{where}: {exc}") from exc
    raise ScheduleError(f"{where}: 'schedule' must be seconds, a timedelta, crontab(...), "
                        f"schedule(...) or solar(...), got {value!r}")


def timezone_of(app: App) -> tzinfo:
    return zone(app.settings.beat_timezone)
