"""The SQS transport: the Transport seam on boto3's SQS client.

Queue names are logical; the physical SQS name is ``prefix + name``. URLs are looked up
once and cached. Batch calls take at most 10 entries; entries SQS failed on its side are
retried once, receipts of messages that are already gone are logged and ignored.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cloudq.errors import ConfigError, TransportError
from cloudq.transports.base import (
    MAX_BATCH,
    OutgoingMessage,
    ReceivedMessage,
    Transport,
    dead_letter_queue_name,
    is_fifo,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from cloudq.aws import AwsClients

    QueueAttributes = dict[QueueAttributeNameType, str]

logger = logging.getLogger(__name__)

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

# Error codes, without the "AWS.SimpleQueueService." prefix of the query protocol.
MISSING_QUEUE = frozenset({"QueueDoesNotExist", "NonExistentQueue"})
QUEUE_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})
MESSAGE_GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})
"""Codes for a receipt whose message was deleted or whose visibility timeout ran out."""


def _code(code: str) -> str:
    return code.removeprefix("AWS.SimpleQueueService.")


def _codes(exc: ClientError) -> set[str]:
    error = exc.response.get("Error", {})
    return {_code(str(error.get(name, ""))) for name in ("Code", "QueryErrorCode")} - {""}


class SqsTransport(Transport):
    """Queues on Amazon SQS (or anything speaking its API at ``clients.endpoint_url``)."""

    def __init__(
        self, clients: AwsClients, *, prefix: str,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self._clients = clients
        self.prefix = prefix
        self.max_batch_bytes = max_batch_bytes
        self._urls: dict[str, str] = {}

    @property
    def _sqs(self) -> SQSClient:
        return self._clients.sqs

    def physical_name(self, queue: str) -> str:
        return self.prefix + queue

    # -- queue URLs and errors --------------------------------------------------------------------
    def _lookup(self, queue: str) -> str | None:
        url = self._urls.get(queue)
        if url is None:
            try:
                url = self._sqs.get_queue_url(QueueName=self.physical_name(queue))["QueueUrl"]
            except ClientError as exc:
                if _codes(exc) & MISSING_QUEUE:
                    return None
                raise self._error(exc, queue) from exc
            self._urls[queue] = url
        return url

    def queue_url(self, queue: str) -> str:
        url = self._lookup(queue)
        if url is None:
            raise self._missing(queue)
        return url

    def _missing(self, queue: str) -> ConfigError:
        self._urls.pop(queue, None)
        return ConfigError(
            f"SQS queue {self.physical_name(queue)!r} does not exist; "
            "create it with `cloudq provision`"
        )

    def _error(self, exc: ClientError, queue: str) -> ConfigError | TransportError:
        if _codes(exc) & MISSING_QUEUE:
            return self._missing(queue)
        return TransportError(
            f"SQS {exc.operation_name} on {self.physical_name(queue)!r} failed: {exc}"
        )

    # -- sending ----------------------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> str:
        params = _send_params(queue, message)
        try:
            return self._sqs.send_message(QueueUrl=self.queue_url(queue), **params)["MessageId"]
        except ClientError as exc:
            raise self._error(exc, queue) from exc

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        ids: list[str] = []
        for chunk in _chunks(messages, self.max_batch_bytes):
            entries = [{"Id": str(i), **_send_params(queue, m)} for i, m in enumerate(chunk)]
            sent = self._batch(queue, self._sqs.send_message_batch, entries)
            ids += [sent[entry["Id"]]["MessageId"] for entry in entries]
        return ids

    def _batch(
        self, queue: str, call: Callable[..., Any], entries: list[dict[str, Any]],
        *, gone_ok: bool = False,
    ) -> dict[str, Any]:
        """Run one batch call; retry entries SQS failed on its side once; successes by Id."""
        url = self.queue_url(queue)
        pending = {entry["Id"]: entry for entry in entries}
        succeeded: dict[str, Any] = {}
        for attempt in (1, 2):
            try:
                response = call(QueueUrl=url, Entries=list(pending.values()))
            except ClientError as exc:
                raise self._error(exc, queue) from exc
            for ok in response.get("Successful", []):
                pending.pop(ok["Id"])
                succeeded[ok["Id"]] = ok
            failed = []
            for failure in response.get("Failed", []):
                if gone_ok and _code(failure["Code"]) in MESSAGE_GONE:
                    self._log_gone(queue, f"{failure['Code']}: {failure.get('Message')}")
                    pending.pop(failure["Id"])
                else:
                    failed.append(failure)
            if not failed:
                break
            if attempt == 2 or any(f["SenderFault"] for f in failed):
                first = failed[0]
                raise TransportError(
                    f"SQS refused {len(failed)} of {len(entries)} entries on "
                    f"{self.physical_name(queue)!r}: {first['Code']}: {first.get('Message')}"
                )
            logger.warning("SQS failed %d entries on %s; retrying them once",
                           len(failed), self.physical_name(queue))
        return succeeded

    def _log_gone(self, queue: str, detail: object) -> None:
        logger.warning("SQS on %s: message already deleted or its visibility expired (%s)",
                       self.physical_name(queue), detail)

    # -- receiving and acknowledging --------------------------------------------------------------
    def receive(
        self, queue: str, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[ReceivedMessage]:
        try:
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url(queue),
                MaxNumberOfMessages=max(1, min(max_messages, MAX_BATCH)),
                WaitTimeSeconds=max(0, min(int(wait_s), MAX_WAIT_S)),
                MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
                MessageAttributeNames=["All"],
            )
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return [_received(queue, m) for m in response.get("Messages", [])]

    def ack(self, messages: Sequence[ReceivedMessage]) -> None:
        for queue, chunk in _per_queue(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            self._batch(queue, self._sqs.delete_message_batch, entries, gone_ok=True)

    def retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url(message.queue), ReceiptHandle=message.receipt,
                VisibilityTimeout=max(0, min(delay_s, MAX_VISIBILITY_S)),
            )
        except ClientError as exc:
            if not _codes(exc) & MESSAGE_GONE:
                raise self._error(exc, message.queue) from exc
            self._log_gone(message.queue, exc)

    def extend_visibility(self, messages: Sequence[ReceivedMessage], timeout_s: int) -> None:
        timeout_s = max(0, min(timeout_s, MAX_VISIBILITY_S))
        for queue, chunk in _per_queue(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": timeout_s}
                       for i, m in enumerate(chunk)]
            self._batch(queue, self._sqs.change_message_visibility_batch, entries, gone_ok=True)

    # -- administration ---------------------------------------------------------------------------
    def ensure_queue(
        self, queue: str, *, visibility_timeout_s: int, max_receive_count: int
    ) -> None:
        dlq = dead_letter_queue_name(queue)
        dlq_url = self._create_or_update(dlq, {
            "MessageRetentionPeriod": str(DLQ_RETENTION_S), **_fifo_attributes(dlq),
        })
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]
        except ClientError as exc:
            raise self._error(exc, dlq) from exc
        redrive = {"maxReceiveCount": max_receive_count,
                   "deadLetterTargetArn": attributes["QueueArn"]}
        self._create_or_update(queue, {
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
            **_fifo_attributes(queue),
        })

    def _create_or_update(self, queue: str, attributes: QueueAttributes) -> str:
        url = self._lookup(queue)
        if url is None:
            try:
                url = self._sqs.create_queue(
                    QueueName=self.physical_name(queue), Attributes=attributes)["QueueUrl"]
            except ClientError as exc:
                if not _codes(exc) & QUEUE_EXISTS:  # else created meanwhile by someone else
                    raise self._error(exc, queue) from exc
            else:
                logger.info("created SQS queue %s", self.physical_name(queue))
                self._urls[queue] = url
                return url
            url = self.queue_url(queue)
        settable: QueueAttributes = {k: v for k, v in attributes.items() if k != "FifoQueue"}
        try:
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=settable)
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return url

    def purge(self, queue: str) -> int:
        """Empty ``queue`` (SQS allows one purge per queue per 60 s, and finishes it lazily)."""
        url = self.queue_url(queue)
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=COUNT_ATTRIBUTES)["Attributes"]
            self._sqs.purge_queue(QueueUrl=url)
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return sum(int(attributes.get(name, 0)) for name in COUNT_ATTRIBUTES)

    def depth(self, queue: str) -> int:
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.queue_url(queue),
                AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def close(self) -> None:
        self._urls.clear()


# -- pure helpers ---------------------------------------------------------------------------------
def _send_params(queue: str, message: OutgoingMessage) -> dict[str, Any]:
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


def _size_bytes(message: OutgoingMessage) -> int:
    attributes = sum(len(k.encode()) + len(v.encode()) + len("String")
                     for k, v in message.attributes.items())
    return len(message.body.encode()) + attributes


def _chunks(messages: Sequence[OutgoingMessage], max_bytes: int) -> Iterator[list[OutgoingMessage]]:
    """Batches of at most 10 messages and ``max_bytes`` (a bigger message goes alone)."""
    chunk: list[OutgoingMessage] = []
    size = 0
    for message in messages:
        message_size = _size_bytes(message)
        if chunk and (len(chunk) == MAX_BATCH or size + message_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += message_size
    if chunk:
        yield chunk


def _per_queue(messages: Sequence[ReceivedMessage]) -> Iterator[tuple[str, list[ReceivedMessage]]]:
    """Received messages grouped by queue, in chunks of 10."""
    grouped: dict[str, list[ReceivedMessage]] = defaultdict(list)
    for message in messages:
        grouped[message.queue].append(message)
    for queue, batch in grouped.items():
        for start in range(0, len(batch), MAX_BATCH):
            yield queue, batch[start:start + MAX_BATCH]


def _received(queue: str, message: MessageTypeDef) -> ReceivedMessage:
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


def _fifo_attributes(queue: str) -> QueueAttributes:
    return {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if is_fifo(queue) else {}
