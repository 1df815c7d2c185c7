"""JSON with round-tripping for the types tasks commonly take and return.

Plain JSON values pass through unchanged. Tuples, datetimes, dates, times, Decimals, UUIDs,
bytes, sets and pydantic models become small tagged objects ``{"__cq__": tag, "v": ...}`` and
come back as the same types. Anything else is an :class:`~cloudq.errors.EncodeError` that
names where in the arguments the bad value sits. No pickle, ever.

Decoding never imports anything (docs/security.md): a ``model`` tag is rebuilt only as a class
its :class:`Decoding` allows, an ``exception`` tag only as a class already loaded. A value nests
at most :data:`MAX_DEPTH` levels and never refers to itself; either is a clear error naming
the path, in both directions, never a RecursionError.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import cached_property
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from cloudq.errors import DecodeError, EncodeError
from cloudq.redaction import TEXT_LIMIT, cut, quote

TAG = "__cq__"

MAX_DEPTH = 100
"""Most levels of JSON arrays and objects one encoded value may nest (a tuple or a set is two:
its tag object and the list in it). Below serde_json's default limit of 128, so a message body
(whose frame and argument list add two) still parses in other languages, and far below
Python's recursion limit."""

_SCALARS = (str, int, bool)
_PATH_PARTS_SHOWN = 12


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _render(parts: list[str]) -> str:
    """A path, abbreviated in the middle when it is long: ``args[0][0][0]…[94 more]…[0][0][0]``."""
    if len(parts) <= _PATH_PARTS_SHOWN:
        return "".join(parts)
    return f"{''.join(parts[:4])}…[{len(parts) - 7} more]…{''.join(parts[-3:])}"


def _key_part(key: str) -> str:
    return f"[{cut(repr(key), 40)}]"


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep"


# -- encoding -----------------------------------------------------------------------------------
class _Encoder:
    """One ``to_jsonable`` call: the path to the value at hand, the containers open around it
    (to find a value that contains itself) and how deep the output is nested there."""

    def __init__(self, root: str, show_values: bool) -> None:
        self.parts = [root]
        self.open: dict[int, int] = {}
        """id() of each container being encoded -> the length of its path."""
        self.depth = 0
        self.show = show_values

    def error(self, what: str) -> EncodeError:
        return EncodeError(f"{_render(self.parts)}: {what}")

    def enter(self, value: object, levels: int) -> None:
        where = self.open.get(id(value))
        if where is not None:
            raise self.error(f"refers to itself (the value at {_render(self.parts[:where])})")
        if self.depth + levels > MAX_DEPTH:
            raise self.error(_too_deep())
        self.depth += levels
        self.open[id(value)] = len(self.parts)

    def leave(self, value: object, levels: int) -> None:
        self.depth -= levels
        del self.open[id(value)]

    def item(self, part: str, value: Any) -> Any:
        self.parts.append(part)
        encoded = self.encode(value)
        self.parts.pop()
        return encoded

    def items(self, values: Iterable[Any]) -> list[Any]:
        return [v if v is None or isinstance(v, _SCALARS) else self.item(f"[{i}]", v)
                for i, v in enumerate(values)]

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, _SCALARS):
            return value
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                raise self.error(f"{value!r} is not valid JSON")
            return value
        if isinstance(value, list):
            levels = 1
        elif isinstance(value, tuple | set | frozenset):
            levels = 2
        elif isinstance(value, Mapping):
            levels = 2 if TAG in value else 1
        else:
            return self.tagged(value)
        self.enter(value, levels)
        out = self.container(value)
        self.leave(value, levels)
        return out

    def container(self, value: Any) -> Any:
        if isinstance(value, list):
            return self.items(value)
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": self.items(value)}
        if isinstance(value, Mapping):
            out = self.mapping(value)
            return {TAG: "dict", "v": out} if TAG in out else out
        items = [self.item("{...}", v) for v in value]
        return {TAG: "set", "v": sorted(items, key=json.dumps)}

    def mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise self.error(f"dict key {quote(key, show=self.show)} is a "
                                 f"{type(key).__name__}; JSON keys must be str")
            out[key] = item if item is None or isinstance(item, _SCALARS) \
                else self.item(_key_part(key), item)
        return out

    def tagged(self, value: Any) -> dict[str, Any]:
        if isinstance(value, BaseModel):
            return self.model(value)
        if isinstance(value, BaseException):
            return self.exception(value)
        if self.depth + 1 > MAX_DEPTH:
            raise self.error(_too_deep())
        for kind, encoder in _SCALAR_TAGS:
            if isinstance(value, kind):
                return encoder(value)
        raise self.error(
            f"object of type {type(value).__module__}.{type(value).__qualname__} is not "
            "JSON serialisable (use JSON types, datetime, date, Decimal, UUID, bytes, tuples "
            "or pydantic models)"
        )

    def model(self, value: BaseModel) -> dict[str, Any]:
        self.enter(value, 1)
        try:
            data = value.model_dump(mode="json")
        except (ValueError, TypeError) as exc:  # pydantic's serialisation errors
            raise self.error(f"{type(value).__qualname__} cannot be dumped as JSON: "
                             f"{cut(str(exc))}") from exc
        if not _fits(data, MAX_DEPTH - self.depth):
            raise self.error(f"{type(value).__qualname__}: {_too_deep()}")
        self.leave(value, 1)
        return {TAG: "model", "cls": _class_path(type(value)), "v": data}

    def exception(self, value: BaseException) -> dict[str, Any]:
        """The exception's args when they encode (on an encoder of their own, so a failure
        leaves this one as it was), else its message as its only arg."""
        self.enter(value, 1)
        sub = _Encoder("", self.show)
        sub.parts, sub.open, sub.depth = [*self.parts, ".args"], dict(self.open), self.depth
        try:
            args = sub.encode(list(value.args))
        except EncodeError:
            args = [str(value)]
        self.leave(value, 1)
        return {TAG: "exception", "type": exception_path(value), "message": str(value), "v": args}


