"""``AsyncResult``: a handle on a task's state and result, read from the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cloudq import states
from cloudq.errors import TaskRevokedError, TimeoutError

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.results import ResultMeta

R = TypeVar("R")

FIRST_POLL_S = 0.005
MAX_POLL_S = 0.5


def poll_intervals(first_s: float = FIRST_POLL_S, max_s: float = MAX_POLL_S) -> Any:
    """Adaptive back-off: a few ms at first (fast tasks return fast), then up to ``max_s``."""
    interval = first_s
    while True:
        yield interval
        interval = min(max_s, interval * 1.5)


def waits(timeout: float | None, interval: float = MAX_POLL_S) -> Iterator[float | None]:
    """Pauses between polls (adaptive back-off, cut to the time left), then None once
    ``timeout`` has passed: the one waiting rule of ``get`` and ``aget``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for pause in poll_intervals(max_s=interval):
        if deadline is None:
            yield pause
            continue
        left = deadline - time.monotonic()
        yield min(pause, left) if left > 0 else None


class AsyncResult(Generic[R]):
    """The result of one task invocation. Every property reads the store afresh."""

    def __init__(self, id: str, app: App | None = None, task_name: str | None = None) -> None:
        if app is None:
            from cloudq.app import current_app

            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _meta(self) -> ResultMeta:
        return self.app.backend.get(self.id)

    @property
    def state(self) -> str:
        return self._meta().state

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception raised, or the progress meta."""
        return self._meta().result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().traceback

    @property
    def date_done(self) -> datetime | None:
        return self._meta().date_done

    @property
    def retries(self) -> int:
        return self._meta().retries

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = MAX_POLL_S,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task to finish and return its value.

        Polls the store with adaptive back-off (5 ms growing to ``interval``). Raises
        ``cloudq.TimeoutError`` after ``timeout`` seconds, and with ``propagate`` re-raises the
        task's exception (its own type when importable) or TaskRevokedError.
        """
        for pause in waits(timeout, interval):
            meta = self._meta()
            if meta.ready:
                value: R = self._outcome(meta, propagate)
                return value
            if pause is None:
                raise self._timeout(meta, timeout)
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = MAX_POLL_S) -> R:
        """``get`` from async code: awaits between polls instead of blocking the loop."""
        from cloudq.aio import aresult_meta
        from cloudq.results import task_key

        for pause in waits(timeout, interval):
            item = await self.app.aio.get_item(task_key(self.id))
            meta = self.app.backend.meta_from(self.id, item)
            if meta.ready:
                meta = await aresult_meta(self.app, self.id, item)
                value: R = self._outcome(meta, propagate)
                return value
            if pause is None:
                raise self._timeout(meta, timeout)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def astate(self) -> str:
        """The state, read without blocking the loop."""
        from cloudq.results import task_key

        item = await self.app.aio.get_item(task_key(self.id))
        return self.app.backend.meta_from(self.id, item).state

    def _timeout(self, meta: ResultMeta, timeout: float | None) -> TimeoutError:
        return TimeoutError(f"task {self.task_name or meta.name or ''}[{self.id}] not ready "
                            f"after {timeout}s (state {meta.state})")

    def _outcome(self, meta: ResultMeta, propagate: bool) -> Any:
        if propagate and meta.state == states.FAILURE:
            raise meta.result
        if propagate and meta.state == states.REVOKED:
            raise TaskRevokedError(
                f"task {meta.name or ''}[{self.id}] was revoked"
                + (f" ({meta.extra['reason']})" if meta.extra.get("reason") else "")
            )
        return meta.result

    def forget(self) -> None:
        """Drop the stored result."""
        self.app.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Stop the task from running; with ``terminate`` also stop it if it is running."""
        self.app.backend.revoke(self.id, terminate=terminate)
