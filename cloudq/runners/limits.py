"""Raising an exception inside a running task: soft time limits, and terminating revokes.

In a process's main thread (process pool children, Lambda) a soft time limit is a SIGALRM
timer. In other threads (the thread pool) it is an asynchronous exception delivered at the
next Python bytecode, so it interrupts Python code but not a blocking C call.
:class:`Interrupt` is that asynchronous exception, confined to a block (the task body):
``revoke(terminate=True)`` uses it too (``cloudq.runners.revocations``), and so does the thread
pool's hard limit (``cloudq.runners.pools.HardLimit``), which also uses :meth:`Interrupt.expire`
to throw away the outcome of a body that outlived its limit.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from cloudq.errors import SoftTimeLimitExceeded

Hook = Callable[[str | None], None]
DisarmHook = Callable[[str | None, bool], None]


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this thread if the block runs longer than ``seconds``."""
    if not seconds or seconds <= 0:
        yield
        return
    if (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0):  # never clobber someone's alarm
        with _alarm(seconds):
            yield
    else:
        with _async_exception(seconds):
            yield


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds:g}s) exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None
    )


class Overran(BaseException):
    """A task body ended after its hard time limit, whose FAILURE its runner already recorded.

    Raised where the body's :meth:`Interrupt.armed` block ends, it carries the late end up
    through the execution (which must store nothing more) to the runner. A BaseException, like
    asyncio's CancelledError, so that the ``except Exception`` of the execution lets it by.
    """


class Interrupt:
    """Raises an exception in a thread, but only while that thread is inside :meth:`armed`.

    At most once per ``armed`` block; what has not been raised when the block ends is dropped,
    so the exception never lands in the code that runs after it (storing the outcome).
    ``on_arm(key)`` and ``on_disarm(key, expired)`` are called in the armed thread as the block
    starts and ends (the thread pool times hard limits with them; ``on_disarm`` may raise in
    place of the block's outcome). Once :meth:`expire` has taken the outcome away from the
    block, the block ends by raising :class:`Overran`.
    """

    def __init__(self, *, on_arm: Hook | None = None,
                 on_disarm: DisarmHook | None = None) -> None:
        self._lock = threading.RLock()  # a signal handler in the armed thread may re-enter
        self._thread_id: int | None = None
        self._key: str | None = None
        self._fired = False
        self._expired = False
        self._on_arm = on_arm
        self._on_disarm = on_disarm

    @contextmanager
    def armed(self, key: str | None = None) -> Iterator[None]:
        """Let :meth:`fire` reach this thread while the block runs; ``key`` names what runs."""
        try:  # armed inside the try: an exception fired at once still disarms
            with self._lock:
                self._thread_id, self._key, self._fired = threading.get_ident(), key, False
                self._expired = False
            if self._on_arm is not None:
                self._on_arm(key)
            yield
        finally:
            with self._lock:
                if self._fired and self._thread_id is not None:
                    _set_async_exc(self._thread_id, None)  # drop it if not raised yet
                self._thread_id = self._key = None
                expired, self._expired = self._expired, False
            if self._on_disarm is not None:
                self._on_disarm(key, expired)
            if expired:  # also in place of what the body raised: nothing of it is stored
                raise Overran(key)

    def expire(self, key: str | None = None) -> bool:
        """Take the outcome away from the armed block (if ``key`` is None or is the block's):
        when it ends it raises :class:`Overran` instead. False when nothing matching is armed
        (the block has ended: its outcome stands)."""
        with self._lock:
            if self._thread_id is None or (key is not None and key != self._key):
                return False
            self._expired = True
            return True

    def fire(self, exc: type[BaseException], key: str | None = None) -> bool:
        """Raise ``exc`` in the armed thread at its next bytecode (if ``key`` is None or is the
        armed block's). False when nothing matching is armed or it has already fired.

        In the armed thread itself (a signal handler) it raises at once.
        """
        if self._thread_id == threading.get_ident():  # no lock: the thread may hold it
            if self._fired or (key is not None and key != self._key):
                return False
            self._fired = True
            raise exc()
        with self._lock:
            if self._thread_id is None or self._fired or (key is not None and key != self._key):
                return False
            self._fired = True
            _set_async_exc(self._thread_id, exc)
            return True


@contextmanager
def _async_exception(seconds: float) -> Iterator[None]:
    interrupt = Interrupt()
    timer = threading.Timer(seconds, interrupt.fire, args=(SoftTimeLimitExceeded,))
    timer.daemon = True
    with interrupt.armed():
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
