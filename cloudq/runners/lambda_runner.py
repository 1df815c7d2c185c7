"""Running tasks in AWS Lambda from an SQS event source, with partial batch responses.

Each record goes through the same ``process_message`` as in ``cloudq poll``; Powertools'
batch processor turns the outcomes into ``{"batchItemFailures": [...]}``:

* a record whose outcome is durable (success, failure, a retry re-sent as a new message,
  revoked, expired, poison copied to the DLQ) is reported as processed, and the event source
  deletes it;
* a record that must come back later (a FIFO message not yet due, ``Reject(requeue=True)``)
  gets its visibility set to the delay and is reported failed;
* a record that could not be handled (DynamoDB unreachable...) is reported failed with its
  visibility unchanged, so it returns after the queue's visibility timeout;
* records not started when the function's remaining time drops below
  ``lambda_min_time_to_start`` are reported failed without being touched.

An all-failed batch is returned, not raised, so Lambda never re-runs records that succeeded.
The event is read before any record runs (``lambda_event``): an event that is not from SQS
is refused with ``NotAnSqsEvent``; a record without a ``messageId`` is logged and skipped; a
malformed record with one is reported failed without running; the response names only
message ids of the batch.
When the app has ``async def`` tasks, the records of a standard queue's batch run
concurrently (``lambda_async_concurrency`` at a time) on one event loop, through
``aprocess_message``. FIFO queues use the FIFO processor: after the first record that must
come back, the rest of the batch is reported failed without running, so order is kept; if
that record was handed back, the rest are made visible again at once (SQS holds their group
while it is hidden), so they come back with it rather than after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from cloudq.errors import CloudqError
from cloudq.runners.execute import (
    Disposition,
    Outcome,
    aprocess_message,
    process_message,
)
from cloudq.runners.invocation import is_async
from cloudq.runners.lambda_event import (
    Batch,
    MalformedRecord,
    NotAnSqsEvent,
    queue_name,
    read_event,
    received_message,
)
from cloudq.transports.base import ReceivedMessage

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from cloudq.app import App

logger = logging.getLogger(__name__)

__all__ = ["HandBack", "LambdaHandler", "MalformedRecord", "NotAnSqsEvent", "NotStarted",
           "queue_name", "received_message"]


class NotStarted(CloudqError):
    """The function's remaining time was too short to start this record."""


class HandBack(CloudqError):
    """The record must come back later; its visibility was set to the delay."""