_SCALAR_TAGS: tuple[tuple[type | tuple[type, ...], Callable[[Any], dict[str, Any]]], ...] = (
    (datetime, lambda v: {TAG: "datetime", "v": v.isoformat()}),
    (date, lambda v: {TAG: "date", "v": v.isoformat()}),
    (time, lambda v: {TAG: "time", "v": v.isoformat()}),
    (Decimal, lambda v: {TAG: "decimal", "v": str(v)}),
    (UUID, lambda v: {TAG: "uuid", "v": str(v)}),
    ((bytes, bytearray, memoryview),
     lambda v: {TAG: "bytes", "v": base64.b64encode(bytes(v)).decode("ascii")}),
)


def _fits(data: Any, levels: int) -> bool:
    """Whether plain JSON data nests at most ``levels`` levels (it came from a JSON dump or
    parse, so it cannot refer to itself)."""
    if isinstance(data, list | dict):
        if levels <= 0:
            return False
        children = data.values() if isinstance(data, dict) else data
        return all(_fits(child, levels - 1) for child in children
                   if isinstance(child, list | dict))
    return True


def to_jsonable(value: Any, path: str = "value", *, show_values: bool = True) -> Any:
    """Turn ``value`` into plain JSON data, tagging the types JSON cannot carry.

    ``path`` names the value in errors; ``show_values=False`` (``log_argument_values``) keeps
    every part of a value out of them."""
    return _Encoder(path, show_values).encode(value)


# -- decoding -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoding:
    """What one decoding may rebuild, and what its errors may show.

    ``models``: the pydantic classes a ``model`` tag may name (as ``module:QualName``), with
    their subclasses; they are looked up among these, never imported. A tag naming any other
    class is a DecodeError when ``strict`` (a worker decoding a task's arguments), and comes
    back as a dict of its fields otherwise (results, the arguments shown to signals).
    ``show_values``: the app's ``log_argument_values``."""

    models: tuple[type[BaseModel], ...] = ()
    strict: bool = False
    show_values: bool = True

    @cached_property
    def _by_path(self) -> dict[str, type[BaseModel]]:
        found: dict[str, type[BaseModel]] = {}
        todo = list(self.models)
        while todo:
            cls = todo.pop()
            path = _class_path(cls)
            if path not in found:
                found[path] = cls
                todo.extend(cls.__subclasses__())
        return found

    def model_class(self, cls_path: str) -> type[BaseModel] | None:
        """The allowed class named ``cls_path``, or None."""
        return self._by_path.get(cls_path)


LENIENT = Decoding()
"""No model classes, no errors for them: every model comes back as its fields."""


