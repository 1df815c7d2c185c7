"""Everything a client and a worker do to AWS, run against moto server with each actor's
calls recorded (``iam_check.Recorder``), for the IAM test.

Actors, each an App of its own (``iam_app.build()``) with its own clients:

* ``client``: ``delay``, ``apply_async`` (countdown, expires), ``send_task``, a chord, a group,
  a chain, large arguments (S3), ``get`` (of a large result too, from S3), ``GroupResult``
  get/restore/forget, revoke, forget;
* the worker: ``poller`` (the Fargate stack's own ``cloudq poll`` command, in burst mode) or
  ``lambda`` (the handler, fed SQS events) with ``event-source`` (what Lambda's SQS poller
  does with the function's role: receive, then delete what the handler did not fail);
* ``scheduler``: the fan-out message EventBridge Scheduler sends for a 15-second entry.

The ``harness`` App (not recorded) provisions, reads states and sends the copies SQS would
only deliver after 900 s (a long countdown's early delivery, which the worker hops).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

import cloudq
from cloudq import message as wire
from cloudq.provision import provision
from cloudq.scheduler.eventbridge import wanted
from cloudq.sending import build_envelope
from cloudq.testing import LambdaContext, sqs_event
from cloudq.transports.base import OutgoingMessage
from tests.deploy import iam_app
from tests.deploy.iam_check import Recorder

if TYPE_CHECKING:
    from cloudq.aws import AwsClients

SLOW_S = 0.8
"""The slow task's run: over half of the poller's heartbeat interval (visibility / 3)."""
VISIBILITY_S = 2
BIG = 3000
"""Characters of a large argument: over ``message_size_limit`` (1 KiB), so through S3."""
LARGE = 400_000
"""Characters of a large result: over what a DynamoDB item holds, so kept in S3."""
READY = {"SUCCESS", "FAILURE", "REVOKED"}


def settings(prefix: str, endpoint_url: str) -> dict[str, Any]:
    """One world's names (the stack is synthesized from the same) and quick timings."""
    return {
        "endpoint_url": endpoint_url, "queue_prefix": prefix, "result_table": f"{prefix}results",
        "payload_bucket": f"{prefix}payloads", "message_size_limit": 1024,
        "visibility_timeout": VISIBILITY_S, "max_receive_count": 5,
        "worker_revoke_check_interval": 0.2, "worker_shutdown_timeout": 5.0,
        "worker_burst_wait": 1.0,  # a round does not wait for the 3600 s countdown
        # one task at a time: moto's UpdateItem is not atomic, and two chord members adding
        # themselves to the join at once can lose one (DynamoDB's own ADD is atomic)
        "worker_concurrency": 1,
        "lambda_min_time_to_start": 1.0, "lambda_structured_logging": False,
        "lambda_metrics": False,
    }


def app_for(prefix: str, endpoint_url: str, app: iam_app.ObservedApp | None = None,
            *, actor: str | None = None, recorder: Recorder | None = None) -> iam_app.ObservedApp:
    """An App of the world named by ``prefix``; its calls recorded as ``actor``'s if given."""
    app = app or iam_app.build()
    app.conf.update(settings(prefix, endpoint_url))
    if actor is not None and recorder is not None:
        app.observe(functools.partial(recorder.attach, actor))
    return app


@dataclass
class World:
    """One worker kind's run: its actors, what was sent, and the recorded calls."""

    worker: iam_app.ObservedApp
    client: iam_app.ObservedApp
    harness: iam_app.ObservedApp
    recorder: Recorder
    sent: dict[str, Any] = field(default_factory=dict)
    group: Any = None
    faults: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.harness.settings.queue_prefix

    @property
    def endpoint_url(self) -> str:
        return str(self.harness.settings.endpoint_url)

    def actor(self, name: str) -> iam_app.ObservedApp:
        """One more App of this world, recorded as ``name``."""
        return app_for(self.prefix, self.endpoint_url, actor=name, recorder=self.recorder)

    def state(self, task_id: str) -> str:
        return cloudq.AsyncResult(task_id, app=self.harness).state

    def states(self) -> dict[str, str]:
        return {name: self.state(result.id) for name, result in self.sent.items()}


