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


# -- events and records that are not what the event source sends ---------------------------------
S3_RECORD: dict[str, Any] = {"eventVersion": "2.1", "eventSource": "aws:s3",
                             "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}
SNS_RECORD: dict[str, Any] = {"EventSource": "aws:sns", "EventVersion": "1.0",
                              "Sns": {"MessageId": "sns-1", "Message": "hello"}}


def batch_with(app: cloudq.App, batch: list[ReceivedMessage], at: int,
               bad: dict[str, Any]) -> dict[str, Any]:
    """The SQS event of ``batch`` with the record ``bad`` inserted at position ``at``."""
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"].insert(at, bad)
    return event


def like(app: cloudq.App, message: ReceivedMessage, **changes: Any) -> dict[str, Any]:
    """The event record of ``message`` with some fields changed (``None``: removed)."""
    [rec] = sqs_event([message], prefix=app.settings.queue_prefix)["Records"]
    for name, value in changes.items():
        if value is None:
            rec.pop(name, None)
        else:
            rec[name] = value
    return rec


def identifiers(response: dict[str, Any]) -> list[Any]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def settle(app: cloudq.App, event: dict[str, Any], response: dict[str, Any]) -> None:
    """The event source's part: delete every record with a receipt not reported failed."""
    failed = {i for i in identifiers(response) if isinstance(i, str)}
    prefix = app.settings.queue_prefix
    done = [received_message(r, prefix) for r in event["Records"]
            if isinstance(r, dict) and isinstance(r.get("receiptHandle"), str)
            and isinstance(r.get("messageId"), str) and r["messageId"] not in failed | {""}
            and r.get("eventSource") == "aws:sqs" and isinstance(r.get("body"), str)]
    app.transport.ack(done)


@pytest.mark.parametrize(("event", "says"), [
    ([], "not a dict"),
    ("Records", "not a dict"),
    (None, "not a dict"),
    ({}, "no 'Records' list"),
    ({"detail-type": "Scheduled Event", "source": "aws.events"}, "no 'Records' list"),
    ({"Records": None}, "no 'Records' list"),
    ({"Records": {"messageId": "m-1"}}, "no 'Records' list"),
    ({"Records": [S3_RECORD]}, "no record from SQS"),
    ({"Records": [SNS_RECORD, SNS_RECORD]}, "no record from SQS"),
    ({"Records": ["m-1", 7]}, "no record from SQS"),
], ids=["list", "str", "none", "empty-dict", "eventbridge", "records-none", "records-dict",
        "s3", "sns", "not-dicts"])
def test_an_event_that_is_not_an_sqs_event_is_refused_before_anything_runs(
    handler: LambdaHandler, transport: MemoryTransport, app: cloudq.App, event: Any, says: str,
) -> None:
    store_calls = app.store.calls  # type: ignore[attr-defined]

    with pytest.raises(cloudq.ConfigError, match=f"not an SQS event.*{says}"):
        handler(event, LambdaContext())

    assert (transport.calls, store_calls) == ([], [])


def test_a_non_sqs_event_is_refused_before_a_real_record_beside_it_would_run(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    record: Task[Any, str], runs: list[str],
) -> None:
    record.delay("a")
    batch = receive(app)
    event = {"Records": [S3_RECORD, SNS_RECORD]}
    before = len(transport.calls)

    with pytest.raises(cloudq.ConfigError, match="not an SQS event"):
        handler(event, LambdaContext())

    assert runs == []
    assert transport.calls[before:] == []
    assert invoke_lambda(app, handler, batch) == NO_FAILURES  # the real one is untouched


@pytest.mark.parametrize("bad", [
    {"messageId": None}, {"messageId": ""}, {"messageId": 42}, {"messageId": ["m-1"]},
    {"messageId": None, "receiptHandle": None, "body": None},
], ids=["missing", "empty", "int", "list", "bare"])
def test_a_record_without_a_message_id_is_skipped_and_the_others_run_once(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    record: Task[Any, str], runs: list[str], caplog: pytest.LogCaptureFixture,
    bad: dict[str, Any],
) -> None:
    results = [record.delay("a"), record.delay("b")]
    batch = receive(app, expect=2)
    stray = like(app, batch[0], **bad)
    event = batch_with(app, batch, 1, stray)

    response = handler(event, LambdaContext())
    settle(app, event, response)

    assert response == NO_FAILURES  # no identifier that is empty, None or not in the batch
    assert runs == ["a", "b"]
    assert [r.get(timeout=1) for r in results] == ["a", "b"]
    [skipped] = [r for r in caplog.records if "record 2 of 3" in r.getMessage()]
    assert skipped.levelname == "ERROR"
    assert "no messageId" in skipped.getMessage()
    assert "skipped" in skipped.getMessage()
    assert transport.bodies("default") == []


def test_records_that_are_not_dicts_are_skipped_and_the_others_run_once(
    app: cloudq.App, handler: LambdaHandler, record: Task[Any, str], runs: list[str],
) -> None:
    record.delay("a")
    batch = receive(app)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"] = ["junk", *event["Records"], None]

    assert handler(event, LambdaContext()) == NO_FAILURES
    assert runs == ["a"]


@pytest.mark.parametrize(("bad", "says"), [
    ({"body": None}, "body is missing"),
    ({"body": {"task": "shop.record"}}, "body is a dict, not a string"),
    ({"receiptHandle": None}, "receiptHandle is missing"),
    ({"receiptHandle": ""}, "receiptHandle is empty"),
    ({"eventSourceARN": None}, "eventSourceARN is missing"),
    ({"eventSourceARN": "arn:aws:sns:us-east-1:123456789012:topic"}, "not an SQS queue ARN"),
    ({"eventSource": "aws:sns"}, "eventSource is 'aws:sns', not 'aws:sqs'"),
    ({"attributes": ["ApproximateReceiveCount"]}, "attributes is a list, not a dict"),
    ({"attributes": {"ApproximateReceiveCount": "many"}}, "ApproximateReceiveCount"),
    ({"attributes": {"SentTimestamp": "yesterday"}}, "SentTimestamp"),
    ({"attributes": {"MessageGroupId": 7}}, "MessageGroupId"),
    ({"messageAttributes": ["Attribute1"]}, "messageAttributes is a list, not a dict"),
], ids=["no-body", "dict-body", "no-receipt", "empty-receipt", "no-arn", "sns-arn",
        "sns-source", "attributes-list", "receive-count", "sent-timestamp", "group-id",
        "message-attributes-list"])
def test_a_malformed_record_with_a_message_id_is_reported_failed_alone_and_not_run(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    record: Task[Any, str], runs: list[str], caplog: pytest.LogCaptureFixture, clock: Any,
    bad: dict[str, Any], says: str,
) -> None:
    record.delay("a")
    record.delay("b")
    record.delay("c")
    batch = receive(app, expect=3)
    malformed = like(app, batch[1], **bad)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"][1] = malformed

    response = handler(event, LambdaContext())
    settle(app, event, response)

    assert response == failures(batch[1])
    assert runs == ["a", "c"]  # not "b": its record cannot be trusted
    [line] = [r for r in caplog.records if batch[1].message_id in r.getMessage()
              and r.levelname == "ERROR"]
    assert says in line.getMessage()
    assert transport.bodies("default-dlq") == []  # left to SQS: it comes back, then redrive
    clock.advance(app.settings.visibility_timeout + 1)
    [again] = receive(app)  # the event source did not delete it: it comes back
    assert again.message_id == batch[1].message_id


def test_a_record_read_with_lenient_types_runs(
    app: cloudq.App, handler: LambdaHandler, record: Task[Any, str], runs: list[str],
) -> None:
    """What SQS sends as strings may come as numbers from a hand-made event; both are read."""
    record.delay("a")
    [message] = receive(app)
    rec = like(app, message, attributes={"ApproximateReceiveCount": 1, "SentTimestamp": 5},
               messageAttributes={})

    assert handler({"Records": [rec]}, LambdaContext()) == NO_FAILURES
    assert runs == ["a"]


def test_fifo_a_malformed_record_stops_the_batch_and_the_rest_come_back_in_order(
    app: cloudq.App, handler: LambdaHandler, record: Task[Any, str], runs: list[str],
) -> None:
    for label in ("first", "second", "third"):
        record.apply_async((label,), queue="orders.fifo")
    batch = receive(app, "orders.fifo", expect=3)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"][1] = like(app, batch[1], body=None)

    response = handler(event, LambdaContext())
    settle(app, event, response)

    assert response == failures(batch[1], batch[2])
    assert runs == ["first"]  # "third" was not run out of turn


def test_fifo_records_after_one_without_a_message_id_are_handed_back_not_run(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport,
    record: Task[Any, str], runs: list[str], clock: Any,
) -> None:
    for label in ("first", "second", "third"):
        record.apply_async((label,), queue="orders.fifo")
    batch = receive(app, "orders.fifo", expect=3)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"][1] = like(app, batch[1], messageId=None)

    response = handler(event, LambdaContext())
    settle(app, event, response)

    assert response == failures(batch[2])
    assert runs == ["first"]
    clock.advance(app.settings.visibility_timeout + 1)
    again = receive(app, "orders.fifo", expect=2)
    assert [m.message_id for m in again] == [batch[1].message_id, batch[2].message_id]


def test_fifo_a_hand_back_before_a_malformed_record_still_releases_the_rest(
    app: cloudq.App, handler: LambdaHandler, transport: MemoryTransport, record: Task[Any, str],
    reject_once: Task[Any, str], runs: list[str], clock: Any,
) -> None:
    record.apply_async(("first",), queue="orders.fifo")
    reject_once.apply_async(("second",), queue="orders.fifo")
    record.apply_async(("third",), queue="orders.fifo")
    record.apply_async(("fourth",), queue="orders.fifo")
    batch = receive(app, "orders.fifo", expect=4)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"][2] = like(app, batch[2], receiptHandle=None)

    response = handler(event, LambdaContext())
    settle(app, event, response)

    assert response == failures(batch[1], batch[2], batch[3])
    assert runs == ["first"]
    assert ("ChangeMessageVisibilityBatch", "orders.fifo") in transport.calls  # "fourth"
    # "third"'s record has no receipt to release it with: the group waits for its timeout,
    # then all three come back in order.
    receive(app, "orders.fifo", expect=0)
    clock.advance(app.settings.visibility_timeout + 1)
    again = receive(app, "orders.fifo", expect=3)
    assert [m.message_id for m in again] == [m.message_id for m in batch[1:]]
    assert invoke_lambda(app, handler, again) == NO_FAILURES
    assert runs == ["first", "second", "third", "fourth"]


# -- the response names only records of the batch ------------------------------------------------
def test_every_reported_identifier_is_a_message_id_of_the_batch(
    app: cloudq.App, handler: LambdaHandler, reject_once: Task[Any, str],
) -> None:
    reject_once.delay("a")
    reject_once.delay("b")
    batch = receive(app, expect=2)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    unnamed = like(app, batch[1], body=None)
    unnamed["messageId"] = None  # present, but null
    event["Records"] += [like(app, batch[0], messageId="", body=None), unnamed,
                         like(app, batch[1], messageId="not-in-sqs", body=None)]

    response = handler(event, LambdaContext())

    ids = identifiers(response)
    assert ids == [batch[0].message_id, batch[1].message_id, "not-in-sqs"]
    assert all(isinstance(i, str) and i for i in ids)


def test_an_identifier_powertools_reports_outside_the_batch_is_dropped_and_logged(
    app: cloudq.App, handler: LambdaHandler, reject_once: Task[Any, str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Should Powertools ever name a record the batch does not hold (or none), AWS would fail
    the whole batch and re-run its successes; the handler drops it, loudly."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor

    collect = BatchProcessor._collect_sqs_failures
    monkeypatch.setattr(BatchProcessor, "_collect_sqs_failures", lambda self: [
        *collect(self), {"itemIdentifier": None}, {"itemIdentifier": "ghost"}])
    reject_once.delay("a")
    batch = receive(app)

    response = handler(sqs_event(batch, prefix=app.settings.queue_prefix), LambdaContext())

    assert response == failures(batch[0])
    [line] = [r for r in caplog.records if "not in the batch" in r.getMessage()]
    assert line.levelname == "ERROR"
    assert "'ghost'" in line.getMessage() and "None" in line.getMessage()


def test_a_concurrent_batch_skips_and_reports_malformed_records_the_same_way(
    app: cloudq.App, runs: list[str],
) -> None:
    """``async def`` tasks run concurrently through Powertools' async processor: same rules."""
    app.conf.update(lambda_async_concurrency=4)

    @app.task(name="shop.arecord")
    async def arecord(label: str) -> str:
        runs.append(label)
        return label

    handler = app.lambda_handler()
    assert handler.concurrent
    results = [arecord.delay(label) for label in "abc"]
    batch = receive(app, expect=3)
    event = sqs_event(batch, prefix=app.settings.queue_prefix)
    event["Records"][1] = like(app, batch[1], body=None)
    event["Records"].append(like(app, batch[0], messageId=None))

    response = handler(event, LambdaContext())

    assert response == failures(batch[1])
    assert sorted(runs) == ["a", "c"]
    assert [results[0].get(timeout=0), results[2].get(timeout=0)] == ["a", "c"]
