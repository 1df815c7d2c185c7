"""Tasks: a function plus its options, sendable with ``delay``/``apply_async``.

``Task[P, R]`` is generic over the function's parameters and return type, so
``add.delay("x")`` is a type error in the user's editor and ``add.delay(1, 2).get()`` is an
``int``. Subclass ``Task`` (``@app.task(base=MyTask)``) to share options and hooks.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from cloudq import states
from cloudq.arguments import Arguments
from cloudq.errors import MaxRetriesExceededError, Retry
from cloudq.retries import backoff_countdown_s

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.canvas.signature import Group, Signature
    from cloudq.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

TASK_OPTIONS = frozenset({
    "name", "bind", "base", "queue", "priority", "ignore_result", "max_retries",
    "default_retry_delay", "autoretry_for", "dont_autoretry_for", "retry_kwargs", "retry_backoff",
    "retry_backoff_max", "retry_jitter", "time_limit", "soft_time_limit", "rate_limit",
    "acks_late", "expires", "serializer", "compression", "idempotent", "track_started",
    "typing",
})


@dataclass
class Request:
    """What a running task knows about its own invocation (``self.request``)."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    queue: str | None = None
    link: list[dict[str, Any]] = field(default_factory=list)
    link_error: list[dict[str, Any]] = field(default_factory=list)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    is_eager: bool = False
    message_group_id: str | None = None

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        return self.link

    @property
    def errbacks(self) -> list[dict[str, Any]]:
        return self.link_error


retries_exhausted: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cloudq_retries_exhausted", default=False
)
"""Set when ``Task.retry`` gives up, so the worker also dead-letters the failed message."""

_current_request: contextvars.ContextVar[tuple[Task[Any, Any], Request] | None] = (
    contextvars.ContextVar("cloudq_current_request", default=None)
)


class Task(Generic[P, R]):
    """A registered task. Class attributes are the defaults every instance may override."""

    name: str = ""
    typing: ClassVar[bool] = True
    """Check arguments against the signature and annotations at send time."""
    queue: str | None = None
    priority: int | None = None
    ignore_result: bool | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180.0
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    acks_late: bool = True
    expires: float | timedelta | datetime | None = None
    serializer: str = "json"
    compression: str | None = None
    idempotent: bool = False
    track_started: bool | None = None

    def __init__(
        self, fn: Callable[..., R], *, app: App | None, name: str, bind: bool = False,
        **options: Any,
    ) -> None:
        self._fn = fn
        self._app = app
        self.name = name
        self.bind = bind
        for key, value in options.items():
            setattr(self, key, value)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self.__module__ = fn.__module__
        self.__qualname__ = getattr(fn, "__qualname__", name)

    # -- identity ----------------------------------------------------------------------------------
    @property
    def app(self) -> App:
        if self._app is None:
            from cloudq.app import current_app

            return current_app()
        return self._app

    @cached_property
    def arguments(self) -> Arguments:
        return Arguments(self._fn, name=self.name, bound=self.bind)

    @property
    def request(self) -> Request:
        """The invocation being run by this task in the current thread/coroutine."""
        current = _current_request.get()
        if current is not None and current[0] is self:
            return current[1]
        return Request(task=self.name)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- running -----------------------------------------------------------------------------------
    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The task body."""
        if self.bind:
            return self._fn(self, *args, **kwargs)
        return self._fn(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task body here and now, like calling the function."""
        return self.run(*args, **kwargs)

    # -- sending -----------------------------------------------------------------------------------
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; a shortcut for ``apply_async``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        link: Any = None,
        link_error: Any = None,
        headers: Mapping[str, Any] | None = None,
        compression: str | None = None,
        message_group_id: str | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task; see the README for every option. Returns at once."""
        return self.app.send_task(
            self.name, args, kwargs, task=self, task_id=task_id, countdown=countdown, eta=eta,
            expires=expires, queue=queue, priority=priority, link=link, link_error=link_error,
            headers=headers, compression=compression, message_group_id=message_group_id,
            **options,
        )

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` from async code: sends without blocking the event loop (aioboto3)."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """``apply_async`` from async code; takes the same options."""
        result: AsyncResult[R] = await self.app.asend_task(self.name, args, kwargs, task=self,
                                                           **options)
        return result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Run the task in this process, through the same steps a worker takes."""
        from cloudq.runners.eager import apply_eagerly

        return apply_eagerly(self, args or (), kwargs or {}, **options)

    # -- signatures (the canvas) ---------------------------------------------------------------
    def signature(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                  immutable: bool = False, **options: Any) -> Signature:
        """This task with these arguments, to send or compose later."""
        from cloudq.canvas.signature import Signature

        return Signature(self.name, args, kwargs, options, immutable=immutable, app=self._app)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """``add.s(2, 2)``: a signature that takes the previous task's result first."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """``add.si(2, 2)``: an immutable signature (ignores the previous result)."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Signature:
        """One task that calls this one for every item: ``add_one.map([1, 2, 3])``."""
        from cloudq.canvas.signature import Signature

        return Signature("cloudq.map", kwargs={"task": self.name, "it": list(it)}, app=self._app)

    def starmap(self, it: Any) -> Signature:
        """One task that calls this one with every tuple: ``add.starmap([(1, 2), (3, 4)])``."""
        from cloudq.canvas.signature import Signature

        return Signature("cloudq.starmap", kwargs={"task": self.name, "it": [tuple(a) for a in it]},
                         app=self._app)

    def chunks(self, it: Any, n: int) -> Group:
        """A group of starmap tasks over ``it`` in chunks of ``n``; its results are lists."""
        from cloudq.canvas.signature import Group

        items = [tuple(a) for a in it]
        if n < 1:
            raise ValueError("chunks(it, n): n must be at least 1")
        return Group(*[self.starmap(items[i:i + n]) for i in range(0, len(items), n)],
                     app=self._app)

    # -- inside a task -----------------------------------------------------------------------------
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Ask for this invocation to run again later; ``raise self.retry(...)``.

        Past ``max_retries`` it raises ``exc`` if given, else MaxRetriesExceededError.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            retries_exhausted.set(True)
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"task {self.name}[{request.id}] retried {request.retries} times "
                f"(max_retries={limit})"
            )
        if countdown is None and eta is None:
            countdown = self.default_retry_delay
        retry = Retry(exc=exc, when=countdown, eta=eta, args=args, kwargs=kwargs, options=options)
        if throw:
            raise retry
        return retry

    def autoretry_countdown_s(self, retries: int) -> float:
        """The wait before automatic retry number ``retries + 1``."""
        if "countdown" in self.retry_kwargs:
            return float(self.retry_kwargs["countdown"])
        if self.retry_backoff:
            factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
            return backoff_countdown_s(
                retries, factor=factor, maximum_s=self.retry_backoff_max, jitter=self.retry_jitter
            )
        return self.default_retry_delay

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a custom state (e.g. PROGRESS with ``meta``) visible to ``AsyncResult``."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise RuntimeError("update_state() outside a running task needs task_id")
        if self.request.is_eager:
            return
        self.app.backend.save(task_id, state or states.PROGRESS, meta=dict(meta or {}),
                               name=self.name, retries=self.request.retries)

    # -- hooks (no-ops; override in a base class) --------------------------------------------------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called before the task body runs."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Called after the task returned, once its result is stored."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        einfo: str,
    ) -> None:
        """Called after the task failed, once its failure is stored."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        einfo: str,
    ) -> None:
        """Called when the task is to be retried, once the retry is sent."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: tuple[Any, ...],
        kwargs: dict[str, Any], einfo: str | None,
    ) -> None:
        """Called after every run, whatever its outcome."""
