"""Running a task body: its request in context, soft and hard time limits, coroutine bodies
on a per-thread event loop, autoretry exceptions turned into Retry.

Every runner's execution (``cloudq.runners.execute``), eager mode and the pools call these.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

from cloudq import signals
from cloudq.errors import (
    CloudqError,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TaskTerminated,
    TimeLimitExceeded,
)
from cloudq.runners.limits import Interrupt, soft_time_limit
from cloudq.task import Request, Task, _current_request, retries_exhausted


def hard_limit_s(task: Task[Any, Any], request: Request) -> float | None:
    """A run's hard time limit: the message's, else the task's, else ``task_time_limit``."""
    return request.time_limit or task.time_limit or task.app.settings.task_time_limit


async def within_hard_limit(awaitable: Awaitable[Any], limit_s: float | None) -> Any:
    """Await ``awaitable``; past ``limit_s`` it is cancelled and TimeLimitExceeded raised."""
    if not limit_s:
        return await awaitable
    limit = asyncio.timeout(limit_s)
    try:
        async with limit:
            return await awaitable
    except TimeoutError as exc:
        if not limit.expired():  # the body's own TimeoutError
            raise
        raise TimeLimitExceeded(f"hard time limit ({limit_s:g}s) exceeded") from exc


def invoke(task: Task[Any, Any], request: Request, soft_limit_s: float | None,
           interrupt: Interrupt | None = None) -> Any:
    """Run the task body with its request in context; autoretry exceptions become Retry.

    ``interrupt`` is armed around the body only, so TaskTerminated cannot land while the
    outcome is being stored. A coroutine body runs on this thread's event loop (one loop per
    thread, kept between tasks, so clients bound to it can be reused), in a copy of the
    caller's context; in a pool thread (``interrupt`` given) it is cancelled at its hard time
    limit."""
    if is_async(task):
        if _loop_running():
            raise CloudqError(
                f"task {task.name} is async and is being run in this thread, inside a running "
                "event loop (task_always_eager, or apply()): send it to a worker, or "
                "`await task.run(...)`")
        limit_s = hard_limit_s(task, request) if interrupt is not None else None
        return thread_loop().run(within_hard_limit(ainvoke(task, request, soft_limit_s), limit_s),
                                 context=contextvars.copy_context())
    with _running(task, request):
        with interrupt.armed(request.id) if interrupt else nullcontext(), \
                soft_time_limit(soft_limit_s):
            retval = task.run(*request.args, **request.kwargs)
        if inspect.isawaitable(retval):  # a plain function that returned an awaitable
            retval = thread_loop().run(_awaited(retval, soft_limit_s),
                                       context=contextvars.copy_context())
        return retval


async def ainvoke(task: Task[Any, Any], request: Request, soft_limit_s: float | None) -> Any:
    """``invoke`` for a coroutine body, awaited on the caller's event loop."""
    with _running(task, request):
        retval = task.run(*request.args, **request.kwargs)
        if inspect.isawaitable(retval):
            retval = await _awaited(retval, soft_limit_s)
        return retval


EXHAUSTED = "__cloudq_retries_exhausted__"
"""Marks an exception raised by ``retry()`` past ``max_retries``: it carries the fact to the
outcome, whatever context (thread, event loop) the body ran in."""


def exhausted_retries(exc: BaseException) -> bool:
    return bool(getattr(exc, EXHAUSTED, False))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def is_async(task: Task[Any, Any]) -> bool:
    return inspect.iscoroutinefunction(task._fn)


@contextmanager
def _running(task: Task[Any, Any], request: Request) -> Iterator[None]:
    """The request in context, the prerun signal and hook; autoretry exceptions as Retry."""
    token = _current_request.set((task, request))
    retries_exhausted.set(False)
    try:
        signals.task_prerun.send(sender=task, task_id=request.id, task=task,
                                 args=request.args, kwargs=request.kwargs)
        task.before_start(request.id or "", request.args, request.kwargs)
        try:
            yield
        except task.autoretry_for as exc:
            if isinstance(exc, Retry | Reject | TaskTerminated) or (
                task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for)
            ):
                raise
            options = {k: v for k, v in task.retry_kwargs.items() if k != "countdown"}
            raise task.retry(
                exc=exc, countdown=task.autoretry_countdown_s(request.retries), **options
            ) from exc
    except Exception as exc:
        if retries_exhausted.get():
            with suppress(AttributeError, TypeError):
                setattr(exc, EXHAUSTED, True)
        raise
    finally:
        _current_request.reset(token)


_threads = threading.local()


def thread_loop() -> asyncio.Runner:
    """This thread's event loop for coroutine task bodies (created on first use)."""
    runner: asyncio.Runner | None = getattr(_threads, "runner", None)
    if runner is None:
        runner = _threads.runner = asyncio.Runner()
    return runner


def forget_thread_loop() -> None:
    """Drop this thread's loop without closing it (in a forked child: it is the parent's)."""
    _threads.__dict__.pop("runner", None)


async def _awaited(awaitable: Any, soft_limit_s: float | None) -> Any:
    limit = asyncio.timeout(soft_limit_s)
    try:
        async with limit:
            return await awaitable
    except TimeoutError as exc:
        if not limit.expired():  # the body's own TimeoutError, not the soft limit
            raise
        raise SoftTimeLimitExceeded(f"soft time limit ({soft_limit_s:g}s) exceeded") from exc
