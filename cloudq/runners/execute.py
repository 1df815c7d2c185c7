"""``process_message``: the one path every runner takes from a received message to its outcome.

decode → (poison? revoked? expired? not yet due? duplicate? rate limited?) → run → store the
outcome → send follow-ups → tell the runner to ack. The runner (poller, Lambda handler)
only receives and acknowledges; nothing here knows which runner called it. A message is
acknowledged only after its outcome is durable, so an exception escaping from here (the
store is down, the process is killed) leaves it to be delivered again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback as tb
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from cloudq import leases, signals, states
from cloudq import message as wire
from cloudq.errors import (
    DecodeError,
    EncodeError,
    NotRegistered,
    Reject,
    Retry,
    SignatureError,
    TaskRevokedError,
    TaskTerminated,
    TimeLimitExceeded,
    TransportError,
    ValidationError,
)
from cloudq.ratelimit import RateLimit
from cloudq.redaction import cut
from cloudq.results import revoked_key, task_key
from cloudq.runners.invocation import (
    ainvoke,
    exhausted_retries,
    hard_limit_s,
    invoke,
    is_async,
    within_hard_limit,
)
from cloudq.runners.limits import Interrupt
from cloudq.sending import ETA_TOLERANCE_S
from cloudq.serialization import from_jsonable, to_jsonable
from cloudq.task import Request, Task
from cloudq.transports.base import is_fifo

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)

MAX_VISIBILITY_S = 43_200
"""SQS's longest visibility timeout (12 h)."""

DEADLINE_MARGIN_S = 1.0
"""Time kept back from a runner's deadline for storing the outcome."""

REASON_LIMIT = 900
"""Characters of a poison message's reason kept (SQS attributes count towards its size)."""


