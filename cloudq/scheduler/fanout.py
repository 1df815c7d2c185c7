"""The ``cloudq.fanout`` task: one EventBridge tick sends the ticks of a shorter interval.

A 15-second schedule becomes ``rate(1 minute)`` whose message runs this task, which sends the
four ticks of that minute at once with SQS delays of 0, 15, 30 and 45 s. Each tick has the task id
the local beat would give it (name and tick time), so a fan-out message delivered twice sends
the same four tasks (a re-sent tick is one more message with the same id).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudq import message as wire
from cloudq.errors import ValidationError
from cloudq.redaction import cut, quote
from cloudq.scheduler.entries import periodic_headers
from cloudq.sending import build_envelope, publish
from cloudq.transports.base import MAX_DELAY_S

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.task import Request


def send_ticks(app: App, request: Request, *, name: str, task: str, args: list[Any],
               kwargs: dict[str, Any], options: dict[str, Any], every_s: int,
               copies: int) -> int:
    tick = request.headers.get("periodic_tick")
    if not isinstance(tick, str):
        raise ValidationError(f"cloudq.fanout for {cut(repr(name))} was not sent by a periodic "
                              "schedule (no periodic_tick header)")
    if not (isinstance(every_s, int) and isinstance(copies, int) and every_s >= 1
            and copies >= 1 and (copies - 1) * every_s <= MAX_DELAY_S):
        raise ValidationError(  # what a schedule sync writes always fits; a forged one may not
            f"cloudq.fanout for {cut(repr(name))}: copies={quote(copies)} every "
            f"{quote(every_s)} s do not fit SQS's {MAX_DELAY_S} s delay window")
    start = datetime.fromisoformat(tick)
    options = dict(options)
    headers = options.pop("headers", None) or {}
    envelopes = []
    for index in range(copies):
        at = start + timedelta(seconds=index * every_s)
        envelopes.append(build_envelope(
            app, task, args, kwargs, task_id=wire.tick_id(name, at),
            eta=at if at > wire.utcnow() else None,
            headers={**headers, **periodic_headers(name, at)}, **options))
    publish(app, envelopes)
    return len(envelopes)