def make_world(worker: iam_app.ObservedApp, actor: str, prefix: str,
               endpoint_url: str) -> World:
    """Provision the names the stack uses; record the worker (as ``actor``) and the client.
    The worker's SQS client also fails one chord callback send."""
    harness = app_for(prefix, endpoint_url)
    provision(harness)
    recorder = Recorder()
    worker.observers.clear()
    world = World(worker=app_for(prefix, endpoint_url, worker, actor=actor, recorder=recorder),
                  client=app_for(prefix, endpoint_url, actor="client", recorder=recorder),
                  harness=harness, recorder=recorder)
    world.worker.observe(functools.partial(inject_callback_fault, world))
    return world


def inject_callback_fault(world: World, clients: AwsClients) -> None:
    """Fail the worker's first send of the chord callback, as a throttled SQS would: the
    join deletes its fired claim so the member, delivered again, fires it (DeleteItem)."""

    def fail_once(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name not in ("SendMessage", "SendMessageBatch") or world.faults:
            return
        bodies = [params.get("MessageBody", "")] + [
            entry["MessageBody"] for entry in params.get("Entries", [])]
        if any('"iam.tsum"' in body for body in bodies):
            world.faults.append(model.name)
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}},
                              model.name)

    clients.sqs.meta.events.register("before-parameter-build.sqs", fail_once,
                                     unique_id=f"iam-scenario-fault-{id(clients)}")


# -- the client --------------------------------------------------------------------------------
def client_sends(world: World) -> None:
    """Everything a web tier sends; the results are kept by name in ``world.sent``."""
    c, sent = world.client, world.sent
    add, tsum = c.tasks["iam.add"], c.tasks["iam.tsum"]
    sent["plain"] = add.delay(2, 3)
    sent["countdown"] = add.apply_async((1, 1), countdown=3600)  # SQS holds it 900 s
    sent["expired"] = add.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
    sent["flaky"] = c.tasks["iam.flaky"].delay(1)
    sent["exhaust"] = c.tasks["iam.exhaust"].delay()
    sent["fail"] = c.tasks["iam.fail"].delay()
    sent["unknown"] = c.send_task("iam.unknown", args=(1,))
    sent["progress"] = c.tasks["iam.progress"].delay(3)
    sent["slow"] = c.tasks["iam.slow"].delay(SLOW_S)
    sent["size"] = c.tasks["iam.size"].delay("x" * BIG)
    sent["large"] = c.tasks["iam.large"].delay(LARGE)
    sent["big_retry"] = c.tasks["iam.big_retry"].delay("y" * BIG)
    sent["requeue"] = c.tasks["iam.requeue"].delay()
    sent["limited"] = c.tasks["iam.limited"].delay(0)
    sent["once"] = c.tasks["iam.once"].apply_async(("v",), task_id=f"once-{uuid.uuid4()}")
    sent["revoked"] = add.delay(9, 9)
    sent["revoked"].revoke()
    sent["chord"] = cloudq.chord([add.s(1, 1), add.s(2, 2)])(tsum.s())
    group = cloudq.group([add.s(i, i) for i in range(3)]).apply_async()
    group.save()
    sent.update({f"group{i}": r for i, r in enumerate(group.results)})
    world.group = group
    sent["chain"] = (add.s(1, 2) | add.s(3)).apply_async()


def client_reads(world: World) -> dict[str, Any]:
    """Results read back as a web tier reads them, then forgotten."""
    c, sent = world.client, world.sent
    got = {"plain": sent["plain"].get(timeout=5), "chord": sent["chord"].get(timeout=5),
           "chain": sent["chain"].get(timeout=5),
           "group": world.group.get(timeout=5), "large": len(sent["large"].get(timeout=5))}
    restored = cloudq.GroupResult.restore(world.group.id, app=c)
    assert restored is not None
    got["restored"] = [r.id for r in restored.results] == [r.id for r in world.group.results]
    got["progress_state"] = cloudq.AsyncResult(sent["progress"].id, app=c).state
    sent["plain"].forget()
    restored.forget()
    return got


