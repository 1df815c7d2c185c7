"""What only the SQS transport does: provisioning, error translation, batching costs."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cloudq.aws import AwsClients, RequestCounter
from cloudq.errors import ConfigError, TransportError
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from cloudq.transports.sqs import SqsTransport
from cloudq.transports.sqs_wire import DLQ_RETENTION_S

pytestmark = pytest.mark.integration

Attributes = Callable[[str], dict[str, str]]


@pytest.fixture
def sqs(aws_clients: AwsClients, unique_prefix: str) -> SqsTransport:
    return SqsTransport(aws_clients, prefix=unique_prefix)


@pytest.fixture
def counter(aws_clients: AwsClients) -> RequestCounter:
    counter = RequestCounter()
    counter.attach(aws_clients.sqs)
    return counter


@pytest.fixture
def attributes(aws_clients: AwsClients, sqs: SqsTransport) -> Attributes:
    """A queue's SQS attributes, read behind the transport's back."""

    def read(queue: str) -> dict[str, str]:
        return aws_clients.sqs.get_queue_attributes(
            QueueUrl=sqs.queue_url(queue), AttributeNames=["All"])["Attributes"]

    return read


def test_a_missing_queue_is_a_config_error_naming_it(sqs: SqsTransport) -> None:
    with pytest.raises(ConfigError) as raised:
        sqs.send("nowhere", OutgoingMessage(body="x"))

    assert f"{sqs.prefix}nowhere" in str(raised.value)
    assert "cloudq provision" in str(raised.value)


def test_ensure_queue_creates_the_dlq_and_the_redrive_policy(
    sqs: SqsTransport, attributes: Attributes
) -> None:
    sqs.ensure_queue("work", visibility_timeout_s=45, max_receive_count=3)

    dlq = attributes("work-dlq")
    work = attributes("work")
    assert dlq["MessageRetentionPeriod"] == str(DLQ_RETENTION_S)
    assert work["VisibilityTimeout"] == "45"
    redrive = json.loads(work["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 3
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]


def test_ensure_queue_again_updates_the_settings(sqs: SqsTransport, attributes: Attributes) -> None:
    sqs.ensure_queue("work", visibility_timeout_s=45, max_receive_count=3)

    sqs.ensure_queue("work", visibility_timeout_s=90, max_receive_count=7)

    work = attributes("work")
    assert work["VisibilityTimeout"] == "90"
    assert int(json.loads(work["RedrivePolicy"])["maxReceiveCount"]) == 7


def test_ensure_queue_makes_fifo_queues_with_a_fifo_dlq(
    sqs: SqsTransport, attributes: Attributes
) -> None:
    sqs.ensure_queue("orders.fifo", visibility_timeout_s=30, max_receive_count=3)
    sqs.ensure_queue("orders.fifo", visibility_timeout_s=30, max_receive_count=3)

    for queue in ("orders.fifo", "orders-dlq.fifo"):
        found = attributes(queue)
        assert found["FifoQueue"] == "true"
        assert found["ContentBasedDeduplication"] == "false"


def test_batches_cost_one_call_per_ten(sqs: SqsTransport, counter: RequestCounter) -> None:
    sqs.ensure_queue("work", visibility_timeout_s=30, max_receive_count=3)
    counter.reset()

    sqs.send_batch("work", [OutgoingMessage(body=f"m{i}") for i in range(25)])
    received: list[ReceivedMessage] = []
    while len(received) < 25:
        received += sqs.receive("work", max_messages=10, wait_s=1)
    sqs.extend_visibility(received, 60)
    sqs.ack(received)

    assert counter.counts["SQS.SendMessageBatch"] == 3
    assert counter.counts["SQS.ChangeMessageVisibilityBatch"] == 3
    assert counter.counts["SQS.DeleteMessageBatch"] == 3
    assert counter.counts["SQS.GetQueueUrl"] == 0  # the URL was cached by ensure_queue


def test_big_messages_are_batched_by_size(sqs: SqsTransport, counter: RequestCounter) -> None:
    sqs.ensure_queue("work", visibility_timeout_s=30, max_receive_count=3)
    counter.reset()

    sqs.send_batch("work", [OutgoingMessage(body="x" * 100_000) for _ in range(6)])

    assert counter.counts["SQS.SendMessageBatch"] == 3
    assert sqs.depth("work") == 6


def test_receipts_of_gone_messages_are_ignored(sqs: SqsTransport) -> None:
    sqs.ensure_queue("work", visibility_timeout_s=30, max_receive_count=3)
    sqs.send("work", OutgoingMessage(body="x"))
    [received] = sqs.receive("work", wait_s=1)
    sqs.ack([received])
    bogus = ReceivedMessage(queue="work", body="x", message_id="m", receipt="not-a-receipt")

    sqs.ack([received, bogus])
    sqs.extend_visibility([received, bogus], 60)
    sqs.retry_later(bogus, 0)


def test_refused_batch_entries_raise_a_transport_error(sqs: SqsTransport) -> None:
    sqs.ensure_queue("orders.fifo", visibility_timeout_s=30, max_receive_count=3)

    with pytest.raises(TransportError, match=r"orders\.fifo"):
        sqs.send_batch("orders.fifo", [OutgoingMessage(body="no group id")])
