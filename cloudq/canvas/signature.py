"""Signatures and the canvas built from them: chain, group, chord.

A signature is a plain value (not a dict subclass) that travels as a dict:
``{"task", "args", "kwargs", "options", "immutable"}`` for a task, and
``{"subtask_type": "chain"|"group", "tasks": [...]}`` or
``{"subtask_type": "chord", "header": [...], "body": {...}}`` for the others. Arguments are
kept in cloudq's JSON form, so a dict is exactly what goes on the wire.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cloudq.errors import ValidationError
from cloudq.redaction import quote
from cloudq.serialization import LENIENT, from_jsonable, to_jsonable

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.canvas.result import GroupResult
    from cloudq.result import AsyncResult

SigDict = dict[str, Any]


class Signature:
    """A task call to make later: ``add.s(2, 2)``, ``cloudq.signature("shop.add", (2, 2))``."""

    subtask_type: str | None = None

    def __init__(
        self,
        task: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        app: App | None = None,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        self._app = app

    # -- identity -----------------------------------------------------------------------------
    @property
    def app(self) -> App:
        if self._app is None:
            from cloudq.app import current_app

            return current_app()
        return self._app

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        """Copies share the App; everything else is copied."""
        new = copy.copy(self)
        for name, value in self.__dict__.items():
            if name != "_app":
                setattr(new, name, copy.deepcopy(value, memo))
        return new

    # -- building -----------------------------------------------------------------------------
    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` prepended (unless immutable), kwargs and options merged."""
        new = copy.deepcopy(self)
        if not self.immutable:
            new.args = tuple(args) + self.args
            new.kwargs = {**self.kwargs, **(kwargs or {})}
        new.options.update(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (and immutability) in place, as Celery does; returns the signature."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def link(self, callback: Signature) -> Signature:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def __or__(self, other: Signature) -> Chain:
        if not isinstance(other, Signature):
            return NotImplemented
        mine = list(self.tasks) if isinstance(self, Chain) else [self]
        theirs = list(other.tasks) if isinstance(other, Chain) else [other]
        return Chain(*mine, *theirs, app=self._app or other._app)

    # -- running ------------------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send it (with ``args`` prepended); returns AsyncResult, or GroupResult for a group."""
        from cloudq.canvas.apply import apply_signature

        return apply_signature(self.app, self.clone(args, kwargs, **options))

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """``delay`` from async code (aioboto3: the event loop is not blocked)."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """``apply_async`` from async code; returns AsyncResult, or GroupResult for a group."""
        from cloudq.canvas.apply import aapply_signature

        return await aapply_signature(self.app, self.clone(args, kwargs, **options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run it here and now, in this process (``sig()``)."""
        from cloudq.canvas.apply import call_locally

        return call_locally(self.app, self.clone(args, kwargs))

    def freeze(self) -> AsyncResult[Any] | GroupResult:
        """Give it (and everything in it) task ids now; return the result handle."""
        from cloudq.canvas.apply import freeze

        return freeze(self.app, self)

    # -- the wire form ------------------------------------------------------------------------
    def to_dict(self) -> SigDict:
        return {
            "task": self.task, "args": to_jsonable(list(self.args), "args"),
            "kwargs": to_jsonable(self.kwargs, "kwargs"), "options": _options_dict(self.options),
            "immutable": self.immutable,
        }


class _Canvas(Signature):
    """Chains, groups and chords: calling one sends it (``chain(...)()``), as in Celery."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def _options_dict(self) -> dict[str, Any]:
        return _options_dict(self.options)


class Chain(_Canvas):
    """Tasks run one after another, each getting the previous one's return value."""

    subtask_type = "chain"

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None,
                 **options: Any) -> None:
        self.tasks = [maybe_signature(t, app) for t in _flatten(tasks)]
        super().__init__(None, options=options, app=app or _first_app(self.tasks))

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Chain:
        new = copy.deepcopy(self)
        if new.tasks and (args or kwargs):
            new.tasks[0] = new.tasks[0].clone(args, kwargs)
        new.options.update(options)
        return new

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) or "chain()"

    def to_dict(self) -> SigDict:
        return {"subtask_type": "chain", "tasks": [t.to_dict() for t in self.tasks],
                "options": self._options_dict()}


