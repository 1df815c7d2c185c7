"""Send-time checks of task arguments against the task's signature and annotations.

The same checks rebuild typed values in the worker: a parameter annotated with a pydantic
model, ``datetime`` or ``list[Decimal]`` gets that type back even when the message came
from a plain-JSON producer (an EventBridge schedule, another language). The pydantic models
the annotations name (:attr:`Arguments.model_types`) are the ones a message for the task may
ask the worker to rebuild (docs/security.md). Error messages quote values through
:func:`cloudq.redaction.quote`.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from cloudq.errors import ValidationError
from cloudq.redaction import cut, quote

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
    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self._fn, include_extras=True)
        except Exception as exc:  # unresolvable forward references: check arity only
            logger.debug("task %s: annotations not resolvable (%s); types unchecked",
                         self._name, exc)
            return {}

    @cached_property
    def model_types(self) -> tuple[type[BaseModel], ...]:
        """The pydantic models the parameter and return annotations name, also inside
        generics (``list[M]``, ``M | None``, ``dict[str, M]``, ``Annotated[M, ...]``)."""
        found: dict[type[BaseModel], None] = {}
        for hint in self._hints.values():
            found.update(dict.fromkeys(models_in(hint)))
        return tuple(found)

    @cached_property
    def _adapters(self) -> dict[str, TypeAdapter[Any]]:
        hints = self._hints
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

    def _validate(self, param: str, kind: Any, value: Any, show: bool) -> Any:
        adapter = self._adapters[param]
        try:
            if kind is inspect.Parameter.VAR_POSITIONAL:
                return tuple(adapter.validate_python(v) for v in value)
            if kind is inspect.Parameter.VAR_KEYWORD:
                return {k: adapter.validate_python(v) for k, v in value.items()}
            return adapter.validate_python(value)
        except PydanticValidationError as exc:
            raise ValidationError(
                f"{self._name}: argument {param!r} = {quote(value, show=show)} does not match "
                f"its annotation ({_problems(exc, show)})"
            ) from exc

    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any], *,
              show_values: bool = True) -> None:
        """Raise ValidationError if the call does not fit the signature or the annotations.

        ``show_values`` is the app's ``log_argument_values``: whether the error may quote a
        (cut) value."""
        self.rebuild(args, kwargs, show_values=show_values)

    def rebuild(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, show_values: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments, in the call's own shape, with annotated values validated into
        their declared types."""
        bound = self._bind(args, kwargs)
        if not self._adapters:
            return tuple(args), dict(kwargs)
        params = self.signature.parameters
        valid = {
            name: self._validate(name, params[name].kind, value, show_values)
            if name in self._adapters
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


def _problems(exc: PydanticValidationError, show: bool) -> str:
    """What pydantic found wrong, without its ``input_value``; with ``show`` off only the error
    types, since a message may quote the input (a custom validator's, a union tag's)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
        + (cut(err["msg"], 120) if show else err["type"])
        for err in exc.errors()[:5]
    )


def models_in(hint: Any, *, limit: int = 1000) -> Iterator[type[BaseModel]]:
    """The pydantic model classes an annotation names, walking its type arguments."""
    todo, seen = [hint], 0
    while todo and seen < limit:
        current = todo.pop()
        seen += 1
        if isinstance(current, type) and issubclass(current, BaseModel):
            yield current
        todo.extend(arg for arg in typing.get_args(current) if not isinstance(arg, str | bytes))
