"""What EventBridge sends for a periodic task, run by real workers against moto server.

moto never fires a schedule, so each test does what EventBridge would: it takes a schedule's
target input (from ``wanted`` or from what ``sync`` left in moto), fills in the tick's time
where EventBridge Scheduler (``<aws.scheduler.scheduled-time>``) or a rule's input transformer
(``<at>`` from ``$.time``) would, sends that body to the target queue with ``send_message``, and
runs it through the burst worker, the poller or the Lambda handler.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import cloudq
from cloudq import message as wire
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.execute import Outcome
from cloudq.runners.poller import Poller
from cloudq.scheduler.entries import load_entries
from cloudq.scheduler.eventbridge import RULE_TIME, Target, wanted
from cloudq.scheduler.sync import group_name, sync
from cloudq.testing import BurstWorker, LambdaContext, invoke_lambda
from cloudq.transports.base import ReceivedMessage
from tests.integration.apps import periodic

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/cloudq-scheduler"
AT = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
AT_TEXT = "2026-11-24T07:30:00Z"
"""How EventBridge writes a tick's time (Scheduler's scheduled-time, a rule event's time)."""
NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    """The periodic app on fresh queues and table, UTC, unsigned; every test entry defined."""
    app = periodic.app
    app.conf.update(
        endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
        result_table=f"{unique_prefix}results", visibility_timeout=30, max_receive_count=5,
        beat_timezone="UTC", beat_role_arn=None, beat_schedule_group=None, signing_key=None,
        lambda_min_time_to_start=3.0, lambda_structured_logging=False, lambda_metrics=False,
        beat_schedule={
            "nightly-report": {"task": "per.report", "args": ["nightly"],
                               "schedule": cloudq.crontab(minute=30, hour=7)},
            "cleanup": {"task": "per.charge", "args": ["cleanup"], "schedule": 600},
        },
    )
    provision(app, ["default"])
    periodic.runs.clear()
    yield app
    app.close()


# -- helpers -------------------------------------------------------------------------------------
def template(app: cloudq.App, entry: str, target: Target = "scheduler") -> str:
    """The target input EventBridge would hold for ``entry``."""
    prefix = "" if target == "scheduler" else f"{group_name(app)}."
    [item] = [w for w in wanted(app, target=target, prefix=prefix) if w.entry == entry]
    assert item.queue == f"{app.settings.queue_prefix}default"
    return item.input


def filled(body: str, at_text: str = AT_TEXT, placeholder: str = wire.SCHEDULED_TIME) -> str:
    """The body EventBridge sends on the tick at ``at_text``."""
    assert body.count(placeholder) == 1
    return body.replace(placeholder, at_text)


def send_raw(app: cloudq.App, body: str, queue: str = "default") -> None:
    """``send_message`` of a body, as EventBridge's SQS target does."""
    sqs = app.aws.sqs
    url = sqs.get_queue_url(QueueName=app.settings.queue_prefix + queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)


def send_to_arn(app: cloudq.App, arn: str, body: str) -> None:
    sqs = app.aws.sqs
    url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)


def work(app: cloudq.App) -> list[Outcome]:
    """Run everything on the default queue with the burst worker; the outcomes, in order."""
    return [d.outcome for d in BurstWorker(app, ["default"]).join()]


