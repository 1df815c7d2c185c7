"""The App: settings, the task registry, and the wiring of transport, store and payloads."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from cloudq.config import Conf, Settings
from cloudq.errors import ConfigError, NotRegistered
from cloudq.ratelimit import RateLimit
from cloudq.redaction import cut
from cloudq.routing import Router
from cloudq.task import TASK_OPTIONS, Task

if TYPE_CHECKING:
    from pydantic import BaseModel

    from cloudq.aio import AsyncFace
    from cloudq.aws import AwsClients
    from cloudq.message import Envelope
    from cloudq.payloads import S3Payloads
    from cloudq.result import AsyncResult
    from cloudq.results import ResultBackend
    from cloudq.runners.lambda_runner import LambdaHandler
    from cloudq.serialization import Decoding
    from cloudq.stores.base import Store
    from cloudq.transports.base import Transport

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound="BaseModel")

_current: App | None = None
_current_lock = threading.Lock()
_shared_tasks: list[Callable[[App], None]] = []


def current_app() -> App:
    """The app made last (or one configured from ``CLOUDQ_*`` env). Never connects."""
    global _current
    with _current_lock:
        if _current is None:
            _current = App(os.environ.get("CLOUDQ_APP_NAME", "default"), set_as_current=False)
        return _current


def _set_current(app: App) -> None:
    global _current
    with _current_lock:
        _current = app


def task_name(fn: Callable[..., Any], app_name: str | None) -> str:
    """``module.function``, with ``__main__`` replaced by the app's name as Celery does."""
    module = fn.__module__
    if module == "__main__" and app_name:
        module = app_name
    return f"{module}.{fn.__qualname__}"


