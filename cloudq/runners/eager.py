"""Eager mode: run a task in the caller's process (``task_always_eager``, ``Task.apply``).

The same argument checks and the same ``invoke`` as a worker; retries run again at once;
nothing is written to the store. ``task_eager_propagates`` re-raises a failure in the caller.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cloudq import states
from cloudq.errors import Retry
from cloudq.result import AsyncResult
from cloudq.results import ResultMeta
from cloudq.runners.execute import decoded_arguments, request_for
from cloudq.runners.invocation import invoke
from cloudq.serialization import to_jsonable

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.message import Envelope
    from cloudq.task import Task


class EagerResult(AsyncResult[Any]):
    """A result that is already known; it never reads the store."""

    def __init__(self, app: App, meta: ResultMeta) -> None:
        super().__init__(meta.task_id, app=app, task_name=meta.name)
        self._known = meta

    def _meta(self) -> ResultMeta:
        return self._known

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """An eager task has already run."""


def apply_envelope(app: App, task: Task[Any, Any], envelope: Envelope) -> EagerResult:
    """Run ``envelope`` here, retrying at once as often as the task allows."""
    from cloudq.canvas.signature import maybe_signature

    while True:
        args, kwargs = task.arguments.rebuild(
            *decoded_arguments(app, envelope, strict=True),
            show_values=app.settings.log_argument_values,
        )
        request = request_for(envelope, args, kwargs, {"queue": envelope.queue}, is_eager=True)
        try:
            retval = invoke(task, request, envelope.soft_time_limit or task.soft_time_limit)
        except Retry as retry:
            changes: dict[str, Any] = {"retries": envelope.retries + 1, "eta": None}
            if retry.new_args is not None:
                changes["args"] = to_jsonable(list(retry.new_args), "args")
            if retry.new_kwargs is not None:
                changes["kwargs"] = to_jsonable(dict(retry.new_kwargs), "kwargs")
            envelope = envelope.replace(**changes)
            continue
        except Exception as exc:
            if app.settings.task_eager_propagates:
                raise
            return EagerResult(app, ResultMeta(envelope.id, states.FAILURE, exc, tb.format_exc(),
                                               name=task.name, retries=envelope.retries))
        for sig in envelope.link:  # run eagerly too when task_always_eager is on
            maybe_signature(sig, app).apply_async((retval,))
        return EagerResult(app, ResultMeta(envelope.id, states.SUCCESS, retval, name=task.name,
                                           retries=envelope.retries))


def apply_eagerly(
    task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any], **options: Any
) -> EagerResult:
    """``Task.apply``: build the message as ``apply_async`` would, then run it here."""
    from cloudq.sending import build_envelope

    options = {k: v for k, v in options.items() if k not in ("countdown", "eta")}
    envelope = build_envelope(task.app, task.name, args, kwargs, task=task, **options)
    return apply_envelope(task.app, task, envelope)