def counts(app: cloudq.App, queue: str = "default") -> dict[str, int]:
    sqs = app.aws.sqs
    url = sqs.get_queue_url(QueueName=app.settings.queue_prefix + queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {"visible": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"])}


def dead_letters(app: cloudq.App, expect: int = 1) -> list[ReceivedMessage]:
    got = app.transport.receive("default-dlq", max_messages=10, wait_s=0)
    assert len(got) == expect, [m.body[:80] for m in got]
    return got


class SentMessages:
    """Every SendMessage/SendMessageBatch entry an SQS client sends from now on."""

    def __init__(self, client: Any) -> None:
        self.entries: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.sqs.SendMessage", self._one)
        client.meta.events.register("provide-client-params.sqs.SendMessageBatch", self._batch)

    def _one(self, params: dict[str, Any], **_: Any) -> None:
        self.entries.append(params)

    def _batch(self, params: dict[str, Any], **_: Any) -> None:
        self.entries += params["Entries"]


# -- the template, decoded -----------------------------------------------------------------------
def test_a_filled_in_template_decodes_to_the_ticks_envelope(app: cloudq.App) -> None:
    body = filled(template(app, "nightly-report"))

    envelope = wire.decode(body)

    assert isinstance(envelope, wire.Envelope)
    assert envelope.id == wire.tick_id("nightly-report", AT) == envelope.root_id
    berlin = AT.astimezone(ZoneInfo("Europe/Berlin"))
    assert envelope.id == wire.tick_id("nightly-report", berlin)  # one instant, one id
    assert (envelope.task, envelope.args, envelope.queue) == ("per.report", ["nightly"],
                                                              "default")
    assert envelope.headers == {"periodic_task_name": "nightly-report",
                                "periodic_tick": AT_TEXT}
    assert envelope.sent_at == AT
    assert (envelope.eta, envelope.expires) == (None, None)
    [entry] = [e for e in load_entries(app) if e.name == "nightly-report"]
    assert entry.envelope(app, AT).id == envelope.id  # the local beat sends the same task id


def test_an_expires_option_counts_from_the_tick(app: cloudq.App) -> None:
    app.conf.update(beat_schedule={"fresh": {"task": "per.report", "args": ["f"],
                                             "schedule": 300, "options": {"expires": 120}}})

    envelope = wire.decode(filled(template(app, "fresh")))

    assert isinstance(envelope, wire.Envelope)
    assert envelope.expires == AT + timedelta(seconds=120)


# -- run by workers ------------------------------------------------------------------------------
def test_a_synced_schedules_message_runs_on_a_worker_under_its_tick_id(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)
    scheduler = app.aws.client("scheduler")
    target = scheduler.get_schedule(GroupName=group_name(app), Name="nightly-report")["Target"]
    send_to_arn(app, target["Arn"], filled(target["Input"]))

    outcomes = work(app)

    task_id = wire.tick_id("nightly-report", AT)
    assert outcomes == [Outcome.SUCCESS]
    assert cloudq.AsyncResult(task_id, app=app).get(timeout=2) == "done nightly"
    assert periodic.runs == [{"label": "nightly", "id": task_id, "name": "nightly-report",
                              "tick": AT_TEXT}]
    assert counts(app) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_rules_transformed_message_runs_on_the_poller_under_the_same_tick_id(
    app: cloudq.App
) -> None:
    sync(app, target="rules")
    rule = f"{group_name(app)}.nightly-report"
    [target] = app.aws.client("events").list_targets_by_rule(Rule=rule)["Targets"]
    transformer = target["InputTransformer"]
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "time": AT_TEXT}
    [(name, path)] = transformer["InputPathsMap"].items()
    assert f"<{name}>" == RULE_TIME and path == "$.time"
    send_to_arn(app, target["Arn"], filled(transformer["InputTemplate"], event["time"],
                                           RULE_TIME))

    assert Poller(app, ["default"], burst=True, concurrency=1).run() == 0

    task_id = wire.tick_id("nightly-report", AT)  # as from EventBridge Scheduler
    assert cloudq.AsyncResult(task_id, app=app).get(timeout=2) == "done nightly"
    assert [r["id"] for r in periodic.runs] == [task_id]


def test_the_same_tick_delivered_twice_is_one_task_and_an_idempotent_task_runs_once(
    app: cloudq.App
) -> None:
    body = filled(template(app, "cleanup"))  # per.charge is idempotent
    send_raw(app, body)
    send_raw(app, body)  # EventBridge delivers at least once

    outcomes = work(app)

    task_id = wire.tick_id("cleanup", AT)
    assert sorted(outcomes, key=str) == sorted([Outcome.SUCCESS, Outcome.SKIPPED], key=str)
    assert [(r["label"], r["id"]) for r in periodic.runs] == [("cleanup", task_id)]
    assert cloudq.AsyncResult(task_id, app=app).get(timeout=2) == "done cleanup"

    send_raw(app, filled(template(app, "cleanup"), "2026-11-24T07:40:00Z"))  # the next tick
    assert work(app) == [Outcome.SUCCESS]
    assert [r["tick"] for r in periodic.runs] == [AT_TEXT, "2026-11-24T07:40:00Z"]


def test_a_tick_delivered_after_its_expiry_is_not_run(app: cloudq.App) -> None:
    app.conf.update(beat_schedule={"fresh": {"task": "per.report", "args": ["f"],
                                             "schedule": 300, "options": {"expires": 120}}})
    late = wire.utcnow().replace(microsecond=0) - timedelta(minutes=5)  # an EventBridge retry
    send_raw(app, filled(template(app, "fresh"), wire.tick_text(late)))

    assert work(app) == [Outcome.EXPIRED]

    assert periodic.runs == []
    assert cloudq.AsyncResult(wire.tick_id("fresh", late), app=app).state == "REVOKED"


# -- signatures and bad templates ----------------------------------------------------------------
@pytest.mark.parametrize("target", ["scheduler", "rules"])
def test_a_signed_template_verifies_once_its_time_is_filled_in(
    app: cloudq.App, target: Target
) -> None:
    app.conf.update(signing_key="s3cret")
    placeholder = wire.SCHEDULED_TIME if target == "scheduler" else RULE_TIME
    body = filled(template(app, "nightly-report", target), placeholder=placeholder)
    assert "sig" in json.loads(body)

    assert isinstance(wire.decode(body, signing_key="s3cret"), wire.Envelope)
    send_raw(app, body)
    assert work(app) == [Outcome.SUCCESS]
    assert cloudq.AsyncResult(wire.tick_id("nightly-report", AT), app=app).get(timeout=2) == \
        "done nightly"


def test_a_tampered_signed_template_goes_to_the_dlq(app: cloudq.App) -> None:
    app.conf.update(signing_key="s3cret")
    frame = json.loads(filled(template(app, "nightly-report")))
    frame["args"] = ["something else"]
    send_raw(app, json.dumps(frame))

    assert work(app) == [Outcome.POISON]

    assert periodic.runs == []
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith(
        "SignatureError: message signature does not match")
    assert counts(app)["visible"] == 0


@pytest.mark.parametrize("target", ["scheduler", "rules"])
def test_a_template_whose_time_was_not_filled_in_goes_to_the_dlq_with_a_reason(
    app: cloudq.App, target: Target
) -> None:
    send_raw(app, template(app, "nightly-report", target))  # the placeholder as it is

    assert work(app) == [Outcome.POISON]

    assert periodic.runs == []
    [dead] = dead_letters(app)
    reason = dead.attributes["cloudq-reason"]
    assert reason.startswith("DecodeError: bad periodic task template"), reason
    placeholder = wire.SCHEDULED_TIME if target == "scheduler" else RULE_TIME
    assert placeholder in reason
    assert counts(app) == {"visible": 0, "in_flight": 0, "delayed": 0}


# -- the fan-out of a sub-minute interval ----------------------------------------------------------
def test_a_fifteen_second_entry_fans_out_four_ticks_with_sqs_delays(app: cloudq.App) -> None:
    app.conf.update(beat_schedule={"pulse": {"task": "per.report", "args": ["pulse"],
                                             "schedule": 15}})
    body = template(app, "pulse")
    assert json.loads(body)["task"] == "cloudq.fanout"
    at = wire.utcnow().replace(microsecond=0)  # this minute's tick, just now
    send_raw(app, filled(body, wire.tick_text(at)))
    sent = SentMessages(app.aws.sqs)

    outcomes = work(app)  # the fan-out, then the one tick that is due at once

    assert outcomes == [Outcome.SUCCESS, Outcome.SUCCESS]
    ids = [wire.tick_id("pulse", at + timedelta(seconds=15 * k)) for k in range(4)]
    assert [json.loads(e["MessageBody"])["id"] for e in sent.entries] == ids
    delays = [e.get("DelaySeconds", 0) for e in sent.entries]
    # 0, 15, 30, 45 from the tick's time (a second less if the tick's second has passed)
    assert delays[0] == 0
    assert all(0 <= 15 * k - delays[k] <= 1 for k in range(4)), delays
    assert counts(app) == {"visible": 0, "in_flight": 0, "delayed": 3}
    assert cloudq.AsyncResult(ids[0], app=app).get(timeout=2) == "done pulse"
    assert [(r["label"], r["id"], r["name"]) for r in periodic.runs] == [
        ("pulse", ids[0], "pulse")]


def test_every_fanned_out_tick_carries_its_periodic_tick_header(app: cloudq.App) -> None:
    app.conf.update(beat_schedule={"pulse": {"task": "per.report", "args": ["pulse"],
                                             "schedule": 15}})
    at = wire.utcnow().replace(microsecond=0)
    send_raw(app, filled(template(app, "pulse"), wire.tick_text(at)))
    sent = SentMessages(app.aws.sqs)

    work(app)

    headers = [json.loads(e["MessageBody"])["headers"] for e in sent.entries]
    assert headers == [{"periodic_task_name": "pulse",
                        "periodic_tick": wire.tick_text(at + timedelta(seconds=15 * k))}
                       for k in range(4)]


# -- the Lambda handler --------------------------------------------------------------------------
def test_the_lambda_handler_runs_a_template_message(app: cloudq.App) -> None:
    send_raw(app, filled(template(app, "nightly-report")))
    send_raw(app, template(app, "cleanup"))  # not filled in: poison, but processed
    batch = app.transport.receive("default", max_messages=10, wait_s=0)
    assert len(batch) == 2

    response = invoke_lambda(app, app.lambda_handler(), batch, LambdaContext(remaining_s=30))

    assert response == NO_FAILURES
    task_id = wire.tick_id("nightly-report", AT)
    assert cloudq.AsyncResult(task_id, app=app).get(timeout=2) == "done nightly"
    assert [(r["id"], r["name"]) for r in periodic.runs] == [(task_id, "nightly-report")]
    [dead] = dead_letters(app)
    assert '"name":"cleanup"' in dead.body
    assert counts(app) == {"visible": 0, "in_flight": 0, "delayed": 0}
