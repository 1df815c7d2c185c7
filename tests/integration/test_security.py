"""docs/security.md against moto server: forged messages change nothing but the dead-letter
queue (worker path and Lambda handler), and arguments that cannot be encoded fail in the caller
before any AWS call."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.execute import process_message
from cloudq.testing import invoke_lambda
from cloudq.transports.base import OutgoingMessage, ReceivedMessage, dead_letter_queue_name

pytestmark = pytest.mark.integration

WRITES = ("DynamoDB.PutItem", "DynamoDB.UpdateItem", "DynamoDB.DeleteItem",
          "DynamoDB.BatchWriteItem")


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    app = cloudq.App("sec", endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
                     result_table=f"{unique_prefix}results", signing_key="current",
                     set_as_current=False)

    @app.task(name="sec.add")
    def add(x: int, y: int) -> int:
        return x + y

    provision(app, ["default"])
    yield app
    app.close()


def work(app: cloudq.App) -> list[ReceivedMessage]:
    """Play a worker: receive, process and delete until the queue is empty."""
    seen: list[ReceivedMessage] = []
    while batch := app.transport.receive("default", max_messages=10):
        for message in batch:
            process_message(app, message)
        app.transport.ack(batch)
        seen += batch
    return seen


def forged(task_id: str) -> list[str]:
    envelope = wire.Envelope(id=task_id, task="sec.add", args=["forged-body-marker", 0])
    return [wire.encode(envelope), wire.encode(envelope, signing_key="guessed")]


def dead_letters(app: cloudq.App) -> list[ReceivedMessage]:
    return app.transport.receive(dead_letter_queue_name("default"), max_messages=10)


def test_forged_messages_leave_a_stored_success_alone(
    app: cloudq.App, aws_calls: RequestCounter, caplog: pytest.LogCaptureFixture
) -> None:
    done = app.send_task("sec.add", args=(2, 2))
    work(app)
    assert done.get(timeout=5) == 4
    for body in forged(done.id):
        app.transport.send("default", OutgoingMessage(body=body))
    aws_calls.reset()

    with caplog.at_level(logging.INFO):
        handled = work(app)

    assert len(handled) == 2
    assert sum(aws_calls.counts[name] for name in WRITES) == 0
    assert done.state == "SUCCESS" and done.get(timeout=5) == 4
    reasons = sorted(m.attributes["cloudq-reason"] for m in dead_letters(app))
    assert reasons == ["SignatureError: message is not signed, but this worker requires "
                       "signed messages",
                       "SignatureError: message signature does not match the signing key"]
    assert "forged-body-marker" not in caplog.text


def test_a_forged_record_in_a_lambda_batch_leaves_a_stored_success_alone(
    app: cloudq.App
) -> None:
    done = app.send_task("sec.add", args=(1, 1))
    work(app)
    app.transport.send("default", OutgoingMessage(body=forged(done.id)[0]))
    fresh = app.send_task("sec.add", args=(3, 3))
    batch = app.transport.receive("default", max_messages=10)
    assert len(batch) == 2

    response = invoke_lambda(app, app.lambda_handler(), batch)

    assert response == {"batchItemFailures": []}
    assert done.get(timeout=5) == 2 and fresh.get(timeout=5) == 6
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith("SignatureError: ")


def test_arguments_nested_too_deep_or_referring_to_themselves_fail_before_any_request(
    app: cloudq.App, aws_calls: RequestCounter
) -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    aws_calls.reset()

    with pytest.raises(cloudq.EncodeError, match=r"kwargs\['items'\]\[1\]: refers to itself"):
        app.send_task("elsewhere.total", kwargs={"items": looped})
    with pytest.raises(cloudq.EncodeError, match=r"args\[0\]\[0\]\[0\].*nested more than 100"):
        app.send_task("elsewhere.total", args=(deep,))

    assert aws_calls.total == 0
