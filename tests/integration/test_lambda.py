"""The Lambda handler against moto server: real messages, received over HTTP, handed to the
handler as the SQS event Lambda's event source would build; ``invoke_lambda`` then deletes
what the handler did not report failed, as the event source does."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import cloudq
import cloudq.lambda_handler
from cloudq import message as wire
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.lambda_runner import LambdaHandler
from cloudq.testing import LambdaContext, invoke_lambda
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from tests.integration.apps import lambda_app
from tests.integration.apps.lambda_app import (
    add,
    always_retry,
    charge,
    fail,
    note,
    record,
    reject_once,
    spin,
)
from tests.integration.e2e_harness import counts

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[1] / "events"
BRIEF = "brief"
"""A queue whose visibility timeout is 1 s, for records that come back after it."""
FIFO = "orders.fifo"
NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    """The Lambda app on fresh queues and table; every setting a test may change is reset."""
    app = lambda_app.app
    app.conf.update(
        endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
        result_table=f"{unique_prefix}results", visibility_timeout=30, max_receive_count=5,
        lambda_min_time_to_start=3.0, lambda_structured_logging=False, lambda_metrics=False,
    )
    provision(app, ["default", FIFO])
    app.transport.ensure_queue(BRIEF, visibility_timeout_s=3, max_receive_count=5)
    lambda_app.runs.clear()
    lambda_app.rejected.clear()
    yield app
    app.close()


# -- helpers -------------------------------------------------------------------------------------
def receive(app: cloudq.App, queue: str = "default", *, expect: int = 1,
            wait_s: float = 0) -> list[ReceivedMessage]:
    """Receive ``expect`` messages (as one batch, as the event source does), in queue order."""
    got = app.transport.receive(queue, max_messages=10, wait_s=wait_s)
    assert len(got) == expect, [m.body[:80] for m in got]
    return got


def envelope(message: ReceivedMessage) -> wire.Envelope:
    decoded = wire.decode(message.body)
    assert isinstance(decoded, wire.Envelope)
    return decoded


def failures(*messages: ReceivedMessage) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages]}


def callback() -> dict[str, Any]:
    """A ``link`` signature, in its dict form: ``note(<the parent's return value>)``."""
    return {"task": note.name, "args": [], "kwargs": {}, "options": {}, "immutable": False}


def recorded_event(name: str, app: cloudq.App, queue: str,
                   messages: list[ReceivedMessage]) -> dict[str, Any]:
    """A recorded event (``tests/events``) with real messages swapped into its records.

    Only what names a real message changes (id, receipt, body, queue ARN, group); the rest
    of each record (SenderId, sequence numbers, message attributes...) stays as recorded.
    """
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    records = event["Records"]
    assert len(records) == len(messages)
    arn = f"arn:aws:sqs:{app.settings.region}:123456789012:{app.settings.queue_prefix}{queue}"
    for rec, message in zip(records, messages, strict=True):
        rec.update(messageId=message.message_id, receiptHandle=message.receipt,
                   body=message.body, eventSourceARN=arn, awsRegion=app.settings.region)
        if message.group_id:
            rec["attributes"]["MessageGroupId"] = message.group_id
    return event


def delete_processed(app: cloudq.App, messages: list[ReceivedMessage],
                     response: dict[str, Any]) -> None:
    """What the event source does after the handler returns."""
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    app.transport.ack([m for m in messages if m.message_id not in failed])


# -- one outcome per record ----------------------------------------------------------------------
def test_success_is_stored_and_the_record_deleted(app: cloudq.App, handler: LambdaHandler) -> None:
    result = add.delay(2, 3)
    batch = receive(app)

    response = invoke_lambda(app, handler, batch, LambdaContext(remaining_s=30))

    assert response == NO_FAILURES
    assert result.get(timeout=1) == 5
    assert lambda_app.runs == ["add(2, 3)"]
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_failure_is_an_outcome_the_record_is_processed(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    result = fail.delay("card declined")
    batch = receive(app)

    response = invoke_lambda(app, handler, batch)

    assert response == NO_FAILURES
    assert result.state == "FAILURE"
    with pytest.raises(lambda_app.OrderError, match="card declined"):
        result.get(timeout=1)
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_retry_is_resent_with_one_more_retry_and_max_retries_holds_across_invocations(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    result = always_retry.delay()
    seen_retries = []

    for _ in range(3):  # max_retries=2: the first run and two retries
        batch = receive(app)
        seen_retries.append(envelope(batch[0]).retries)
        response = invoke_lambda(app, handler, batch)
        assert response == NO_FAILURES  # the retry is a new message; this record is done

    assert seen_retries == [0, 1, 2]
    assert lambda_app.runs == ["always_retry#0", "always_retry#1", "always_retry#2"]
    assert result.state == "FAILURE"
    with pytest.raises(OSError, match="upstream still down"):
        result.get(timeout=1)
    assert counts(app) == {"visible": 0, "in_flight": 0}  # no fourth message
    [dead] = receive(app, "default-dlq")
    assert dead.attributes["cloudq-reason"].startswith("max retries (2) exceeded: OSError")


def test_revoked_task_is_not_run_and_its_record_is_processed(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    result = add.delay(1, 1)
    result.revoke()
    batch = receive(app)

    response = invoke_lambda(app, handler, batch)

    assert response == NO_FAILURES
    assert lambda_app.runs == []
    assert result.state == "REVOKED"
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_expired_task_is_not_run_and_its_record_is_processed(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    result = add.apply_async((1, 1), expires=datetime.now(UTC) - timedelta(seconds=1))
    batch = receive(app)

    response = invoke_lambda(app, handler, batch)

    assert response == NO_FAILURES
    assert lambda_app.runs == []
    assert result.state == "REVOKED"
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_poison_goes_to_the_dlq_with_its_reason_and_the_record_is_processed(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    app.transport.send("default", OutgoingMessage(body="this is not a cloudq message"))
    unknown = app.send_task("lam.no_such_task", (1,))
    batch = receive(app, expect=2)

    response = invoke_lambda(app, handler, batch)

    assert response == NO_FAILURES
    assert counts(app) == {"visible": 0, "in_flight": 0}
    reasons = sorted(m.attributes["cloudq-reason"] for m in receive(app, "default-dlq", expect=2))
    assert reasons[0].startswith("DecodeError: ")
    assert reasons[1].startswith("NotRegistered: task 'lam.no_such_task' is not registered")
    assert unknown.state == "FAILURE"  # its id was readable, so its caller learns why


def test_reject_with_requeue_is_reported_failed_and_visible_again_at_once(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    result = reject_once.delay("stock")
    [first] = receive(app)

    response = invoke_lambda(app, handler, [first])

    assert response == failures(first)
    [again] = receive(app)  # the queue's visibility timeout is 30 s: the handler reset it
    assert (again.message_id, again.receive_count) == (first.message_id, 2)
    assert invoke_lambda(app, handler, [again]) == NO_FAILURES
    assert result.get(timeout=1) == "stock"


def test_a_record_that_cannot_be_handled_is_reported_failed_and_comes_back(
    app: cloudq.App, handler: LambdaHandler, unique_prefix: str
) -> None:
    result = add.apply_async((4, 4), queue=BRIEF)
    [first] = receive(app, BRIEF)
    app.conf.update(result_table=f"{unique_prefix}missing")  # DynamoDB refuses every call

    response = invoke_lambda(app, handler, [first])

    assert response == failures(first)
    assert lambda_app.runs == []
    assert counts(app, BRIEF) == {"visible": 0, "in_flight": 1}  # visibility left alone
    app.conf.update(result_table=f"{unique_prefix}results")
    [again] = receive(app, BRIEF, wait_s=6)  # after the queue's 3 s visibility timeout
    assert (again.message_id, again.receive_count) == (first.message_id, 2)
    assert invoke_lambda(app, handler, [again]) == NO_FAILURES
    assert result.get(timeout=1) == 8


# -- batches -------------------------------------------------------------------------------------
def test_an_empty_batch_returns_no_failures(
    handler: LambdaHandler, aws_calls: RequestCounter
) -> None:
    assert handler({"Records": []}, LambdaContext()) == NO_FAILURES
    assert aws_calls.total == 0


def test_mixed_batch_reports_only_the_record_that_must_come_back(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    ok = add.delay(2, 2)
    failed = fail.delay("out of stock")
    requeued = reject_once.delay("later")
    app.transport.send("default", OutgoingMessage(body="garbage"))
    batch = receive(app, expect=4)
    [handed_back] = [m for m in batch if requeued.id in m.body]

    response = invoke_lambda(app, handler, batch)

    assert response == failures(handed_back)
    assert ok.get(timeout=1) == 4
    assert failed.state == "FAILURE"
    assert requeued.state == "PENDING"
    assert [m.body for m in receive(app, "default-dlq")] == ["garbage"]
    assert counts(app) == {"visible": 1, "in_flight": 0}


def test_an_all_failed_batch_is_returned_not_raised(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    reject_once.delay("a")
    reject_once.delay("b")
    batch = receive(app, expect=2)

    response = invoke_lambda(app, handler, batch)

    assert response == failures(*batch)
    assert counts(app) == {"visible": 2, "in_flight": 0}


def test_the_same_batch_twice_runs_an_idempotent_task_once_and_resends_its_callback(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    charged = charge.apply_async(("o-1",), link=callback())
    batch = receive(app)

    first = invoke_lambda(app, handler, batch)
    second = invoke_lambda(app, handler, batch)  # SQS delivered it twice

    assert first == second == NO_FAILURES
    assert lambda_app.runs == ["charge(o-1)"]
    assert charged.get(timeout=1) == "charged o-1"
    followups = [envelope(m) for m in receive(app, expect=2)]
    # Skipping a task that already succeeded re-sends its callbacks, so a crash between
    # storing the result and sending them loses nothing (docs/lambda.md, "Duplicates").
    assert [(e.task, e.args, e.parent_id) for e in followups] == [
        (note.name, ["charged o-1"], charged.id)] * 2


def test_the_same_batch_twice_reruns_a_plain_task_with_one_callback_per_run(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    summed = add.apply_async((1, 2), link=callback())
    batch = receive(app)

    first = invoke_lambda(app, handler, batch)
    second = invoke_lambda(app, handler, batch)

    assert first == second == NO_FAILURES
    assert lambda_app.runs == ["add(1, 2)", "add(1, 2)"]
    assert summed.get(timeout=1) == 3  # the second run wrote the same result
    followups = [envelope(m) for m in receive(app, expect=2)]
    assert [(e.task, e.args, e.parent_id) for e in followups] == [
        (note.name, [3], summed.id)] * 2


# -- FIFO ----------------------------------------------------------------------------------------
def test_fifo_hand_back_in_the_middle_keeps_the_rest_for_later_in_order(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    record.apply_async(("first",), queue=FIFO)
    reject_once.apply_async(("second",), queue=FIFO)
    record.apply_async(("third",), queue=FIFO)
    batch = receive(app, FIFO, expect=3)

    response = invoke_lambda(app, handler, batch)

    assert response == failures(batch[1], batch[2])
    assert lambda_app.runs == ["first"]  # the third was not run out of turn
    again = receive(app, FIFO, expect=2)  # at once, not after the 30 s visibility timeout
    assert [m.message_id for m in again] == [batch[1].message_id, batch[2].message_id]
    assert invoke_lambda(app, handler, again) == NO_FAILURES
    assert lambda_app.runs == ["first", "second", "third"]


# -- the function's time -------------------------------------------------------------------------
def test_records_are_not_started_with_two_seconds_left(
    app: cloudq.App, handler: LambdaHandler, aws_calls: RequestCounter
) -> None:
    results = [add.delay(1, 1), add.delay(2, 2)]
    batch = receive(app, expect=2)
    aws_calls.reset()

    response = invoke_lambda(app, handler, batch, LambdaContext(remaining_s=2))

    assert response == failures(*batch)  # lambda_min_time_to_start is 3 s by default
    assert aws_calls.total == 0
    assert lambda_app.runs == []
    assert [r.state for r in results] == ["PENDING", "PENDING"]
    assert counts(app) == {"visible": 0, "in_flight": 2}  # untouched: back after the timeout


def test_a_running_task_is_stopped_before_the_function_runs_out_of_time(
    app: cloudq.App
) -> None:
    app.conf.update(lambda_min_time_to_start=0.5)
    result = spin.delay("report")
    batch = receive(app)
    context = LambdaContext(remaining_s=3)

    response = invoke_lambda(app, app.lambda_handler(), batch, context)

    assert response == NO_FAILURES  # FAILURE is stored: the record is done
    assert context.get_remaining_time_in_millis() > 0
    assert lambda_app.runs == ["report.started"]
    assert result.state == "FAILURE"
    with pytest.raises(cloudq.SoftTimeLimitExceeded):
        result.get(timeout=1)


# -- recorded event shapes -----------------------------------------------------------------------
def test_a_recorded_standard_event_is_read_as_aws_documents_it(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    app.transport.send("default", OutgoingMessage(body="Test message."))  # not a task
    result = add.delay(20, 22)
    batch = sorted(receive(app, expect=2), key=lambda m: m.body != "Test message.")
    event = recorded_event("sqs_standard_batch.json", app, "default", batch)

    response = handler(event, LambdaContext())
    delete_processed(app, batch, response)

    assert response == NO_FAILURES
    assert result.get(timeout=1) == 42
    [dead] = receive(app, "default-dlq")
    assert dead.body == "Test message."
    assert dead.attributes["myAttribute"] == "myValue"  # the recorded message attribute
    assert dead.attributes["cloudq-source-queue"] == "default"
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_a_recorded_fifo_event_is_processed_in_order_and_stops_at_a_hand_back(
    app: cloudq.App, handler: LambdaHandler
) -> None:
    record.apply_async(("x",), queue=FIFO)
    reject_once.apply_async(("y",), queue=FIFO)
    record.apply_async(("z",), queue=FIFO)
    batch = receive(app, FIFO, expect=3)
    event = recorded_event("sqs_fifo_batch.json", app, FIFO, batch)

    response = handler(event, LambdaContext())

    assert response == failures(batch[1], batch[2])
    assert lambda_app.runs == ["x"]


# -- events and records the event source does not send ------------------------------------------
def malformed(event: dict[str, Any], like: int, **changes: Any) -> dict[str, Any]:
    """A copy of the event's record ``like`` with fields changed (``None``: removed)."""
    rec = json.loads(json.dumps(event["Records"][like]))
    for name, value in changes.items():
        if value is None:
            rec.pop(name, None)
        else:
            rec[name] = value
    return rec


def test_a_recorded_event_with_malformed_records_runs_the_others_once_and_reports_only_them(
    app: cloudq.App, handler: LambdaHandler, aws_calls: RequestCounter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    results = [add.apply_async((n, n), queue=BRIEF) for n in (1, 2, 3)]
    batch = sorted(receive(app, BRIEF, expect=3), key=lambda m: envelope(m).args)
    event = recorded_event("sqs_standard_batch.json", app, BRIEF, batch[:2])
    # A copy of the first record without its messageId (it would run add(1, 1) again), and
    # the third message's record without its body.
    event["Records"].insert(1, malformed(event, 0, messageId=None))
    event["Records"].append(malformed(event, 1, messageId=batch[2].message_id,
                                      receiptHandle=batch[2].receipt, body=None))
    aws_calls.reset()

    response = handler(event, LambdaContext())
    delete_processed(app, batch, response)

    assert response == failures(batch[2])
    assert lambda_app.runs == ["add(1, 1)", "add(2, 2)"]
    assert aws_calls.counts["DynamoDB.PutItem"] == 2  # each result written once
    assert [r.get(timeout=1) for r in results[:2]] == [2, 4]
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("record 2 of 4 has no messageId" in line for line in logged)
    assert any(batch[2].message_id in line and "body is missing" in line for line in logged)
    [again] = receive(app, BRIEF, wait_s=6)  # reported failed: back after the 3 s timeout
    assert (again.message_id, again.receive_count) == (batch[2].message_id, 2)
    assert invoke_lambda(app, handler, [again]) == NO_FAILURES
    assert results[2].get(timeout=1) == 6
    assert counts(app, BRIEF) == {"visible": 0, "in_flight": 0}


def test_events_that_are_not_sqs_events_are_refused_before_any_aws_call(
    app: cloudq.App, handler: LambdaHandler, aws_calls: RequestCounter,
) -> None:
    add.delay(1, 2)
    [waiting] = receive(app)
    real = recorded_event("sqs_message_attributes.json", app, "default", [waiting])
    s3 = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}
    sns = {"EventSource": "aws:sns", "Sns": {"MessageId": waiting.message_id, "Message": "x"}}
    not_sqs: list[Any] = [[real["Records"][0]], "Records", None, {}, {"Records": None},
                          {"source": "aws.events", "detail-type": "Scheduled Event"},
                          {"Records": [s3]}, {"Records": [sns, sns]}]
    aws_calls.reset()

    for event in not_sqs:
        with pytest.raises(cloudq.ConfigError, match="not an SQS event"):
            handler(event, LambdaContext())

    assert aws_calls.total == 0
    assert lambda_app.runs == []
    assert invoke_lambda(app, handler, [waiting]) == NO_FAILURES  # the real one is untouched
    assert lambda_app.runs == ["add(1, 2)"]


@pytest.mark.parametrize(("change", "reported"), [
    ({"body": None}, [1, 2]),
    ({"messageId": None}, [2]),
], ids=["malformed", "no-message-id"])
def test_a_recorded_fifo_event_stops_at_a_malformed_record_and_hands_the_rest_back(
    app: cloudq.App, handler: LambdaHandler, change: dict[str, Any], reported: list[int],
) -> None:
    for label in ("x", "y", "z"):
        record.apply_async((label,), queue=FIFO)
    batch = receive(app, FIFO, expect=3)
    event = recorded_event("sqs_fifo_batch.json", app, FIFO, batch)
    event["Records"][1] = malformed(event, 1, **change)

    response = handler(event, LambdaContext())
    delete_processed(app, batch, response)

    assert response == failures(*(batch[i] for i in reported))
    assert lambda_app.runs == ["x"]  # "z" was not run out of turn
    # Reported failed: back after the visibility timeout (the record without a messageId
    # was not reported, so the event source deleted its message, as it would).
    assert counts(app, FIFO) == {"visible": 0, "in_flight": len(reported)}


# -- the module handler --------------------------------------------------------------------------
@pytest.fixture
def module_handler(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(cloudq.lambda_handler, "_handler", None)  # a fresh cold start
    return cloudq.lambda_handler.handler


def test_module_handler_loads_the_app_named_by_cloudq_app(
    app: cloudq.App, module_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDQ_APP", "tests.integration.apps.lambda_app:app")
    result = add.delay(3, 4)
    batch = receive(app)

    response = invoke_lambda(app, module_handler, batch)

    assert response == NO_FAILURES
    assert result.get(timeout=1) == 7
    assert cloudq.lambda_handler._handler is not None
    assert cloudq.lambda_handler._handler.app is app


def test_module_handler_without_cloudq_app_says_what_is_missing(
    module_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDQ_APP", raising=False)

    with pytest.raises(cloudq.ConfigError, match="CLOUDQ_APP is not set"):
        module_handler({"Records": []}, LambdaContext())


# -- Powertools logging and metrics --------------------------------------------------------------
@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Powertools reconfigures the ``cloudq`` logger and makes one named after the service."""
    cloudq_logger = logging.getLogger("cloudq")
    saved = cloudq_logger.handlers[:], cloudq_logger.level, cloudq_logger.propagate
    yield
    cloudq_logger.handlers[:], cloudq_logger.level, cloudq_logger.propagate = saved
    service = logging.getLogger("lam")
    service.handlers.clear()
    service.__dict__.pop("init", None)  # Powertools' "already configured" mark


def test_structured_logging_writes_json_lines_with_the_task_id_as_correlation_id(
    app: cloudq.App, restore_loggers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    app.conf.update(lambda_structured_logging=True)
    handler = app.lambda_handler()
    result = add.delay(5, 5)
    batch = receive(app)

    invoke_lambda(app, handler, batch)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    [succeeded] = [line for line in lines if "succeeded in" in line["message"]]
    assert succeeded["level"] == "INFO"
    assert succeeded["name"] == "cloudq.runners.execute"  # cloudq's own logger, as JSON
    assert succeeded["correlation_id"] == result.id
    assert (succeeded["task_id"], succeeded["task_name"], succeeded["message_id"]) == (
        result.id, add.name, batch[0].message_id)


def test_metrics_are_emitted_as_one_emf_blob_per_invocation(
    app: cloudq.App, capsys: pytest.CaptureFixture[str]
) -> None:
    app.conf.update(lambda_metrics=True)
    handler = app.lambda_handler()
    add.delay(1, 2)
    fail.delay("nope")
    batch = receive(app, expect=2)

    invoke_lambda(app, handler, batch)

    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and '"_aws"' in line]
    [blob] = blobs
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "cloudq"
    assert {m["Name"] for m in directive["Metrics"]} >= {"TasksSucceeded", "TasksFailed",
                                                         "TaskDuration"}
    assert (blob["TasksSucceeded"], blob["TasksFailed"]) == ([1.0], [1.0])
    assert blob["service"] == "lam"