class Group(_Canvas):
    """Tasks run in parallel; the result is the list of their results, in order."""

    subtask_type = "group"

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None,
                 **options: Any) -> None:
        self.tasks = [maybe_signature(t, app) for t in _flatten(tasks)]
        super().__init__(None, options=options, app=app or _first_app(self.tasks))

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Group:
        new = copy.deepcopy(self)
        if args or kwargs:
            new.tasks = [t.clone(args, kwargs) for t in new.tasks]
        new.options.update(options)
        return new

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.tasks))}])"

    def to_dict(self) -> SigDict:
        return {"subtask_type": "group", "tasks": [t.to_dict() for t in self.tasks],
                "options": self._options_dict()}


class Chord(_Canvas):
    """A group (the header) whose results, in order, are passed to one callback (the body)."""

    subtask_type = "chord"

    def __init__(self, header: Iterable[Signature] | Group, body: Signature | None = None,
                 app: App | None = None, **options: Any) -> None:
        tasks = header.tasks if isinstance(header, Group) else list(header)
        self.header = [maybe_signature(t, app) for t in tasks]
        self.body = maybe_signature(body, app) if body is not None else None
        parts = [*self.header, *([self.body] if self.body else [])]
        super().__init__(None, options=options, app=app or _first_app(parts))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``chord(header)(callback)`` and ``chord(header, body)()`` send the chord."""
        if self.body is None and len(args) == 1 and isinstance(args[0], Signature):
            return Chord(self.header, args[0], app=self._app, **self.options).apply_async()
        return super().__call__(*args, **kwargs)

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Chord:
        new = copy.deepcopy(self)
        if args or kwargs:
            new.header = [t.clone(args, kwargs) for t in new.header]
        new.options.update(options)
        return new

    def __repr__(self) -> str:
        return f"chord([{', '.join(map(repr, self.header))}], {self.body!r})"

    def to_dict(self) -> SigDict:
        if self.body is None:
            raise ValidationError("a chord needs a body: chord(header)(body) or "
                                  "chord(header, body)")
        return {"subtask_type": "chord", "header": [t.to_dict() for t in self.header],
                "body": self.body.to_dict(), "options": self._options_dict()}


def _options_dict(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options in wire form; linked signatures become their dicts."""
    plain = {k: v for k, v in options.items() if k not in ("link", "link_error")}
    out: dict[str, Any] = to_jsonable(plain)
    for key in ("link", "link_error"):
        linked = options.get(key)
        if linked:
            items = linked if isinstance(linked, list | tuple) else [linked]
            out[key] = [s.to_dict() if isinstance(s, Signature) else dict(s) for s in items]
    return out


def _flatten(tasks: tuple[Any, ...]) -> list[Any]:
    """``chain(a, b)`` and ``chain([a, b])`` alike."""
    if len(tasks) == 1 and not isinstance(tasks[0], Signature | Mapping):
        return list(tasks[0])
    return list(tasks)


def _first_app(signatures: Iterable[Signature]) -> App | None:
    return next((s._app for s in signatures if s._app is not None), None)


def maybe_signature(value: Signature | Mapping[str, Any], app: App | None = None) -> Signature:
    """A Signature from a Signature or its dict form."""
    if isinstance(value, Signature):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a signature, got {quote(value)}")
    return from_dict(value, app)


def from_dict(data: Mapping[str, Any], app: App | None = None) -> Signature:
    kind = data.get("subtask_type")
    options = dict(from_jsonable(data.get("options", {})))
    if kind == "chain":
        return Chain(*[from_dict(t, app) for t in data["tasks"]], app=app, **options)
    if kind == "group":
        return Group(*[from_dict(t, app) for t in data["tasks"]], app=app, **options)
    if kind == "chord":
        return Chord([from_dict(t, app) for t in data["header"]], from_dict(data["body"], app),
                     app=app, **options)
    rules = app.decoding(data["task"]) if app is not None else LENIENT
    return Signature(data["task"], from_jsonable(data.get("args", []), rules, path="args"),
                     from_jsonable(data.get("kwargs", {}), rules, path="kwargs"), options,
                     bool(data.get("immutable")), app)


def signature(task: str | Signature | Mapping[str, Any], args: Sequence[Any] = (),
              kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
              app: App | None = None, **extra: Any) -> Signature:
    """``cloudq.signature("shop.add", args=(2, 2), options={...})`` or from a dict."""
    if isinstance(task, Signature | Mapping):
        return maybe_signature(task, app).clone(**extra)
    return Signature(task, args, kwargs, {**(options or {}), **extra}, app=app)