class App:
    """A cloudq application: ``app = cloudq.App("shop", region="eu-west-1")``."""

    def __init__(
        self,
        main: str | None = None,
        *,
        transport: Transport | None = None,
        store: Store | None = None,
        set_as_current: bool = True,
        **settings: Any,
    ) -> None:
        self.main = main
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._types: dict[type[BaseModel], None] = {}
        self._lock = threading.RLock()
        self._transport = transport
        self._store = store
        self._injected = (transport is not None, store is not None)
        self._payloads: dict[str, S3Payloads] = {}
        self._aio: tuple[Transport, Store, AsyncFace] | None = None
        self.conf = Conf(settings, on_change=self._settings_changed)
        from cloudq.canvas.builtins import register_builtins

        register_builtins(self)
        for register in list(_shared_tasks):
            register(self)
        if set_as_current:
            _set_current(self)

    def __repr__(self) -> str:
        return f"<cloudq.App {self.main!r}>"

    # -- settings ----------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.conf.settings

    def config_from_object(self, obj: Any) -> None:
        """Load settings from a module, class, dict, or ``"module.path"`` string."""
        if isinstance(obj, str):
            import importlib

            obj = importlib.import_module(obj)
        self.conf.load_object(obj)

    def _settings_changed(self) -> None:
        """Settings changed: rebuild what was derived from them on next use."""
        with self._lock:
            for derived in ("router", "backend", "aws"):
                self.__dict__.pop(derived, None)
            self._aio = None
            self._payloads.clear()
            if not self._injected[0]:
                self._transport = None
            if not self._injected[1]:
                self._store = None

    @cached_property
    def router(self) -> Router:
        return Router(self.settings.task_routes)

    # -- tasks -------------------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self, *, bind: Literal[True], base: type[Task[Any, Any]] | None = ...,
        name: str | None = ..., **options: Any,
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...
    @overload
    def task(
        self, *, bind: Literal[False] = ..., base: type[Task[Any, Any]] | None = ...,
        name: str | None = ..., **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, *, bind: bool = False,
        base: type[Task[Any, Any]] | None = None, name: str | None = None, **options: Any,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        options = {"bind": bind, "base": base, "name": name, **options}
        if fn is not None:
            return self._register(fn, options)
        return lambda f: self._register(f, options)

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        task = make_task(fn, self, options)
        self.register_task(task)
        return task

    def register_task(self, task: Task[Any, Any]) -> None:
        with self._lock:
            existing = self.tasks.get(task.name)
            if existing is not None and existing._fn is not task._fn:
                logger.warning("task %s registered twice; the later definition wins", task.name)
            self.tasks[task.name] = task

    def task_for(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(
                f"task {cut(repr(name))} is not registered with app {self.main!r} (is its "
                "module imported by the worker?)"
            ) from None

    def register_type(self, cls: type[M]) -> type[M]:
        """Let values of pydantic model ``cls`` be rebuilt in any task's arguments and results,
        not only where a task's annotations name it (docs/security.md). Returns ``cls``, so it
        also works as a class decorator."""
        from pydantic import BaseModel

        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise ConfigError(f"app.register_type({cls!r}): only pydantic model classes are "
                              "rebuilt from messages")
        with self._lock:
            self._types[cls] = None
        return cls

    def decoding(self, task_name: str | None, *, strict: bool = False) -> Decoding:
        """How values of task ``task_name`` are decoded here: the models its annotations name
        (if it is registered here) and those given to :meth:`register_type`; nothing else is
        rebuilt, nothing is imported. ``strict``: another model is an error (a worker decoding
        the task's arguments), not a dict of its fields; a task with ``typing=False`` (the
        canvas built-ins among them) always gets the dict."""
        from cloudq.serialization import Decoding

        task = self.tasks.get(task_name) if task_name else None
        models = (*(task.arguments.model_types if task is not None else ()), *self._types)
        return Decoding(models=models, strict=strict and (task is None or task.typing),
                        show_values=self.settings.log_argument_values)

    # -- sending -----------------------------------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name; the task need not be importable here."""
        from cloudq.sending import publish

        envelope, handle = self._envelope(name, args, kwargs, countdown=countdown, eta=eta,
                                          expires=expires, **options)
        if envelope is not None:
            publish(self, [envelope])
        return handle

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """``send_task`` without blocking the event loop (aioboto3)."""
        from cloudq.aio import apublish

        envelope, handle = self._envelope(name, args, kwargs, countdown=countdown, eta=eta,
                                          expires=expires, **options)
        if envelope is not None:
            await apublish(self, [envelope])
        return handle

    def _envelope(self, name: str, args: Sequence[Any] | None,
                  kwargs: Mapping[str, Any] | None,
                  **options: Any) -> tuple[Envelope | None, AsyncResult[Any]]:
        """The envelope to send and the result handle; eagerly, no envelope (it ran here)."""
        from cloudq.result import AsyncResult
        from cloudq.sending import build_envelope

        task = options.pop("task", None) or self.tasks.get(name)
        envelope = build_envelope(self, name, args, kwargs, task=task, **options)
        if self.settings.task_always_eager and task is not None:
            from cloudq.runners.eager import apply_envelope

            return None, apply_envelope(self, task, envelope)
        return envelope, AsyncResult(envelope.id, app=self, task_name=name)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Send ready-made envelopes, batched per queue."""
        from cloudq.sending import publish

        publish(self, envelopes)

    async def apublish(self, envelopes: Sequence[Envelope]) -> None:
        """``publish`` without blocking the event loop."""
        from cloudq.aio import apublish

        await apublish(self, envelopes)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        from cloudq.result import AsyncResult

        return AsyncResult(task_id, app=self)

    # -- wiring ------------------------------------------------------------------------------------
    @cached_property
    def aws(self) -> AwsClients:
        from cloudq.aws import AwsClients

        return AwsClients(region=self.settings.region, endpoint_url=self.settings.endpoint_url,
                          max_attempts=self.settings.aws_max_attempts)

    @property
    def transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                from cloudq.transports.sqs import SqsTransport

                self._transport = SqsTransport(self.aws, prefix=self.settings.queue_prefix)
            return self._transport

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from cloudq.stores.dynamodb import DynamoStore

                self._store = DynamoStore(self.aws, self.settings.result_table)
            return self._store

    @property
    def aio(self) -> AsyncFace:
        """The awaitable face's I/O (aioboto3 clients, created lazily per event loop)."""
        from cloudq.aio import face_for

        transport, store = self.transport, self.store
        with self._lock:
            face = self._aio
            if face is None or face[0] is not transport or face[1] is not store:
                self._aio = face = (transport, store, face_for(self))
            return face[2]

    async def aclose(self) -> None:
        """Close this event loop's aioboto3 clients (e.g. in a FastAPI lifespan's shutdown)."""
        if self._aio is not None:
            await self._aio[2].close()

    @cached_property
    def backend(self) -> ResultBackend:
        from cloudq.results import ResultBackend

        settings = self.settings
        return ResultBackend(self.store, expires_s=settings.result_expires_s,
                             payload_bucket=settings.payload_bucket,
                             compression=settings.result_compression, payloads=self.payloads,
                             decoding=self.decoding)

    def payloads(self, bucket: str) -> S3Payloads:
        with self._lock:
            if bucket not in self._payloads:
                from cloudq.payloads import S3Payloads

                self._payloads[bucket] = S3Payloads(self.aws, bucket)
            return self._payloads[bucket]

    def queues(self, names: Sequence[str] | None = None) -> list[str]:
        """The logical queues (all priority bands) a worker of ``names`` polls, urgent first."""
        from cloudq.routing import polling_order

        return polling_order(names or self.known_queues())

    def known_queues(self) -> list[str]:
        """Queue names the app's settings, tasks and periodic tasks mention."""
        names = [self.settings.task_default_queue]
        names += [t.queue for t in self.tasks.values() if t.queue]
        routes = self.settings.task_routes
        for route in ([routes] if isinstance(routes, Mapping) or callable(routes)
                      else routes or []):
            if isinstance(route, Mapping):
                for target in route.values():
                    queue = target if isinstance(target, str) else target.get("queue")
                    if queue:
                        names.append(queue)
        names += [queue for task in self.tasks.values() if (queue := self._routed_queue(task))]
        for entry in self.settings.beat_schedule.values():
            options = entry.get("options") if isinstance(entry, Mapping) else None
            if isinstance(options, Mapping) and isinstance(options.get("queue"), str):
                names.append(options["queue"])
        return list(dict.fromkeys(names))

    def _routed_queue(self, task: Task[Any, Any]) -> str | None:
        """The queue ``task_routes`` gives a task sent with no arguments or options, or None
        (a router function that needs real arguments is skipped)."""
        try:
            route = self.router.route(task.name, (), {}, {})
        except Exception:
            logger.debug("router could not route %s without arguments", task.name, exc_info=True)
            return None
        queue = (route or {}).get("queue")
        return queue if isinstance(queue, str) else None

    def lambda_handler(self) -> LambdaHandler:
        """A Lambda handler for SQS events: ``handler = app.lambda_handler()``."""
        from cloudq.runners.lambda_runner import LambdaHandler

        return LambdaHandler(self)

    def after_fork(self) -> None:
        """Drop connections inherited from a parent process (pools that fork)."""
        with self._lock:
            if "aws" in self.__dict__:
                self.aws.reset_after_fork()

    def close(self) -> None:
        for part in (self._transport, self._store):
            if part is not None:
                part.close()


def make_task(
    fn: Callable[..., Any], app: App | None, options: Mapping[str, Any]
) -> Task[Any, Any]:
    """Build a Task (or ``base`` subclass) from a function and decorator options."""
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise ConfigError(
            f"@task({', '.join(sorted(unknown))}=...) on {fn.__qualname__}: unknown task option"
        )
    options = dict(options)
    base: type[Task[Any, Any]] = options.pop("base", None) or Task
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise ConfigError(f"@task(base={base!r}): base must be a subclass of cloudq.Task")
    name = options.pop("name", None) or task_name(fn, app.main if app else None)
    bind = bool(options.pop("bind", False))
    RateLimit.parse(options.get("rate_limit"))  # a malformed limit fails at import, not per message
    if isinstance(options.get("autoretry_for"), list):
        options["autoretry_for"] = tuple(options["autoretry_for"])
    return base(fn, app=app, name=name, bind=bind, **options)


@overload
def shared_task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def shared_task(
    *, bind: Literal[True], **options: Any
) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...
@overload
def shared_task(
    *, bind: Literal[False] = ..., **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@cloudq.task``: a task for the current app, registered on every app made later too."""

    def decorate(f: Callable[..., Any]) -> Task[Any, Any]:
        task = make_task(f, None, options)
        _shared_tasks.append(lambda app: app.register_task(task))
        if _current is not None:
            _current.register_task(task)
        return task

    return decorate(fn) if fn is not None else decorate
