"""I/O-free SQS wire format: request parameters, batching and response parsing.

Shared by the boto3 face (``cloudq.transports.sqs``) and any async face, so neither
duplicates the protocol. Imports neither boto3 nor botocore.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cloudq.errors import TransportError
from cloudq.transports.base import (
    MAX_BATCH,
    REASON_ATTRIBUTE,
    OutgoingMessage,
    ReceivedMessage,
    is_fifo,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    QueueAttributes = dict[QueueAttributeNameType, str]

MAX_WAIT_S = 20
"""SQS's longest long poll."""
MAX_VISIBILITY_S = 12 * 3600
DLQ_RETENTION_S = 14 * 24 * 3600
"""Dead-lettered messages are kept as long as SQS allows."""
DEFAULT_MAX_BATCH_BYTES = 256 * 1024
"""Payload budget of one SendMessageBatch (the older queues' limit; 1 MiB on newer ones)."""

RECEIVE_ATTRIBUTES: list[Any] = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]
COUNT_ATTRIBUTES: list[Any] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]

NO_REASON = "no reason recorded: delivery limit (max_receive_count reached)"
"""What a dead-lettered message without a cloudq reason is: SQS's redrive policy moved it after
``max_receive_count`` receives that did not delete it (workers crashed or were killed, the
store was down for longer than the receives last). Its body is as sent: re-sending it runs it."""

# Error codes, without the "AWS.SimpleQueueService." prefix of the query protocol.
MISSING_QUEUE = frozenset({"QueueDoesNotExist", "NonExistentQueue"})
QUEUE_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})
MESSAGE_GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})
"""Codes for a receipt whose message was deleted or whose visibility timeout ran out."""


def error_code(code: str) -> str:
    """An SQS error code without the query protocol's ``AWS.SimpleQueueService.`` prefix."""
    return code.removeprefix("AWS.SimpleQueueService.")


def dead_letter_reason(attributes: Mapping[str, str]) -> str:
    """Why a message is in a dead-letter queue, from its (string) message attributes: the
    reason cloudq recorded when it moved it there, else :data:`NO_REASON`."""
    return attributes.get(REASON_ATTRIBUTE) or NO_REASON


def send_params(queue: str, message: OutgoingMessage) -> dict[str, Any]:
    """SendMessage parameters (also a SendMessageBatch entry, given an ``Id``)."""
    params: dict[str, Any] = {"MessageBody": message.body}
    if message.delay_s > 0:
        params["DelaySeconds"] = message.delay_s
    if message.attributes:
        params["MessageAttributes"] = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in message.attributes.items()
        }
    if message.group_id is not None:
        params["MessageGroupId"] = message.group_id
    if is_fifo(queue):  # no content-based dedup: every FIFO message needs an id
        params["MessageDeduplicationId"] = message.dedup_id or uuid.uuid4().hex
    return params


def batch_entries(queue: str, messages: Sequence[OutgoingMessage],
                  max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """SendMessageBatch entries, chunked (Ids are positions in the chunk)."""
    for chunk in chunks(messages, max_bytes):
        yield [{"Id": str(i), **send_params(queue, m)} for i, m in enumerate(chunk)]


def settle(pending: dict[str, Any], succeeded: dict[str, Any], response: Any,
           *, gone_ok: bool = False) -> tuple[list[Any], list[Any]]:
    """Fold one batch response in: successes leave ``pending`` for ``succeeded``.

    Returns (failed entries to retry or report, entries whose message was already gone,
    dropped when ``gone_ok``)."""
    for ok in response.get("Successful", []):
        pending.pop(ok["Id"])
        succeeded[ok["Id"]] = ok
    failed, gone = [], []
    for failure in response.get("Failed", []):
        if gone_ok and error_code(failure["Code"]) in MESSAGE_GONE:
            pending.pop(failure["Id"])
            gone.append(failure)
        else:
            failed.append(failure)
    return failed, gone


def refused(failed: list[Any], attempt: int) -> bool:
    """Whether failed batch entries are final (the sender's fault, or the second attempt)."""
    return attempt == 2 or any(f["SenderFault"] for f in failed)


def refusal(failed: list[Any], entries: int, queue_name: str) -> TransportError:
    first = failed[0]
    return TransportError(f"SQS refused {len(failed)} of {entries} entries on {queue_name!r}: "
                          f"{first['Code']}: {first.get('Message')}")


def size_bytes(message: OutgoingMessage) -> int:
    """What a message counts against SQS's payload limit: body plus attributes."""
    attributes = sum(len(k.encode()) + len(v.encode()) + len("String")
                     for k, v in message.attributes.items())
    return len(message.body.encode()) + attributes


def chunks(messages: Sequence[OutgoingMessage], max_bytes: int) -> Iterator[list[OutgoingMessage]]:
    """Batches of at most 10 messages and ``max_bytes`` (a bigger message goes alone)."""
    chunk: list[OutgoingMessage] = []
    size = 0
    for message in messages:
        message_size = size_bytes(message)
        if chunk and (len(chunk) == MAX_BATCH or size + message_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += message_size
    if chunk:
        yield chunk


def per_queue(messages: Sequence[ReceivedMessage]) -> Iterator[tuple[str, list[ReceivedMessage]]]:
    """Received messages grouped by queue, in chunks of 10."""
    grouped: dict[str, list[ReceivedMessage]] = defaultdict(list)
    for message in messages:
        grouped[message.queue].append(message)
    for queue, batch in grouped.items():
        for start in range(0, len(batch), MAX_BATCH):
            yield queue, batch[start:start + MAX_BATCH]


def received(queue: str, message: MessageTypeDef) -> ReceivedMessage:
    """A ReceiveMessage result as the seam's ReceivedMessage."""
    system = message.get("Attributes", {})
    sent_at = system.get("SentTimestamp")
    return ReceivedMessage(
        queue=queue,
        body=message["Body"],
        message_id=message["MessageId"],
        receipt=message["ReceiptHandle"],
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        attributes={name: value["StringValue"]
                    for name, value in message.get("MessageAttributes", {}).items()
                    if "StringValue" in value},
        sent_at_ms=int(sent_at) if sent_at is not None else None,
        group_id=system.get("MessageGroupId"),
    )


def fifo_attributes(queue: str) -> QueueAttributes:
    return {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if is_fifo(queue) else {}


def dead_letter_attributes(dlq: str) -> QueueAttributes:
    return {"MessageRetentionPeriod": str(DLQ_RETENTION_S), **fifo_attributes(dlq)}


def queue_attributes(
    queue: str, *, visibility_timeout_s: int, max_receive_count: int, dlq_arn: str
) -> QueueAttributes:
    redrive = {"maxReceiveCount": max_receive_count, "deadLetterTargetArn": dlq_arn}
    return {
        "VisibilityTimeout": str(visibility_timeout_s),
        "RedrivePolicy": json.dumps(redrive),
        **fifo_attributes(queue),
    }
