"""The SQS transport: the Transport seam on boto3's SQS client.

Queue names are logical; the physical SQS name is ``prefix + name``. URLs are looked up
once and cached. Batch calls take at most 10 entries; entries SQS failed on its side are
retried once, receipts of messages that are already gone are logged and ignored. Request
building and response parsing live in the I/O-free ``sqs_wire``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cloudq.errors import ConfigError, TransportError
from cloudq.transports import sqs_wire as wire
from cloudq.transports.base import (
    MAX_BATCH,
    OutgoingMessage,
    ReceivedMessage,
    Transport,
    dead_letter_queue_name,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from cloudq.aws import AwsClients
    from cloudq.transports.sqs_wire import QueueAttributes

logger = logging.getLogger(__name__)


def _codes(exc: ClientError) -> set[str]:
    error = exc.response.get("Error", {})
    return {wire.error_code(str(error.get(name, ""))) for name in ("Code", "QueryErrorCode")} - {""}


class SqsTransport(Transport):
    """Queues on Amazon SQS (or anything speaking its API at ``clients.endpoint_url``)."""

    def __init__(
        self, clients: AwsClients, *, prefix: str,
        max_batch_bytes: int = wire.DEFAULT_MAX_BATCH_BYTES,
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
                if _codes(exc) & wire.MISSING_QUEUE:
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
        if _codes(exc) & wire.MISSING_QUEUE:
            return self._missing(queue)
        return TransportError(
            f"SQS {exc.operation_name} on {self.physical_name(queue)!r} failed: {exc}"
        )

    # -- sending ----------------------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> str:
        params = wire.send_params(queue, message)
        try:
            return self._sqs.send_message(QueueUrl=self.queue_url(queue), **params)["MessageId"]
        except ClientError as exc:
            raise self._error(exc, queue) from exc

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        ids: list[str] = []
        for entries in wire.batch_entries(queue, messages, self.max_batch_bytes):
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
            failed, gone = wire.settle(pending, succeeded, response, gone_ok=gone_ok)
            for failure in gone:
                self._log_gone(queue, f"{failure['Code']}: {failure.get('Message')}")
            if not failed:
                break
            if wire.refused(failed, attempt):
                raise wire.refusal(failed, len(entries), self.physical_name(queue))
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
                WaitTimeSeconds=max(0, min(int(wait_s), wire.MAX_WAIT_S)),
                MessageSystemAttributeNames=wire.RECEIVE_ATTRIBUTES,
                MessageAttributeNames=["All"],
            )
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return [wire.received(queue, m) for m in response.get("Messages", [])]

    def ack(self, messages: Sequence[ReceivedMessage]) -> None:
        for queue, chunk in wire.per_queue(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            self._batch(queue, self._sqs.delete_message_batch, entries, gone_ok=True)

    def retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url(message.queue), ReceiptHandle=message.receipt,
                VisibilityTimeout=max(0, min(delay_s, wire.MAX_VISIBILITY_S)),
            )
        except ClientError as exc:
            if not _codes(exc) & wire.MESSAGE_GONE:
                raise self._error(exc, message.queue) from exc
            self._log_gone(message.queue, exc)

    def extend_visibility(self, messages: Sequence[ReceivedMessage], timeout_s: int) -> None:
        timeout_s = max(0, min(timeout_s, wire.MAX_VISIBILITY_S))
        for queue, chunk in wire.per_queue(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": timeout_s}
                       for i, m in enumerate(chunk)]
            self._batch(queue, self._sqs.change_message_visibility_batch, entries, gone_ok=True)

    # -- administration ---------------------------------------------------------------------------
    def ensure_queue(
        self, queue: str, *, visibility_timeout_s: int, max_receive_count: int
    ) -> None:
        dlq = dead_letter_queue_name(queue)
        dlq_url = self._create_or_update(dlq, wire.dead_letter_attributes(dlq))
        try:
            dlq_arn = self._sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        except ClientError as exc:
            raise self._error(exc, dlq) from exc
        self._create_or_update(queue, wire.queue_attributes(
            queue, visibility_timeout_s=visibility_timeout_s,
            max_receive_count=max_receive_count, dlq_arn=dlq_arn,
        ))

    def _create_or_update(self, queue: str, attributes: QueueAttributes) -> str:
        url = self._lookup(queue)
        if url is None:
            try:
                url = self._sqs.create_queue(
                    QueueName=self.physical_name(queue), Attributes=attributes)["QueueUrl"]
            except ClientError as exc:
                if not _codes(exc) & wire.QUEUE_EXISTS:  # else created meanwhile by someone else
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
                QueueUrl=url, AttributeNames=wire.COUNT_ATTRIBUTES)["Attributes"]
            self._sqs.purge_queue(QueueUrl=url)
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return sum(int(attributes.get(name, 0)) for name in wire.COUNT_ATTRIBUTES)

    def depth(self, queue: str) -> int:
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.queue_url(queue),
                AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def remaining(self, queue: str) -> int:
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.queue_url(queue), AttributeNames=wire.COUNT_ATTRIBUTES)["Attributes"]
        except ClientError as exc:
            raise self._error(exc, queue) from exc
        return sum(int(attributes.get(name, 0)) for name in wire.COUNT_ATTRIBUTES)

    def close(self) -> None:
        self._urls.clear()


