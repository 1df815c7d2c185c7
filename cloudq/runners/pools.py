"""Worker pools for the poller: ``concurrency`` threads that each run one message at a time.

Both pools are the same :class:`WorkerPool` of daemon threads; they differ in the runner each
thread owns:

- ``threads``: :class:`ThreadRunner` calls ``process_message`` in the pool thread. Soft time
  limits work (``cloudq.runners.limits``). A hard limit cannot kill a thread: at the limit
  TimeLimitExceeded is raised in the body, and a body that does not end is recorded as
  FAILURE(TimeLimitExceeded) and its message acked at once; its thread is retired (a fresh one
  takes its place) and what the body returns when it ends is discarded
  (``cloudq.runners.hard_limits``).
- ``processes``: :class:`ProcessRunner` owns one forked child and hands it one message at a time
  over a pipe. The child says ``("start", task id, name, hard limit)`` before it runs the
  message and ``("done", disposition)`` after. The parent waits for the second reply for at most
  the hard limit (envelope ``time_limit``, else the task's, else ``task_time_limit``); when it
  does not come the child is killed and the task recorded as FAILURE with ``TimeLimitExceeded``.
  A child that dies (segfault, ``os._exit``, OOM killer) gives ``WorkerLostError`` the same way.
  Either way the message is acknowledged and a fresh child is forked before the next message;
  ``max_tasks_per_child`` forks a fresh one after that many messages.

Terminating (``revoke(terminate=True)``, found by ``cloudq.runners.revocations``):
``WorkerPool.terminate(task_id)`` asks each runner. A thread raises TaskTerminated in the task
body (:class:`cloudq.runners.limits.Interrupt`: at the next bytecode, so not inside a blocking
C call); the execution records REVOKED. A child is sent SIGTERM with its shared ``terminating``
flag set, which raises TaskTerminated in its body the same way (and interrupts sleeps and
socket reads); if it has not reported within ``TERMINATE_GRACE_S`` it is killed and the parent
records REVOKED. Either way the message is acknowledged and the child replaced.

Children are forked (``fork`` start method), call ``app.after_fork()``, and ignore SIGINT and
SIGTERM with no-op Python handlers (so a subprocess a task execs gets the default actions back):
a Ctrl-C or a SIGTERM sent to the whole process group reaches the parent, which lets the tasks
in flight finish (a SIGTERM only counts once the parent has set the ``terminating`` flag).
On Linux a child is also killed if its parent dies (``PR_SET_PDEATHSIG``).
Results a child writes go through the child's own copy of the app: with the in-memory twins
they are not seen by the parent, so tests of this pool observe side effects, not results.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cloudq import message as wire
from cloudq import signals, states
from cloudq.errors import (
    CloudqError,
    ConfigError,
    StoreUnavailable,
    TaskTerminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from cloudq.runners.execute import (
    Disposition,
    Outcome,
    canvas_failed,
    fetch_envelope,
    process_message,
    request_as_sent,
)
from cloudq.runners.hard_limits import HardLimit, hard_time_limit, record_killed
from cloudq.runners.invocation import forget_thread_loop
from cloudq.runners.limits import Interrupt, Overran

if TYPE_CHECKING:
    from ctypes import c_bool
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkProcess

    from cloudq.app import App
    from cloudq.runners.aio_pool import AsyncioPool
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)

PoolKind = Literal["threads", "processes", "asyncio"]
Result = Disposition | BaseException
Done = Callable[[Result], None]
Record = Callable[[str], None]

CHILD_EXIT_WAIT_S = 2.0
"""How long a child asked to exit may take before it is killed."""
LOST_CHILD_WAIT_S = 0.5
"""How long a child whose pipe closed may take to exit before it is killed."""
TERMINATE_GRACE_S = 2.0
"""How long a child told to terminate its task may take to report before it is killed."""


class ChildTaskError(CloudqError):
    """process_message raised in a pool child; the message is left to reappear."""


class Abandoned(CloudqError):
    """The pool was closed with this message still running; it will be delivered again."""


class Runner(Protocol):
    """Runs one message at a time for one pool thread."""

    def prepare(self) -> None:
        """Get ready for the next message (fork a child); called while the thread is idle."""

    def run(self, message: ReceivedMessage) -> Disposition:
        """Run one message; raise when its outcome could not be made durable."""

    def close(self, *, kill: bool) -> None:
        """Release what the runner holds; ``kill`` abandons a message still running."""

    def terminate(self, task_id: str) -> bool:
        """Stop task ``task_id`` if it is running here; whether this runner started to."""


class WorkerPool:
    """``size`` daemon threads taking messages from a queue, each with its own runner.

    The caller (the poller's dispatcher) submits only when it knows a thread is free, so
    no message waits in here: which message runs next is decided outside, by priority.
    A runner whose message overran its hard limit reports the outcome through
    :meth:`overrun`; its thread is then retired and a fresh one started in its place.
    """

    def __init__(self, size: int, make_runner: Callable[[], Runner], *, name: str) -> None:
        self.size = size
        self._make_runner = make_runner
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[ReceivedMessage, Done] | None] = queue.SimpleQueue()
        self._runners: list[Runner] = []
        self._current: dict[int, Done] = {}
        """The completion callback of the message each runner (by id) is running."""
        self._started = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for _ in range(self.size):
            self._add_thread()

    def _add_thread(self) -> None:
        runner = self._make_runner()
        with self._lock:
            self._runners.append(runner)
            index, self._started = self._started, self._started + 1
        threading.Thread(target=self._work, args=(runner,), daemon=True,
                         name=f"{self._name}-{index}").start()

    def overrun(self, runner: Runner, outcome: Result) -> None:
        """``runner``'s message passed its hard limit and cannot be stopped: report ``outcome``
        for it now, and put a fresh thread in the place of the one still blocked in it."""
        with self._lock:
            done = self._current.pop(id(runner), None)
            if done is None:
                return
            self._runners.remove(runner)
        self._add_thread()
        done(outcome)

    def submit(self, message: ReceivedMessage, done: Done) -> None:
        """Run ``message`` on the next free thread; ``done`` gets the Disposition or the error."""
        self._jobs.put((message, done))

    def terminate(self, task_id: str) -> bool:
        """Stop task ``task_id`` wherever it runs here; whether it was found running."""
        return any([runner.terminate(task_id) for runner in self._runners])  # every copy

    def close(self, *, kill: bool = False) -> None:
        """Let the threads exit once idle and close their runners (killing children if asked)."""
        for runner in self._runners:
            runner.close(kill=kill)
        for _ in self._runners:
            self._jobs.put(None)

    def _work(self, runner: Runner) -> None:
        while True:
            try:
                runner.prepare()
            except Abandoned:
                pass
            except Exception:
                logger.exception("pool %s: could not prepare a worker", self._name)
            job = self._jobs.get()
            if job is None:
                break
            message, done = job
            with self._lock:
                self._current[id(runner)] = done
            result: Result
            try:
                result = runner.run(message)
            except Overran:  # reported already (see overrun); nothing of it is kept
                result = Abandoned("the task overran its hard time limit")
            except Exception as exc:
                result = exc
            with self._lock:
                reported = self._current.pop(id(runner), None) is None
            if reported:
                task_id, name = wire.peek(message.body)
                logger.warning("task %s[%s] ended after its hard time limit: outcome discarded "
                               "(its FAILURE, TimeLimitExceeded, stands); thread retired",
                               name, task_id)
                break
            try:
                done(result)
            except Exception:
                logger.exception("pool %s: completion callback failed", self._name)
        runner.close(kill=False)


class ThreadRunner:
    """Runs ``process_message`` in the pool thread itself, within hard time limits."""

    def __init__(self, app: App, on_overrun: Callable[[ThreadRunner, Result], None]) -> None:
        self.app = app
        self.limit = HardLimit(app, lambda outcome: on_overrun(self, outcome))
        self.interrupt: Interrupt = self.limit.interrupt
        """Armed while a task body runs in this thread."""

    def prepare(self) -> None:
        return None

    def run(self, message: ReceivedMessage) -> Disposition:
        self.limit.message = message
        try:
            return process_message(self.app, message, interrupt=self.interrupt)
        finally:
            self.limit.message = None

    def close(self, *, kill: bool) -> None:
        return None

    def terminate(self, task_id: str) -> bool:
        return self.interrupt.fire(TaskTerminated, task_id)


def make_pool(app: App, kind: str, size: int, *, max_tasks_per_child: int | None,
              record: Record) -> WorkerPool | AsyncioPool:
    """The pool ``kind`` (``threads``, ``processes`` or ``asyncio``) with ``size`` workers."""
    if kind == "threads":
        if max_tasks_per_child:
            logger.info("max_tasks_per_child=%d is ignored by the threads pool (threads are "
                        "not recycled); use --pool processes to recycle", max_tasks_per_child)
        pool = WorkerPool(size, lambda: ThreadRunner(app, pool.overrun), name="cloudq-thread")
        return pool
    if kind == "processes":
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigError("worker_pool='processes' needs the fork start method (Linux, macOS)")
        return WorkerPool(size, lambda: ProcessRunner(app, max_tasks_per_child, record),
                          name="cloudq-child")
    if kind == "asyncio":
        from cloudq.runners.aio_pool import AsyncioPool

        return AsyncioPool(app, size)
    raise ConfigError(f"worker_pool={kind!r}: expected 'threads', 'processes' or 'asyncio'")


def record_terminated(app: App, message: ReceivedMessage, task_id: str | None,
                      task_name: str | None, runtime_s: float) -> Disposition:
    """Store REVOKED for a task whose child was killed after ``revoke(terminate=True)``."""
    try:
        envelope: wire.Envelope | None = fetch_envelope(app, message.body)
    except Exception:
        envelope = None
    logger.warning("task %s[%s] terminated: revoked with terminate=True; its process was killed",
                   task_name, task_id)
    if task_id:
        app.backend.save(task_id, states.REVOKED, name=task_name, reason="terminated")
    if envelope is not None:
        canvas_failed(app, envelope, TaskTerminated())
    signals.task_revoked.send(
        sender=app.tasks.get(task_name or ""), terminated=True, expired=False,
        request=request_as_sent(envelope, message.delivery_info) if envelope else None)
    return Disposition(Outcome.REVOKED, task_id=task_id, task_name=task_name,
                       runtime_s=runtime_s)


# -- the process pool: parent side -------------------------------------------------------------
_FORK_LOCK = threading.Lock()
"""Held while a child is forked, so no sibling inherits the child's end of its pipe."""
_PARENT_ENDS: set[Connection] = set()
"""The parent's end of every child's pipe; a new child closes its copies of them."""
_TIMEOUT = ("timeout",)


class _Child:
    """One forked child and the parent's end of its pipe."""

    def __init__(self, app: App) -> None:
        context = multiprocessing.get_context("fork")
        self.terminating: c_bool = context.RawValue(ctypes.c_bool, False)
        """Shared with the child: set before the SIGTERM that terminates its task."""
        with _FORK_LOCK:
            parent_end, child_end = context.Pipe(duplex=True)
            _PARENT_ENDS.add(parent_end)  # the child closes its copy: EOF when the parent dies
            self.process: ForkProcess = context.Process(
                target=_child_main, args=(app, child_end, self.terminating),
                name="cloudq-child", daemon=True)
            self.process.start()
            child_end.close()
        self.conn = parent_end
        self.pid = self.process.pid
        self.tasks = 0

    def send(self, obj: Any) -> bool:
        try:
            self.conn.send(obj)
            return True
        except (OSError, ValueError):
            return False

    def receive(self, timeout_s: float | None) -> tuple[Any, ...] | None:
        """The next reply, ``_TIMEOUT``, or None when the child is gone."""
        try:
            ready = multiprocessing.connection.wait([self.conn, self.process.sentinel],
                                                    timeout_s)
            if not ready:
                return _TIMEOUT
            if self.conn.poll():
                reply: tuple[Any, ...] = self.conn.recv()
                return reply
        except (EOFError, OSError):
            pass
        return None

    def terminate(self) -> None:
        """TaskTerminated in the child's task body (if it is in one): flag, then SIGTERM."""
        self.terminating.value = True
        self.process.terminate()

    def stop(self, *, kill: bool) -> None:
        if not kill and self.send(None):
            self.process.join(CHILD_EXIT_WAIT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(CHILD_EXIT_WAIT_S)
        with _FORK_LOCK:
            _PARENT_ENDS.discard(self.conn)
        self.conn.close()


class ProcessRunner:
    """Runs each message in a forked child, enforcing the hard time limit from outside."""

    def __init__(self, app: App, max_tasks_per_child: int | None, record: Record) -> None:
        self.app = app
        self.max_tasks = max_tasks_per_child
        self.record = record
        self._child: _Child | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._task_id: str | None = None
        """The task the child runs, from its ``start`` report until its next reply."""
        self._kill_timer: threading.Timer | None = None
        """Set while the running task is being terminated: kills the child after the grace."""

    def prepare(self) -> None:
        self._ready_child()

    def _ready_child(self) -> _Child:
        with self._lock:
            if self._closed:
                raise Abandoned("the pool is closed")
            child = self._child
            if child is not None and self.max_tasks and child.tasks >= self.max_tasks:
                logger.info("child %d recycled after %d tasks", child.pid, child.tasks)
                self.record("children_recycled")
                child.stop(kill=False)
                child = None
            if child is not None and not child.process.is_alive():
                child.stop(kill=True)
                child = None
            if child is None:
                child = self._child = _Child(self.app)
                self.record("children_started")
            return child

    def run(self, message: ReceivedMessage) -> Disposition:
        child = self._ready_child()
        started = time.monotonic()
        reply = child.receive(None) if child.send(message) else None
        if reply is None or reply[0] != "start":  # it never started: leave it to come back
            self._discard(child, kill=True)
            raise (Abandoned if self._closed else ChildTaskError)(
                f"child {child.pid} exited before it started the message")
        _, task_id, task_name, limit = reply
        with self._lock:
            self._task_id = task_id
        try:
            reply = child.receive(limit)
        finally:
            with self._lock:
                self._task_id, timer, self._kill_timer = None, self._kill_timer, None
        if timer is not None:
            timer.cancel()
            return self._terminated(child, message, reply, task_id, task_name, started)
        if reply is _TIMEOUT:
            self._discard(child, kill=True)
            self.record("time_limit")
            return record_killed(
                self.app, message, TimeLimitExceeded(f"hard time limit ({limit:g}s) exceeded"),
                task_id, task_name, time.monotonic() - started)
        if reply is None:
            return self._lost(child, message, task_id, task_name, started)
        child.tasks += 1
        if reply[0] == "done":
            disposition: Disposition = reply[1]
            return disposition
        logger.error("task %s[%s]: process_message raised in child %d:\n%s",
                     task_name, task_id, child.pid, reply[2])
        raise (StoreUnavailable if reply[3] else ChildTaskError)(reply[1])

    def terminate(self, task_id: str) -> bool:
        with self._lock:
            child = self._child
            if child is None or task_id != self._task_id or self._kill_timer is not None:
                return False
            self._kill_timer = threading.Timer(TERMINATE_GRACE_S, child.process.kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()
            child.terminate()
        return True

    def _terminated(self, child: _Child, message: ReceivedMessage, reply: tuple[Any, ...] | None,
                    task_id: str, task_name: str, started: float) -> Disposition:
        """The child's own outcome if it reported one (REVOKED, or the task had just
        finished), else REVOKED recorded here; a fresh child runs the next message."""
        if reply is not None and reply[0] == "done":
            self._discard(child, kill=False)
            disposition: Disposition = reply[1]
            return disposition
        self._discard(child, kill=True)
        self.record("terminate_killed")
        return record_terminated(self.app, message, task_id, task_name,
                                 time.monotonic() - started)

    def _lost(self, child: _Child, message: ReceivedMessage, task_id: str, task_name: str,
              started: float) -> Disposition:
        child.process.join(LOST_CHILD_WAIT_S)  # its pipe closed first: let it be reaped
        code = child.process.exitcode
        self._discard(child, kill=True)
        if self._closed:
            raise Abandoned(f"child {child.pid} was stopped with the task running")
        self.record("worker_lost")
        return record_killed(
            self.app, message,
            WorkerLostError(f"worker process {child.pid} exited unexpectedly (exit code {code})"),
            task_id, task_name, time.monotonic() - started)

    def _discard(self, child: _Child, *, kill: bool) -> None:
        with self._lock:
            if self._child is child:
                self._child = None
        child.stop(kill=kill)

    def close(self, *, kill: bool) -> None:
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.stop(kill=kill)


# -- the process pool: child side --------------------------------------------------------------
def _child_main(app: App, conn: Connection, terminating: c_bool) -> None:
    """The loop of a pool child: one message in, ``start`` and ``done`` out, until None."""
    interrupt = Interrupt()
    _child_setup(app, terminating, interrupt)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        conn.send(("start", *hard_time_limit(app, message.body)))
        try:
            disposition = process_message(app, message, interrupt=interrupt)
        except Exception as exc:
            conn.send(("raised", f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                       isinstance(exc, StoreUnavailable)))
        else:
            conn.send(("done", disposition))


def _child_setup(app: App, terminating: c_bool, interrupt: Interrupt) -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        if terminating.value:  # the parent's terminate, not a SIGTERM to the process group
            interrupt.fire(TaskTerminated)  # raises here when a task body runs

    signal.signal(signal.SIGINT, _ignore_signal)
    signal.signal(signal.SIGTERM, on_sigterm)
    for end in list(_PARENT_ENDS):  # siblings' pipes: holding them would hide their EOFs
        end.close()
    _PARENT_ENDS.clear()
    forget_thread_loop()  # a loop copied from the parent's thread is not this process's
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            logger.debug("child %d: PR_SET_PDEATHSIG unavailable", os.getpid())
    app.after_fork()


def _ignore_signal(signum: int, frame: object) -> None:
    """Children leave shutdown to the parent, which finishes the task first."""
