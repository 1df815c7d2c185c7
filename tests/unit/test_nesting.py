"""Values nested too deep or referring to themselves: clear errors naming the path, at send,
for results and when decoding, never RecursionError."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.errors import DecodeError, EncodeError
from cloudq.serialization import MAX_DEPTH, dumps, from_jsonable, loads, to_jsonable
from cloudq.transports.base import OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from tests.unit.conftest import Handled

Drain = Callable[..., "list[Handled]"]
DeadLetters = Callable[..., list[ReceivedMessage]]


def nested(levels: int) -> list[Any]:
    """A list ``levels`` lists deep: ``[[[...]]]``."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def self_referencing_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def test_a_value_as_deep_as_the_limit_round_trips() -> None:
    value = nested(MAX_DEPTH)

    assert loads(dumps(value)) == value


def test_a_value_nested_5000_deep_is_an_encode_error_naming_the_path_abbreviated() -> None:
    with pytest.raises(EncodeError) as caught:
        to_jsonable([nested(5000)], "args")

    message = str(caught.value)
    assert message.startswith("args[0][0][0]")
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    assert "more]" in message and len(message) < 300


@pytest.mark.parametrize(("value", "path", "same_as"), [
    pytest.param(self_referencing_list(), "args[0][1]", "args[0]", id="list"),
    pytest.param((lambda d: d.update(me=d) or d)({}), "args[0]['me']", "args[0]", id="dict"),
    pytest.param((lambda x: x.append([[x]]) or x)([]), "args[0][0][0][0]", "args[0]",
                 id="cycle through others"),
])
def test_a_value_that_refers_to_itself_is_an_encode_error_where_the_cycle_closes(
    value: Any, path: str, same_as: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        to_jsonable([value], "args")

    assert str(caught.value) == f"{path}: refers to itself (the value at {same_as})"


def test_a_value_shared_twice_is_not_a_cycle() -> None:
    shared = [1, 2]

    assert to_jsonable([shared, {"again": shared}], "args") == [[1, 2], {"again": [1, 2]}]


def test_decoding_a_value_nested_past_the_limit_is_a_decode_error_naming_the_path() -> None:
    with pytest.raises(DecodeError, match=rf"args\[0\]\[0\].*nested more than {MAX_DEPTH}"):
        from_jsonable([nested(MAX_DEPTH + 5)], path="args")


def test_a_body_nested_100k_deep_is_a_decode_error_not_a_recursion_error() -> None:
    body = '{"v": 1, "task": "t", "args": ' + "[" * 100_000 + "]" * 100_000 + "}"

    with pytest.raises(DecodeError, match="nested too deep"):
        wire.decode(body)
    assert wire.peek(body) == (None, None)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 5, 100_000])
def test_a_deep_message_is_poison_with_its_reason_and_the_worker_goes_on(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters, levels: int
) -> None:
    app.task(name="shop.take")(lambda x: x)
    body = ('{"v": 1, "id": "deep", "task": "shop.take", "args": ['
            + "[" * levels + "]" * levels + "]}")
    app.transport.send("default", OutgoingMessage(body=body))
    after = app.send_task("shop.take", args=(1,))

    handled = drain(app)

    assert [h.outcome for h in handled] == ["poison", "success"]
    assert after.get(timeout=1) == 1
    assert "nested" in dead_letters(app)[0].attributes["cloudq-reason"]


def test_arguments_that_refer_to_themselves_fail_at_send_before_anything_is_sent(
    app: cloudq.App
) -> None:
    with pytest.raises(EncodeError, match=r"kwargs\['items'\]\[1\]: refers to itself"):
        app.send_task("elsewhere.total", kwargs={"items": self_referencing_list()})
    with pytest.raises(EncodeError, match="nested more than"):
        app.send_task("elsewhere.total", args=(nested(5000),))

    assert app.transport.queue_names() == []  # type: ignore[attr-defined]


def test_a_task_returning_a_self_referencing_list_fails_with_an_encode_error(
    app: cloudq.App, drain: Drain
) -> None:
    @app.task(name="shop.loop")
    def loop() -> list[Any]:
        return self_referencing_list()

    result = loop.delay()
    handled = drain(app)

    assert [h.outcome for h in handled] == ["failure"]
    with pytest.raises(EncodeError, match=r"refers to itself"):
        result.get(timeout=1)


def test_a_pydantic_model_nested_past_the_limit_is_an_encode_error() -> None:
    from pydantic import BaseModel

    class Tree(BaseModel):
        children: list[Any]

    with pytest.raises(EncodeError, match=r"args\[0\]"):
        to_jsonable([Tree(children=nested(MAX_DEPTH + 5))], "args")
    json.dumps(to_jsonable([Tree(children=nested(10))], "args"))