def client_sends_later(world: World) -> None:
    """After the first tasks ran: the idempotent task's id again (the worker reads that it
    succeeded and skips it), and the rate-limited task again (no token left this hour: the
    worker defers it)."""
    c = world.client
    c.tasks["iam.once"].apply_async(("v",), task_id=world.sent["once"].id)
    world.sent["limited_later"] = c.tasks["iam.limited"].delay(1)


# -- what only time or EventBridge would send ---------------------------------------------------
def send_unrecorded(world: World) -> dict[str, str]:
    """The countdown's early copy (SQS's 900 s are over, 2700 s are left: the worker hops
    it) and the scheduler's fan-out tick; returns their task ids."""
    h = world.harness
    early = build_envelope(h, "iam.add", (5, 5), {}, countdown=3600)
    h.transport.send("default", OutgoingMessage(body=wire.encode(early)))
    scheduler = world.actor("scheduler")
    [entry] = wanted(scheduler, target="scheduler")
    at = datetime.now(UTC).replace(microsecond=0)
    url = h.transport.queue_url("default")
    scheduler.aws.sqs.send_message(  # EventBridge Scheduler's SQS target: the ARN, no URL look-up
        QueueUrl=url, MessageBody=entry.input.replace(wire.SCHEDULED_TIME, wire.tick_text(at)))
    return {"early": early.id, "tick": wire.tick_id(iam_app.FANOUT_ENTRY, at)}


# -- the workers -------------------------------------------------------------------------------
def run_poller(world: World, command: list[str]) -> Callable[[], None]:
    """A round of the Fargate task's own command (``cloudq poll -A ... -Q ...``) in burst mode."""
    from click.testing import CliRunner

    from cloudq.cli import cli

    def round_() -> None:
        root = logging.getLogger()
        level = root.level
        try:
            result = CliRunner().invoke(cli, [*command, "--burst"], catch_exceptions=False)
        finally:
            root.setLevel(level)
        assert result.exit_code in (0, 1), result.output  # 1: a message was left in flight

    return round_


def run_lambda(world: World) -> Callable[[], None]:
    """A round of Lambda's SQS event source: receive a batch per band, invoke the handler,
    delete what it did not report failed."""
    source = world.actor("event-source")
    handler = world.worker.lambda_handler()
    prefix = world.prefix

    def round_() -> None:
        for band in world.worker.queues():
            while got := source.transport.receive(band, max_messages=10):
                response = handler(sqs_event(got, prefix=prefix), LambdaContext())
                failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
                done = [m for m in got if m.message_id not in failed]
                if done:
                    source.transport.ack(done)

    return round_


def until_ready(world: World, run_round: Callable[[], None], ids: dict[str, str],
                timeout_s: float = 20.0) -> None:
    """Worker rounds until every task (by name: id) has a final state (a message that
    failed comes back after the queue's visibility timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run_round()
        waiting = {name: world.state(i) for name, i in ids.items()}
        waiting = {name: state for name, state in waiting.items() if state not in READY}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not finished after {timeout_s} s: {waiting}")
        time.sleep(0.2)


def run(world: World, run_round: Callable[[], None]) -> dict[str, Any]:
    """The whole scenario: what was sent, what the worker left, what the client read."""
    client_sends(world)
    extra = send_unrecorded(world)
    waiting = {name: r.id for name, r in world.sent.items() if name != "countdown"}
    waiting["tick"] = extra["tick"]
    until_ready(world, run_round, waiting)
    client_sends_later(world)
    run_round()
    states = world.states()
    read = client_reads(world)
    forgotten = {name: world.state(world.sent[name].id) for name in ("plain", "group0")}
    return {"states": states, "early": world.state(extra["early"]),
            "tick": world.state(extra["tick"]), "read": read, "forgotten": forgotten,
            "faults": list(world.faults)}
