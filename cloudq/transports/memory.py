"""An in-memory transport with SQS's semantics, for unit tests and user test suites.

Delays, visibility timeouts, receive counts, FIFO ordering per group and the redrive to a
dead-letter queue after ``max_receive_count`` receives behave as on SQS. Every call is
recorded in ``calls`` so tests can assert what was asked.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudq.transports.base import (
    MAX_BATCH,
    OutgoingMessage,
    ReceivedMessage,
    Transport,
    dead_letter_queue_name,
    is_fifo,
)


@dataclass
class _Stored:
    message_id: str
    body: str
    visible_at: float
    sent_at: float
    group_id: str | None
    attributes: dict[str, str]
    receive_count: int = 0
    receipt: str | None = None


@dataclass
class _Queue:
    name: str
    visibility_timeout_s: int = 30
    max_receive_count: int | None = None
    messages: list[_Stored] = field(default_factory=list)
    dedup_ids: dict[str, float] = field(default_factory=dict)


class MemoryTransport(Transport):
    """Queues in a dict. Thread-safe; queues are created on first use unless ``strict``."""

    def __init__(self, *, strict: bool = False, clock: Any = time.monotonic) -> None:
        self._queues: dict[str, _Queue] = {}
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._strict = strict
        self._clock = clock
        self.calls: list[tuple[str, str]] = []
        """(action, queue) for every call, e.g. ("SendMessageBatch", "default")."""

    # -- helpers ----------------------------------------------------------------------------------
    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            if self._strict:
                raise KeyError(f"queue {name!r} does not exist")
            queue = self._queues[name] = _Queue(name)
        return queue

    def _put(self, queue: _Queue, message: OutgoingMessage) -> str:
        now = self._clock()
        if is_fifo(queue.name) and message.dedup_id:
            seen = queue.dedup_ids.get(message.dedup_id)
            if seen is not None and now - seen < 300:
                return f"dup-{message.dedup_id}"
            queue.dedup_ids[message.dedup_id] = now
        stored = _Stored(
            message_id=f"m-{next(self._ids)}",
            body=message.body,
            visible_at=now + message.delay_s,
            sent_at=time.time(),
            group_id=message.group_id,
            attributes=dict(message.attributes),
        )
        queue.messages.append(stored)
        self._lock.notify_all()
        return stored.message_id

    # -- Transport --------------------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> str:
        with self._lock:
            self.calls.append(("SendMessage", queue))
            return self._put(self._queue(queue), message)

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        ids: list[str] = []
        with self._lock:
            for start in range(0, len(messages), MAX_BATCH):
                self.calls.append(("SendMessageBatch", queue))
                ids += [self._put(self._queue(queue), m) for m in messages[start:start + MAX_BATCH]]
        return ids

    def receive(
        self, queue: str, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[ReceivedMessage]:
        deadline = self._clock() + wait_s
        with self._lock:
            self.calls.append(("ReceiveMessage", queue))
            while True:
                got = self._take(self._queue(queue), max_messages)
                remaining = deadline - self._clock()
                if got or remaining <= 0:
                    return got
                self._lock.wait(min(remaining, 0.05))

    def _take(self, queue: _Queue, max_messages: int) -> list[ReceivedMessage]:
        now = self._clock()
        taken: list[ReceivedMessage] = []
        # A FIFO group is held back while any of its messages is in flight (received and still
        # hidden, including after retry_later); one receive may take several from a free group.
        busy_groups = {m.group_id for m in queue.messages if m.receive_count and m.visible_at > now}
        for stored in list(queue.messages):
            if len(taken) >= max_messages:
                break
            if stored.visible_at > now:
                continue
            if is_fifo(queue.name) and stored.group_id in busy_groups:
                continue
            if queue.max_receive_count and stored.receive_count >= queue.max_receive_count:
                queue.messages.remove(stored)  # SQS's redrive policy
                self._put(self._queue(dead_letter_queue_name(queue.name)), OutgoingMessage(
                    body=stored.body, group_id=stored.group_id, attributes=stored.attributes))
                continue
            stored.receive_count += 1
            stored.receipt = f"{stored.message_id}#{stored.receive_count}"
            stored.visible_at = now + queue.visibility_timeout_s
            taken.append(ReceivedMessage(
                queue=queue.name, body=stored.body, message_id=stored.message_id,
                receipt=stored.receipt, receive_count=stored.receive_count,
                attributes=dict(stored.attributes), sent_at_ms=int(stored.sent_at * 1000),
                group_id=stored.group_id,
            ))
        return taken

    def _find(self, message: ReceivedMessage) -> _Stored | None:
        for stored in self._queue(message.queue).messages:
            if stored.receipt == message.receipt:
                return stored
        return None

    def ack(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._lock:
            by_queue: dict[str, list[ReceivedMessage]] = defaultdict(list)
            for message in messages:
                by_queue[message.queue].append(message)
            for queue, batch in by_queue.items():
                for _start in range(0, len(batch), MAX_BATCH):
                    self.calls.append(("DeleteMessageBatch", queue))
                for message in batch:
                    stored = self._find(message)
                    if stored is not None:
                        self._queue(queue).messages.remove(stored)

    def retry_later(self, message: ReceivedMessage, delay_s: int) -> None:
        with self._lock:
            self.calls.append(("ChangeMessageVisibility", message.queue))
            stored = self._find(message)
            if stored is not None:
                stored.visible_at = self._clock() + delay_s
                stored.receipt = None
                self._lock.notify_all()

    def extend_visibility(self, messages: Sequence[ReceivedMessage], timeout_s: int) -> None:
        with self._lock:
            counts: dict[str, int] = defaultdict(int)
            for message in messages:
                if counts[message.queue] % MAX_BATCH == 0:  # one call per 10, per queue
                    self.calls.append(("ChangeMessageVisibilityBatch", message.queue))
                counts[message.queue] += 1
                stored = self._find(message)
                if stored is not None:
                    stored.visible_at = self._clock() + timeout_s

    def ensure_queue(
        self, queue: str, *, visibility_timeout_s: int, max_receive_count: int
    ) -> None:
        with self._lock:
            self.calls.append(("CreateQueue", queue))
            q = self._queues.setdefault(queue, _Queue(queue))
            q.visibility_timeout_s = visibility_timeout_s
            q.max_receive_count = max_receive_count
            self._queues.setdefault(dead_letter_queue_name(queue),
                                    _Queue(dead_letter_queue_name(queue)))

    def purge(self, queue: str) -> int:
        with self._lock:
            q = self._queue(queue)
            count = len(q.messages)
            q.messages.clear()
            return count

    def depth(self, queue: str) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for m in self._queue(queue).messages if m.visible_at <= now)

    def remaining(self, queue: str) -> int:
        with self._lock:
            return len(self._queue(queue).messages)

    # -- inspection for tests ---------------------------------------------------------------------
    def bodies(self, queue: str) -> list[str]:
        """Every body in ``queue``, visible or not, oldest first."""
        with self._lock:
            return [m.body for m in self._queue(queue).messages]

    def queue_names(self) -> list[str]:
        with self._lock:
            return sorted(self._queues)