class _Misfit(Exception):
    """A decoding error on its way out: the path is collected as it unwinds (so the values
    that decode, nearly all of them, cost no path bookkeeping)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.parts: list[str] = []

    def at(self, part: str) -> None:
        self.parts.append(part)


class _Decoder:
    """One ``from_jsonable`` call; ``depth`` is how many arrays and objects enclose a value."""

    def __init__(self, rules: Decoding) -> None:
        self.rules = rules

    def decode(self, value: Any, depth: int) -> Any:
        """A JSON array or object (anything else is returned by the callers as it is)."""
        if depth >= MAX_DEPTH:
            raise _Misfit(_too_deep())
        if isinstance(value, list):
            return self.items(value, depth + 1)
        tag = value.get(TAG)
        if tag is None:
            return self.mapping(value, depth + 1)
        return self.tagged(tag, value, depth + 1)

    def items(self, values: list[Any], depth: int) -> list[Any]:
        out = []
        for i, v in enumerate(values):
            if isinstance(v, list | dict):
                try:
                    v = self.decode(v, depth)
                except _Misfit as exc:
                    exc.at(f"[{i}]")
                    raise
            out.append(v)
        return out

    def mapping(self, value: dict[str, Any], depth: int) -> dict[str, Any]:
        out = {}
        for k, v in value.items():
            if isinstance(v, list | dict):
                try:
                    v = self.decode(v, depth)
                except _Misfit as exc:
                    exc.at(_key_part(k))
                    raise
            out[k] = v
        return out

    def inner(self, value: dict[str, Any], depth: int, kind: type[list[Any] | dict[str, Any]]
              ) -> Any:
        """The array (or object) inside a tag object, one level deeper."""
        inside = value["v"]
        if not isinstance(inside, kind):
            raise TypeError(f"expected a JSON {'array' if kind is list else 'object'}, "
                            f"not {type(inside).__name__}")
        if depth >= MAX_DEPTH:
            raise _Misfit(_too_deep())
        if isinstance(inside, list):
            return self.items(inside, depth + 1)
        return self.mapping(inside, depth + 1)

    def tagged(self, tag: Any, value: dict[str, Any], depth: int) -> Any:
        decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
        if decoder is None:
            raise _Misfit(f"unknown value tag {quote(tag)}")
        try:
            return decoder(self, value, depth)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            show = self.rules.show_values
            detail = cut(str(exc), 80) if show else type(exc).__name__
            raise _Misfit(f"bad {tag} value {quote(value.get('v'), show=show)} ({detail})"
                          ) from exc

    def model(self, value: dict[str, Any], depth: int) -> Any:
        cls_path, data = value["cls"], value["v"]
        if not _fits(data, MAX_DEPTH - depth):
            raise _Misfit(_too_deep())
        cls = self.rules.model_class(cls_path) if isinstance(cls_path, str) else None
        if cls is not None:
            return cls.model_validate(data)
        if self.rules.strict:
            raise _Misfit(
                f"model type {quote(cls_path, limit=TEXT_LIMIT)} is not allowed: the task's "
                "annotations do not name it and the app has not registered it "
                "(app.register_type)")
        return data  # not a type this decoding knows: hand over its fields, import nothing

    def exception(self, value: dict[str, Any], depth: int) -> BaseException:
        return rebuild_exception(str(value["type"]), str(value["message"]),
                                 self.inner(value, depth, list))


_DECODERS: dict[str, Callable[[_Decoder, dict[str, Any], int], Any]] = {
    "tuple": lambda d, o, depth: tuple(d.inner(o, depth, list)),
    "dict": lambda d, o, depth: d.inner(o, depth, dict),
    "datetime": lambda d, o, _: datetime.fromisoformat(o["v"]),
    "date": lambda d, o, _: date.fromisoformat(o["v"]),
    "time": lambda d, o, _: time.fromisoformat(o["v"]),
    "decimal": lambda d, o, _: _decimal(o["v"]),
    "uuid": lambda d, o, _: UUID(o["v"]),
    "bytes": lambda d, o, _: base64.b64decode(o["v"]),
    "set": lambda d, o, depth: set(d.inner(o, depth, list)),
    "model": _Decoder.model,
    "exception": _Decoder.exception,
}


def _decimal(text: Any) -> Decimal:
    if not isinstance(text, str):
        raise TypeError(f"expected a string, not {type(text).__name__}")
    try:
        return Decimal(text)
    except ArithmeticError as exc:  # decimal.InvalidOperation
        raise ValueError("not a decimal number") from exc


def from_jsonable(value: Any, decoding: Decoding = LENIENT, *, path: str = "value") -> Any:
    """The inverse of :func:`to_jsonable`, rebuilding models only as ``decoding`` allows.

    ``path`` names the value in a DecodeError, which says where in it the problem is."""
    if not isinstance(value, list | dict):
        return value
    try:
        return _Decoder(decoding).decode(value, 0)
    except _Misfit as exc:
        raise DecodeError(f"{_render([path, *reversed(exc.parts)])}: {exc.what}") from (
            exc.__cause__)


# -- exceptions ---------------------------------------------------------------------------------
def exception_path(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class (just the name for builtins)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_class(exc_type: str) -> type[Exception] | None:
    """The exception class named ``module.QualName``, if its module is already loaded here.

    Nothing is imported: a type from a module this process has not loaded, or a name that is
    not an ``Exception`` subclass (SystemExit, KeyboardInterrupt, functions...), is None."""
    module_name, _, name = exc_type.rpartition(".")
    module = sys.modules.get(module_name) if module_name else builtins
    found = getattr(module, name, None) if module is not None and name else None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def rebuild_exception(exc_type: str, message: str, args: Any) -> BaseException:
    """An exception of the named type when it is loaded here, else RemoteTaskError naming it."""
    from cloudq.errors import RemoteTaskError

    cls = exception_class(exc_type)
    if cls is None:
        return RemoteTaskError(message, exc_type=exc_type)
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        return cls(message)
    except Exception:
        return RemoteTaskError(message, exc_type=exc_type)


# -- text ---------------------------------------------------------------------------------------
def dumps(value: Any, *, show_values: bool = True) -> str:
    """Encode to a compact JSON string."""
    return json.dumps(to_jsonable(value, show_values=show_values), separators=(",", ":"),
                      ensure_ascii=False)


def loads(text: str | bytes, decoding: Decoding = LENIENT) -> Any:
    """Decode a string made by :func:`dumps`."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError(f"not JSON this decoder reads: nested too deep ({_too_deep()})"
                          ) from exc
    return from_jsonable(parsed, decoding)
