"""What a hostile message can no longer do (docs/security.md), on the memory twins.

A forged message changes nothing but the dead-letter queue; message and result content never
makes a process import a module; only registered tasks run, whatever a message or callback
names; signing keys rotate.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

import cloudq
from cloudq import message as wire
from cloudq.serialization import TAG
from cloudq.task import Task
from cloudq.testing import invoke_lambda
from cloudq.transports.base import OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from tests.unit.conftest import Handled

Drain = Callable[..., "list[Handled]"]
DeadLetters = Callable[..., list[ReceivedMessage]]
HOSTILE_MODEL = "tests.unit.hostile.models:Payload"
HOSTILE_ERROR = "tests.unit.hostile.errors.Boom"
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


class Line(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    lines: list[Line]


class RushOrder(Order):
    """A subclass of a type a task names: allowed where its base is."""


class Note(BaseModel):
    text: str


class Gift(BaseModel):
    to: str


def outcomes(handled: list[Handled]) -> list[str]:
    return [h.outcome for h in handled]


def model_tag(cls_path: str, **fields: Any) -> dict[str, Any]:
    return {TAG: "model", "cls": cls_path, "v": fields}


def assert_not_imported(module: str, marker: str) -> None:
    assert module not in sys.modules
    assert marker not in os.environ


@pytest.fixture
def add(app: cloudq.App) -> Task[Any, int]:
    @app.task(name="shop.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


# -- 1. forged messages ------------------------------------------------------------------------
def forged_bodies(task_id: str) -> dict[str, str]:
    envelope = wire.Envelope(id=task_id, task="shop.add", args=["forged-body-marker", 0])
    return {
        "unsigned": wire.encode(envelope),
        "wrong key": wire.encode(envelope, signing_key="not-the-key"),
        "unsigned, unknown version": json.dumps(
            {"v": 2, "id": task_id, "task": "shop.add", "note": "forged-body-marker"}),
        "unsigned claim check": wire.claim_check(envelope, "bucket", "key", signing_key=None),
    }


@pytest.fixture
def signed_app(make_app: Callable[..., cloudq.App]) -> cloudq.App:
    app = make_app(signing_key="current-key")
    app.task(name="shop.add")(lambda x, y: x + y)
    return app


def test_forged_message_with_another_tasks_id_changes_nothing_but_the_dead_letter_queue(
    signed_app: cloudq.App, drain: Drain, dead_letters: DeadLetters,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = signed_app
    done = app.send_task("shop.add", args=(2, 2))
    drain(app)
    assert done.get(timeout=1) == 4
    bodies = forged_bodies(done.id)
    for body in bodies.values():
        app.transport.send("default", OutgoingMessage(body=body))
    store_calls = len(app.store.calls)  # type: ignore[attr-defined]

    with caplog.at_level(logging.DEBUG):
        handled = drain(app)

    assert outcomes(handled) == ["poison"] * len(bodies)
    assert done.state == "SUCCESS" and done.get(timeout=1) == 4
    writes = [c for c in app.store.calls[store_calls:] if c[0] in WRITES]  # type: ignore[attr-defined]
    assert writes == []
    dead = dead_letters(app)
    assert sorted(m.body for m in dead) == sorted(bodies.values())
    assert all(m.attributes["cloudq-reason"].startswith("SignatureError: ") for m in dead)
    assert "forged-body-marker" not in caplog.text
    assert caplog.text.count("fails its signature") == len(bodies)


def test_forged_message_in_a_lambda_batch_changes_nothing_but_the_dead_letter_queue(
    signed_app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    app = signed_app
    done = app.send_task("shop.add", args=(1, 1))
    drain(app)
    app.transport.send("default", OutgoingMessage(body=forged_bodies(done.id)["unsigned"]))
    app.send_task("shop.add", args=(3, 3))
    batch = app.transport.receive("default", max_messages=10)

    response = invoke_lambda(app, app.lambda_handler(), batch)

    assert response == {"batchItemFailures": []}
    assert done.get(timeout=1) == 2
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith("SignatureError: ")


def test_signed_message_that_does_not_decode_still_fails_its_task(
    signed_app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    frame = {"v": 1, "id": "task-9", "task": "shop.add", "retries": "often"}
    body = wire._sign(frame, "current-key")  # a key holder's message, but a bad one
    signed_app.transport.send("default", OutgoingMessage(body=json.dumps(body)))

    drain(signed_app)

    assert signed_app.backend.get("task-9").state == "FAILURE"
    assert dead_letters(signed_app)[0].attributes["cloudq-reason"].startswith("DecodeError: ")


def test_previous_keys_verify_but_only_the_current_key_signs(
    make_app: Callable[..., cloudq.App], drain: Drain, dead_letters: DeadLetters
) -> None:
    worker = make_app(signing_key="new", signing_previous_keys=["old"])
    runs: list[str] = []

    @worker.task(name="shop.note")
    def note(label: str) -> None:
        runs.append(label)

    def sender(key: str) -> cloudq.App:
        return cloudq.App("t", transport=worker.transport, store=worker.store,
                          set_as_current=False, signing_key=key)

    sender("old").send_task("shop.note", args=("signed with the previous key",))
    sender("new").send_task("shop.note", args=("signed with the current key",))
    sender("older").send_task("shop.note", args=("signed with a retired key",))
    worker.send_task("shop.note", args=("sent by the worker",), countdown=1)
    [pending] = worker.transport.bodies("default")[-1:]  # type: ignore[attr-defined]

    drain(worker, ["default"])

    assert sorted(runs) == ["signed with the current key", "signed with the previous key"]
    assert dead_letters(worker)[0].attributes["cloudq-reason"].startswith("SignatureError")
    wire.decode(pending, signing_key="new")  # the worker signs with the current key only
    with pytest.raises(cloudq.errors.SignatureError):
        wire.decode(pending, signing_key="old")


def test_previous_keys_without_a_signing_key_are_a_config_error() -> None:
    with pytest.raises(cloudq.ConfigError,
                       match="signing_previous_keys is set but signing_key is not"):
        cloudq.App("t", set_as_current=False, signing_previous_keys=["old"])


# -- 2. what a message may make a process import ------------------------------------------------
def test_model_type_the_task_does_not_name_is_poison_and_is_never_imported(
    app: cloudq.App, add: Task[Any, int], drain: Drain, dead_letters: DeadLetters
) -> None:
    app.publish([wire.Envelope(id="hostile-1", task="shop.add",
                               args=[model_tag(HOSTILE_MODEL, x=1), 2])])

    handled = drain(app)

    assert outcomes(handled) == ["poison"]
    assert_not_imported("tests.unit.hostile.models", "HOSTILE_MODELS_IMPORTED")
    meta = app.backend.get("hostile-1")
    assert meta.state == "FAILURE"
    assert isinstance(meta.result, cloudq.DecodeError)
    assert HOSTILE_MODEL in str(meta.result)
    reason = dead_letters(app)[0].attributes["cloudq-reason"]
    assert reason.startswith("DecodeError: ") and HOSTILE_MODEL in reason


def test_models_the_annotations_name_come_back_nested_in_generics(
    app: cloudq.App, drain: Drain
) -> None:
    seen: list[Any] = []

    @app.task(name="shop.place")
    def place(order: Order, extra: list[Line] | None = None,
              notes: dict[str, Note] | None = None) -> int:
        seen.extend([order, extra, notes])
        return len(order.lines)

    order = RushOrder(lines=[Line(sku="a", qty=1)])
    result = place.delay(order, [Line(sku="b", qty=2)], {"n": Note(text="hi")})
    handled = drain(app)

    assert outcomes(handled) == ["success"] and result.get(timeout=1) == 1
    assert type(seen[0]) is RushOrder and seen[0] == order
    assert seen[1] == [Line(sku="b", qty=2)] and seen[2] == {"n": Note(text="hi")}


def test_a_model_for_an_unannotated_parameter_needs_register_type(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    @app.task(name="shop.log")
    def log(entry):  # type: ignore[no-untyped-def]
        return type(entry).__name__

    refused = log.delay(Gift(to="ada"))
    drain(app)
    assert refused.state == "FAILURE"
    assert f"{__name__}:Gift" in dead_letters(app)[0].attributes["cloudq-reason"]

    assert app.register_type(Gift) is Gift
    accepted = log.delay(Gift(to="ada"))
    drain(app)
    assert accepted.get(timeout=1) == "Gift"


def test_register_type_takes_pydantic_models_only(app: cloudq.App) -> None:
    with pytest.raises(cloudq.ConfigError, match="pydantic model"):
        app.register_type(dict)  # type: ignore[arg-type]


def test_results_rebuild_models_the_task_names_else_hand_back_fields_never_importing(
    app: cloudq.App, drain: Drain
) -> None:
    @app.task(name="shop.make")
    def make() -> Order:
        return Order(lines=[Line(sku="x", qty=3)])

    made = make.delay()
    drain(app)
    client = cloudq.App("client", transport=app.transport, store=app.store,
                        set_as_current=False)  # the task is not registered here
    app.backend.save_item("hostile-2", {"state": "SUCCESS", "name": "shop.make", "result":
                                        json.dumps(model_tag(HOSTILE_MODEL, x=1))})

    assert made.get(timeout=1) == Order(lines=[Line(sku="x", qty=3)])
    assert client.AsyncResult(made.id).get(timeout=1) == {"lines": [{"sku": "x", "qty": 3}]}
    assert app.AsyncResult("hostile-2").get(timeout=1) == {"x": 1}
    assert_not_imported("tests.unit.hostile.models", "HOSTILE_MODELS_IMPORTED")


def test_exception_type_of_a_module_not_yet_imported_is_not_imported(app: cloudq.App) -> None:
    app.backend.save_item("hostile-3", {"state": "FAILURE", "exc_type": HOSTILE_ERROR,
                                        "exc_message": "boom", "exc_args": '["boom"]'})

    with pytest.raises(cloudq.RemoteTaskError, match=f"{HOSTILE_ERROR}: boom"):
        app.AsyncResult("hostile-3").get(timeout=1)
    assert_not_imported("tests.unit.hostile.errors", "HOSTILE_ERRORS_IMPORTED")


@pytest.mark.parametrize("exc_type", ["SystemExit", "KeyboardInterrupt", "os.system"])
def test_exception_types_that_are_not_errors_come_back_as_remote_task_errors(
    app: cloudq.App, exc_type: str
) -> None:
    app.backend.save_item("odd", {"state": "FAILURE", "exc_type": exc_type,
                                  "exc_message": "bye", "exc_args": '["true"]'})

    with pytest.raises(cloudq.RemoteTaskError, match=f"{exc_type}: bye"):
        app.AsyncResult("odd").get(timeout=1)


# -- 2. task names: only registered tasks run ----------------------------------------------------
def test_callbacks_naming_unregistered_tasks_run_nothing(
    app: cloudq.App, add: Task[Any, int], drain: Drain, dead_letters: DeadLetters
) -> None:
    app.task(name="shop.fail")(_fail)
    hostile = {"task": "os.system", "args": ["touch owned"], "kwargs": {}, "options": {}}
    app.publish([
        wire.Envelope(task="shop.add", args=[1, 2], link=[hostile]),
        wire.Envelope(task="shop.fail", link_error=[hostile]),
        wire.Envelope(task="cloudq.map", args=["os.system", ["touch owned"]]),
    ])

    handled = drain(app)

    assert sorted(outcomes(handled)) == ["failure", "failure", "poison", "poison", "success"]
    reasons = [m.attributes["cloudq-reason"] for m in dead_letters(app)]
    assert all(r.startswith("NotRegistered: task 'os.system'") for r in reasons)
    assert not os.path.exists("owned")


def _fail() -> None:
    raise RuntimeError("failed on purpose")


def test_fanout_sends_at_most_the_ticks_of_one_delay_window(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    tick = {"periodic_task_name": "every-1s", "periodic_tick": "2026-01-01T00:00:00+00:00"}
    app.publish([wire.Envelope(
        id="fan", task="cloudq.fanout", headers=tick,
        kwargs={"name": "every-1s", "task": "shop.add", "args": [1, 1], "kwargs": {},
                "options": {}, "every_s": 1, "copies": 5000})])

    handled = drain(app, ["default"])

    assert outcomes(handled) == ["failure"]
    with pytest.raises(cloudq.ValidationError, match="copies"):
        app.AsyncResult("fan").get(timeout=1)


def test_map_runs_registered_tasks_only_with_their_arguments_checked(
    app: cloudq.App, drain: Drain
) -> None:
    seen: list[type] = []

    @app.task(name="shop.double")
    def double(line: Line) -> int:
        seen.append(type(line))
        return line.qty * 2

    mapped = double.map([Line(sku="a", qty=1), Line(sku="b", qty=2)]).apply_async()
    unchecked = app.send_task("cloudq.map", args=("shop.double", ["not a line"]))
    drain(app)

    assert mapped.get(timeout=1) == [2, 4] and seen == [Line, Line]
    with pytest.raises(cloudq.ValidationError, match=r"shop\.double: argument 'line'"):
        unchecked.get(timeout=1)
