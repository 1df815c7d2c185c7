"""Reading Lambda's SQS events, before any record runs: which records can run, which can only
be reported failed, which can only be skipped. I/O-free.

* An event that is not an SQS event at all (not a dict, no ``Records`` list, no record from
  SQS) raises :class:`NotAnSqsEvent` before anything runs: Lambda marks the invocation failed
  and nothing ran, so nothing runs twice.
* A record without a ``messageId`` (or one that is empty or not a string) cannot be named in
  ``batchItemFailures`` (AWS fails the whole batch for an empty or unknown identifier), and
  the SQS event source never sends one: it is logged and skipped; the rest of the batch runs.
  On a FIFO queue the records after it are reported failed without running, to keep order.
* A record with a ``messageId`` whose other fields are not what SQS sends raises
  :class:`MalformedRecord` from :func:`received_message`; the handler reports it failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cloudq.errors import ConfigError, DecodeError
from cloudq.transports.base import ReceivedMessage, is_fifo

logger = logging.getLogger(__name__)

SQS_SOURCE = "aws:sqs"
_SHOWN_CHARS = 80
"""How much of a field's value an error quotes."""


class NotAnSqsEvent(ConfigError):
    """The function was invoked with an event that is not an SQS event: check its trigger."""


class MalformedRecord(DecodeError):
    """An SQS event record lacks a field the SQS event source always sends."""


@dataclass(frozen=True)
class Batch:
    """The records of one SQS event, sorted by what the handler may do with them."""

    fifo: bool
    runnable: list[dict[str, Any]] = field(default_factory=list)
    """Records with a messageId, in order, for the batch processor (malformed ones included:
    they fail there, one by one, so a FIFO batch stops at them)."""
    held_back: list[dict[str, Any]] = field(default_factory=list)
    """FIFO: records after one that had no messageId; reported failed without running."""

    @property
    def reportable(self) -> list[dict[str, Any]]:
        """Every record that can be named in ``batchItemFailures``, in event order."""
        return self.runnable + self.held_back

    def response(self, failed: list[Any]) -> dict[str, Any]:
        """``{"batchItemFailures": ...}`` for ``failed`` (the processor's identifiers) and the
        held-back records: only message ids of this batch, each once, in event order."""
        ids = [record["messageId"] for record in self.reportable]
        strays = [item for item in failed if item not in ids]
        if strays:
            logger.error("batch processor reported identifiers not in the batch: %s; dropped "
                         "(AWS would fail the whole batch for them)", strays)
        wanted = {item for item in failed if item in ids}
        wanted.update(record["messageId"] for record in self.held_back)
        return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(ids)
                                      if i in wanted]}


def read_event(event: object) -> Batch:
    """Sort an SQS event's records; raise :class:`NotAnSqsEvent` if it is not one."""
    records = _records(event)
    fifo = any(isinstance(r, dict) and is_fifo(str(r.get("eventSourceARN", ""))) for r in records)
    runnable: list[dict[str, Any]] = []
    held_back: list[dict[str, Any]] = []
    stopped = False
    for number, record in enumerate(records, start=1):
        if message_id(record) is None:
            _skip(record, number, len(records), fifo)
            stopped = fifo
        elif stopped:
            held_back.append(record)
        else:
            runnable.append(record)
    return Batch(fifo=fifo, runnable=runnable, held_back=held_back)


def message_id(record: object) -> str | None:
    """The record's ``messageId`` if it can be reported: a non-empty string."""
    value = record.get("messageId") if isinstance(record, dict) else None
    return value if isinstance(value, str) and value else None


