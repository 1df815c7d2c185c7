"""Test helpers for apps built on cloudq (and for cloudq's own tests).

In-memory, no AWS::

    from cloudq.testing import use_memory, BurstWorker

    def test_signup(app):
        with use_memory(app):
            r = send_welcome.delay("a@b.c")
            BurstWorker(app).join(fail_fast=True)   # run everything queued, here and now
            assert r.get() == "sent"

Against the embedded local AWS (moto server over HTTP): the pytest fixture
``cloudq_local_aws`` (session-wide server) and ``cloudq_aws_app`` (the ``cloudq_app`` fixture
you define, pointed at it, with fresh queue and table names, provisioned). pytest loads this
plugin by itself when cloudq is installed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudq.errors import CloudqError
from cloudq.runners.execute import Disposition, Outcome, process_message
from cloudq.stores.memory import MemoryStore
from cloudq.transports.base import ReceivedMessage
from cloudq.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.localaws import LocalAws


def memory_app(name: str = "test", **settings: Any) -> App:
    """A new App on the in-memory transport and store."""
    from cloudq.app import App

    return App(name, transport=MemoryTransport(), store=MemoryStore(), set_as_current=False,
               **settings)


@contextmanager
def use_memory(app: App) -> Iterator[tuple[MemoryTransport, MemoryStore]]:
    """Point an existing app at fresh in-memory twins for the duration of the block."""
    saved = app._transport, app._store, app.__dict__.pop("backend", None)
    transport, store = MemoryTransport(), MemoryStore()
    app._transport, app._store = transport, store
    try:
        yield transport, store
    finally:
        app._transport, app._store = saved[0], saved[1]
        app.__dict__.pop("backend", None)
        if saved[2] is not None:
            app.__dict__["backend"] = saved[2]


class TaskFailed(CloudqError):
    """A task run by the burst worker failed."""


@dataclass
class BurstWorker:
    """Runs queued messages in this process until the queues are empty (no threads)."""

    app: App
    queues: Sequence[str] | None = None
    processed: list[Disposition] = field(default_factory=list)

    def join(self, *, fail_fast: bool = False, max_messages: int = 10_000) -> list[Disposition]:
        """Process until idle; with ``fail_fast`` raise TaskFailed at the first failure."""
        queues = self.app.queues(self.queues)
        transport = self.app.transport
        while len(self.processed) < max_messages:
            batch = self._receive(queues)
            if not batch:
                return self.processed
            for message in batch:
                disposition = process_message(self.app, message)
                self.processed.append(disposition)
                if disposition.ack:
                    transport.ack([message])
                else:
                    transport.retry_later(message, disposition.delay_s)
                if fail_fast and disposition.outcome in (Outcome.FAILURE, Outcome.POISON):
                    raise TaskFailed(
                        f"task {disposition.task_name}[{disposition.task_id}] ended "
                        f"{disposition.outcome.value}"
                    )
        raise TaskFailed(f"still busy after {max_messages} messages (a task re-sending itself?)")

    def _receive(self, queues: Sequence[str]) -> list[ReceivedMessage]:
        for queue in queues:
            got = self.app.transport.receive(queue, max_messages=10, wait_s=0)
            if got:
                return got
        return []


def sqs_event(messages: Sequence[ReceivedMessage], *, prefix: str = "",
              region: str = "us-east-1", account: str = "123456789012") -> dict[str, Any]:
    """An SQS event, as Lambda's event source delivers it, made from received messages.

    ``prefix`` is the app's ``queue_prefix``: the event names the physical queue.
    """
    records = []
    for message in messages:
        attributes = {"ApproximateReceiveCount": str(message.receive_count),
                      "SentTimestamp": str(message.sent_at_ms or 0)}
        if message.group_id:
            attributes["MessageGroupId"] = message.group_id
        records.append({
            "messageId": message.message_id,
            "receiptHandle": message.receipt,
            "body": message.body,
            "attributes": attributes,
            "messageAttributes": {
                k: {"stringValue": v, "dataType": "String"} for k, v in message.attributes.items()
            },
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{region}:{account}:{prefix}{message.queue}",
            "awsRegion": region,
        })
    return {"Records": records}


def dumps_event(event: dict[str, Any]) -> str:
    return json.dumps(event, indent=2)


@dataclass
class LambdaContext:
    """A stand-in for Lambda's context object, with a clock that runs down."""

    remaining_s: float = 300.0
    function_name: str = "cloudq-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:cloudq-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.remaining_s - elapsed) * 1000))


def invoke_lambda(app: App, handler: Any, messages: Sequence[ReceivedMessage],
                  context: Any = None) -> dict[str, Any]:
    """Do what Lambda's SQS event source does: call ``handler`` with the messages as an
    event, then delete the ones not reported in ``batchItemFailures``."""
    event = sqs_event(messages, prefix=app.settings.queue_prefix, region=app.settings.region)
    response: dict[str, Any] = handler(event, context or LambdaContext())
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    done = [m for m in messages if m.message_id not in failed]
    if done:
        app.transport.ack(done)
    return response


# -- pytest plugin ------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def cloudq_local_aws() -> Iterator[LocalAws]:
        """An embedded moto server for the whole session."""
        from cloudq.localaws import LocalAws

        with LocalAws() as aws:
            yield aws

    @pytest.fixture
    def cloudq_aws_app(cloudq_local_aws: LocalAws, cloudq_app: App) -> Iterator[App]:
        """``cloudq_app`` on the local AWS, with unique queue/table names, provisioned."""
        from cloudq.provision import provision

        unique = f"t{uuid.uuid4().hex[:10]}"
        cloudq_app.conf.update(endpoint_url=cloudq_local_aws.endpoint_url,
                               queue_prefix=f"{unique}-", result_table=f"{unique}-results")
        provision(cloudq_app)
        yield cloudq_app
