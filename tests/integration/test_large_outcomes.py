"""Outcomes too big for a DynamoDB item, and claim checks that point nowhere (issue 11: 4, 5, 13).

Each test hands the received message to the Lambda handler (the real runner, in this
process), then looks at what was stored once, and at the queue: a message that is left
undeleted would come back and loop until SQS dead-letters it without a reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq import states
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.results import CUT_MARKER, MAX_ITEM_BYTES, item_size, task_key
from cloudq.runners.lambda_runner import LambdaHandler
from cloudq.sending import build_envelope
from cloudq.testing import invoke_lambda
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from tests.integration.apps import outcomes
from tests.integration.e2e_harness import counts

pytestmark = pytest.mark.integration

NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}
EMPTY = {"visible": 0, "in_flight": 0}


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    app = outcomes.app
    app.conf.update(
        endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
        result_table=f"{unique_prefix}results", payload_bucket=None, result_compression=None,
        visibility_timeout=30, max_receive_count=5,
    )
    provision(app, ["default"])
    yield app
    app.close()


@pytest.fixture
def bucket(app: cloudq.App, unique_prefix: str) -> str:
    name = f"{unique_prefix}payloads"
    app.conf.update(payload_bucket=name)
    app.payloads(name).ensure()
    return name


def deliver(app: cloudq.App, handler: LambdaHandler) -> dict[str, Any]:
    """Receive the one waiting message and hand it to the handler, as the event source does."""
    got = app.transport.receive("default", max_messages=10, wait_s=1)
    assert len(got) == 1, [m.body[:80] for m in got]
    return invoke_lambda(app, handler, got)


def stored(app: cloudq.App, task_id: str) -> dict[str, Any]:
    item = app.store.get(task_key(task_id))
    assert item is not None
    return item


def dead_letters(app: cloudq.App) -> list[ReceivedMessage]:
    return app.transport.receive("default-dlq", max_messages=10, wait_s=1)


# -- 4: error texts and tracebacks are cut to fit --------------------------------------------------
@pytest.mark.parametrize("size", [200_000, 1_000_000])
def test_an_error_text_too_big_for_an_item_is_stored_cut_once_and_the_message_deleted(
    app: cloudq.App, handler: LambdaHandler, aws_calls: RequestCounter, size: int,
) -> None:
    result = outcomes.explode.delay(size, depth=40)
    aws_calls.reset()

    assert deliver(app, handler) == NO_FAILURES

    assert counts(app) == EMPTY
    assert aws_calls.counts["DynamoDB.PutItem"] == 1
    assert result.state == states.FAILURE
    error = result.result
    assert isinstance(error, ValueError)
    assert CUT_MARKER in str(error) and str(error).startswith("bad value 'vvv")
    trace = result.traceback or ""
    assert CUT_MARKER in trace
    assert trace.startswith("Traceback (most recent call last):")
    head, tail = trace[:2000], trace[-3000:]
    assert "in explode" in head
    assert "raise ValueError" in tail and "ValueError: bad value 'vvv" in tail
    assert item_size(stored(app, result.id)) < MAX_ITEM_BYTES


def test_a_poison_message_whose_reason_is_huge_is_dead_lettered_with_a_cut_reason(
    app: cloudq.App, handler: LambdaHandler,
) -> None:
    ghost = build_envelope(app, "outcomes.ghost", (), {}).replace(task="g" * 200_000)
    app.transport.send("default", OutgoingMessage(body=wire.encode(ghost)))

    assert deliver(app, handler) == NO_FAILURES

    assert counts(app) == EMPTY
    item = stored(app, ghost.id)
    assert item["state"] == states.FAILURE
    assert CUT_MARKER in item["reason"] and item_size(item) < MAX_ITEM_BYTES
    (dead,) = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith("NotRegistered")


# -- 4: results too big for an item ----------------------------------------------------------------
def test_a_200_kb_result_is_stored_in_the_item(app: cloudq.App, handler: LambdaHandler) -> None:
    result = outcomes.big.delay(200_000)

    assert deliver(app, handler) == NO_FAILURES

    assert result.get(timeout=1) == "r" * 200_000
    assert "result_s3" not in stored(app, result.id)


def test_a_1_mb_result_without_a_bucket_is_a_failure_naming_payload_bucket(
    app: cloudq.App, handler: LambdaHandler, aws_calls: RequestCounter,
) -> None:
    result = outcomes.big.delay(1_000_000)
    aws_calls.reset()

    assert deliver(app, handler) == NO_FAILURES

    assert counts(app) == EMPTY
    assert aws_calls.counts["DynamoDB.PutItem"] == 1
    assert result.state == states.FAILURE
    assert isinstance(result.result, cloudq.EncodeError)
    assert "payload_bucket" in str(result.result) and "too large" in str(result.result)


def test_a_1_mb_result_with_a_bucket_goes_to_s3_and_get_fetches_it(
    app: cloudq.App, handler: LambdaHandler, bucket: str,
) -> None:
    result = outcomes.varied.delay(1_000_000)

    assert deliver(app, handler) == NO_FAILURES

    expected = [(i * 7919) % 100_003 for i in range(1_000_000 // 6)]
    assert counts(app) == EMPTY
    item = stored(app, result.id)
    assert item["result_s3"]["bucket"] == bucket
    assert item["result_s3"]["key"].startswith(f"payloads/{result.id}/")
    assert item_size(item) < 2_000
    assert result.get(timeout=1) == expected
    assert asyncio.run(result.aget(timeout=1)) == expected
    assert cloudq.GroupResult("g", [result], app=app).get(timeout=1) == [expected]


def test_a_1_mb_result_for_a_bucket_that_does_not_exist_is_a_failure_naming_it(
    app: cloudq.App, handler: LambdaHandler, unique_prefix: str,
) -> None:
    app.conf.update(payload_bucket=f"{unique_prefix}never-made")
    result = outcomes.big.delay(1_000_000)

    assert deliver(app, handler) == NO_FAILURES

    assert counts(app) == EMPTY
    assert result.state == states.FAILURE
    assert f"{unique_prefix}never-made" in str(result.result)


# -- 13: result_compression ------------------------------------------------------------------------
def test_result_compression_gzip_stores_a_300_kb_result_compressed(
    app: cloudq.App, handler: LambdaHandler,
) -> None:
    app.conf.update(result_compression="gzip")
    result = outcomes.big.delay(300_000)

    assert deliver(app, handler) == NO_FAILURES

    item = stored(app, result.id)
    assert item["result_encoding"] == "gzip"
    assert item_size(item) < 10_000
    assert result.get(timeout=1) == "r" * 300_000
    assert asyncio.run(result.aget(timeout=1)) == "r" * 300_000


def test_with_compression_a_1_mb_compressible_result_fits_without_a_bucket(
    app: cloudq.App, handler: LambdaHandler,
) -> None:
    app.conf.update(result_compression="gzip")
    result = outcomes.big.delay(1_000_000)

    assert deliver(app, handler) == NO_FAILURES

    assert result.get(timeout=1) == "r" * 1_000_000


# -- 5: claim checks that point nowhere ------------------------------------------------------------
def claim_check_to(app: cloudq.App, bucket: str, key: str) -> wire.Envelope:
    envelope = build_envelope(app, outcomes.big.name, (10,), {})
    app.transport.send("default", OutgoingMessage(
        body=wire.claim_check(envelope, bucket, key, signing_key=None)))
    return envelope


@pytest.mark.parametrize("missing", ["key", "bucket"])
def test_a_claim_check_to_a_missing_object_is_poison_with_the_task_id(
    app: cloudq.App, handler: LambdaHandler, bucket: str, unique_prefix: str, missing: str,
) -> None:
    where = bucket if missing == "key" else f"{unique_prefix}no-such-bucket"
    envelope = claim_check_to(app, where, "payloads/gone/body.json")

    assert deliver(app, handler) == NO_FAILURES

    assert counts(app) == EMPTY
    item = stored(app, envelope.id)
    assert item["state"] == states.FAILURE
    assert f"s3://{where}/payloads/gone/body.json" in item["reason"]
    (dead,) = dead_letters(app)
    assert "does not exist" in dead.attributes["cloudq-reason"]
