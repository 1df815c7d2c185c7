"""Follow-up messages: ``link`` callbacks after success, ``link_error`` errbacks after failure.

A signature travels as a plain dict: ``{"task", "args", "kwargs", "options", "immutable"}``
with arguments in their JSON form. A callback gets the parent's return value prepended to
its arguments (unless immutable); an errback is called as ``errback(request, exc, traceback)``
where ``request`` is a dict of the failed invocation (id, task, args, kwargs, retries, root_id,
parent_id, group_id), ``exc`` the exception rebuilt with its own type when importable, and
``traceback`` the formatted traceback string.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudq.errors import MessageError
from cloudq.serialization import from_jsonable

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.message import Envelope

logger = logging.getLogger(__name__)


def _send_all(
    app: App, signatures: list[dict[str, Any]], prepend: Sequence[Any], parent: Envelope
) -> None:
    """Send the follow-ups (tasks or whole canvases) through the canvas's one expansion.

    One whose arguments do not fit its task is the program's error, not a passing one: it is
    logged and left out, so the parent's message is not delivered again and re-run for it."""
    from cloudq.canvas.apply import Plan, expand, run_plan

    plan = Plan()
    for signature in signatures:
        one = Plan()
        try:
            expand(app, signature, tuple(prepend), one, parent=parent)
        except MessageError as exc:  # cannot be encoded, decoded or does not fit its task
            logger.error("task %s[%s]: follow-up %s not sent: %s", parent.task, parent.id,
                         signature.get("task") or signature.get("subtask_type"), exc)
            continue
        plan.items += one.items
        plan.envelopes += one.envelopes
    run_plan(app, plan)


def send_callbacks(app: App, parent: Envelope, retval: Any) -> None:
    if parent.link:
        _send_all(app, parent.link, (retval,), parent)


def request_dict(app: App, envelope: Envelope) -> dict[str, Any]:
    rules = app.decoding(envelope.task)
    return {
        "id": envelope.id, "task": envelope.task,
        "args": from_jsonable(envelope.args, rules, path="args"),
        "kwargs": from_jsonable(envelope.kwargs, rules, path="kwargs"), "retries": envelope.retries,
        "root_id": envelope.root_id, "parent_id": envelope.parent_id,
        "group_id": envelope.group_id,
    }


def send_errbacks(app: App, parent: Envelope, exc: BaseException, einfo: str) -> None:
    if parent.link_error:
        extra = (request_dict(app, parent), exc, einfo)
        _send_all(app, parent.link_error, extra, parent)
