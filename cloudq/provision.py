"""Create what an app needs on AWS: its queues (every band, each with a DLQ), table and bucket.

Idempotent: run it again and it checks what is there and brings the queue settings
(visibility timeout, redrive policy) in line with the app's settings. Used by
``cloudq provision``, ``cloudq dev`` and the integration tests; in production the CDK
stack does the same job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudq.transports.base import dead_letter_queue_name

if TYPE_CHECKING:
    from cloudq.app import App

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueReport:
    """One SQS queue (a priority band of a logical queue) and its dead-letter queue."""

    name: str
    """The logical name (``default-high``); SQS adds the app's ``queue_prefix``."""
    physical_name: str
    dead_letter_queue: str
    """The physical name of the dead-letter queue."""


@dataclass
class ProvisionReport:
    """What ``provision`` made sure exists (created if missing, checked otherwise)."""

    region: str
    endpoint_url: str | None
    visibility_timeout_s: int
    max_receive_count: int
    queues: list[QueueReport] = field(default_factory=list)
    table: str | None = None
    bucket: str | None = None

    def lines(self) -> list[str]:
        """A human-readable summary, one resource per line."""
        where = self.endpoint_url or f"AWS {self.region}"
        out = [f"provisioned on {where}:"]
        for queue in self.queues:
            out.append(
                f"  queue  {queue.physical_name} (visibility {self.visibility_timeout_s}s, "
                f"dead-letter {queue.dead_letter_queue} after {self.max_receive_count} receives)"
            )
        if self.table:
            out.append(f"  table  {self.table} (key pk, TTL on ttl)")
        if self.bucket:
            out.append(f"  bucket {self.bucket} (payloads/ expire after 14 days)")
        return out


def provision(app: App, queues: Sequence[str] | None = None) -> ProvisionReport:
    """Create, if missing, every band of ``queues`` (default: the app's known queues) with
    its dead-letter queue, the result table, and the payload bucket when one is configured.
    """
    settings = app.settings
    report = ProvisionReport(
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        visibility_timeout_s=settings.visibility_timeout,
        max_receive_count=settings.max_receive_count,
    )
    prefix = settings.queue_prefix
    for queue in app.queues(list(queues) if queues else app.known_queues()):
        app.transport.ensure_queue(
            queue,
            visibility_timeout_s=settings.visibility_timeout,
            max_receive_count=settings.max_receive_count,
        )
        report.queues.append(QueueReport(
            name=queue,
            physical_name=prefix + queue,
            dead_letter_queue=prefix + dead_letter_queue_name(queue),
        ))
        logger.debug("queue %s%s ready", prefix, queue)
    app.store.ensure()
    report.table = settings.result_table
    if settings.payload_bucket:
        app.payloads(settings.payload_bucket).ensure()
        report.bucket = settings.payload_bucket
    return report
