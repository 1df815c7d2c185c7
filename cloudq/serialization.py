"""JSON with round-tripping for the types tasks commonly take and return.

Plain JSON values pass through unchanged. Tuples, datetimes, dates, times, Decimals, UUIDs,
bytes, sets and pydantic models become small tagged objects ``{"__cq__": tag, "v": ...}`` and
come back as the same types. Anything else is an :class:`~cloudq.errors.EncodeError` that
names where in the arguments the bad value sits. No pickle, ever.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from cloudq.errors import DecodeError, EncodeError

TAG = "__cq__"

_Encoder = Callable[[Any], Any]


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def to_jsonable(value: Any, path: str = "value") -> Any:
    """Turn ``value`` into plain JSON data, tagging the types JSON cannot carry."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EncodeError(f"{path}: {value!r} is not valid JSON")
        return value
    if isinstance(value, list):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {TAG: "tuple", "v": [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodeError(
                    f"{path}: dict key {key!r} is a {type(key).__name__}; JSON keys must be str"
                )
            out[key] = to_jsonable(item, f"{path}[{key!r}]")
        return {TAG: "dict", "v": out} if TAG in out else out
    return _tagged(value, path)


def _tagged(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        items = [to_jsonable(v, f"{path}{{...}}") for v in value]
        return {TAG: "set", "v": sorted(items, key=json.dumps)}
    if isinstance(value, BaseModel):
        return {TAG: "model", "cls": _class_path(type(value)), "v": value.model_dump(mode="json")}
    if isinstance(value, BaseException):
        try:
            args = to_jsonable(list(value.args), f"{path}.args")
        except EncodeError:
            args = [str(value)]
        return {TAG: "exception", "type": exception_path(value), "message": str(value), "v": args}
    raise EncodeError(
        f"{path}: object of type {type(value).__module__}.{type(value).__qualname__} is not "
        "JSON serialisable (use JSON types, datetime, date, Decimal, UUID, bytes, tuples "
        "or pydantic models)"
    )


def _model_from(cls_path: str, data: Any) -> Any:
    module_name, _, qualname = cls_path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return data  # the model is not importable here: hand over its fields
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_validate(data)
    return data


def exception_path(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class (just the name for builtins)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def rebuild_exception(exc_type: str, message: str, args: Any) -> BaseException:
    """An exception of the named type when importable here, else RemoteTaskError naming it."""
    from cloudq.errors import RemoteTaskError

    module_name, _, name = exc_type.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "builtins"), name)
    except (ImportError, AttributeError, ValueError):
        return RemoteTaskError(message, exc_type=exc_type)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RemoteTaskError(message, exc_type=exc_type)
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        return cls(message)
    except Exception:
        return RemoteTaskError(message, exc_type=exc_type)


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tuple": lambda o: tuple(from_jsonable(v) for v in o["v"]),
    "dict": lambda o: {k: from_jsonable(v) for k, v in o["v"].items()},
    "datetime": lambda o: datetime.fromisoformat(o["v"]),
    "date": lambda o: date.fromisoformat(o["v"]),
    "time": lambda o: time.fromisoformat(o["v"]),
    "decimal": lambda o: Decimal(o["v"]),
    "uuid": lambda o: UUID(o["v"]),
    "bytes": lambda o: base64.b64decode(o["v"]),
    "set": lambda o: {from_jsonable(v) for v in o["v"]},
    "model": lambda o: _model_from(o["cls"], o["v"]),
    "exception": lambda o: rebuild_exception(o["type"], o["message"], from_jsonable(o["v"])),
}


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable`."""
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(TAG)
        if tag is None:
            return {k: from_jsonable(v) for k, v in value.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise DecodeError(f"unknown value tag {tag!r}")
        try:
            return decoder(value)
        except (KeyError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad {tag} value {value!r}: {exc}") from exc
    return value


def dumps(value: Any) -> str:
    """Encode to a compact JSON string."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Decode a string made by :func:`dumps`."""
    try:
        return from_jsonable(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