class LambdaHandler:
    """``handler = app.lambda_handler()``: a Lambda function handler for SQS events."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._observability = _Observability(app) if _wants_observability(app) else None

    @property
    def concurrent(self) -> bool:
        """Whether batches run concurrently on an event loop: when the app has ``async def``
        tasks (standard queues only; a FIFO batch runs in order)."""
        return self.app.settings.lambda_async_concurrency > 1 and any(
            is_async(task) for task in self.app.tasks.values())

    def warm(self) -> LambdaHandler:
        """Create the AWS clients now (in Lambda's init phase) rather than on the first task."""
        clients = self.app.aws
        clients.sqs, clients.dynamodb  # noqa: B018 - creating them is the point
        return self

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        batch = read_event(event)  # raises NotAnSqsEvent before anything runs
        if not batch.runnable:
            return batch.response([])
        handed_back: list[str] = []
        response = self._process(batch, context, handed_back)
        if batch.fifo and handed_back:
            self._release_after(batch.reportable, handed_back[0])
        if self._observability is not None:
            self._observability.flush()
        return batch.response([item.get("itemIdentifier")
                               for item in response["batchItemFailures"]])

    def _process(self, batch: Batch, context: Any, handed_back: list[str]) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.batch import (
            AsyncBatchProcessor,
            BatchProcessor,
            EventType,
            SqsFifoPartialProcessor,
            async_process_partial_response,
            process_partial_response,
        )

        event = {"Records": batch.runnable}
        deadline = _deadline(context)
        if not batch.fifo and self.concurrent:
            limit = _Limit(self.app.settings.lambda_async_concurrency)
            processor: Any = AsyncBatchProcessor(EventType.SQS)
            processor.raise_on_entire_batch_failure = False
            return dict(async_process_partial_response(
                event=event, processor=processor, context=context,
                record_handler=lambda record: self._ahandle(record, deadline, limit)))
        processor = SqsFifoPartialProcessor() if batch.fifo else BatchProcessor(EventType.SQS)
        processor.raise_on_entire_batch_failure = False
        return dict(process_partial_response(
            event=event, processor=processor, context=context,
            record_handler=lambda record: self._handle(record, deadline, handed_back)))

    def _handle(self, record: SQSRecord, deadline: float | None, handed_back: list[str]) -> Outcome:
        message = self._startable(record, deadline)
        observed = self._observability.observe(message) if self._observability else None
        try:
            disposition = process_message(self.app, message, deadline=deadline)
        except Exception:
            logger.exception("message %s could not be handled; it will be delivered again",
                             message.message_id)
            raise
        finally:
            if observed is not None:
                observed.close()
        return self._settle(message, disposition, handed_back)

    async def _ahandle(self, record: SQSRecord, deadline: float | None,
                       limit: _Limit) -> Outcome:
        """A record of a batch run concurrently: coroutine bodies share this invocation's
        event loop, at most ``lambda_async_concurrency`` at once; the blocking steps around
        them run in threads."""
        async with limit.get():
            message = self._startable(record, deadline)
            try:
                disposition = await aprocess_message(self.app, message, deadline=deadline,
                                                     offload=asyncio.to_thread)
            except Exception:
                logger.exception("message %s could not be handled; it will be delivered again",
                                 message.message_id)
                raise
            return await asyncio.to_thread(self._settle, message, disposition, [])

    def _startable(self, record: SQSRecord, deadline: float | None) -> ReceivedMessage:
        try:
            message = received_message(record.raw_event, self.app.settings.queue_prefix)
        except MalformedRecord as exc:
            logger.error("message %s: malformed SQS record (%s); reported failed without "
                         "running: SQS delivers it again, then its redrive policy moves it to "
                         "the DLQ", record.raw_event["messageId"], exc)
            raise
        if deadline is not None:
            left_s = deadline - time.monotonic()
            if left_s < self.app.settings.lambda_min_time_to_start:
                raise NotStarted(f"{left_s:.1f}s left; message {message.message_id} not started")
        return message

    def _settle(self, message: ReceivedMessage, disposition: Disposition,
                handed_back: list[str]) -> Outcome:
        if self._observability is not None:
            self._observability.count(disposition)
        if not disposition.ack:
            self.app.transport.retry_later(message, disposition.delay_s)
            handed_back.append(message.message_id)
            raise HandBack(f"{disposition.outcome.value}: back in {disposition.delay_s}s")
        return disposition.outcome

    def _release_after(self, records: list[dict[str, Any]], message_id: str) -> None:
        """FIFO: the records skipped after a hand-back become visible now, not after the
        visibility timeout; their group stays held by SQS until the handed-back one is due.
        A malformed one among them cannot be released: it comes back after the timeout."""
        ids = [record["messageId"] for record in records]
        prefix = self.app.settings.queue_prefix
        rest = []
        for record in records[ids.index(message_id) + 1:]:
            try:
                rest.append(received_message(record, prefix))
            except MalformedRecord:
                continue
        if rest:
            self.app.transport.extend_visibility(rest, 0)


class _Limit:
    """A semaphore made in the loop that uses it (Powertools may run each batch on its own)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore: asyncio.Semaphore | None = None

    def get(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.size)
        return self._semaphore


def _deadline(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return time.monotonic() + remaining() / 1000 if callable(remaining) else None


def _wants_observability(app: App) -> bool:
    settings = app.settings
    return settings.lambda_structured_logging or settings.lambda_metrics


class _Observability:
    """Powertools Logger (JSON, correlation id = task id) and Metrics (EMF), when switched on."""

    def __init__(self, app: App) -> None:
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        settings = app.settings
        self.logger: Any = None
        self.metrics: Any = None
        if settings.lambda_structured_logging:
            self.logger = Logger(service=app.main or "cloudq")
            copy_config_to_registered_loggers(source_logger=self.logger, include={"cloudq"})
        if settings.lambda_metrics:
            self.metrics = Metrics(namespace=settings.lambda_metrics_namespace,
                                   service=app.main or "cloudq")

    def observe(self, message: ReceivedMessage) -> _Observed:
        from cloudq.message import peek

        task_id, name = peek(message.body)
        if self.logger is not None:
            self.logger.append_keys(task_id=task_id, task_name=name, message_id=message.message_id)
            self.logger.set_correlation_id(task_id)
        return _Observed(self, time.monotonic())

    def count(self, disposition: Disposition) -> None:
        if self.metrics is None:
            return
        from aws_lambda_powertools.metrics import MetricUnit

        names = {Outcome.SUCCESS: "TasksSucceeded", Outcome.FAILURE: "TasksFailed",
                 Outcome.RETRY: "TasksRetried", Outcome.POISON: "MessagesDeadLettered"}
        name = names.get(disposition.outcome)
        if name:
            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name="TaskDuration", unit=MetricUnit.Milliseconds,
                                value=disposition.runtime_s * 1000)

    def flush(self) -> None:
        if self.metrics is not None:
            self.metrics.flush_metrics()
        if self.logger is not None:
            self.logger.remove_keys(["task_id", "task_name", "message_id"])


class _Observed:
    def __init__(self, observability: _Observability, started: float) -> None:
        self.observability = observability
        self.started = started

    def close(self) -> None:
        if self.observability.logger is not None:
            self.observability.logger.set_correlation_id(None)
