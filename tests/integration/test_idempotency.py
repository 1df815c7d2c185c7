"""``idempotent=True`` with copies of one message arriving together (issue 11: 9): real
``cloudq poll`` processes and the Lambda handler against moto server. Body runs are
counted in the table (``outcomes.runs``), which every process shares."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq import states
from cloudq.localaws import LocalAws
from cloudq.sending import build_envelope
from cloudq.testing import invoke_lambda
from cloudq.transports.base import OutgoingMessage
from tests.integration.apps import outcomes
from tests.integration.e2e_harness import Harness, harness, wait_for

pytestmark = pytest.mark.integration

APP = ("-A", "tests.integration.apps.outcomes:app")
VISIBILITY_S = 3
"""The harness's visibility timeout, and so the lease of a task without a time limit."""


@pytest.fixture
def h(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[Harness]:
    yield from harness(outcomes.app, local_aws, unique_prefix, tmp_path,
                       visibility_timeout_s=VISIBILITY_S)


def send_copies(app: cloudq.App, label: str, copies: int, seconds: float = 1.5) -> str:
    """One task message, sent ``copies`` times in one batch (a duplicate delivery)."""
    envelope = build_envelope(app, outcomes.once.name, (label, seconds), {})
    body = wire.encode(envelope, signing_key=app.settings.signing_key)
    app.transport.send_batch("default", [OutgoingMessage(body=body)] * copies)
    return envelope.id


def drained(h: Harness) -> bool:
    return not any(h.queue_counts().values())


def test_two_pollers_with_two_threads_run_a_duplicated_message_once(h: Harness) -> None:
    workers = [h.start_worker(*APP, "-c", "2") for _ in range(2)]
    for index in range(len(workers)):
        wait_for(lambda i=index: "cloudq poller" in h.log(i), timeout_s=20,
                 what=f"worker {index} to start")

    task_id = send_copies(h.app, "twice", copies=3)

    result = cloudq.AsyncResult(task_id, app=h.app)
    assert result.get(timeout=20) == "twice"
    wait_for(lambda: drained(h), timeout_s=20, what="the deferred copies to be acked")
    assert outcomes.runs("twice") == 1


def test_a_crashed_first_copys_lease_expires_and_another_worker_runs_it(h: Harness) -> None:
    first = h.start_worker(*APP, "-c", "1")
    result = outcomes.hangs_first.delay("crash")
    wait_for(lambda: outcomes.runs("crash") == 1, timeout_s=20, what="the first run to start")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert result.state == states.PENDING
    h.start_worker(*APP, "-c", "1")

    assert result.get(timeout=30) == "crash"
    assert outcomes.runs("crash") == 2


# -- the Lambda handler ----------------------------------------------------------------------------
@pytest.fixture
def lambda_app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    from cloudq.provision import provision

    app = outcomes.app
    app.conf.update(endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
                    result_table=f"{unique_prefix}results", payload_bucket=None,
                    visibility_timeout=30)
    provision(app, ["default"])
    yield app
    app.close()


def records_of_one_task(app: cloudq.App, label: str, seconds: float) -> tuple[str, list[Any]]:
    task_id = send_copies(app, label, copies=2, seconds=seconds)
    got = app.transport.receive("default", max_messages=10, wait_s=1)
    got += app.transport.receive("default", max_messages=10, wait_s=0) if len(got) < 2 else []
    assert len(got) == 2
    return task_id, got


def test_lambda_two_records_of_one_task_in_one_batch_run_it_once(lambda_app: cloudq.App) -> None:
    handler = lambda_app.lambda_handler()
    assert handler.concurrent  # the app has an async task: the records run at once
    task_id, both = records_of_one_task(lambda_app, "batch", seconds=1.0)

    assert invoke_lambda(lambda_app, handler, both) == {"batchItemFailures": []}

    assert outcomes.runs("batch") == 1
    assert cloudq.AsyncResult(task_id, app=lambda_app).get(timeout=1) == "batch"


def test_lambda_two_concurrent_batches_with_one_task_run_it_once(lambda_app: cloudq.App) -> None:
    handler = lambda_app.lambda_handler()
    task_id, both = records_of_one_task(lambda_app, "batches", seconds=1.0)
    responses: list[dict[str, Any]] = []
    threads = [threading.Thread(
        target=lambda m=m: responses.append(invoke_lambda(lambda_app, handler, [m])))
        for m in both]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert responses == [{"batchItemFailures": []}] * 2
    assert outcomes.runs("batches") == 1
    assert cloudq.AsyncResult(task_id, app=lambda_app).get(timeout=1) == "batches"
