"""Hard time limits: which one applies, recording a task that overran it, enforcing it in a thread.

The limit of a message is its envelope's ``time_limit``, else its task's, else the setting
``task_time_limit``. How it is enforced depends on the pool:

- ``processes``: the child is killed at the limit (``cloudq.runners.pools.ProcessRunner``);
- a coroutine body (``asyncio`` pool, or a ``threads`` pool thread's own loop) is cancelled at
  the limit (``cloudq.runners.invocation.within_hard_limit``) and fails with TimeLimitExceeded;
- a blocking body in a thread (``threads``; blocking tasks in the asyncio pool) cannot be
  killed, so
  :class:`HardLimit` raises TimeLimitExceeded in the body at the limit (at its next bytecode:
  pure-Python code stops there and fails with it) and, if the body has not ended
  ``THREAD_GRACE_S`` later (it is in a blocking call: sleep, a socket read), records the task as
  FAILURE(TimeLimitExceeded) itself and reports that outcome, so the message is acknowledged.
  The thread is left to finish; whatever the body does when it ends is discarded (the
  execution raises :class:`~cloudq.runners.limits.Overran` instead of storing it) and logged.
  Either way nothing runs past its limit unseen: the task's result says TimeLimitExceeded at
  the limit, as with the other pools.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cloudq import message as wire
from cloudq import signals, states
from cloudq.errors import CloudqError, TimeLimitExceeded
from cloudq.runners.execute import Disposition, Outcome, fetch_envelope
from cloudq.runners.invocation import hard_limit_s
from cloudq.runners.limits import Interrupt
from cloudq.task import _current_request

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)

THREAD_GRACE_S = 0.25
"""How long a body in a thread has, once TimeLimitExceeded was raised in it at its hard limit,
to end by itself before its FAILURE is recorded for it and its outcome thrown away."""


def hard_time_limit(app: App, body: str) -> tuple[str | None, str | None, float | None]:
    """(task id, task name, hard limit in seconds) of a message body; errors give the setting."""
    try:
        envelope = fetch_envelope(app, body)
    except Exception:
        task_id, name = wire.peek(body)
        return task_id, name, app.settings.task_time_limit
    task = app.tasks.get(envelope.task)
    limits = (envelope.time_limit, task.time_limit if task else None, app.settings.task_time_limit)
    limit = next((float(x) for x in limits if x), None)
    return envelope.id, envelope.task, limit


def record_killed(app: App, message: ReceivedMessage, exc: CloudqError, task_id: str | None,
                  task_name: str | None, runtime_s: float) -> Disposition:
    """Store the FAILURE of a task whose child was killed or died, or that overran its hard
    limit in a thread, and run its errbacks."""
    try:
        envelope: wire.Envelope | None = fetch_envelope(app, message.body)
    except Exception:
        envelope = None
    if envelope is not None:
        task_id, task_name = envelope.id, envelope.task
    logger.error("task %s[%s] %s", task_name, task_id, exc)
    if task_id:
        app.backend.save(task_id, states.FAILURE, exc=exc, name=task_name,
                         retries=envelope.retries if envelope else 0)
    if envelope is not None:
        from cloudq.followups import send_errbacks

        send_errbacks(app, envelope, exc, "")
    signals.task_failure.send(sender=app.tasks.get(task_name or ""), task_id=task_id,
                              exception=exc, traceback=None)
    return Disposition(Outcome.FAILURE, task_id=task_id, task_name=task_name,
                       runtime_s=runtime_s)


class HardLimit:
    """Enforces the hard time limit of the blocking task bodies one thread runs.

    Its :attr:`interrupt` is what the thread runs messages with (``process_message(...,
    interrupt=)``); set :attr:`message` to the message being run. When the limit passes and
    the body does not end, ``on_overrun(outcome)`` gets the recorded FAILURE (or the error
    that kept it from being recorded), from a timer thread, while the body's thread is still
    blocked in it.
    """

    def __init__(self, app: App, on_overrun: Callable[[Disposition | Exception], None]) -> None:
        self.app = app
        self.on_overrun = on_overrun
        self.interrupt = Interrupt(on_arm=self._armed, on_disarm=self._disarmed)
        self.message: ReceivedMessage | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._reached_limit: tuple[str | None, float] | None = None
        """(key, limit) once TimeLimitExceeded was raised in the body at its limit."""

    def _armed(self, key: str | None) -> None:
        """The body starts (in its thread, with its request in context): time its limit."""
        with self._lock:
            self._reached_limit = None
        current = _current_request.get()
        if current is None:
            return
        task, request = current
        limit_s = hard_limit_s(task, request)
        if limit_s:
            self._after(float(limit_s), self._reached, key, task.name, float(limit_s),
                        time.monotonic())

    def _disarmed(self, key: str | None, expired: bool) -> None:
        """The body ended: a body that outlived its limit fails with TimeLimitExceeded even if
        it caught the one raised in it (unless its outcome was taken away: Overran follows)."""
        with self._lock:
            timer, self._timer = self._timer, None
            reached, self._reached_limit = self._reached_limit, None
        if timer is not None:
            timer.cancel()
        if reached is None or reached[0] != key or expired:
            return
        if not isinstance(sys.exc_info()[1], TimeLimitExceeded):
            raise TimeLimitExceeded(f"hard time limit ({reached[1]:g}s) exceeded")

    def _after(self, delay_s: float, action: Callable[..., None], *args: object) -> None:
        timer = threading.Timer(delay_s, action, args)
        timer.daemon = True
        with self._lock:
            self._timer = timer
        timer.start()

    def _reached(self, key: str | None, name: str, limit_s: float, started: float) -> None:
        with self._lock:
            self._reached_limit = (key, limit_s)
        if self.interrupt.fire(TimeLimitExceeded, key):  # pure-Python code stops at once
            self._after(THREAD_GRACE_S, self._overran, key, name, limit_s, started)
            return
        with self._lock:  # it ended meanwhile, or was terminated: its own outcome stands
            if self._reached_limit == (key, limit_s):
                self._reached_limit = None

    def _overran(self, key: str | None, name: str, limit_s: float, started: float) -> None:
        message = self.message
        if message is None or not self.interrupt.expire(key):
            return  # the body ended meanwhile: its own outcome stands
        logger.warning("task %s[%s] is still running %.2fs past its hard time limit (%gs), in a "
                       "call no exception can interrupt: recording it as FAILURE; its thread is "
                       "left to finish and what it returns will be discarded", name, key,
                       time.monotonic() - started - limit_s, limit_s)
        outcome: Disposition | Exception
        try:
            outcome = record_killed(
                self.app, message, TimeLimitExceeded(f"hard time limit ({limit_s:g}s) exceeded"),
                key, name, time.monotonic() - started)
        except Exception as exc:  # the store is down: the message is left to come back
            outcome = exc
        self.on_overrun(outcome)
