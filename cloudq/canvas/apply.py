"""From a canvas to messages: normalise, freeze (give every result an id), expand, send.

Expansion works on the dict form, so a worker continuing a chain or firing a chord body
(``cloudq.canvas.join``) expands exactly what the sender froze. It is I/O-free: it returns a
:class:`Plan` of items to write and envelopes to send, and :func:`run_plan` does the I/O
(join items first, then every envelope in batches of 10 per queue).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudq.canvas.signature import Chain, Chord, Group, SigDict, Signature
from cloudq.errors import ValidationError
from cloudq.message import Envelope, new_id
from cloudq.serialization import from_jsonable

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.canvas.result import GroupResult
    from cloudq.result import AsyncResult

COLLECT = "cloudq.collect"
"""Built-in task that returns its argument: the body that gives a nested group one result."""


def member_id(group_id: str, index: int) -> str:
    """The task id of member ``index`` of group ``group_id`` (deterministic, so a group or
    chord of any size needs no list of ids stored)."""
    try:
        namespace = uuid.UUID(group_id)
    except ValueError:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, group_id)
    return str(uuid.uuid5(namespace, str(index)))


# -- normalise and freeze (on Signature objects, at send time) ---------------------------------
def _push_links(sig: Signature) -> None:
    """A container's ``link``/``link_error`` go where Celery puts them: a chain's callback on
    its last step and its errback on every step; a chord's on its body; a group's on each
    member."""
    if not isinstance(sig, Chain | Group | Chord):
        return
    for key in ("link", "link_error"):
        linked = sig.options.pop(key, None)
        if not linked:
            continue
        items = list(linked) if isinstance(linked, list | tuple) else [linked]
        if isinstance(sig, Chord):
            targets = [sig.body] if sig.body is not None else []
        elif isinstance(sig, Chain):
            targets = sig.tasks[-1:] if key == "link" else list(sig.tasks)
        else:
            targets = list(sig.tasks)
        for target in targets:
            current = target.options.get(key) or []
            current = list(current) if isinstance(current, list | tuple) else [current]
            target.options[key] = [*current, *items]


def normalize(sig: Signature) -> Signature:
    """Celery's upgrades: ``group | x`` is ``chord(group, x)``; a group that must give one
    result (a member, a chain's last step) is ``chord(group, collect)``."""
    _push_links(sig)
    if isinstance(sig, Chain):
        steps = [normalize(s) for s in sig.tasks]
        out: list[Signature] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            if isinstance(step, Group):
                then = _single(steps[i + 1]) if i + 1 < len(steps) else _collect(sig)
                out.append(Chord(step.tasks, then, app=sig._app))
                i += 2
                continue
            out.append(step)
            i += 1
        return Chain(*out, app=sig._app, **sig.options)
    if isinstance(sig, Group):
        return Group(*[_single(normalize(s)) for s in sig.tasks], app=sig._app, **sig.options)
    if isinstance(sig, Chord):
        body = _single(normalize(sig.body)) if sig.body is not None else None
        return Chord([_single(normalize(s)) for s in sig.header], body, app=sig._app,
                     **sig.options)
    return sig


def _collect(near: Signature) -> Signature:
    return Signature(COLLECT, app=near._app)


def _single(sig: Signature) -> Signature:
    return Chord(sig.tasks, _collect(sig), app=sig._app) if isinstance(sig, Group) else sig


def _set_result_id(sig: Signature, task_id: str) -> None:
    if isinstance(sig, Chain):
        _set_result_id(sig.tasks[-1], task_id)
    elif isinstance(sig, Chord) and sig.body is not None:
        _set_result_id(sig.body, task_id)
    elif not isinstance(sig, Group):
        sig.options["task_id"] = task_id


def freeze(app: App, sig: Signature) -> AsyncResult[Any] | GroupResult:
    """Assign ids throughout ``sig`` (keeping ids already given); return its result handle."""
    from cloudq.canvas.result import GroupResult
    from cloudq.result import AsyncResult

    if isinstance(sig, Chain):
        if not sig.tasks:
            raise ValidationError("a chain needs at least one task")
        handles = [freeze(app, step) for step in sig.tasks]
        return handles[-1]
    if isinstance(sig, Group | Chord):
        group_id = sig.options.setdefault("group_id", new_id())
        members = sig.tasks if isinstance(sig, Group) else sig.header
        for index, member in enumerate(members):
            _set_result_id(member, member_id(group_id, index))
            freeze(app, member)
        if isinstance(sig, Group):
            return GroupResult(group_id, [AsyncResult(member_id(group_id, i), app=app)
                                          for i in range(len(members))], app=app)
        if sig.body is None:
            raise ValidationError("a chord needs a body: chord(header)(body)")
        return freeze(app, sig.body)
    sig.options.setdefault("task_id", new_id())
    return AsyncResult(sig.options["task_id"], app=app, task_name=sig.task)


# -- expand (on dicts: at send time and in workers) --------------------------------------------
@dataclass
class Plan:
    """What sending a canvas takes: join items to write, then envelopes to send."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)


def result_id(sig: SigDict) -> str | None:
    """The task id whose result is the result of ``sig``."""
    kind = sig.get("subtask_type")
    if kind == "chain":
        return result_id(sig["tasks"][-1])
    if kind == "chord":
        return result_id(sig["body"])
    if kind == "group":
        return None
    task_id = from_jsonable(sig.get("options", {})).get("task_id")
    return str(task_id) if task_id else None


def expand(app: App, sig: SigDict, prepend: tuple[Any, ...], plan: Plan, *,
           rest: list[SigDict] | None = None, membership: dict[str, Any] | None = None,
           parent: Envelope | None = None, group_id: str | None = None) -> None:
    """Add what running ``sig`` (with ``prepend`` before its args) takes to ``plan``."""
    rest = rest or []
    kind = sig.get("subtask_type")
    options = dict(from_jsonable(sig.get("options", {})))
    if kind == "chain":
        tasks = sig["tasks"]
        expand(app, tasks[0], prepend, plan, rest=[*tasks[1:], *rest], membership=membership,
               parent=parent, group_id=group_id)
    elif kind == "group":
        if rest or membership:
            raise ValidationError("internal: a group that must give one result is not normalised")
        gid = options["group_id"]
        plan.items.append((f"group#{gid}", {"size": len(sig["tasks"])}))
        for member in sig["tasks"]:
            expand(app, member, prepend, plan, parent=parent, group_id=gid)
    elif kind == "chord":
        _expand_chord(app, sig, options["group_id"], prepend, plan, rest, membership, parent)
    else:
        _expand_task(app, sig, options, prepend, plan, rest, membership, parent, group_id)


def _expand_chord(app: App, sig: SigDict, gid: str, prepend: tuple[Any, ...], plan: Plan,
                  rest: list[SigDict], membership: dict[str, Any] | None,
                  parent: Envelope | None) -> None:
    header = sig["header"]
    size = len(header)
    plan.items.append((f"group#{gid}", {"size": size}))
    plan.items.append((f"chord#{gid}", {"size": size, "body": sig["body"], "chain": rest,
                                        "membership": membership}))
    if size == 0:
        expand(app, sig["body"], ([],), plan, rest=rest, membership=membership, parent=parent)
    for index, member in enumerate(header):
        expand(app, member, prepend, plan, parent=parent, group_id=gid,
               membership={"id": gid, "index": index, "size": size})


def _expand_task(app: App, sig: SigDict, options: dict[str, Any], prepend: tuple[Any, ...],
                 plan: Plan, rest: list[SigDict], membership: dict[str, Any] | None,
                 parent: Envelope | None, group_id: str | None) -> None:
    from cloudq.sending import build_envelope

    rules = app.decoding(sig["task"])  # the models the next task names, rebuilt to be re-sent
    args = list(from_jsonable(sig.get("args", []), rules, path="args"))
    if not sig.get("immutable"):
        args = [*prepend, *args]
    options.pop("group_id", None)
    if parent is not None:
        options.setdefault("root_id", parent.root_id or parent.id)
        options.setdefault("parent_id", parent.id)
    plan.envelopes.append(build_envelope(
        app, sig["task"], args, from_jsonable(sig.get("kwargs", {}), rules, path="kwargs"),
        chain=rest,
        chord=membership, group_id=group_id, **options,
    ))


def run_plan(app: App, plan: Plan) -> None:
    """Write the join items, then send the envelopes (batched)."""
    expires_s = app.backend.expires_s
    for key, item in plan.items:
        app.store.put(key, item, ttl_s=expires_s)
    if plan.envelopes:
        app.publish(plan.envelopes)


# -- the entry points -----------------------------------------------------------------------
def apply_signature(app: App, sig: Signature) -> Any:
    """``sig.apply_async()``: freeze, then send (or, eagerly, run here)."""
    handle, plan = planned(app, sig)
    if plan is not None:
        run_plan(app, plan)
    return handle


async def aapply_signature(app: App, sig: Signature) -> Any:
    """``await sig.aapply_async()``: the same plan, sent without blocking the loop."""
    from cloudq.aio import arun_plan

    handle, plan = planned(app, sig)
    if plan is not None:
        await arun_plan(app, plan)
    return handle


def planned(app: App, sig: Signature) -> tuple[Any, Plan | None]:
    """Freeze ``sig`` and plan what sending it writes and sends (I/O-free); eagerly, run it
    and return its result with no plan."""
    sig = normalize(sig)
    handle = freeze(app, sig)
    if app.settings.task_always_eager:
        return _eager(app, sig, handle), None
    plan = Plan()
    expand(app, sig.to_dict(), (), plan)
    return handle, plan


def _eager(app: App, sig: Signature, handle: Any) -> Any:
    from cloudq import states
    from cloudq.canvas.result import GroupResult
    from cloudq.results import ResultMeta
    from cloudq.runners.eager import EagerResult

    value = call_locally(app, sig)
    if isinstance(handle, GroupResult):
        return GroupResult(handle.id, [EagerResult(app, ResultMeta(r.id, states.SUCCESS, v))
                                       for r, v in zip(handle.results, value, strict=True)],
                           app=app)
    return EagerResult(app, ResultMeta(handle.id, states.SUCCESS, value))


def call_locally(app: App, sig: Signature, prepend: tuple[Any, ...] = ()) -> Any:
    """Run a canvas in this process: ``sig()``."""
    if isinstance(sig, Chain):
        value: Any = None
        for index, step in enumerate(sig.tasks):
            value = call_locally(app, step, prepend if index == 0 else (value,))
        return value
    if isinstance(sig, Group):
        return [call_locally(app, member, prepend) for member in sig.tasks]
    if isinstance(sig, Chord):
        results = [call_locally(app, member, prepend) for member in sig.header]
        return call_locally(app, sig.body, (results,)) if sig.body is not None else results
    args = sig.args if sig.immutable else (*prepend, *sig.args)
    return app.task_for(sig.task or "")(*args, **sig.kwargs)
