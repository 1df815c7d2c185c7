"""The long-running worker (``cloudq poll``): long-poll the queues, run messages in a pool, ack.

Receiving. One daemon thread per queue band (``app.queues``: high bands first) makes two kinds
of ReceiveMessage call. A *probe* asks for 1 message and waits ``worker_poll_wait`` (20 s):
idle, a queue costs one request per 20 s, and a message on any queue is picked up at once. A
*batch* follows any call that returned messages: it reserves up to 10 free slots, asks for that
many and waits at most 1 s, so a backlog drains ten at a time and an emptied queue gives its
slots back within a second (then its receiver probes again).

Prefetch bound. L = concurrency * prefetch_multiplier slots count messages received and not
finished (buffered or running) plus reservations of batch calls in progress, so batches never
take more than L. A probe reserves nothing while it waits (idle probes never keep capacity from
a busy queue); its message takes a free slot, or, if all L are taken, its queue's one *token*
until a slot frees. A queue probes only while its token is free. Exact bound: L + number of
polled queues; the excess exists only while all L slots are taken, is at most one message per
queue, and only comes from a queue that looked empty at its previous call: a backlog never
goes past L.

Dispatching. Messages wait in a buffer ordered by (band, arrival); a free pool worker gets the
most urgent. With every worker busy, idle queues keep their probes open, so a high-band message
runs before normal ones already waiting (priority is strict). Receiving cannot starve, even
with fewer slots than queues: probes do not compete for slots.

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
at once. ``burst=True`` waits at most 1 s per call and stops once every queue was seen empty
after the last message finished.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cloudq import message as wire
from cloudq import signals
from cloudq.errors import ConfigError
from cloudq.runners.pools import Abandoned, Result, make_pool
from cloudq.runners.revocations import RevocationWatch
from cloudq.transports.base import MAX_BATCH

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
"""Failed receives in a row after which a burst treats the queue as empty (and exits 1)."""


@dataclass(eq=False)
class _Held:
    """A message in memory: in the buffer, or running."""

    message: ReceivedMessage
    band: int
    seq: int
    on_token: bool
    extended_at: float
    running: bool = False
    done: bool = False
    """Finished but not yet released (being made visible again)."""


@dataclass(frozen=True)
class _Grant:
    count: int
    probe: bool
    epoch: int


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
        self.queues = app.queues(queues)
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
        self.stats: Counter[str] = Counter()
        """Outcome values (``success``, ``failure``, ...) and ``received``, ``acked``,
        ``retried_later``, ``released``, ``errors``, ``heartbeats``, ``max_held``, pool events."""
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
        self._held: dict[int, _Held] = {}
        self._buffer: list[tuple[int, int, _Held]] = []
        self._seq = itertools.count()
        self._slots_used = 0
        self._probing: set[str] = set()
        self._token_held: dict[str, _Held] = {}
        self._idle = self.concurrency
        self._running = 0
        self._acks: list[ReceivedMessage] = []
        self._acks_since = 0.0
        self._epoch = 0
        self._empty_at: dict[str, int] = {}

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
        self._warn_time_limits()
        self._pool.start()
        if self._revocations is not None:
            self._revocations.start()
        threading.Thread(target=self._housekeep, daemon=True, name="cloudq-housekeeper").start()
        for band, name in enumerate(self.queues):
            threading.Thread(target=self._receive_loop, args=(name, band), daemon=True,
                             name=f"cloudq-receive-{name}").start()
        signals.worker_ready.send(sender=self)

    def _warn_time_limits(self) -> None:
        if self.pool_kind != "threads":
            return
        limited = sorted(t.name for t in self.app.tasks.values() if t.time_limit)
        if limited or self.app.settings.task_time_limit:
            logger.warning("hard time limits (%s) are not enforced by the threads pool; use "
                           "--pool processes (soft time limits still apply)",
                           ", ".join(limited) or "task_time_limit")

    def _supervise(self) -> int:
        signalled = False
        while True:
            event = self._control.get()
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
            buffered = [held for _, _, held in self._buffer]
            self._buffer.clear()
            for held in buffered:
                self._release_locked(held)
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
    def _receive_loop(self, name: str, band: int) -> None:
        busy, failures = False, 0
        while True:
            grant = self._reserve(name, busy)
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
                self._accept(name, band, grant, [], empty=give_up)
                self._stop_event.wait(min(MAX_BACKOFF_S, 0.1 * 2 ** failures))
                continue
            failures = 0
            self._accept(name, band, grant, got)
            busy = bool(got)
            if not got:  # never spin on a transport that returns at once
                cycle_s = BURST_IDLE_CYCLE_S if self.burst else IDLE_CYCLE_S
                self._stop_event.wait(max(0.0, cycle_s - (time.monotonic() - started)))

    def _reserve(self, name: str, busy: bool) -> _Grant | None:
        """Block until this queue may call receive; None once stopping."""
        with self._lock:
            while not self._stopping:
                free = self.limit - self._slots_used
                if busy and free > 0:
                    count = min(MAX_BATCH, free)
                    self._slots_used += count
                    return _Grant(count, probe=False, epoch=self._epoch)
                if not busy and name not in self._probing and name not in self._token_held:
                    self._probing.add(name)
                    return _Grant(1, probe=True, epoch=self._epoch)
                self._cond.wait()
            return None

    def _accept(self, name: str, band: int, grant: _Grant, got: list[ReceivedMessage], *,
                empty: bool = True) -> None:
        """Take what a receive call returned; ``empty``: an empty result means the queue is."""
        give_back: list[ReceivedMessage] = []
        with self._lock:
            if grant.probe:
                self._probing.discard(name)
            else:
                self._slots_used -= grant.count
            if self._stopping:
                give_back = got
            elif got:
                for message in got:
                    self._hold_locked(name, band, message)
                self._epoch += 1
                self._move_to_slot_locked()
                self._dispatch_locked()
                self._wake.notify_all()
            elif empty:
                self._empty_at[name] = grant.epoch
                self._check_burst_locked()
            self._cond.notify_all()
        self._give_back(give_back)

    def _hold_locked(self, name: str, band: int, message: ReceivedMessage) -> None:
        held = _Held(message, band, next(self._seq), on_token=self._slots_used >= self.limit,
                     extended_at=time.monotonic())
        if held.on_token:  # only a probe's message: every slot is taken
            self._token_held[name] = held
        else:
            self._slots_used += 1
        self._held[held.seq] = held
        heapq.heappush(self._buffer, (band, held.seq, held))
        self.stats["received"] += 1
        self.stats["max_held"] = max(self.stats["max_held"], len(self._held))

    def _release_locked(self, held: _Held) -> None:
        """Forget a message that finished or was given back; free its slot or token."""
        del self._held[held.seq]
        if held.on_token:
            self._token_held.pop(held.message.queue, None)
        else:
            self._slots_used -= 1
            self._move_to_slot_locked()
        self._cond.notify_all()

    def _move_to_slot_locked(self) -> None:
        """Move messages held on tokens to free slots, most urgent first."""
        while self._token_held and self._slots_used < self.limit:
            held = min(self._token_held.values(), key=lambda h: (h.band, h.seq))
            del self._token_held[held.message.queue]
            held.on_token = False
            self._slots_used += 1

    def _check_burst_locked(self) -> None:
        if not self.burst or self._burst_done or self._held:
            return
        if all(self._empty_at.get(name) == self._epoch for name in self.queues):
            self._burst_done = True  # every queue was empty after the last change
            self._control.put(("stop",))

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
        while self._buffer and self._idle > 0 and not self._stopping:
            _, _, held = heapq.heappop(self._buffer)
            held.running = True
            self._idle -= 1
            self._running += 1
            self._pool.submit(held.message, functools.partial(self._finished, held))

    def _finished(self, held: _Held, result: Result) -> None:
        """Called by a pool thread when a message has been handled (or failed to be)."""
        message, ack_now = held.message, False
        if isinstance(result, BaseException):
            self._log_error(message, result)
        elif not result.ack:  # still held meanwhile, so a burst cannot end before it is back
            with self._lock:
                held.done = True  # no more heartbeats: they would undo the delay
            self._retry_later(message, result.delay_s, "retried_later")
        with self._lock:
            self._running -= 1
            self._idle += 1
            self._release_locked(held)
            self._epoch += 1
            key = "errors" if isinstance(result, BaseException) else result.outcome.value
            self.stats[key] += 1
            if not isinstance(result, BaseException) and result.ack:
                ack_now = self._closed  # after the final flush: delete it now
                if not ack_now:
                    self._acks.append(message)
                    self._acks_since = time.monotonic() if len(self._acks) == 1 \
                        else self._acks_since
                    self._wake.notify_all()
            self._dispatch_locked()
        if ack_now:
            self._flush([message])

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
