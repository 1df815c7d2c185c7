"""The long-running worker (``cloudq poll``): long-poll the queues, run messages in a pool, ack.

Receiving. One daemon thread per queue band (``app.queues``: high bands first) makes two kinds
of ReceiveMessage call. A *probe* asks for 1 message and waits ``worker_poll_wait`` (20 s):
idle, a queue costs one request per 20 s, and a message on any queue is picked up at once. A
*batch* is a band's first call, and follows any call that returned messages: it reserves up to
10 free slots, asks for that many and waits at most 1 s, so a backlog drains ten at a time and
an emptied queue gives its slots back within a second (then its receiver probes again).

Priorities are strict, by tier (every high band, then the normal bands and FIFO queues, then
the low bands): a band is received from only while no band of a higher tier has work, i.e.
once each of them came back empty from its last call (``cloudq.runners.admission`` states the
rule in full, and what it costs: one empty call per higher band before a lower tier is read).

Prefetch bound. L = concurrency * prefetch_multiplier slots count messages received and not
finished (buffered or running) plus reservations of batch calls in progress, so batches never
take more than L. A probe reserves nothing while it waits (idle probes never keep capacity from
a busy queue); its message takes a free slot, or, if all L are taken, its queue's one *token*
until a slot frees. A queue probes only while its token is free. Exact bound: L + number of
polled queues; the excess exists only while all L slots are taken, is at most one message per
queue, and only comes from a queue that looked empty at its previous call: a backlog never
goes past L.

Dispatching. Messages wait in a buffer ordered by (tier, arrival); a free pool worker gets the
most urgent. With every worker busy, idle queues keep their probes open, so a high-band message
runs before normal ones already waiting. Receiving cannot starve, even with fewer slots than
queues: probes do not compete for slots.

The store. A message whose handling failed because DynamoDB was unreachable is made visible
again at once; ``worker_store_failure_threshold`` of them in a row pause receiving, hand back
every buffered message and probe the store until it answers (``cloudq.runners.breaker``).

Housekeeping. One thread, asleep on a condition in between, extends the visibility of every
message in memory every ``visibility_timeout / 3`` s (batched) and deletes finished messages in
batches (after 50 ms, at once at 10 for a queue, always before ``run`` returns). Not acked:
``retry_later(message, delay_s)``. If ``process_message`` raises, the error is logged with the
task id and the message left to reappear after its visibility timeout.

Terminating. ``revoke(terminate=True)`` only writes an item to the store, so while tasks run
(also while stopping) a :class:`~cloudq.runners.revocations.RevocationWatch` thread reads the
revokes of the running tasks (ids peeked from their bodies) every
``worker_revoke_check_interval`` s, in one BatchGetItem (per 100 tasks; none while idle; 0:
off), and calls ``pool.terminate(task_id)`` for those flagged ``terminate``. A thread gets
TaskTerminated raised in the task body (at its next bytecode: not inside a blocking C call); a
child gets it from a SIGTERM and is killed after a grace (``cloudq.runners.pools``). The task
ends REVOKED and its message is acked like any outcome. The watch has its own thread so a slow
store never delays heartbeats; a revoke without ``terminate`` lets a running task finish.

Shutdown. ``stop()``, SIGTERM or SIGINT (handlers only when ``run`` is in the main thread; they
just queue an event): receivers stop at once (those in a long poll are daemon threads, not
waited for; what their poll returns is made visible again), buffered messages are made visible
again, tasks in flight get ``shutdown_timeout_s``, acks are flushed; ``run`` returns 0, or 1 if
tasks were abandoned (they come back after their visibility timeout). A second signal returns 1
at once.

Burst. ``burst=True`` waits at most 1 s per call and stops once the queues are drained: every
queue was seen empty after the last message finished, nothing is held, the deletes are flushed
and then GetQueueAttributes counts no message left on any of them (visible, in flight with any
worker, or delayed: a FIFO group locked until a delete lands, a countdown, a retry on its way
back). Otherwise it polls on, checking again at most once per ``BURST_CHECK_INTERVAL_S``, for
at most ``worker_burst_wait`` (30 s) without receiving anything; then it exits with status 1.
Messages it failed to handle (``process_message`` raised) are not waited for: they come back
after their visibility timeout, to this worker or another.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from cloudq import message as wire
from cloudq import signals
from cloudq.errors import ConfigError
from cloudq.routing import polling_tiers
from cloudq.runners.admission import Admission, Grant, Held
from cloudq.runners.breaker import StoreBreaker, is_store_outage, wait_for_store
from cloudq.runners.pools import Abandoned, Result, make_pool
from cloudq.runners.revocations import RevocationWatch
from cloudq.transports.base import MAX_BATCH, is_fifo

if TYPE_CHECKING:
    from types import FrameType

    from cloudq.app import App
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)

BATCH_WAIT_S = 1.0
"""Wait of a batch call, and the longest wait in burst mode."""
ACK_DELAY_S = 0.05
"""How long a finished message may wait for others to share its DeleteMessageBatch call."""
IDLE_CYCLE_S = 1.0
"""Shortest time between two empty calls on one queue (a transport that does not wait)."""
BURST_IDLE_CYCLE_S = 0.05
MAX_BACKOFF_S = 30.0
"""Longest pause after failed receives on one queue."""
BURST_MAX_FAILURES = 5
"""Failed receives (or counts) in a row after which a burst treats the queue as empty (and exits
1)."""
BURST_CHECK_INTERVAL_S = 1.0
"""Shortest time between two counts of the queues by a burst that found them not drained."""


class Poller:
    """Polls ``app.queues(queues)`` and runs their messages; ``None`` options come from settings."""

    def __init__(self, app: App, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None,
                 pool: Literal["threads", "processes", "asyncio"] | None = None,
                 prefetch_multiplier: int | None = None, max_tasks_per_child: int | None = None,
                 burst: bool = False, poll_wait_s: float | None = None,
                 shutdown_timeout_s: float | None = None) -> None:
        settings = app.settings
        self.app = app
        tiers = polling_tiers(queues or app.known_queues())
        self.queues = [band for tier in tiers for band in tier]
        self.concurrency = concurrency or settings.worker_concurrency
        self.prefetch_multiplier = prefetch_multiplier or settings.worker_prefetch_multiplier
        self.pool_kind: str = pool or settings.worker_pool
        self.burst = burst
        wait_s = settings.worker_poll_wait if poll_wait_s is None else poll_wait_s
        self.poll_wait_s = min(wait_s, BATCH_WAIT_S) if burst else wait_s
        self.shutdown_timeout_s = settings.worker_shutdown_timeout \
            if shutdown_timeout_s is None else shutdown_timeout_s
        if self.concurrency < 1 or self.prefetch_multiplier < 1:
            raise ConfigError("concurrency and prefetch_multiplier must be at least 1")
        self.limit = self.concurrency * self.prefetch_multiplier
        self._admission = Admission(tiers, self.limit)
        self.stats: Counter[str] = Counter()
        """Outcome values (``success``, ``failure``, ...) and ``received``, ``acked``,
        ``retried_later``, ``released``, ``errors``, ``heartbeats``, ``max_held``,
        ``store_unavailable`` (messages that failed on it), ``store_pauses``, ``store_probes``,
        ``burst_checks``, pool events."""
        self._breaker = StoreBreaker(settings.worker_store_failure_threshold,
                                     settings.worker_store_probe_max_interval)
        self._pool = make_pool(
            app, self.pool_kind, self.concurrency,
            max_tasks_per_child=max_tasks_per_child or settings.worker_max_tasks_per_child,
            record=self._count,
        )
        interval_s = settings.worker_revoke_check_interval
        self._revocations = RevocationWatch(app.store, self._running_messages, self._terminate,
                                            interval_s) if interval_s > 0 else None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # receivers, dispatch, drain
        self._wake = threading.Condition(self._lock)  # the housekeeper
        self._visibility = threading.Lock()  # heartbeats vs. making messages visible again
        self._control: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._stop_event = threading.Event()
        self._started = self._stopping = self._closed = self._burst_done = False
        self._exit_code = 0
        self._held = self._admission.held
        self._idle = self.concurrency
        self._running = 0
        self._acks: list[ReceivedMessage] = []
        self._acks_since = 0.0
        self._epoch = 0
        self._empty_at: dict[str, int] = {}
        self._burst_checking = False
        self._burst_check_due = 0.0
        self._burst_failures = 0
        self._given_up: set[str] = set()
        self._burst_waiting_since: float | None = None
        """Burst: when the queues first looked empty with messages still left on them."""
        self._left_behind: dict[str, float] = {}
        """Burst: messages left in flight after an error (by id), until they can come back."""

    @property
    def held(self) -> int:
        """Messages in memory now (buffered or running)."""
        with self._lock:
            return len(self._held)

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> int:
        """Poll until stopped (or, in burst mode, until idle); return the exit code."""
        with self._lock:
            if self._started:
                raise RuntimeError("Poller.run() can be called only once")
            self._started = True
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self._start()
            return self._supervise()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def stop(self) -> None:
        """Stop receiving, finish the tasks in flight, flush acks, return from ``run``."""
        self._control.put(("stop",))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._control.put(("signal", signum))  # SimpleQueue.put is safe in a signal handler

    def _start(self) -> None:
        logger.info("cloudq poller %s: queues %s; pool %s, concurrency %d, prefetch %d%s",
                    self.app.main, ", ".join(self.queues), self.pool_kind, self.concurrency,
                    self.limit, " (burst)" if self.burst else "")
        self._pool.start()
        if self._revocations is not None:
            self._revocations.start()
        threading.Thread(target=self._housekeep, daemon=True, name="cloudq-housekeeper").start()
        for name in self.queues:
            threading.Thread(target=self._receive_loop, args=(name,), daemon=True,
                             name=f"cloudq-receive-{name}").start()
        signals.worker_ready.send(sender=self)

    def _supervise(self) -> int:
        signalled = False
        while True:
            event = self._control.get()
            if event[0] == "drained?":
                self._check_drained(event[1])
                continue
            if event[0] == "done":
                signals.worker_shutdown.send(sender=self)
                logger.info("cloudq poller stopped: %s", dict(self.stats))
                return self._exit_code
            if event[0] == "signal":
                name = signal.Signals(event[1]).name
                if signalled:
                    logger.warning("%s again: exiting at once; %d messages in memory will be "
                                   "delivered again after their visibility timeout",
                                   name, self.held)
                    return self._exit_now()
                signalled = True
                logger.info("%s: stopping once the tasks in flight finish (again to exit now)",
                            name)
            self._begin_stop()

    def _begin_stop(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()
        threading.Thread(target=self._drain, daemon=True, name="cloudq-drain").start()

    def _drain(self) -> None:
        with self._lock:
            buffered = self._admission.take_buffered()
            self._cond.notify_all()
        self._give_back([held.message for held in buffered])
        with self._lock:
            finished = self._cond.wait_for(lambda: self._running == 0, self.shutdown_timeout_s)
            abandoned = [wire.peek(h.message.body) for h in self._held.values() if h.running]
            self._closed = True
            acks, self._acks = self._acks, []
            self._wake.notify_all()
        self._close_revocations()
        self._flush(acks)
        if not finished:
            self._exit_code = 1
            logger.warning("shutdown timeout (%gs): abandoning tasks %s; their messages will be "
                           "delivered again", self.shutdown_timeout_s,
                           ", ".join(f"{name}[{task_id}]" for task_id, name in abandoned))
        self._pool.close(kill=not finished)
        self._control.put(("done",))

    def _exit_now(self) -> int:
        with self._lock:
            self._stopping = self._closed = True
            self._cond.notify_all()
            self._wake.notify_all()
        self._stop_event.set()
        self._close_revocations()
        self._pool.close(kill=True)
        signals.worker_shutdown.send(sender=self)
        return 1

    def _close_revocations(self) -> None:
        if self._revocations is not None:
            self._revocations.close()

    # -- receiving --------------------------------------------------------------------------------
    def _receive_loop(self, name: str) -> None:
        failures = 0
        while True:
            grant = self._reserve(name)
            if grant is None:
                return
            wait_s = self.poll_wait_s if grant.probe else min(BATCH_WAIT_S, self.poll_wait_s)
            started = time.monotonic()
            try:
                got = self.app.transport.receive(name, grant.count, wait_s)
            except Exception:
                failures += 1
                logger.warning("receive from queue %s failed (%d in a row)", name, failures,
                               exc_info=True)
                give_up = self.burst and failures >= BURST_MAX_FAILURES
                if give_up:
                    logger.error("burst: giving up on queue %s", name)
                    self._exit_code = 1
                self._accept(name, grant, [], failed=True, give_up=give_up)
                self._stop_event.wait(min(MAX_BACKOFF_S, 0.1 * 2 ** failures))
                continue
            failures = 0
            self._accept(name, grant, got)
            if not got:  # never spin on a transport that returns at once
                cycle_s = BURST_IDLE_CYCLE_S if self.burst else IDLE_CYCLE_S
                self._stop_event.wait(max(0.0, cycle_s - (time.monotonic() - started)))

    def _reserve(self, name: str) -> Grant | None:
        """Block until this queue may call receive; None once stopping."""
        with self._lock:
            while not self._stopping:
                grant = self._admission.grant(name, self._epoch)
                if grant is not None:
                    return grant
                self._cond.wait()
            return None

    def _accept(self, name: str, grant: Grant, got: list[ReceivedMessage], *,
                failed: bool = False, give_up: bool = False) -> None:
        """Take what a receive call returned (``failed``: it raised; ``give_up``: a burst
        counts the failing queue as empty)."""
        give_back: list[ReceivedMessage] = []
        with self._lock:
            self._admission.returned(name, grant, len(got))
            if give_up:
                self._given_up.add(name)
            if self._stopping or self._breaker.open:
                give_back = got
            elif got:
                for message in got:
                    self._hold_locked(name, message)
                self._epoch += 1
                self._wake.notify_all()
            elif give_up or not failed:
                self._empty_at[name] = grant.epoch
                self._check_burst_locked()
            self._admission.move_to_slots()
            self._dispatch_locked()
            self._cond.notify_all()
        self._give_back(give_back)

    def _hold_locked(self, name: str, message: ReceivedMessage) -> None:
        self._admission.hold(name, message, time.monotonic())
        self._left_behind.pop(message.message_id, None)
        self._burst_waiting_since = None
        self.stats["received"] += 1
        self.stats["max_held"] = max(self.stats["max_held"], len(self._held))

    def _release_locked(self, held: Held) -> None:
        self._admission.release(held)
        self._cond.notify_all()

    def _check_burst_locked(self) -> None:
        if (not self.burst or self._burst_done or self._burst_checking or self._held
                or self._breaker.open or time.monotonic() < self._burst_check_due):
            return
        if all(self._empty_at.get(name) == self._epoch for name in self.queues):
            self._burst_checking = True  # every queue looked empty after the last change
            self._control.put(("drained?", self._epoch))

    def _check_drained(self, epoch: int) -> None:
        """Burst: stop if nothing is left on the queues once the deletes are flushed."""
        with self._lock:
            acks, self._acks = self._acks, []
        self._flush(acks)
        max_wait_s = self.app.settings.worker_burst_wait
        left = self._count_left() if max_wait_s > 0 else 0
        now = time.monotonic()
        with self._lock:
            self._burst_checking = False
            self._burst_check_due = now + BURST_CHECK_INTERVAL_S
            quiet = epoch == self._epoch and not self._held and not self._stopping
            if quiet and left and self._burst_waiting_since is None:
                self._burst_waiting_since = now
            waited_s = now - (self._burst_waiting_since or now)
            done = quiet and (left == 0 or waited_s >= max_wait_s)
            self._burst_done = self._burst_done or done
        if done and left:
            logger.warning("burst: %d messages still in flight or delayed after %gs "
                           "(worker_burst_wait); exiting with status 1", left, waited_s)
            self._exit_code = 1
        if done:
            self._begin_stop()
        elif left:
            logger.debug("burst: %d messages still in flight or delayed; polling on", left)

    def _count_left(self) -> int | None:
        """Messages not yet deleted from the queues (None when they could not be counted)."""
        self._count("burst_checks")
        try:
            left = sum(self.app.transport.remaining(q) for q in self.queues
                       if q not in self._given_up)
        except Exception:
            self._burst_failures += 1
            logger.warning("burst: could not count the messages left (%d in a row)",
                           self._burst_failures, exc_info=True)
            if self._burst_failures < BURST_MAX_FAILURES:
                return None
            logger.error("burst: giving up on counting the queues; stopping")
            self._exit_code = 1
            return 0
        self._burst_failures = 0
        now = time.monotonic()
        with self._lock:
            left_behind = sum(1 for until in self._left_behind.values() if until > now)
        return max(0, left - left_behind)

    def _give_back(self, messages: Sequence[ReceivedMessage]) -> None:
        """Make messages this worker will not run visible again at once."""
        for message in messages:
            self._retry_later(message, 0, "released")

    def _retry_later(self, message: ReceivedMessage, delay_s: int, key: str) -> None:
        try:
            with self._visibility:
                self.app.transport.retry_later(message, delay_s)
            self._count(key)
        except Exception:
            task_id, name = wire.peek(message.body)
            logger.warning("task %s[%s]: could not change the visibility of message %s",
                           name, task_id, message.message_id, exc_info=True)

    # -- running ----------------------------------------------------------------------------------
    def _dispatch_locked(self) -> None:
        while self._idle > 0 and not self._stopping:
            held = self._admission.next_to_run()
            if held is None:  # nothing buffered, or a more urgent band's messages are coming
                return
            self._idle -= 1
            self._running += 1
            self._pool.submit(held.message, functools.partial(self._finished, held))

    def _finished(self, held: Held, result: Result) -> None:
        """Called by a pool thread when a message has been handled (or failed to be)."""
        message, ack_now, paused = held.message, False, None
        outage, acked = self._settle(held, result)
        with self._lock:
            self._running -= 1
            self._idle += 1
            self._release_locked(held)
            self._epoch += 1
            key = "store_unavailable" if outage else "errors" \
                if isinstance(result, BaseException) else result.outcome.value
            self.stats[key] += 1
            if outage and self._breaker.failed():
                paused = self._pause_locked()
            elif not isinstance(result, BaseException):
                self._breaker.succeeded()
            if not isinstance(result, BaseException) and result.ack and not acked:
                ack_now = self._closed  # after the final flush: delete it now
                if not ack_now:
                    self._acks.append(message)
                    self._acks_since = time.monotonic() if len(self._acks) == 1 \
                        else self._acks_since
                    self._wake.notify_all()
            self._dispatch_locked()
        if ack_now:
            self._flush([message])
        if paused is not None:
            assert isinstance(result, BaseException)
            self._paused(paused, result)

    def _settle(self, held: Held, result: Result) -> tuple[bool, bool]:
        """What is done before a finished message is released: (store outage?, acked?)."""
        message = held.message
        if isinstance(result, BaseException) and is_store_outage(result):
            # not the task's fault: visible again at once, which spends no receive by itself
            task_id, name = wire.peek(message.body)
            logger.warning("task %s[%s]: the store is unreachable (%s); message %s is visible "
                           "again", name, task_id, result, message.message_id)
            with self._lock:
                held.done = True
            self._retry_later(message, 0, "released")
            return True, False
        if isinstance(result, BaseException):
            self._log_error(message, result)
            if self.burst:  # not waited for: it comes back after its visibility timeout
                with self._lock:
                    self._left_behind[message.message_id] = \
                        time.monotonic() + self.app.settings.visibility_timeout
        elif not result.ack:  # still held meanwhile, so a burst cannot end before it is back
            with self._lock:
                held.done = True  # no more heartbeats: they would undo the delay
            self._retry_later(message, result.delay_s, "retried_later")
        elif is_fifo(message.queue):  # its group stays locked until it is deleted: do it now
            self._flush([message])
            return False, True
        return False, False

    # -- the store's circuit breaker (cloudq.runners.breaker) ------------------------------------
    def _pause_locked(self) -> list[ReceivedMessage]:
        """The breaker opened: receivers wait; the buffered messages, to be handed back."""
        self._admission.paused = True
        buffered = self._admission.take_buffered()
        self._epoch += 1
        self._cond.notify_all()
        return [held.message for held in buffered]

    def _paused(self, buffered: list[ReceivedMessage], error: BaseException) -> None:
        self._give_back(buffered)
        failures = self._breaker.failures
        logger.error("DynamoDB unreachable: pausing receives, %d messages handed back (%d "
                     "failed on it in a row; last: %s); probing it every %gs at most",
                     len(buffered) + 1, failures, error, self._breaker.max_interval_s)
        self._count("store_pauses")
        signals.store_unavailable.send(sender=self, failures=failures,
                                       handed_back=len(buffered) + 1, error=error)
        threading.Thread(target=self._probe_store, daemon=True, name="cloudq-store-probe").start()

    def _probe_store(self) -> None:
        failed = wait_for_store(self.app.store, self._breaker, self._stop_event)
        if failed is None:
            return  # stopping
        with self._lock:
            paused_s = self._breaker.close()
            self._admission.paused = False
            self.stats["store_probes"] += failed + 1
            self._cond.notify_all()
        logger.warning("DynamoDB reachable again after %.1fs (%d probes): resuming receives",
                       paused_s, failed + 1)
        signals.store_available.send(sender=self, paused_s=paused_s)

    def _running_messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return [h.message for h in self._held.values() if h.running and not h.done]

    def _terminate(self, task_id: str) -> bool:
        """``revoke(terminate=True)`` seen for a running task: stop it (it ends REVOKED)."""
        started = self._pool.terminate(task_id)
        if started:
            self._count("terminated")
        return started

    def _log_error(self, message: ReceivedMessage, exc: BaseException) -> None:
        task_id, name = wire.peek(message.body)
        if isinstance(exc, Abandoned):
            logger.warning("task %s[%s] abandoned: it will be delivered again", name, task_id)
        else:
            logger.error("task %s[%s]: message %s could not be handled (%s: %s); it will be "
                         "delivered again after its visibility timeout", name, task_id,
                         message.message_id, type(exc).__name__, exc, exc_info=exc)

    # -- housekeeping: heartbeats and acks --------------------------------------------------------
    def _housekeep(self) -> None:
        interval_s = self.app.settings.visibility_timeout / 3
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    delay_s = self._next_due_locked(now, interval_s)
                    if delay_s is not None and delay_s <= 0:
                        break
                    self._wake.wait(delay_s)
                acks: list[ReceivedMessage] = []
                if self._acks and self._acks_due_locked(now):
                    acks, self._acks = self._acks, []
            self._flush(acks)
            self._heartbeat(interval_s)

    def _acks_due_locked(self, now: float) -> bool:
        per_queue = Counter(m.queue for m in self._acks)
        return now >= self._acks_since + ACK_DELAY_S or max(per_queue.values()) >= MAX_BATCH

    def _next_due_locked(self, now: float, interval_s: float) -> float | None:
        """Seconds until there is something to do (<= 0: now), None when nothing is held."""
        delays = []
        if self._acks:
            delays.append(0.0 if self._acks_due_locked(now)
                          else self._acks_since + ACK_DELAY_S - now)
        if self._held:
            oldest = min(h.extended_at for h in self._held.values())
            delays.append(oldest + interval_s - now)
        return min(delays) if delays else None

    def _heartbeat(self, interval_s: float) -> None:
        with self._visibility:  # so a message made visible again is not hidden by a late beat
            with self._lock:
                now = time.monotonic()
                due = [h for h in self._held.values()
                       if not h.done and now - h.extended_at >= interval_s / 2]
                for held in due:
                    held.extended_at = now
            if not due:
                return
            try:
                self.app.transport.extend_visibility([h.message for h in due],
                                                     self.app.settings.visibility_timeout)
                self._count("heartbeats")
            except Exception:
                logger.warning("could not extend the visibility of %d messages", len(due),
                               exc_info=True)

    def _flush(self, acks: Sequence[ReceivedMessage]) -> None:
        if not acks:
            return
        try:
            self.app.transport.ack(acks)
            self._count("acked", len(acks))
        except Exception:
            logger.error("could not delete %d handled messages (%s); they will be delivered "
                         "again", len(acks), ", ".join(m.message_id for m in acks),
                         exc_info=True)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n
