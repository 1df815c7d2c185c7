"""Send-time checks of task arguments against the task's signature and annotations.

The same checks rebuild typed values in the worker: a parameter annotated with a pydantic
model, ``datetime`` or ``list[Decimal]`` gets that type back even when the message came
from a plain-JSON producer (an EventBridge schedule, another language).
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from cloudq.errors import ValidationError

logger = logging.getLogger(__name__)

_SKIP = (inspect.Parameter.empty, Any, typing.Any)


class Arguments:
    """The parameters of a task function (without ``self`` for bound tasks)."""

    def __init__(self, fn: Callable[..., Any], *, name: str, bound: bool) -> None:
        self._fn = fn
        self._name = name
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        self.signature = signature.replace(parameters=params[1:] if bound else params)

    @cached_property
    def _adapters(self) -> dict[str, TypeAdapter[Any]]:
        try:
            hints = typing.get_type_hints(self._fn, include_extras=True)
        except Exception as exc:  # unresolvable forward references: check arity only
            logger.debug("task %s: annotations not resolvable (%s); types unchecked",
                         self._name, exc)
            return {}
        adapters: dict[str, TypeAdapter[Any]] = {}
        for param in self.signature.parameters.values():
            hint = hints.get(param.name, inspect.Parameter.empty)
            if hint in _SKIP:
                continue
            try:
                adapters[param.name] = TypeAdapter(hint)
            except Exception as exc:  # a type pydantic cannot validate: leave it unchecked
                logger.debug("task %s: parameter %s unchecked (%s)", self._name, param.name, exc)
        return adapters

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> inspect.BoundArguments:
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError(f"{self._name}{self.signature}: {exc}") from exc

    def _validate(self, param: str, kind: Any, value: Any) -> Any:
        adapter = self._adapters[param]
        try:
            if kind is inspect.Parameter.VAR_POSITIONAL:
                return tuple(adapter.validate_python(v) for v in value)
            if kind is inspect.Parameter.VAR_KEYWORD:
                return {k: adapter.validate_python(v) for k, v in value.items()}
            return adapter.validate_python(value)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValidationError(
                f"{self._name}: argument {param!r} = {_short(value)} does not match its "
                f"annotation ({problems})"
            ) from exc

    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise ValidationError if the call does not fit the signature or the annotations."""
        self.rebuild(args, kwargs)

    def rebuild(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments, in the call's own shape, with annotated values validated into
        their declared types."""
        bound = self._bind(args, kwargs)
        if not self._adapters:
            return tuple(args), dict(kwargs)
        params = self.signature.parameters
        valid = {
            name: self._validate(name, params[name].kind, value) if name in self._adapters
            else value
            for name, value in bound.arguments.items()
        }
        new_args: list[Any] = []
        for name, param in params.items():
            if len(new_args) >= len(args):
                break
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                new_args.extend(valid.get(name, ()))
            elif param.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                inspect.Parameter.POSITIONAL_OR_KEYWORD):
                new_args.append(valid[name])
        var_kw = next((n for n, p in params.items()
                       if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        new_kwargs = {
            key: valid[key] if key in valid and key != var_kw else valid[var_kw][key]  # type: ignore[index]
            for key in kwargs
        }
        return tuple(new_args), new_kwargs


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
