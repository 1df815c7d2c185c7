"""Argument values in reasons, error messages and logs: a short, clearly cut prefix, or with
``log_argument_values=False`` only their type and size."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.redaction import quote
from cloudq.serialization import TAG
from cloudq.task import Task
from cloudq.transports.base import ReceivedMessage

if TYPE_CHECKING:
    from tests.unit.conftest import Handled

Drain = Callable[..., "list[Handled]"]
DeadLetters = Callable[..., list[ReceivedMessage]]
BIG = "s" * 200_000
SECRET = "pw-Zq8#" * 30


def test_short_values_are_quoted_whole() -> None:
    assert quote("abc") == "'abc'"
    assert quote(12) == "12"


def test_long_values_are_cut_with_a_marker_that_says_how_long_they_were() -> None:
    text = quote("a" * 12_345, limit=40)

    assert text == "'" + "a" * 39 + "…[cut, 12,347 characters]"


def test_hidden_values_show_only_their_type_and_size() -> None:
    assert quote("a" * 12_345, show=False) == "<redacted str of 12,345 characters>"
    assert quote([1, 2, 3], show=False) == "<redacted list of 3 items>"
    assert quote(7, show=False) == "<redacted int>"


@pytest.fixture
def count(app: cloudq.App) -> Task[Any, int]:
    @app.task(name="shop.count")
    def count(n: int) -> int:
        return n

    return count


def test_a_200_kb_value_of_the_wrong_type_gives_a_short_validation_error(
    count: Task[Any, int]
) -> None:
    with pytest.raises(cloudq.ValidationError) as caught:
        count.delay(BIG)  # type: ignore[arg-type]

    message = str(caught.value)
    assert len(message) < 500
    assert "…[cut, 200,002 characters]" in message


@pytest.mark.parametrize("bad", [
    pytest.param(BIG, id="wrong type"),
    pytest.param({TAG: "datetime", "v": BIG}, id="bad tagged value"),
])
def test_a_200_kb_bad_value_gives_a_short_dead_letter_reason_and_failure(
    app: cloudq.App, count: Task[Any, int], drain: Drain, dead_letters: DeadLetters, bad: Any
) -> None:
    app.publish([wire.Envelope(id="big", task="shop.count", args=[bad])])

    drain(app)

    reason = dead_letters(app)[0].attributes["cloudq-reason"]
    assert len(reason) < 500 and "…[cut, " in reason
    meta = app.backend.get("big")
    assert meta.state == "FAILURE" and len(str(meta.result)) < 500


@pytest.mark.parametrize("bad", [
    pytest.param(SECRET, id="wrong type"),
    pytest.param({TAG: "datetime", "v": SECRET}, id="bad tagged value"),
    pytest.param({TAG: "uuid", "v": SECRET[:20]}, id="short bad tagged value"),
])
def test_with_log_argument_values_off_no_part_of_a_value_is_shown(
    make_app: Callable[..., cloudq.App], drain: Drain, dead_letters: DeadLetters,
    caplog: pytest.LogCaptureFixture, bad: Any,
) -> None:
    app = make_app(log_argument_values=False)
    typed = app.task(name="shop.typed_count")(_typed_count)
    app.publish([wire.Envelope(id="s1", task="shop.typed_count", args=[bad])])
    with pytest.raises(cloudq.ValidationError) as refused:
        typed.delay(SECRET)

    with caplog.at_level(logging.DEBUG):
        drain(app)

    meta = app.backend.get("s1")
    item = app.store.get("task#s1") or {}
    shown = [str(refused.value), dead_letters(app)[0].attributes["cloudq-reason"],
             str(meta.result), str(item), caplog.text]
    assert meta.state == "FAILURE"
    assert not [text for text in shown if "Zq8" in text]
    assert "<redacted str of " in shown[0]


def _typed_count(n: int) -> int:
    return n
