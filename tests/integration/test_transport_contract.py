"""The Transport contract: the in-memory twin and SQS (moto server) pass the same assertions."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from cloudq.aws import AwsClients, RequestCounter
from cloudq.transports.base import (
    OutgoingMessage,
    ReceivedMessage,
    Transport,
    dead_letter_queue_name,
)
from cloudq.transports.memory import MemoryTransport
from cloudq.transports.sqs import SqsTransport
from cloudq.transports.sqs_wire import NO_REASON, dead_letter_reason

pytestmark = pytest.mark.integration

QUEUE = "work"
FIFO = "orders.fifo"


@pytest.fixture(params=["memory", "aws"])
def transport(request: pytest.FixtureRequest, unique_prefix: str) -> Iterator[Transport]:
    if request.param == "memory":
        yield MemoryTransport(strict=True)
        return
    clients: AwsClients = request.getfixturevalue("aws_clients")
    sqs = SqsTransport(clients, prefix=unique_prefix)
    yield sqs
    sqs.close()


def make_queue(
    transport: Transport, queue: str = QUEUE, *, visibility_timeout_s: int = 30,
    max_receive_count: int = 5,
) -> str:
    transport.ensure_queue(queue, visibility_timeout_s=visibility_timeout_s,
                           max_receive_count=max_receive_count)
    return queue


def drain(
    transport: Transport, queue: str, count: int, *, timeout_s: float = 5.0, ack: bool = False,
) -> list[ReceivedMessage]:
    """Receive until ``count`` messages arrived (or the timeout passed)."""
    got: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = transport.receive(queue, max_messages=10, wait_s=1)
        if ack and batch:
            transport.ack(batch)
        got += batch
    return got


def test_send_then_receive_round_trips_body_and_attributes(transport: Transport) -> None:
    queue = make_queue(transport)
    before_ms = int(time.time() * 1000)

    message_id = transport.send(queue, OutgoingMessage(body='{"x": 1}',
                                                       attributes={"trace": "abc"}))
    [received] = drain(transport, queue, 1)

    assert received.body == '{"x": 1}'
    assert received.message_id == message_id
    assert received.queue == queue
    assert received.receive_count == 1
    assert received.attributes == {"trace": "abc"}
    assert received.sent_at_ms is not None and received.sent_at_ms >= before_ms - 1000
    assert transport.receive(queue) == []


def test_delay_is_respected(transport: Transport) -> None:
    queue = make_queue(transport)
    sent_at = time.monotonic()

    transport.send(queue, OutgoingMessage(body="later", delay_s=2))

    assert transport.receive(queue) == []
    [received] = transport.receive(queue, wait_s=5)
    assert received.body == "later"
    assert time.monotonic() - sent_at >= 1.5


def test_send_batch_of_25_arrives_complete(transport: Transport) -> None:
    queue = make_queue(transport)
    bodies = [f"m{i}" for i in range(25)]

    ids = transport.send_batch(queue, [OutgoingMessage(body=b) for b in bodies])
    received = drain(transport, queue, 25)

    assert len(ids) == len(set(ids)) == 25
    assert sorted(m.body for m in received) == sorted(bodies)
    assert {m.message_id for m in received} == set(ids)


def test_ack_removes_the_message(transport: Transport) -> None:
    queue = make_queue(transport)
    transport.send(queue, OutgoingMessage(body="done"))
    [received] = drain(transport, queue, 1)

    transport.ack([received])
    transport.ack([received])  # a second ack of a gone message is ignored
    transport.retry_later(received, 0)  # and so is making a gone message visible

    assert transport.receive(queue) == []


def test_retry_later_zero_makes_it_visible_again(transport: Transport) -> None:
    queue = make_queue(transport)
    transport.send(queue, OutgoingMessage(body="again"))
    [first] = drain(transport, queue, 1)

    transport.retry_later(first, 0)
    [second] = drain(transport, queue, 1)

    assert second.body == "again"
    assert second.message_id == first.message_id
    assert second.receive_count == 2


def test_extend_visibility_keeps_it_hidden_past_the_timeout(transport: Transport) -> None:
    queue = make_queue(transport, visibility_timeout_s=2)
    transport.send(queue, OutgoingMessage(body="long task"))
    [received] = drain(transport, queue, 1)

    transport.extend_visibility([received], 6)
    time.sleep(2.5)

    assert transport.receive(queue) == []
    transport.retry_later(received, 0)  # the receipt is still good after the extension
    [again] = drain(transport, queue, 1)
    assert again.receive_count == 2


def test_visibility_timeout_returns_an_unacked_message(transport: Transport) -> None:
    queue = make_queue(transport, visibility_timeout_s=1)
    transport.send(queue, OutgoingMessage(body="crashed worker"))
    drain(transport, queue, 1)

    [again] = transport.receive(queue, wait_s=3)

    assert again.body == "crashed worker"
    assert again.receive_count == 2


def test_dead_letter_keeps_body_and_reason(transport: Transport) -> None:
    queue = make_queue(transport)
    transport.send(queue, OutgoingMessage(body="poison", attributes={"trace": "t1"}))
    [received] = drain(transport, queue, 1)

    transport.dead_letter(received, "cannot decode")
    transport.ack([received])

    [dead] = drain(transport, dead_letter_queue_name(queue), 1)
    assert dead.body == "poison"
    assert dead.attributes["cloudq-reason"] == "cannot decode"
    assert dead.attributes["cloudq-source-queue"] == queue
    assert dead.attributes["trace"] == "t1"
    assert transport.receive(queue) == []


def test_redrive_after_max_receive_count(transport: Transport) -> None:
    queue = make_queue(transport, max_receive_count=2)
    transport.send(queue, OutgoingMessage(body="fails twice"))

    for expected_count in (1, 2):
        [received] = drain(transport, queue, 1)
        assert received.receive_count == expected_count
        transport.retry_later(received, 0)

    assert transport.receive(queue) == []
    [dead] = drain(transport, dead_letter_queue_name(queue), 1)
    assert dead.body == "fails twice"
    assert dead_letter_reason(dead.attributes) == NO_REASON  # moved by SQS, not by cloudq


def test_remaining_counts_visible_in_flight_and_delayed(transport: Transport) -> None:
    queue = make_queue(transport)
    transport.send_batch(queue, [OutgoingMessage(body=f"m{i}") for i in range(2)])
    transport.send(queue, OutgoingMessage(body="delayed", delay_s=60))
    [in_flight] = transport.receive(queue, max_messages=1, wait_s=1)

    assert transport.remaining(queue) == 3
    transport.ack([in_flight])
    assert transport.remaining(queue) == 2


def test_fifo_keeps_order_within_a_group(transport: Transport) -> None:
    queue = make_queue(transport, FIFO)
    messages = [OutgoingMessage(body=f"{group}{i}", group_id=group, dedup_id=f"{group}{i}")
                for i in range(4) for group in ("a", "b")]

    transport.send_batch(queue, messages)
    received = drain(transport, queue, 8, ack=True)

    assert [m.body for m in received if m.group_id == "a"] == ["a0", "a1", "a2", "a3"]
    assert [m.body for m in received if m.group_id == "b"] == ["b0", "b1", "b2", "b3"]


def test_fifo_one_receive_takes_several_messages_of_a_free_group(transport: Transport) -> None:
    queue = make_queue(transport, FIFO)
    transport.send_batch(queue, [OutgoingMessage(body=f"m{i}", group_id="g", dedup_id=f"m{i}")
                                 for i in range(3)])

    received = transport.receive(queue, max_messages=10, wait_s=1)

    assert [m.body for m in received] == ["m0", "m1", "m2"]


def test_fifo_group_waits_while_its_head_is_in_flight(transport: Transport) -> None:
    queue = make_queue(transport, FIFO)
    transport.send_batch(queue, [OutgoingMessage(body=f"m{i}", group_id="g", dedup_id=f"m{i}")
                                 for i in range(2)])
    [head] = transport.receive(queue, max_messages=1, wait_s=1)

    transport.retry_later(head, 1)  # still in flight, only hidden for a second

    assert transport.receive(queue, max_messages=10) == []
    time.sleep(1.2)
    assert [m.body for m in transport.receive(queue, max_messages=10, wait_s=1)] == ["m0", "m1"]


def test_fifo_deduplicates_by_id(transport: Transport) -> None:
    queue = make_queue(transport, FIFO)

    for _ in range(2):
        transport.send(queue, OutgoingMessage(body="once", group_id="g", dedup_id="task-1"))

    assert [m.body for m in transport.receive(queue, max_messages=10)] == ["once"]


def test_depth_and_purge(transport: Transport) -> None:
    queue = make_queue(transport)
    transport.send_batch(queue, [OutgoingMessage(body=f"m{i}") for i in range(3)])
    transport.send(queue, OutgoingMessage(body="delayed", delay_s=60))

    assert transport.depth(queue) == 3
    assert transport.purge(queue) == 4
    assert transport.depth(queue) == 0
    assert transport.receive(queue) == []


def test_the_twin_records_the_batch_calls_sqs_receives(
    aws_clients: AwsClients, unique_prefix: str
) -> None:
    def batch_calls(transport: Transport) -> None:
        make_queue(transport)
        transport.send_batch(QUEUE, [OutgoingMessage(body=f"m{i}") for i in range(23)])
        received = drain(transport, QUEUE, 23)
        transport.extend_visibility(received, 60)
        transport.ack(received)

    memory = MemoryTransport(strict=True)
    batch_calls(memory)
    counter = RequestCounter()
    counter.attach(aws_clients.sqs)
    batch_calls(SqsTransport(aws_clients, prefix=unique_prefix))

    recorded = Counter(action for action, _ in memory.calls)
    for action in ("SendMessageBatch", "ChangeMessageVisibilityBatch", "DeleteMessageBatch"):
        assert recorded[action] == counter.counts[f"SQS.{action}"] == 3, action
