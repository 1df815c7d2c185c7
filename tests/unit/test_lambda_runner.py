"""The Lambda handler's fast paths, on the in-memory twins: what it reports, and what it
asks of the queue. ``invoke_lambda`` plays the event source (it deletes what was not
reported failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.runners.lambda_runner import LambdaHandler, queue_name, received_message
from cloudq.task import Task
from cloudq.testing import LambdaContext, invoke_lambda, sqs_event
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from cloudq.transports.memory import MemoryTransport

EVENTS = Path(__file__).resolve().parents[1] / "events"
NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}


@pytest.fixture
def transport(app: cloudq.App) -> MemoryTransport:
    assert isinstance(app.transport, MemoryTransport)
    return app.transport


@pytest.fixture
def handler(app: cloudq.App) -> LambdaHandler:
    return app.lambda_handler()


@pytest.fixture
def runs() -> list[str]:
    return []


@pytest.fixture
def record(app: cloudq.App, runs: list[str]) -> Task[Any, str]:
    @app.task(name="shop.record")
    def record(label: str) -> str:
        runs.append(label)
        return label

    return record


@pytest.fixture
def reject_once(app: cloudq.App, runs: list[str]) -> Task[Any, str]:
    """Hands its message back the first time it sees a label, runs the second time."""
    seen: set[str] = set()

    @app.task(name="shop.reject_once")
    def reject_once(label: str) -> str:
        if label not in seen:
            seen.add(label)
            raise cloudq.Reject(f"{label}: not yet", requeue=True)
        runs.append(label)
        return label

    return reject_once


def receive(app: cloudq.App, queue: str = "default", *, expect: int = 1) -> list[ReceivedMessage]:
    got = app.transport.receive(queue, max_messages=10)
    assert len(got) == expect
    return got


def failures(*messages: ReceivedMessage) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages]}


# -- nothing to do -------------------------------------------------------------------------------
def test_an_empty_batch_returns_no_failures_and_asks_nothing_of_aws(
    handler: LambdaHandler, transport: MemoryTransport
) -> None:
    assert handler({"Records": []}, LambdaContext()) == NO_FAILURES
    assert transport.calls == []


# -- the time budget -----------------------------------------------------------------------------
def test_records_are_not_started_when_the_function_has_too_little_time_left(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    record: Task[Any, str], runs: list[str],
) -> None:
    record.delay("a")
    record.delay("b")
    batch = receive(app, expect=2)
    before = len(transport.calls)

    response = invoke_lambda(app, handler, batch, LambdaContext(remaining_s=2.9))

    assert response == failures(*batch)  # lambda_min_time_to_start is 3 s by default
    assert runs == []
    assert transport.calls[before:] == []  # untouched: back after the visibility timeout


def test_the_budget_is_a_setting(
    app: cloudq.App, record: Task[Any, str], runs: list[str]
) -> None:
    app.conf.update(lambda_min_time_to_start=0.5)
    record.delay("a")
    batch = receive(app)

    response = invoke_lambda(app, app.lambda_handler(), batch, LambdaContext(remaining_s=2.9))

    assert response == NO_FAILURES
    assert runs == ["a"]


def test_without_a_context_there_is_no_budget(
    app: cloudq.App, handler: LambdaHandler, record: Task[Any, str], runs: list[str]
) -> None:
    record.delay("a")
    batch = receive(app)

    assert handler(sqs_event(batch, prefix=app.settings.queue_prefix)) == NO_FAILURES
    assert runs == ["a"]


# -- poison and hand-backs -----------------------------------------------------------------------
def test_poison_is_dead_lettered_and_reported_processed(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport
) -> None:
    transport.send("default", OutgoingMessage(body="{not json"))
    batch = receive(app)

    response = invoke_lambda(app, handler, batch)

    assert response == NO_FAILURES
    assert transport.bodies("default") == []
    [dead] = receive(app, "default-dlq")
    assert dead.body == "{not json"
    assert dead.attributes["cloudq-reason"].startswith("DecodeError")


def test_a_hand_back_is_reported_failed_and_visible_again_at_once(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    reject_once: Task[Any, str], runs: list[str],
) -> None:
    reject_once.delay("a")
    [first] = receive(app)

    response = invoke_lambda(app, handler, [first])

    assert response == failures(first)
    assert ("ChangeMessageVisibility", "default") in transport.calls
    [again] = receive(app)
    assert (again.message_id, again.receive_count) == (first.message_id, 2)
    assert invoke_lambda(app, handler, [again]) == NO_FAILURES
    assert runs == ["a"]


def test_an_all_failed_batch_is_returned_not_raised(
    app: cloudq.App, handler: LambdaHandler, reject_once: Task[Any, str]
) -> None:
    reject_once.delay("a")
    reject_once.delay("b")
    batch = receive(app, expect=2)

    response = invoke_lambda(app, handler, batch)

    assert response == failures(*batch)


def test_fifo_stops_at_a_hand_back_and_the_rest_come_back_with_it_in_order(
    app: cloudq.App, handler: LambdaHandler, record: Task[Any, str],
    reject_once: Task[Any, str], runs: list[str],
) -> None:
    record.apply_async(("first",), queue="orders.fifo")
    reject_once.apply_async(("second",), queue="orders.fifo")
    record.apply_async(("third",), queue="orders.fifo")
    batch = receive(app, "orders.fifo", expect=3)

    response = invoke_lambda(app, handler, batch)

    assert response == failures(batch[1], batch[2])
    assert runs == ["first"]
    again = receive(app, "orders.fifo", expect=2)
    assert [m.message_id for m in again] == [batch[1].message_id, batch[2].message_id]
    assert invoke_lambda(app, handler, again) == NO_FAILURES
    assert runs == ["first", "second", "third"]


# -- reading the event ---------------------------------------------------------------------------
def test_a_record_is_read_as_aws_documents_it() -> None:
    [documented] = json.loads((EVENTS / "sqs_message_attributes.json").read_text())["Records"]

    message = received_message(documented, prefix="")

    assert message == ReceivedMessage(
        queue="SQSQueue", body="Message Body", message_id="MessageID_1",
        receipt="MessageReceiptHandle", receive_count=2,
        attributes={"Attribute1": "AttributeValue1", "Attribute2": "123"},  # not the binary one
        sent_at_ms=1520621625029, group_id=None,
    )


def test_the_queue_is_named_without_the_apps_prefix() -> None:
    arn = "arn:aws:sqs:eu-west-1:123456789012:shop-orders.fifo"

    assert queue_name(arn, "shop-") == "orders.fifo"
    assert queue_name(arn, "") == "shop-orders.fifo"
    assert queue_name(arn, "other-") == "shop-orders.fifo"