def _records(event: object) -> list[Any]:
    if not isinstance(event, dict):
        raise NotAnSqsEvent(f"not an SQS event: the event is {_kind(event)}, not a dict; "
                            "check the function's trigger")
    records = event.get("Records")
    if not isinstance(records, list):
        raise NotAnSqsEvent(f"not an SQS event: it has no 'Records' list (keys: "
                            f"{sorted(map(str, event))[:10]}); check the function's trigger")
    if records and not any(isinstance(r, dict) and r.get("eventSource") == SQS_SOURCE
                           for r in records):
        sources = sorted({_source(r) for r in records})
        raise NotAnSqsEvent(f"not an SQS event: no record from SQS in {len(records)} "
                            f"(event sources: {sources}); check the function's trigger")
    return records


def _skip(record: object, number: int, total: int, fifo: bool) -> None:
    if isinstance(record, dict):
        value = record.get("messageId")
        got = "missing" if value is None else "empty" if value == "" else _kind(value)
    else:
        got = f"the record is {_kind(record)}, not a dict"
    after = "; the records after it are handed back, to keep the FIFO order" if fifo else ""
    logger.error("record %d of %d has no messageId (%s); skipped: it cannot be reported failed, "
                 "and the SQS event source always sends one, so this event was not made by "
                 "it%s", number, total, got, after)


def queue_name(event_source_arn: str, prefix: str) -> str:
    """The logical queue name of an SQS ARN (``arn:aws:sqs:region:account:name``)."""
    physical = event_source_arn.rsplit(":", 1)[-1]
    return physical.removeprefix(prefix) if prefix and physical.startswith(prefix) else physical


def received_message(record: dict[str, Any], prefix: str) -> ReceivedMessage:
    """An SQS event record as the ReceivedMessage ``process_message`` takes.

    Raises :class:`MalformedRecord` naming the first field that is not as SQS sends it.
    """
    source = record.get("eventSource")
    if source != SQS_SOURCE:
        raise MalformedRecord("eventSource is missing" if source is None else
                              f"eventSource is {_shown(source)}, not 'aws:sqs'")
    arn = _text(record, "eventSourceARN")
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        raise MalformedRecord(f"eventSourceARN {_shown(arn)} is not an SQS queue ARN")
    attributes = _mapping(record, "attributes")
    group_id = attributes.get("MessageGroupId")
    if group_id is not None and not isinstance(group_id, str):
        raise MalformedRecord(f"attributes.MessageGroupId is {_kind(group_id)}, not a string")
    return ReceivedMessage(
        queue=queue_name(arn, prefix),
        body=_text(record, "body", empty_ok=True),
        message_id=_text(record, "messageId"),
        receipt=_text(record, "receiptHandle"),
        receive_count=_whole(attributes, "ApproximateReceiveCount") or 1,
        attributes={
            name: value["stringValue"]
            for name, value in _mapping(record, "messageAttributes").items()
            if isinstance(value, dict) and isinstance(value.get("stringValue"), str)
        },
        sent_at_ms=_whole(attributes, "SentTimestamp"),
        group_id=group_id,
    )


def _text(record: dict[str, Any], name: str, *, empty_ok: bool = False) -> str:
    value = record.get(name)
    if value is None:
        raise MalformedRecord(f"{name} is missing")
    if not isinstance(value, str):
        raise MalformedRecord(f"{name} is {_kind(value)}, not a string")
    if not value and not empty_ok:
        raise MalformedRecord(f"{name} is empty")
    return value


def _mapping(record: dict[str, Any], name: str) -> dict[str, Any]:
    value = record.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRecord(f"{name} is {_kind(value)}, not a dict")
    return value


def _whole(attributes: dict[str, Any], name: str) -> int | None:
    """A count or timestamp attribute: SQS sends digits as a string; a number is accepted."""
    value = attributes.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedRecord(f"attributes.{name} is {_shown(value)}, not a whole number")


def _source(record: object) -> str:
    if not isinstance(record, dict):
        return _kind(record)
    source = record.get("eventSource", record.get("EventSource"))
    return str(source)[:_SHOWN_CHARS] if source is not None else "none given"


def _kind(value: object) -> str:
    name = type(value).__name__
    return "None" if value is None else f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}...(cut)"
