"""The canvas against moto server over HTTP: Celery's documented examples, workflows built
from them, the chord join under a replayed Lambda batch and under failure, what the join
costs in AWS calls, and a 100-member chord run by two real ``cloudq poll`` processes.

Most tests run the queues with ``BurstWorker`` in this process; the Lambda tests hand real
received messages to the handler with ``invoke_lambda``, as in ``test_lambda.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.execute import process_message
from cloudq.runners.lambda_runner import LambdaHandler
from cloudq.testing import BurstWorker, invoke_lambda
from cloudq.transports.base import ReceivedMessage
from tests.integration.apps import canvas_app
from tests.integration.apps.canvas_app import (
    RenderError,
    add,
    boom,
    double,
    fetch,
    merge,
    note,
    on_error,
    render,
    tsum,
)
from tests.integration.e2e_harness import ROOT, Harness, counts, harness, wait_for

pytestmark = pytest.mark.integration

NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    """The canvas app on fresh queues and table, with nothing recorded yet."""
    app = canvas_app.app
    app.conf.update(
        endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
        result_table=f"{unique_prefix}results", payload_bucket=None, visibility_timeout=30,
        max_receive_count=5, lambda_structured_logging=False, lambda_metrics=False,
    )
    provision(app)
    canvas_app.runs.clear()
    canvas_app.errbacks.clear()
    yield app
    app.close()


# -- helpers -------------------------------------------------------------------------------------
def work(app: cloudq.App) -> None:
    """Run everything queued, and what that sends, until the queues are empty."""
    BurstWorker(app).join()


def receive(app: cloudq.App, expect: int) -> list[ReceivedMessage]:
    """Receive ``expect`` messages from the default queue (10 per call), without running them."""
    got: list[ReceivedMessage] = []
    while len(got) < expect and (batch := app.transport.receive("default", max_messages=10)):
        got += batch
    assert len(got) == expect, [m.body[:80] for m in got]
    return got


def callback_runs() -> int:
    return sum(1 for line in canvas_app.runs if line.startswith("tsum("))


def per_member(calls: dict[str, int], members: int) -> str:
    return ", ".join(f"{name} {count / members:.2f}" for name, count in sorted(calls.items()))


# -- Celery's documented examples ----------------------------------------------------------------
def test_piped_chain_adds_up_to_sixteen(app: cloudq.App) -> None:
    result = (add.s(2, 2) | add.s(4) | add.s(8)).apply_async()
    work(app)

    assert result.get(timeout=1) == 16


def test_chain_function_gives_the_last_steps_result(app: cloudq.App) -> None:
    result = cloudq.chain(add.s(2, 2), add.s(4), double.s()).delay()
    work(app)

    assert result.get(timeout=1) == 16


def test_group_results_come_back_in_order(app: cloudq.App) -> None:
    result = cloudq.group(add.s(i, i) for i in range(12)).apply_async()
    work(app)

    assert result.get(timeout=1) == [2 * i for i in range(12)]


def test_chord_called_with_its_callback(app: cloudq.App) -> None:
    result = cloudq.chord(add.s(i, i) for i in range(10))(tsum.s())
    work(app)

    assert result.get(timeout=1) == 90
    assert canvas_app.runs == ["tsum(10)"]


def test_chord_given_header_and_body(app: cloudq.App) -> None:
    result = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    work(app)

    assert result.get(timeout=1) == 6


def test_map_starmap_and_chunks(app: cloudq.App) -> None:
    mapped = double.map([1, 2, 3]).delay()
    starred = add.starmap([(1, 2), (3, 4)]).delay()
    chunked = add.chunks(zip(range(20), range(20), strict=True), 5).apply_async()
    work(app)

    assert mapped.get(timeout=1) == [2, 4, 6]
    assert starred.get(timeout=1) == [3, 7]
    assert chunked.get(timeout=1) == [[2 * i for i in range(n, n + 5)] for n in range(0, 20, 5)]


def test_link_and_link_error_with_signatures(app: cloudq.App) -> None:
    added = add.apply_async((2, 2), link=note.s())
    failed = boom.apply_async(("cover",), link_error=on_error.s())
    work(app)

    assert added.get(timeout=1) == 4
    assert canvas_app.runs == ["note(4)"]
    [(request, exc, traceback)] = canvas_app.errbacks
    assert (request["id"], request["task"], request["args"]) == (failed.id, boom.name, ["cover"])
    assert isinstance(exc, RenderError) and "cannot render 'cover'" in str(exc)
    assert "RenderError" in traceback


# -- workflows -----------------------------------------------------------------------------------
def test_report_generation_fetches_renders_the_parts_in_parallel_then_merges(
    app: cloudq.App,
) -> None:
    parts = ("header", "table", "chart", "footer")
    report = cloudq.chain(fetch.s("q3"), cloudq.group(render.s(p) for p in parts), merge.s())

    result = report.apply_async()
    work(app)

    assert result.get(timeout=1) == "".join(f"<{p} of report q3>" for p in parts)
    assert canvas_app.runs == ["fetch(q3)", "merge(4)"]


def test_nested_chords(app: cloudq.App) -> None:
    inner = cloudq.chord([add.s(i, 1) for i in range(3)], tsum.s())

    result = cloudq.chord([inner, add.s(10, 10)], tsum.s()).apply_async()
    work(app)

    assert result.get(timeout=1) == 26
    assert canvas_app.runs == ["tsum(3)", "tsum(2)"]


def test_chains_inside_a_group_and_a_chord_inside_a_chain(app: cloudq.App) -> None:
    chains = cloudq.group(add.s(1, 1) | double.s(), add.s(3, 3) | add.s(1)).apply_async()
    flow = cloudq.chain(add.s(1, 1), cloudq.chord([add.s(1), add.s(2)], tsum.s()), double.s())
    chord_in_chain = flow.apply_async()
    work(app)

    assert chains.get(timeout=1) == [4, 7]
    assert chord_in_chain.get(timeout=1) == 2 * (3 + 4)


def test_group_result_questions_and_restore(app: cloudq.App) -> None:
    result = cloudq.group(add.s(1, 1), boom.s("x"), add.s(3, 3)).apply_async()
    assert (result.ready(), result.completed_count()) == (False, 0)
    work(app)

    restored = cloudq.GroupResult.restore(result.id, app=app)

    assert restored is not None and restored.id == result.id
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert (restored.ready(), restored.successful(), restored.failed()) == (True, False, True)
    assert restored.completed_count() == 2
    with pytest.raises(RenderError):
        restored.get(timeout=1)
    assert restored.results[2].get(timeout=1) == 6


# -- redelivery: the callback runs once ----------------------------------------------------------
def test_a_replayed_lambda_batch_of_header_messages_fires_the_callback_once(
    app: cloudq.App, handler: LambdaHandler,
) -> None:
    result = cloudq.chord([add.s(i, i) for i in range(5)], tsum.s()).apply_async()
    header = receive(app, 5)

    assert invoke_lambda(app, handler, header) == NO_FAILURES
    assert invoke_lambda(app, handler, header) == NO_FAILURES  # the event source replayed it
    [callback] = receive(app, 1)
    assert invoke_lambda(app, handler, [callback]) == NO_FAILURES

    assert result.get(timeout=1) == 20
    assert callback_runs() == 1
    assert counts(app) == {"visible": 0, "in_flight": 0}


def test_header_messages_replayed_after_the_callback_ran_do_not_fire_it_again(
    app: cloudq.App, handler: LambdaHandler,
) -> None:
    result = cloudq.chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async()
    header = receive(app, 3)
    invoke_lambda(app, handler, header)
    [callback] = receive(app, 1)
    invoke_lambda(app, handler, [callback])
    assert result.get(timeout=1) == 6

    assert invoke_lambda(app, handler, header) == NO_FAILURES  # every member once more

    assert counts(app) == {"visible": 0, "in_flight": 0}  # no second callback was sent
    assert callback_runs() == 1


# -- failure: no hang ----------------------------------------------------------------------------
def test_a_failing_member_fails_the_callback_with_chord_error_and_calls_its_errback(
    app: cloudq.App,
) -> None:
    body = tsum.s()
    body.link_error(on_error.s())

    result = cloudq.chord([add.s(1, 1), boom.s("chart"), add.s(2, 2)], body).apply_async()
    work(app)

    with pytest.raises(cloudq.ChordError, match="cannot render 'chart'"):
        result.get(timeout=1)
    assert callback_runs() == 0
    [(request, exc, _)] = canvas_app.errbacks
    assert request["id"] == result.id and isinstance(exc, cloudq.ChordError)


def test_a_revoked_member_still_counts(app: cloudq.App) -> None:
    chord = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    chord.freeze()
    app.AsyncResult(chord.header[0].id or "").revoke()

    result = chord.apply_async()
    work(app)

    assert result.state == "FAILURE"
    with pytest.raises(cloudq.ChordError):
        result.get(timeout=1)


def test_a_chain_that_breaks_inside_a_member_counts_as_failed(app: cloudq.App) -> None:
    result = cloudq.chord([add.s(1, 1) | boom.s() | double.s(), add.s(2, 2)],
                          tsum.s()).apply_async()
    work(app)

    with pytest.raises(cloudq.ChordError, match="cannot render 2"):
        result.get(timeout=1)
    assert callback_runs() == 0


def test_a_failed_chain_step_makes_the_chain_raise_its_exception(app: cloudq.App) -> None:
    result = (add.s(1, 1) | boom.s() | double.s()).apply_async()
    work(app)

    with pytest.raises(RenderError, match="cannot render 2"):
        result.get(timeout=1)


# -- what it costs -------------------------------------------------------------------------------
def test_each_header_member_costs_one_join_write_and_no_join_read(
    app: cloudq.App, aws_calls: RequestCounter,
) -> None:
    size = 20
    result = cloudq.chord([add.s(i, i) for i in range(size)], tsum.s()).apply_async()
    header = receive(app, size)
    aws_calls.reset()

    for message in header:  # the worker's side: everything process_message does
        process_message(app, message)

    calls = dict(aws_calls.counts)
    print(f"\nworker calls for a {size}-member chord header: {calls}")
    print(f"per member: {per_member(calls, size)}")
    assert calls == {
        "DynamoDB.GetItem": size + 1,  # the revoke check per member (not the join) + 1 firing read
        "DynamoDB.PutItem": size + 2,  # the member's result + the claim and its "sent" mark
        "DynamoDB.UpdateItem": size,  # the join: one conditional ADD per member
        "DynamoDB.BatchGetItem": 1,  # the firing member reads the 20 results at once
        "SQS.SendMessage": 1,  # the callback
    }
    app.transport.ack(header)
    work(app)
    assert result.get(timeout=1) == 380


def test_publishing_a_group_or_chord_is_batched_ten_per_call(
    app: cloudq.App, aws_calls: RequestCounter,
) -> None:
    add.delay(0, 0)  # look the queue up once
    aws_calls.reset()

    cloudq.group(add.s(i, i) for i in range(25)).apply_async()
    grouped = dict(aws_calls.counts)
    aws_calls.reset()
    cloudq.chord([add.s(i, i) for i in range(25)], tsum.s()).apply_async()
    chorded = dict(aws_calls.counts)

    print(f"\nsending a 25-member group: {grouped}; a 25-member chord: {chorded}")
    assert grouped == {"SQS.SendMessageBatch": 3, "DynamoDB.PutItem": 1}  # + group#G (its size)
    assert chorded == {"SQS.SendMessageBatch": 3, "DynamoDB.PutItem": 2}  # + chord#G (the join)


def test_reading_a_150_member_group_is_two_batch_reads_per_poll(
    app: cloudq.App, aws_calls: RequestCounter,
) -> None:
    result = cloudq.group(add.s(i, i) for i in range(150)).apply_async()
    aws_calls.reset()
    assert not result.ready()
    assert dict(aws_calls.counts) == {"DynamoDB.BatchGetItem": 2}

    work(app)
    aws_calls.reset()
    values = result.get(timeout=5)

    assert values == [2 * i for i in range(150)]
    assert dict(aws_calls.counts) == {"DynamoDB.BatchGetItem": 2}  # 100 + 50 keys, not 150 reads


# -- real workers --------------------------------------------------------------------------------
@pytest.fixture
def h(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[Harness]:
    canvas_app.runs.clear()
    yield from harness(canvas_app.app, local_aws, unique_prefix, tmp_path)


def start_poller(h: Harness) -> None:
    """A real ``cloudq poll`` process of the canvas app (the harness's own runs the e2e app)."""
    log = (h.workdir / f"worker-{len(h.workers)}.log").open("w")
    h.workers.append(subprocess.Popen(
        [sys.executable, "-m", "cloudq.cli", "poll", "-A", "tests.integration.apps.canvas_app:app",
         "-c", "4", "--loglevel", "info"],
        cwd=ROOT, env=h.env(), stdout=log, stderr=subprocess.STDOUT, text=True,
    ))


def test_a_100_member_chord_on_two_pollers_calls_back_once(h: Harness) -> None:
    start_poller(h)
    start_poller(h)

    result = cloudq.chord([add.s(i, i) for i in range(100)], tsum.s()).apply_async()

    assert result.get(timeout=20) == 9900
    idle = {"visible": 0, "in_flight": 0, "delayed": 0}
    wait_for(lambda: h.queue_counts() == idle, what="the queue to empty")
    assert h.marks("runs") == ["tsum(100)"]
