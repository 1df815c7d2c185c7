"""The transport seam: a handful of methods every queue backend implements.

Queue names given to a transport are *logical* names (``"default"``, ``"emails-high"``,
``"orders.fifo"``): the transport adds the configured prefix and resolves URLs itself.
Bodies are already-encoded strings; transports never look inside them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_DELAY_S = 900
"""The longest per-message delay SQS accepts; longer countdowns hop (see ``cloudq.message``)."""
MAX_BATCH = 10
"""The most entries one SQS batch call takes."""
REASON_ATTRIBUTE = "cloudq-reason"
"""The message attribute that says why cloudq moved a message to a dead-letter queue."""


def is_fifo(queue: str) -> bool:
    """Whether a logical queue name is a FIFO queue."""
    return queue.endswith(".fifo")


def dead_letter_queue_name(queue: str) -> str:
    """The logical name of the dead-letter queue that belongs to ``queue``."""
    if is_fifo(queue):
        return queue.removesuffix(".fifo") + "-dlq.fifo"
    return queue + "-dlq"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send."""

    body: str
    delay_s: int = 0
    group_id: str | None = None
    """FIFO message group; required on FIFO queues."""
    dedup_id: str | None = None
    """FIFO deduplication id (cloudq uses the task id)."""
    attributes: dict[str, str] = field(default_factory=dict)
    """String message attributes (e.g. the reason a message was dead-lettered)."""


@dataclass(slots=True)
class ReceivedMessage:
    """A message handed to a worker, with what it needs to acknowledge it."""

    queue: str
    body: str
    message_id: str
    receipt: str
    """Opaque handle for ack / retry_later / extend_visibility (an SQS receipt handle)."""
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)
    sent_at_ms: int | None = None
    group_id: str | None = None

    @property
    def delivery_info(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "receive_count": self.receive_count,
            "message_id": self.message_id,
        }


class Transport(abc.ABC):
    """Sends, receives and acknowledges messages on named queues."""

    @abc.abstractmethod
    def send(self, queue: str, message: OutgoingMessage) -> str:
        """Send one message; return its message id."""

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Send many messages to one queue (in calls of up to 10); return their ids in order."""
        return [self.send(queue, m) for m in messages]

    @abc.abstractmethod
    def receive(
        self, queue: str, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[ReceivedMessage]:
        """Receive up to ``max_messages`` (≤ 10), waiting up to ``wait_s``; ``[]`` when idle."""

    @abc.abstractmethod
    def ack(self, messages: Sequence[ReceivedMessage]) -> None:
        """Delete handled messages (batched per queue)."""

    @abc.abstractmethod
    def retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        """Make a received message visible again after ``delay_s`` (0 = now)."""

    @abc.abstractmethod
    def extend_visibility(self, messages: Sequence[ReceivedMessage], timeout_s: int) -> None:
        """Keep received messages hidden for another ``timeout_s`` (the poller's heartbeat)."""

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Copy a message to its queue's dead-letter queue, recording why.

        The original is not deleted here: the runner acknowledges it like any handled message
        (the poller deletes it, a Lambda reports it as processed), so one code path serves both.
        """
        dlq = dead_letter_queue_name(message.queue)
        attributes = {**message.attributes, REASON_ATTRIBUTE: reason[:1000],
                      "cloudq-source-queue": message.queue}
        group_id = message.group_id or ("dead-letter" if is_fifo(dlq) else None)
        self.send(dlq, OutgoingMessage(
            body=message.body,
            group_id=group_id,
            dedup_id=message.message_id if is_fifo(dlq) else None,
            attributes=attributes,
        ))

    # -- administration (CLI, provisioning, tests) ----------------------------------------------
    @abc.abstractmethod
    def ensure_queue(
        self, queue: str, *, visibility_timeout_s: int, max_receive_count: int
    ) -> None:
        """Create ``queue`` and its dead-letter queue with a redrive policy, if missing."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Remove every message from ``queue``; return roughly how many there were."""

    @abc.abstractmethod
    def depth(self, queue: str) -> int:
        """Approximate number of messages waiting (visible) in ``queue``."""

    def remaining(self, queue: str) -> int:
        """Approximate number of messages in ``queue`` not deleted yet: visible, in flight
        (received by anyone, not deleted) and delayed. 0: the queue is drained."""
        return self.depth(queue)

    def close(self) -> None:
        """Release connections."""
