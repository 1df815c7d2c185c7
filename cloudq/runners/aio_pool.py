"""``--pool asyncio``: coroutine task bodies on one event loop, ``-c`` of them at once.

The loop runs in its own thread. A coroutine body holds no thread while it awaits, so a
thousand concurrent tasks cost a thousand coroutines, not a thousand threads. The blocking
steps around each body (decode, checks, storing the outcome, follow-ups: the same code every
runner uses) and any blocking task run in a small thread pool beside the loop.

Hard time limits: a coroutine body still running at its limit is cancelled and fails with
TimeLimitExceeded; a blocking body gets TimeLimitExceeded raised in its thread, and one that
does not end is recorded as FAILURE at once and its late outcome discarded, as in the threads
pool (``cloudq.runners.hard_limits``), though its offload thread stays busy until it ends.

Shutdown: the poller stops receiving and waits ``worker_shutdown_timeout`` for the running
bodies; then the pool cancels what is left. A cancelled body stores nothing and its message is
not acknowledged, so SQS delivers it again. ``revoke(terminate=True)`` cancels one body, which
is recorded as REVOKED (terminated), as in the other pools.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cloudq import message as wire
from cloudq.runners.execute import Execution, aprocess_message
from cloudq.runners.hard_limits import HardLimit
from cloudq.runners.limits import Overran

if TYPE_CHECKING:
    from collections.abc import Callable

    from cloudq.app import App
    from cloudq.runners.pools import Done, Result
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)

MAX_OFFLOAD_THREADS = 16
"""Threads for the blocking steps around the bodies (and for blocking tasks)."""


class AsyncioPool:
    """Runs messages on one event loop; the poller submits at most ``size`` at a time."""

    def __init__(self, app: App, size: int) -> None:
        self.app = app
        self.size = size
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="cloudq-asyncio")
        self._executor = ThreadPoolExecutor(max_workers=min(size, MAX_OFFLOAD_THREADS),
                                            thread_name_prefix="cloudq-io")
        self._lock = threading.Lock()
        self._running: dict[str, tuple[asyncio.Task[Any], Execution]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def submit(self, message: ReceivedMessage, done: Done) -> None:
        self.loop.call_soon_threadsafe(self._spawn, message, done)

    def _spawn(self, message: ReceivedMessage, done: Done) -> None:
        task = self.loop.create_task(self._run(message, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: ReceivedMessage, done: Done) -> None:
        execution: list[Execution] = []
        result: Result
        overran: list[Result] = []

        def report_overrun(outcome: Result) -> None:
            overran.append(outcome)
            done(outcome)

        limit = HardLimit(self.app, report_overrun)
        limit.message = message  # for blocking bodies, run in the offload threads
        try:
            result = await aprocess_message(
                self.app, message, offload=self._offload,
                on_start=lambda e: self._started(e, execution), interrupt=limit.interrupt,
                hard_limits=True)
        except asyncio.CancelledError:
            if not overran:  # else reported at its limit; its thread is still blocked in it
                logger.warning("message %s abandoned at shutdown; it will be delivered again",
                               message.message_id)
            return
        except Overran:  # HardLimit has reported its FAILURE already
            task_id, name = wire.peek(message.body)
            logger.warning("task %s[%s] ended after its hard time limit: outcome discarded "
                           "(its FAILURE, TimeLimitExceeded, stands)", name, task_id)
            return
        except Exception as exc:
            result = exc
        finally:
            if execution:
                with self._lock:
                    self._running.pop(execution[0].envelope.id, None)
        await self._offload(done, result)

    def _started(self, execution: Execution, holder: list[Execution]) -> None:
        holder.append(execution)
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._running[execution.envelope.id] = (task, execution)

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def terminate(self, task_id: str) -> bool:
        """Cancel the body of task ``task_id`` if it runs here (revoke with terminate)."""
        with self._lock:
            found = self._running.get(task_id)
        if found is None:
            return False
        task, execution = found
        execution.terminated = True
        self.loop.call_soon_threadsafe(task.cancel)
        return True

    def close(self, *, kill: bool = False) -> None:
        """Stop the loop; with ``kill``, cancel the bodies still running first."""
        if self.loop.is_closed():
            return

        async def shutdown() -> None:
            # without kill, what is left only waits for a blocking body that overran its limit
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.loop.stop()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
            self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)