class Outcome(str, Enum):
    """What happened to a message."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DEFERRED = "deferred"
    """Not yet due (long ETA hop) or rate limited: re-sent with a delay."""
    SKIPPED = "skipped"
    """An idempotent task that already succeeded."""
    REJECTED = "rejected"
    REQUEUED = "requeued"
    POISON = "poison"


@dataclass(frozen=True)
class Disposition:
    """What the runner should do with the message, and what happened to it."""

    outcome: Outcome
    ack: bool = True
    delay_s: int = 0
    """When not acked: seconds until the message is visible again."""
    task_id: str | None = None
    task_name: str | None = None
    runtime_s: float = 0.0


def process_message(
    app: App, message: ReceivedMessage, *, deadline: float | None = None,
    interrupt: Interrupt | None = None,
) -> Disposition:
    """Handle one received message. ``deadline`` is a ``time.monotonic()`` value, if any;
    ``interrupt`` is armed while the task body runs (the poller's pools terminate with it)."""
    execution = load(app, message, deadline, interrupt)
    return execution if isinstance(execution, Disposition) else execution.run()


async def aprocess_message(
    app: App, message: ReceivedMessage, *,
    offload: Callable[..., Awaitable[Any]], deadline: float | None = None,
    on_start: Callable[[Execution], None] | None = None, interrupt: Interrupt | None = None,
    hard_limits: bool = False,
) -> Disposition:
    """``process_message`` with a coroutine body awaited on the running loop.

    The steps around the body (decode, checks, storing the outcome, follow-ups) are the same
    blocking code, run by ``offload`` (a thread pool); a blocking task runs there whole (with
    ``interrupt`` armed around its body). A cancellation while the body runs (shutdown)
    propagates: nothing is stored and the message is not acknowledged, so it is delivered
    again. ``hard_limits``: a coroutine body still running at its hard time limit is cancelled
    and fails with TimeLimitExceeded."""
    execution = await offload(load, app, message, deadline, interrupt)
    if isinstance(execution, Disposition):
        return execution
    if not is_async(execution.task):
        result: Disposition = await offload(execution.run)
        return result
    started = await offload(execution.begin)
    if isinstance(started, Disposition):
        return started
    if on_start is not None:
        on_start(execution)
    try:
        body = await within_hard_limit(execution.arun_body(started),
                                       hard_limit_s(execution.task, started) if hard_limits
                                       else None)
    except TimeLimitExceeded as exc:
        body = _raiser(exc)
    finished: Disposition = await offload(execution.finish, started, body)
    return finished


def load(app: App, message: ReceivedMessage, deadline: float | None = None,
         interrupt: Interrupt | None = None) -> Execution | Disposition:
    """The execution of a message, or the disposition of one that cannot run (poison)."""
    try:
        envelope = fetch_envelope(app, message.body)
    except DecodeError as exc:
        return quarantine(app, message, exc)
    except TransportError as exc:  # the payload bucket is unreachable: not poison
        return payload_unreachable(app, message, exc)
    try:
        task = app.task_for(envelope.task)
    except NotRegistered as exc:
        disposition = quarantine(app, message, exc)
        canvas_failed(app, envelope, exc)  # a chain or chord it belongs to must not hang
        return disposition
    if message.receive_count > app.settings.max_receive_count:
        return quarantine(app, message, DecodeError(
            f"received {message.receive_count} times (max_receive_count="
            f"{app.settings.max_receive_count}) without finishing"
        ))
    return Execution(app, task, envelope, message, deadline, interrupt)


def _raiser(exc: BaseException) -> Callable[[], Any]:
    def body() -> Any:
        raise exc

    return body


def canvas_failed(app: App, envelope: wire.Envelope, exc: BaseException) -> None:
    """A failed (revoked, expired, rejected) task breaks its chain and counts in its chord."""
    if envelope.chain or envelope.chord:
        from cloudq.canvas.join import failed

        failed(app, envelope, exc)


def fetch_envelope(app: App, body: str) -> wire.Envelope:
    """Decode a body, fetching it from S3 first if it is a claim check."""
    key, previous = app.settings.signing_key, app.settings.signing_previous_keys
    decoded = wire.decode(body, signing_key=key, previous_keys=previous)
    if isinstance(decoded, wire.ClaimCheck):
        decoded = wire.decode(app.payloads(decoded.bucket).get(decoded.key), signing_key=key,
                              previous_keys=previous)
        if isinstance(decoded, wire.ClaimCheck):
            raise DecodeError("claim check points at another claim check")
    return decoded


def payload_unreachable(app: App, message: ReceivedMessage, exc: TransportError) -> Disposition:
    """A claim check whose body could not be fetched just now: the message comes back (the
    error propagates, nothing is acked), except on its last delivery, where it is dead-lettered
    with the reason rather than silently by SQS's redrive."""
    if message.receive_count >= app.settings.max_receive_count:
        return quarantine(app, message, exc)
    task_id, name = wire.peek(message.body)
    logger.warning("message %s (task %s[%s]): its payload could not be fetched, it will be "
                   "delivered again (delivery %d of %d): %s", message.message_id, name, task_id,
                   message.receive_count, app.settings.max_receive_count, exc)
    raise exc


def quarantine(app: App, message: ReceivedMessage, exc: Exception) -> Disposition:
    """Poison: dead-letter the message with its reason and, if it has an id, fail the task."""
    if isinstance(exc, SignatureError):
        return forged(app, message, exc)
    task_id, name = wire.peek(message.body)
    reason = cut(f"{type(exc).__name__}: {exc}", REASON_LIMIT)  # values in it are quoted short
    logger.error("poison message %s (task %s[%s]) moved to the dead-letter queue: %s",
                 message.message_id, cut(str(name)), cut(str(task_id)), reason)
    if task_id:
        app.backend.save(task_id, states.FAILURE, exc=exc, name=name, reason=reason)
    app.transport.dead_letter(message, reason)
    signals.task_rejected.send(sender=None, message=message, exc=exc)
    return Disposition(Outcome.POISON, task_id=task_id, task_name=name)


def forged(app: App, message: ReceivedMessage, exc: SignatureError) -> Disposition:
    """A message that fails its signature: dead-lettered with its reason, and nothing else.

    Nothing it says is trusted, so nothing is written under the task id it claims (that would
    let anyone who can send to the queue overwrite any result) nor anywhere else (each forged
    message would cost a write). The log line names the SQS message, never the body."""
    reason = cut(f"{type(exc).__name__}: {exc}", REASON_LIMIT)
    logger.error("forged message %s (it fails its signature) moved to the dead-letter queue: %s",
                 message.message_id, reason)
    app.transport.dead_letter(message, reason)
    signals.task_rejected.send(sender=None, message=message, exc=exc)
    return Disposition(Outcome.POISON)


def decoded_arguments(app: App, envelope: wire.Envelope, *, strict: bool = False
                      ) -> tuple[list[Any], dict[str, Any]]:
    """A message's args and kwargs decoded with its task's rules (``App.decoding``)."""
    rules = app.decoding(envelope.task, strict=strict)
    return (from_jsonable(envelope.args, rules, path="args"),
            from_jsonable(envelope.kwargs, rules, path="kwargs"))


def request_for(envelope: wire.Envelope, args: tuple[Any, ...], kwargs: dict[str, Any],
                delivery_info: dict[str, Any], *, is_eager: bool = False) -> Request:
    return Request(
        id=envelope.id, task=envelope.task, args=args, kwargs=kwargs, retries=envelope.retries,
        eta=envelope.eta, expires=envelope.expires, root_id=envelope.root_id,
        parent_id=envelope.parent_id, group_id=envelope.group_id, delivery_info=delivery_info,
        headers=_headers(envelope), priority=envelope.priority, queue=envelope.queue,
        link=envelope.link, link_error=envelope.link_error, time_limit=envelope.time_limit,
        soft_time_limit=envelope.soft_time_limit, is_eager=is_eager,
        message_group_id=envelope.message_group_id,
    )


def _headers(envelope: wire.Envelope) -> dict[str, Any]:
    """The headers decoded, or as sent when they do not decode (they are not the task's
    input: a bad one must not stop the task)."""
    try:
        headers: dict[str, Any] = from_jsonable(envelope.headers, path="headers")
    except DecodeError:
        return dict(envelope.headers)
    return headers


def request_as_sent(envelope: wire.Envelope, delivery_info: dict[str, Any],
                    app: App | None = None) -> Request:
    """The request as sent (arguments decoded, not validated), for signals about it; with
    arguments that do not decode, their JSON form."""
    args, kwargs = envelope.args, envelope.kwargs
    with suppress(DecodeError):
        args, kwargs = decoded_arguments(app, envelope) if app is not None \
            else (from_jsonable(args, path="args"), from_jsonable(kwargs, path="kwargs"))
    return request_for(envelope, tuple(args), kwargs, delivery_info)


class Execution:
    """One attempt at one task message."""

    def __init__(self, app: App, task: Task[Any, Any], envelope: wire.Envelope,
                 message: ReceivedMessage, deadline: float | None,
                 interrupt: Interrupt | None = None) -> None:
        self.app = app
        self.task = task
        self.envelope = envelope
        self.message = message
        self.deadline = deadline
        self.interrupt = interrupt
        self.started = time.monotonic()
        self.terminated = False
        """Set when ``revoke(terminate=True)`` cancelled a coroutine body."""

    def _done(self, outcome: Outcome, *, ack: bool = True, delay_s: int = 0) -> Disposition:
        return Disposition(outcome, ack=ack, delay_s=delay_s, task_id=self.envelope.id,
                           task_name=self.envelope.task,
                           runtime_s=time.monotonic() - self.started)

    def _log(self, level: int, what: str, *args: Any, exc_info: bool = False) -> None:
        logger.log(level, "task %s[%s] " + what, self.envelope.task, self.envelope.id, *args,
                   exc_info=exc_info)

    def _request(self) -> Request:
        """The request as sent (arguments decoded, not validated), for signals about it."""
        return request_as_sent(self.envelope, self.message.delivery_info, self.app)

    # -- before running ----------------------------------------------------------------------------
    def run(self) -> Disposition:
        started = self.begin()
        if isinstance(started, Disposition):
            return started
        return self.finish(started, lambda: invoke(self.task, started, self._soft_limit_s(),
                                                   self.interrupt))

    def begin(self) -> Request | Disposition:
        """Everything before the body: the checks, STARTED, the arguments; the request to run
        it with, or the disposition when it is not to run."""
        before = self._precheck()
        if before is not None:
            return before
        return self._prepare()

    async def arun_body(self, request: Request) -> Callable[[], Any]:
        """Await a coroutine body on the running loop; what ``finish`` takes as its outcome."""
        try:
            value = await ainvoke(self.task, request, self._soft_limit_s())
        except asyncio.CancelledError:
            if self.terminated:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return _raiser(TaskTerminated(f"task {request.id} was terminated"))
            raise  # shutdown: nothing stored, the message is not acked and comes back
        except Exception as exc:
            return _raiser(exc)
        return lambda: value

    def _precheck(self) -> Disposition | None:
        env, backend = self.envelope, self.app.backend
        if env.is_expired():
            self._log(logging.INFO, "expired at %s; not run", env.expires)
            backend.save(env.id, states.REVOKED, name=env.task, reason="expired")
            canvas_failed(self.app, env, TaskRevokedError(f"task {env.id} expired"))
            signals.task_revoked.send(sender=self.task, request=self._request(), expired=True)
            return self._done(Outcome.EXPIRED)
        if env.countdown_s() > ETA_TOLERANCE_S:
            return self._defer(env, f"not due until {env.eta}")
        if self.task.idempotent:
            found = backend.store.get_many([revoked_key(env.id), task_key(env.id)])
            revoked = found.get(revoked_key(env.id))
            previous = found.get(task_key(env.id))
        else:
            revoked, previous = backend.revocation(env.id), None
        if revoked is not None:
            self._log(logging.INFO, "revoked; not run")
            backend.save(env.id, states.REVOKED, name=env.task, reason="revoked")
            canvas_failed(self.app, env, TaskRevokedError(f"task {env.id} was revoked"))
            signals.task_revoked.send(sender=self.task, request=self._request(), expired=False)
            return self._done(Outcome.REVOKED)
        if previous is not None and previous.get("state") == states.SUCCESS:
            self._log(logging.INFO, "already succeeded (idempotent); not run again")
            self._send_callbacks(backend.meta_from(env.id, previous).result)
            return self._done(Outcome.SKIPPED)
        if previous is not None and int(previous.get("retries", 0)) > env.retries:
            self._log(logging.INFO, "is a late copy of attempt %d, which was retried "
                      "(idempotent); not run again", env.retries)
            return self._done(Outcome.SKIPPED)
        limit = RateLimit.parse(self.task.rate_limit or self.app.settings.task_default_rate_limit)
        if limit is not None:
            wait_s = limit.acquire(backend.store, self.task.name)
            if wait_s > 0:
                return self._defer(env.replace(eta=wire.as_utc(wait_s)), "rate limited")
        return self._take_lease() if self.task.idempotent else None

    def _take_lease(self) -> Disposition | None:
        """Idempotent tasks: the attempt's run lease (``cloudq.leases``), or a deferral while
        another copy holds it. The deferral costs no delivery on a standard queue (re-sent)."""
        env, settings = self.envelope, self.app.settings
        limits = [x for x in (env.time_limit, self.task.time_limit, settings.task_time_limit) if x]
        left_s = None if self.deadline is None else self.deadline - time.monotonic()
        lease_s = leases.lease_length_s(visibility_timeout_s=settings.visibility_timeout,
                                        time_limits_s=limits, seconds_left_s=left_s)
        wait_s = leases.take(self.app.backend.store, env.id, env.retries,
                             holder=self.message.message_id, lease_s=lease_s, now=wire.utcnow())
        if not wait_s:
            return None
        self._log(logging.INFO, "is running elsewhere (idempotent: its lease is held for %ds "
                  "more); deferred", wait_s)
        return self._defer(env.replace(eta=wire.as_utc(wait_s)), "running elsewhere")

    def _defer(self, envelope: wire.Envelope, why: str) -> Disposition:
        """Hand the message back for later: no worker holds a message while it waits.

        On a standard queue it is re-sent with the remaining delay and this copy acked. A
        FIFO queue has no per-message delay, and a re-send would be dropped by its
        deduplication, so there the message stays in flight (SQS hides it for the remaining
        time, up to 12 h) and the rest of its group waits behind it, as FIFO order requires.
        """
        self._log(logging.DEBUG, "deferred (%s)", why)
        if is_fifo(self.message.queue):
            wait_s = math.ceil(envelope.countdown_s())
            return self._done(Outcome.DEFERRED, ack=False, delay_s=min(wait_s, MAX_VISIBILITY_S))
        self.app.publish([envelope])
        return self._done(Outcome.DEFERRED)

    # -- running -----------------------------------------------------------------------------------
    def _soft_limit_s(self) -> float | None:
        limits = [x for x in (self.envelope.soft_time_limit, self.task.soft_time_limit,
                              self.app.settings.task_soft_time_limit) if x]
        limit = limits[0] if limits else None
        if self.deadline is not None:
            budget = self.deadline - time.monotonic() - DEADLINE_MARGIN_S
            limit = budget if limit is None else min(limit, budget)
        return limit

    def _prepare(self) -> Request | Disposition:
        env, task = self.envelope, self.task
        track = task.track_started if task.track_started is not None \
            else self.app.settings.task_track_started
        if track:
            self.app.backend.save(env.id, states.STARTED, name=env.task, retries=env.retries)
        try:
            args, kwargs = task.arguments.rebuild(
                *decoded_arguments(self.app, env, strict=True),
                show_values=self.app.settings.log_argument_values,
            )
        except (DecodeError, ValidationError) as exc:
            return quarantine(self.app, self.message, exc)
        request = request_for(env, args, kwargs, self.message.delivery_info)
        signals.task_received.send(sender=task, request=request)
        return request

    def finish(self, request: Request, body: Callable[[], Any]) -> Disposition:
        """Store the outcome of ``body()`` (its value, or what it raised) and send follow-ups."""
        try:
            retval = body()
        except Retry as retry:
            return self._retry(request, retry)
        except Reject as reject:
            return self._reject(reject)
        except TaskTerminated as exc:  # revoke(terminate=True) stopped the body: not a failure
            return self._terminated(exc)
        except Exception as exc:
            return self._failed(exc, tb.format_exc(), exhausted=exhausted_retries(exc))
        return self._succeeded(request, retval)

    # -- outcomes ----------------------------------------------------------------------------------
    def _succeeded(self, request: Request, retval: Any) -> Disposition:
        env, task = self.envelope, self.task
        ignore = task.ignore_result if task.ignore_result is not None \
            else self.app.settings.task_ignore_result
        try:
            if not ignore:
                self.app.backend.save(env.id, states.SUCCESS, retval, name=env.task,
                                       retries=env.retries)
        except EncodeError as exc:  # the return value cannot be stored: that is the task's fault
            return self._failed(exc, tb.format_exc())
        self._send_callbacks(retval)
        self._log(logging.INFO, "succeeded in %.3fs", time.monotonic() - self.started)
        self._hook(task.on_success, retval, env.id, request.args, request.kwargs)
        signals.task_success.send(sender=task, result=retval)
        self._after(states.SUCCESS, retval, None)
        return self._done(Outcome.SUCCESS)

    def _failed(self, exc: Exception, einfo: str, *, exhausted: bool = False) -> Disposition:
        env, task = self.envelope, self.task
        self.app.backend.save(env.id, states.FAILURE, exc=exc, traceback=einfo, name=env.task,
                               retries=env.retries)
        if exhausted:
            self.app.transport.dead_letter(
                self.message, f"max retries ({env.retries}) exceeded: {type(exc).__name__}: {exc}"
            )
        self._send_errbacks(exc, einfo)
        self._log(logging.ERROR, "failed: %s: %s", type(exc).__name__, exc)
        request = self._request()
        self._hook(task.on_failure, exc, env.id, request.args, request.kwargs, einfo)
        signals.task_failure.send(sender=task, task_id=env.id, exception=exc, traceback=einfo)
        self._after(states.FAILURE, exc, einfo)
        return self._done(Outcome.FAILURE)

    def _retry(self, request: Request, retry: Retry) -> Disposition:
        env, task = self.envelope, self.task
        eta = wire.as_utc(retry.eta if retry.eta is not None else retry.when or 0)
        changes: dict[str, Any] = {"retries": env.retries + 1, "eta": eta}
        try:  # new arguments travel in their tagged JSON form, like apply_async's
            if retry.new_args is not None:
                changes["args"] = to_jsonable(list(retry.new_args), "args")
            if retry.new_kwargs is not None:
                changes["kwargs"] = to_jsonable(dict(retry.new_kwargs), "kwargs")
        except EncodeError as exc:
            return self._failed(exc, tb.format_exc())
        self.app.publish([env.replace(**changes)])
        einfo = tb.format_exc()
        self.app.backend.save(env.id, states.RETRY, exc=retry.exc or retry, traceback=einfo,
                               name=env.task, retries=env.retries + 1)
        self._log(logging.INFO, "retry %d in %.1fs: %s", env.retries + 1,
                  wire.Envelope(task=env.task, eta=eta).countdown_s(), retry.exc or retry)
        self._hook(task.on_retry, retry.exc or retry, env.id, request.args, request.kwargs, einfo)
        signals.task_retry.send(sender=task, request=request, reason=retry.exc or retry)
        self._after(states.RETRY, retry.exc or retry, einfo)
        return self._done(Outcome.RETRY)

    def _terminated(self, exc: TaskTerminated) -> Disposition:
        """REVOKED (reason ``terminated``), as a revoke before the start would have left it;
        the message is acked. Only the poller's pools raise TaskTerminated in a body."""
        env = self.envelope
        self._log(logging.WARNING, "terminated: revoked with terminate=True while running")
        self.app.backend.save(env.id, states.REVOKED, name=env.task, reason="terminated")
        canvas_failed(self.app, env, exc)
        signals.task_revoked.send(sender=self.task, request=self._request(), terminated=True,
                                  expired=False)
        self._after(states.REVOKED, exc, None)
        return self._done(Outcome.REVOKED)

    def _reject(self, reject: Reject) -> Disposition:
        env = self.envelope
        if reject.requeue:
            self._log(logging.INFO, "rejected and requeued: %s", reject.reason)
            return self._done(Outcome.REQUEUED, ack=False, delay_s=0)
        reason = f"rejected: {reject.reason}" if reject.reason else "rejected"
        self.app.backend.save(env.id, states.FAILURE, exc=reject, name=env.task, reason=reason)
        self.app.transport.dead_letter(self.message, reason)
        canvas_failed(self.app, env, reject)
        self._log(logging.WARNING, "%s; moved to the dead-letter queue", reason)
        signals.task_rejected.send(sender=self.task, message=self.message, exc=reject)
        return self._done(Outcome.REJECTED)

    # -- follow-ups and hooks ----------------------------------------------------------------------
    def _send_callbacks(self, retval: Any) -> None:
        """``link`` callbacks, then the canvas: the next chain step or the chord count."""
        from cloudq.canvas.join import succeeded
        from cloudq.followups import send_callbacks

        send_callbacks(self.app, self.envelope, retval)
        if self.envelope.chain or self.envelope.chord:
            succeeded(self.app, self.envelope, retval)

    def _send_errbacks(self, exc: BaseException, einfo: str) -> None:
        from cloudq.followups import send_errbacks

        send_errbacks(self.app, self.envelope, exc, einfo)
        canvas_failed(self.app, self.envelope, exc)

    def _hook(self, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            self._log(logging.ERROR, "hook %s raised", getattr(hook, "__name__", hook),
                      exc_info=True)

    def _after(self, status: str, retval: Any, einfo: str | None) -> None:
        env, request = self.envelope, self._request()
        self._hook(self.task.after_return, status, retval, env.id,
                   request.args, request.kwargs, einfo)
        signals.task_postrun.send(sender=self.task, task_id=env.id, task=self.task,
                                  retval=retval, state=status)
