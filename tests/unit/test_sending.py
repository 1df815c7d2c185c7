"""Sending: bad calls fail in the caller before any I/O; good ones reach the right queue on time."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.stores.memory import MemoryStore
from cloudq.task import Task
from cloudq.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock, Handled

Queued = Callable[..., list[wire.Envelope]]


@pytest.fixture
def add(app: cloudq.App) -> Task[Any, int]:
    @app.task(name="shop.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


@pytest.fixture
def log(app: cloudq.App) -> Task[Any, None]:
    @app.task(name="shop.log")
    def log(*items, **fields):  # type: ignore[no-untyped-def]
        return None

    return log


def assert_no_io(app: cloudq.App) -> None:
    transport, store = app.transport, app.store
    assert isinstance(transport, MemoryTransport) and isinstance(store, MemoryStore)
    assert transport.calls == []
    assert store.calls == []


# -- checks before I/O -----------------------------------------------------------------------------
def test_argument_that_is_not_json_is_an_encode_error_before_io(
    app: cloudq.App, log: Task[Any, None]
) -> None:
    with pytest.raises(cloudq.EncodeError, match=r"kwargs\['x'\]\[0\]: object of type"):
        log.delay(x=[object()])

    assert_no_io(app)


def test_dict_key_that_is_not_a_string_is_an_encode_error_before_io(
    app: cloudq.App, log: Task[Any, None]
) -> None:
    with pytest.raises(cloudq.EncodeError, match=r"args\[0\]: dict key 3"):
        log.delay({3: "three"})

    assert_no_io(app)


def test_argument_of_the_wrong_type_is_a_validation_error_before_io(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    with pytest.raises(cloudq.ValidationError, match=r"shop.add: argument 'y' = 'six'"):
        add.delay(4, "six")

    assert_no_io(app)


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ((1,), {}, "missing a required argument: 'y'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1, 2), {"z": 3}, "unexpected keyword argument 'z'"),
        ((1,), {"x": 2}, "multiple values for argument 'x'"),
    ],
)
def test_wrong_arity_is_a_validation_error_before_io(
    app: cloudq.App, add: Task[Any, int], args: tuple[Any, ...], kwargs: dict[str, Any],
    problem: str,
) -> None:
    with pytest.raises(cloudq.ValidationError, match=problem):
        add.apply_async(args, kwargs)

    assert_no_io(app)


def test_unknown_apply_async_option_is_named_before_io(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    with pytest.raises(cloudq.ValidationError, match=r"unknown option.*countdwn"):
        add.apply_async((1, 2), countdwn=5)

    assert_no_io(app)


def test_countdown_and_eta_together_are_refused(app: cloudq.App, add: Task[Any, int]) -> None:
    with pytest.raises(cloudq.ValidationError, match="countdown or eta"):
        add.apply_async((1, 2), countdown=5, eta=datetime.now(UTC))

    assert_no_io(app)


def test_countdown_on_a_fifo_queue_is_refused(app: cloudq.App, add: Task[Any, int]) -> None:
    with pytest.raises(cloudq.ValidationError, match=r"FIFO queue 'orders\.fifo'"):
        add.apply_async((1, 2), queue="orders.fifo", countdown=10)

    assert_no_io(app)


def test_message_group_id_on_a_standard_queue_is_refused(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    with pytest.raises(cloudq.ValidationError, match="message_group_id is only for FIFO"):
        add.apply_async((1, 2), message_group_id="customer-7")

    assert_no_io(app)


def test_body_over_the_size_limit_without_a_bucket_is_refused_before_io(
    make_app: Callable[..., cloudq.App],
) -> None:
    app = make_app(message_size_limit=1024)
    log = app.task(name="shop.log")(lambda text: None)

    with pytest.raises(cloudq.EncodeError, match="over message_size_limit=1024; set payload"):
        log.delay("x" * 2000)

    assert_no_io(app)


def test_a_batch_with_one_bad_message_sends_none(app: cloudq.App, add: Task[Any, int]) -> None:
    from cloudq.sending import build_envelope

    app.conf.message_size_limit = 1024
    good = build_envelope(app, "shop.add", (1, 2), {})
    too_big = build_envelope(app, "shop.elsewhere", ("x" * 2000,), {})

    with pytest.raises(cloudq.EncodeError):
        app.publish([good, too_big])

    assert_no_io(app)


# -- what is sent ----------------------------------------------------------------------------------
def test_delay_sends_one_message_to_the_default_queue(
    app: cloudq.App, add: Task[Any, int], queued: Queued
) -> None:
    result = add.delay(2, 3)

    [envelope] = queued(app)
    assert envelope.id == result.id
    assert envelope.task == "shop.add"
    assert envelope.args == [2, 3]
    assert envelope.root_id == envelope.id
    assert envelope.parent_id is None
    assert app.transport.calls == [("SendMessage", "default")]  # type: ignore[attr-defined]


def test_arguments_travel_in_their_tagged_json_form(
    app: cloudq.App, log: Task[Any, None], queued: Queued
) -> None:
    log.delay((1, 2), amount=Decimal("9.99"))

    [envelope] = queued(app)
    assert envelope.args == [{"__cq__": "tuple", "v": [1, 2]}]
    assert envelope.kwargs == {"amount": {"__cq__": "decimal", "v": "9.99"}}


def test_task_id_option_names_the_message(
    app: cloudq.App, add: Task[Any, int], queued: Queued
) -> None:
    result = add.apply_async((1, 2), task_id="my-id")

    assert result.id == "my-id"
    assert queued(app)[0].id == "my-id"


def test_countdown_becomes_delay_seconds_rounded_up_and_an_eta(
    app: cloudq.App, add: Task[Any, int], queued: Queued, clock: FakeClock
) -> None:
    sent_at = clock.utcnow()

    add.apply_async((1, 2), countdown=2.2)

    assert queued(app)[0].eta == sent_at + timedelta(seconds=2.2)
    clock.advance(2)
    assert app.transport.depth("default") == 0  # 2.2 s rounds up to 3, never down
    clock.advance(1)
    assert app.transport.depth("default") == 1


def test_two_hour_countdown_is_sent_with_the_longest_delay_and_a_two_hour_eta(
    app: cloudq.App, add: Task[Any, int], queued: Queued, clock: FakeClock
) -> None:
    sent_at = clock.utcnow()

    add.apply_async((1, 2), countdown=2 * 3600)

    assert queued(app)[0].eta == sent_at + timedelta(hours=2)
    clock.advance(899)
    assert app.transport.depth("default") == 0
    clock.advance(1)
    assert app.transport.depth("default") == 1  # SQS's maximum delay; the worker hops the rest


def test_eta_in_the_past_is_sent_without_delay(
    app: cloudq.App, add: Task[Any, int], clock: FakeClock
) -> None:
    add.apply_async((1, 2), eta=clock.utcnow() - timedelta(minutes=1))

    assert app.transport.depth("default") == 1


def test_naive_eta_is_taken_as_utc(
    app: cloudq.App, add: Task[Any, int], queued: Queued
) -> None:
    add.apply_async((1, 2), eta=datetime(2030, 1, 1, 12))

    assert queued(app)[0].eta == datetime(2030, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("expires", [60, timedelta(minutes=1)])
def test_expires_becomes_an_absolute_time(
    app: cloudq.App, add: Task[Any, int], queued: Queued, clock: FakeClock, expires: Any
) -> None:
    add.apply_async((1, 2), expires=expires)

    assert queued(app)[0].expires == clock.utcnow() + timedelta(minutes=1)


def test_task_expires_option_applies_when_the_call_gives_none(
    app: cloudq.App, queued: Queued, clock: FakeClock
) -> None:
    report = app.task(name="shop.report", expires=300)(lambda: None)

    report.delay()

    assert queued(app)[0].expires == clock.utcnow() + timedelta(minutes=5)


def test_fifo_queue_gets_the_queue_name_as_default_group_and_the_id_as_dedup(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    result = add.apply_async((1, 2), queue="orders.fifo")

    [message] = app.transport.receive("orders.fifo", max_messages=10)
    envelope = wire.decode(message.body)
    assert message.group_id == "orders.fifo"
    assert isinstance(envelope, wire.Envelope)
    assert envelope.message_group_id == "orders.fifo"
    assert envelope.id == result.id


def test_fifo_queue_keeps_an_explicit_group_id(app: cloudq.App, add: Task[Any, int]) -> None:
    add.apply_async((1, 2), queue="orders.fifo", message_group_id="customer-7")

    [message] = app.transport.receive("orders.fifo", max_messages=10)
    assert message.group_id == "customer-7"


def test_gzip_compression_shrinks_the_body(
    app: cloudq.App, log: Task[Any, None], queued: Queued
) -> None:
    log.apply_async(("y" * 10_000,), compression="gzip")

    [body] = app.transport.bodies("default")  # type: ignore[attr-defined]
    assert "gzip" in json.loads(body)
    assert len(body) < 1000
    assert queued(app)[0].args == ["y" * 10_000]


def test_unknown_compression_is_refused(app: cloudq.App, add: Task[Any, int]) -> None:
    with pytest.raises(cloudq.ValidationError, match="compression must be 'gzip'"):
        add.apply_async((1, 2), compression="zstd")


def test_bodies_are_signed_when_a_signing_key_is_set(
    make_app: Callable[..., cloudq.App],
) -> None:
    app = make_app(signing_key="k")
    app.task(name="shop.ping")(lambda: "pong").delay()

    [body] = app.transport.bodies("default")  # type: ignore[attr-defined]
    assert "sig" in json.loads(body)
    with pytest.raises(cloudq.DecodeError, match="signature"):
        wire.decode(body, signing_key="other")


def test_celery_options_without_meaning_on_sqs_are_accepted(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    add.apply_async((1, 2), exchange="x", routing_key="y", retry=True, serializer="json")

    assert app.transport.depth("default") == 1


def test_headers_and_time_limits_travel_in_the_envelope(
    app: cloudq.App, add: Task[Any, int], queued: Queued
) -> None:
    add.apply_async((1, 2), headers={"trace": "t-1"}, soft_time_limit=5, time_limit=10)

    [envelope] = queued(app)
    assert envelope.headers == {"trace": "t-1"}
    assert (envelope.soft_time_limit, envelope.time_limit) == (5, 10)


def test_send_task_sends_by_name_without_the_task_registered_here(
    app: cloudq.App, queued: Queued
) -> None:
    result = app.send_task("billing.tasks.invoice", args=(1, "x"), kwargs={"vat": True})

    [envelope] = queued(app)
    assert result.id == envelope.id
    assert envelope.task == "billing.tasks.invoice"
    assert (envelope.args, envelope.kwargs) == ([1, "x"], {"vat": True})


def test_messages_for_one_queue_are_sent_in_batches_of_ten(
    app: cloudq.App, add: Task[Any, int]
) -> None:
    from cloudq.sending import build_envelope

    app.publish([build_envelope(app, "shop.add", (i, i), {}) for i in range(12)])

    assert app.transport.calls == [  # type: ignore[attr-defined]
        ("SendMessageBatch", "default"), ("SendMessageBatch", "default")]
    assert app.transport.depth("default") == 12


# -- family ids ------------------------------------------------------------------------------------
def test_messages_sent_from_inside_a_task_carry_parent_and_root_ids(
    app: cloudq.App, drain: Callable[..., list[Handled]]
) -> None:
    seen: dict[str, cloudq.Request] = {}

    @app.task(name="shop.leaf", bind=True)
    def leaf(self: Task[Any, None]) -> None:
        seen["leaf"] = self.request

    @app.task(name="shop.middle", bind=True)
    def middle(self: Task[Any, None]) -> None:
        seen["middle"] = self.request
        leaf.delay()

    @app.task(name="shop.top", bind=True)
    def top(self: Task[Any, None]) -> None:
        seen["top"] = self.request
        middle.delay()

    top_result = top.delay()
    drain(app)

    top_req, middle_req, leaf_req = seen["top"], seen["middle"], seen["leaf"]
    assert (top_req.id, top_req.root_id, top_req.parent_id) == (top_result.id, top_result.id, None)
    assert (middle_req.parent_id, middle_req.root_id) == (top_result.id, top_result.id)
    assert (leaf_req.parent_id, leaf_req.root_id) == (middle_req.id, top_result.id)


def test_a_message_sent_outside_any_task_is_its_own_root(
    app: cloudq.App, add: Task[Any, int], queued: Queued
) -> None:
    add.delay(1, 1)
    add.delay(2, 2)

    first, second = queued(app)
    assert first.root_id == first.id
    assert second.root_id == second.id
    assert first.parent_id is None
