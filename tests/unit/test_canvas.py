"""The canvas on the in-memory twins: signatures as values, Celery's documented examples,
workflows built from them, and the chord join under redelivery and failure.

Everything runs in this process: ``BurstWorker(app).join()`` works the queues until they are
empty, and where a story is about one delivery at a time the test hands messages to
``process_message`` itself, as a runner would, so a delivery can happen twice on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.canvas import join
from cloudq.message import Envelope
from cloudq.runners.execute import Disposition, process_message
from cloudq.stores.memory import MemoryStore
from cloudq.testing import BurstWorker, memory_app, use_memory
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from cloudq.transports.memory import MemoryTransport

app = memory_app("canvas")

runs: list[str] = []
"""What the tasks below did, in order (tasks that only compute leave no entry)."""
errbacks: list[tuple[dict[str, Any], BaseException, str]] = []
"""The ``(request, exc, traceback)`` each errback call got."""


class RenderError(Exception):
    """A domain error raised by a task."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def tsum(numbers: list[int]) -> int:
    runs.append(f"tsum({numbers})")
    return sum(numbers)


@app.task
def words(*parts: str, sep: str = " ", end: str = "") -> str:
    return sep.join(parts) + end


@app.task
def gather(*values: Any) -> list[Any]:
    return list(values)


@app.task
def boom(value: Any = None) -> int:
    runs.append(f"boom({value!r})")
    raise RenderError(f"cannot render {value!r}")


@app.task
def note(value: Any) -> None:
    runs.append(f"note({value!r})")


@app.task
def on_error(request: Any, exc: Any, traceback: Any) -> None:
    errbacks.append((request, exc, traceback))


@app.task
def refuse(value: Any) -> None:
    raise cloudq.Reject(f"{value!r} is not wanted", requeue=False)


@app.task(bind=True)
def flaky(self: cloudq.Task[..., int], value: int) -> int:
    runs.append(f"flaky#{self.request.retries}")
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return value


@app.task
def fetch(report_id: str) -> dict[str, str]:
    runs.append(f"fetch({report_id})")
    return {"title": f"report {report_id}"}


@app.task
def render(data: dict[str, str], part: str) -> str:
    return f"<{part} of {data['title']}>"


@app.task
def merge(parts: list[str]) -> str:
    return "".join(parts)


@pytest.fixture(autouse=True)
def twins() -> Iterator[tuple[MemoryTransport, MemoryStore]]:
    """Fresh in-memory queues and store for every test, and nothing recorded yet."""
    runs.clear()
    errbacks.clear()
    with use_memory(app) as fresh:
        yield fresh


# -- helpers -------------------------------------------------------------------------------------
def work(queues: Sequence[str] | None = None) -> list[Disposition]:
    """Run everything queued, and what that sends, until the queues are empty."""
    return BurstWorker(app, queues).join()


def receive(expect: int) -> list[ReceivedMessage]:
    """Take ``expect`` messages off the default queue, as workers would, without running them."""
    got: list[ReceivedMessage] = []
    while batch := app.transport.receive("default", max_messages=10):
        got += batch
    assert len(got) == expect, [m.body[:80] for m in got]
    return got


def deliver(messages: Sequence[ReceivedMessage]) -> None:
    """Run each message as a worker does, then acknowledge it."""
    for message in messages:
        process_message(app, message)
    app.transport.ack(messages)


def again(message: ReceivedMessage) -> ReceivedMessage:
    """The same message delivered once more (SQS is at-least-once)."""
    return dataclasses.replace(message, receive_count=message.receive_count + 1)


def queued(queue: str = "default") -> list[Envelope]:
    """The messages waiting in ``queue`` (visible or in flight), decoded."""
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    decoded = [wire.decode(body) for body in transport.bodies(queue)]
    return [e for e in decoded if isinstance(e, Envelope)]


def revoke_member(chord: cloudq.Chord, index: int) -> None:
    """Revoke header member ``index`` before any worker gets it (its id is known once the
    chord is frozen; an id given to a member beforehand would be replaced)."""
    chord.freeze()
    app.AsyncResult(chord.header[index].id or "").revoke()


def callback_runs() -> int:
    return sum(1 for line in runs if line.startswith("tsum("))


# -- signatures are values -----------------------------------------------------------------------
def test_s_is_a_partial_call_that_takes_the_previous_result_first() -> None:
    partial = add.s(2)

    assert (partial.task, partial.args, partial.kwargs, partial.immutable) == (
        add.name, (2,), {}, False)
    result = partial.delay(4)  # Celery's example: 4 + 2
    work()
    assert result.get(timeout=0) == 6


def test_si_is_immutable_and_ignores_the_previous_result() -> None:
    fixed = add.si(5, 5)

    result = (add.s(1, 1) | fixed).apply_async()
    work()

    assert fixed.immutable is True
    assert result.get(timeout=0) == 10


def test_signature_by_name_carries_its_args_and_options_to_the_message() -> None:
    sig = cloudq.signature(add.name, args=(2, 2), options={"queue": "math"}, app=app)

    result = sig.delay()

    assert (sig.task, sig.args, sig.options) == (add.name, (2, 2), {"queue": "math"})
    [sent] = queued("math")
    assert (sent.task, sent.args) == (add.name, [2, 2])
    work(["math"])
    assert result.get(timeout=0) == 4


def test_options_given_to_signature_apply_when_it_is_sent() -> None:
    later = add.signature((2, 2), countdown=10)

    result = later.apply_async()

    assert later.options == {"countdown": 10}
    assert work() == []  # not visible for another 10 s
    assert result.state == "PENDING"


def test_clone_prepends_args_and_merges_kwargs_and_options() -> None:
    sig = words.s("b", "c", sep="-").set(queue="text")

    copy = sig.clone(args=("a",), kwargs={"end": "!"}, priority=7)

    assert copy.args == ("a", "b", "c")
    assert copy.kwargs == {"sep": "-", "end": "!"}
    assert copy.options == {"queue": "text", "priority": 7}
    assert (sig.args, sig.kwargs, sig.options) == (("b", "c"), {"sep": "-"}, {"queue": "text"})
    assert copy() == "a-b-c!"


def test_clone_of_an_immutable_signature_keeps_its_arguments_but_takes_options() -> None:
    sig = add.si(2, 2)

    copy = sig.clone(args=(8,), kwargs={"y": 1}, queue="math")

    assert (copy.args, copy.kwargs, copy.immutable) == ((2, 2), {}, True)
    assert copy.options == {"queue": "math"}


def test_set_changes_options_in_place_and_returns_the_signature() -> None:
    sig = add.s(2, 2)

    returned = sig.set(queue="math").set(priority=3)

    assert returned is sig
    assert sig.options == {"queue": "math", "priority": 3}


def test_set_immutable_makes_the_signature_immutable_as_in_celery() -> None:
    sig = add.s(5, 5).set(immutable=True)

    result = (add.s(1, 1) | sig).apply_async()
    work()

    assert sig.immutable is True
    assert result.get(timeout=0) == 10


def test_pipe_builds_one_flat_chain() -> None:
    a, b, c, d = add.s(1, 1), add.s(2), add.s(3), add.s(4)

    piped = (a | b) | (c | d)

    assert isinstance(piped, cloudq.Chain)
    assert piped.tasks == [a, b, c, d]
    assert cloudq.chain(a, b).tasks == cloudq.chain([a, b]).tasks == (a | b).tasks


def test_a_signature_is_a_plain_value_not_a_dict() -> None:
    sig = add.s(2, 2)

    assert not isinstance(sig, dict)
    assert isinstance(sig.to_dict(), dict)


CANVASES: dict[str, Callable[[], cloudq.Signature]] = {
    "task": lambda: add.s(2, 2).set(queue="math", countdown=5),
    "immutable with callbacks": lambda: add.si(1, 2).set(
        link=[note.s()], link_error=[on_error.s()]),
    "chain": lambda: add.s(2, 2) | add.s(4) | add.s(8),
    "group": lambda: cloudq.group(add.s(i, i) for i in range(3)),
    "chord": lambda: cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
    "report": lambda: cloudq.chain(fetch.s("r-1"),
                                   cloudq.group(render.s(p) for p in ("head", "body")),
                                   merge.s()),
    "nested chords": lambda: cloudq.chord(
        [cloudq.chord([add.s(i, 1) for i in range(3)], tsum.s()), add.s(10, 10)], tsum.s()),
}


@pytest.mark.parametrize("build", CANVASES.values(), ids=CANVASES.keys())
def test_to_dict_is_json_and_signature_rebuilds_the_same_canvas(
    build: Callable[[], cloudq.Signature],
) -> None:
    sig = build()

    form = json.loads(json.dumps(sig.to_dict()))
    rebuilt = cloudq.signature(form, app=app)

    assert type(rebuilt) is type(sig)
    assert rebuilt == sig
    assert rebuilt.to_dict() == form


def test_a_rebuilt_nested_canvas_still_runs() -> None:
    form = json.loads(json.dumps(CANVASES["nested chords"]().to_dict()))

    result = cloudq.signature(form, app=app).apply_async()
    work()

    assert result.get(timeout=0) == (1 + 2 + 3) + 20


def test_dict_form_names_its_kind_and_parts() -> None:
    chord = CANVASES["chord"]().to_dict()
    chain = CANVASES["chain"]().to_dict()

    assert chord["subtask_type"] == "chord"
    assert [m["task"] for m in chord["header"]] == [add.name, add.name]
    assert chord["body"]["task"] == tsum.name
    assert chain["subtask_type"] == "chain"
    assert [t["args"] for t in chain["tasks"]] == [[2, 2], [4], [8]]
    assert set(add.s(1).to_dict()) == {"task", "args", "kwargs", "options", "immutable"}


def test_arguments_keep_their_types_through_the_dict_form() -> None:
    args = ((1, 2), datetime(2024, 5, 1, 12, tzinfo=UTC), date(2024, 5, 1), Decimal("1.10"))

    rebuilt = cloudq.signature(json.loads(json.dumps(gather.s(*args).to_dict())), app=app)

    assert rebuilt.args == args
    assert [type(a) for a in rebuilt.args] == [tuple, datetime, date, Decimal]


def test_calling_a_signature_runs_it_here_and_sends_nothing(
    twins: tuple[MemoryTransport, MemoryStore],
) -> None:
    transport, store = twins

    assert add.s(2)(3) == 5
    assert words.s("b", sep="+")("a") == "a+b"
    assert transport.calls == [] and store.calls == []


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: cloudq.chain(add.s(2, 2), add.s(4), add.s(8)), 16),
    (lambda: cloudq.group(add.s(2, 2), add.s(4, 4)), [4, 8]),
    (lambda: cloudq.chord([add.s(i, i) for i in range(10)], tsum.s()), 90),
], ids=["chain", "group", "chord"])
def test_calling_a_chain_group_or_chord_sends_it_as_celery_documents(
    build: Any, expected: Any,
) -> None:
    handle = build()()

    assert queued() != []  # sent, not run here
    work()
    assert handle.get(timeout=0) == expected


# -- Celery's documented examples ----------------------------------------------------------------
def test_piped_chain_adds_up_to_sixteen() -> None:
    result = (add.s(2, 2) | add.s(4) | add.s(8)).apply_async()
    work()

    assert result.get(timeout=0) == 16


def test_chain_function_runs_the_steps_in_order() -> None:
    result = cloudq.chain(add.s(4, 4), mul.s(8), mul.s(10)).delay()
    done = work()

    assert result.get(timeout=0) == 640
    assert [d.task_name for d in done] == [add.name, mul.name, mul.name]


def test_group_results_come_back_in_order() -> None:
    result = cloudq.group(add.s(i, i) for i in range(10)).apply_async()
    work()

    assert isinstance(result, cloudq.GroupResult)
    assert result.get(timeout=0) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_chord_called_with_its_callback_sends_the_callback_the_header_results() -> None:
    result = cloudq.chord(add.s(i, i) for i in range(10))(tsum.s())
    work()

    assert result.get(timeout=0) == 90
    assert runs == ["tsum([0, 2, 4, 6, 8, 10, 12, 14, 16, 18])"]


def test_chord_given_header_and_body_runs_the_body_once_after_the_header() -> None:
    result = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    done = work()

    assert result.get(timeout=0) == 6
    assert [d.task_name for d in done][-1] == tsum.name
    assert callback_runs() == 1


def test_a_group_piped_into_a_task_becomes_a_chord() -> None:
    result = (cloudq.group(add.s(i, i) for i in range(10)) | tsum.s()).apply_async()
    work()

    assert result.get(timeout=0) == 90


def test_map_and_starmap_are_one_task_each() -> None:
    mapped = double.map([1, 2, 3]).delay()
    starred = add.starmap(zip(range(10), range(10), strict=True)).delay()
    done = work()

    assert mapped.get(timeout=0) == [2, 4, 6]
    assert starred.get(timeout=0) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert len(done) == 2


def test_chunks_split_the_work_into_a_group_of_starmaps() -> None:
    result = add.chunks(zip(range(100), range(100), strict=True), 10).apply_async()
    done = work()

    assert len(done) == 10
    assert result.get(timeout=0) == [[2 * i for i in range(n, n + 10)] for n in range(0, 100, 10)]


def test_link_sends_the_callback_with_the_return_value() -> None:
    then = add.s(16)
    then.freeze()

    result = add.apply_async((2, 2), link=then)
    work()

    assert result.get(timeout=0) == 4
    assert app.AsyncResult(then.id or "").get(timeout=0) == 20


def test_an_immutable_link_is_sent_its_own_arguments_only() -> None:
    add.apply_async((2, 2), link=note.si("done"))
    work()

    assert runs == ["note('done')"]


def test_link_error_calls_the_errback_with_request_exception_and_traceback() -> None:
    sig = boom.s("cover")
    returned = sig.link_error(on_error.s())

    result = sig.apply_async()
    work()

    assert returned == on_error.s()
    [(request, exc, traceback)] = errbacks
    assert (request["id"], request["task"], request["args"]) == (result.id, boom.name, ["cover"])
    assert isinstance(exc, RenderError) and str(exc) == "cannot render 'cover'"
    assert isinstance(traceback, str) and "RenderError" in traceback


# -- workflows built from the primitives ---------------------------------------------------------
def test_report_generation_fetches_renders_the_parts_in_parallel_then_merges() -> None:
    parts = ("header", "table", "footer")
    report = cloudq.chain(fetch.s("r-7"), cloudq.group(render.s(p) for p in parts), merge.s())

    result = report.apply_async()
    done = work()

    assert result.get(timeout=0) == (
        "<header of report r-7><table of report r-7><footer of report r-7>")
    assert runs == ["fetch(r-7)"]
    assert Counter(d.task_name for d in done) == {fetch.name: 1, render.name: 3, merge.name: 1}


def test_nested_chords_pass_the_inner_callback_result_to_the_outer_one() -> None:
    inner = cloudq.chord([add.s(i, 1) for i in range(3)], tsum.s())

    result = cloudq.chord([inner, add.s(10, 10)], tsum.s()).apply_async()
    work()

    assert result.get(timeout=0) == 26
    assert runs == ["tsum([1, 2, 3])", "tsum([6, 20])"]


def test_chains_inside_a_group_each_give_their_last_result() -> None:
    group = cloudq.group(add.s(1, 1) | add.s(2), add.s(3, 3), add.s(4, 4) | mul.s(10))

    result = group.apply_async()
    work()

    assert result.get(timeout=0) == [4, 6, 80]


def test_a_chord_inside_a_chain_takes_the_previous_result_and_passes_its_own_on() -> None:
    flow = cloudq.chain(add.s(1, 1), cloudq.chord([add.s(1), add.s(2)], tsum.s()), add.s(100))

    result = flow.apply_async()
    work()

    assert result.get(timeout=0) == (3 + 4) + 100


def test_a_chord_inside_a_chord_inside_a_chain() -> None:
    inner = cloudq.chord([add.s(1), add.s(2)], tsum.s())
    flow = cloudq.chain(add.s(0, 1), cloudq.chord([inner, add.s(10)], tsum.s()), double.s())

    result = flow.apply_async()
    work()

    assert result.get(timeout=0) == 2 * ((2 + 3) + 11)


def test_a_group_inside_a_group_gives_the_list_of_its_results() -> None:
    result = cloudq.group([cloudq.group([add.s(1, 1), add.s(2, 2)]), add.s(3, 3)]).apply_async()
    work()

    assert result.get(timeout=0) == [[2, 4], 6]


def test_a_group_at_the_end_of_a_chain_gives_the_list_of_its_results() -> None:
    result = cloudq.chain(add.s(1, 1), cloudq.group(add.s(i) for i in range(3))).apply_async()
    work()

    assert result.get(timeout=0) == [2, 3, 4]


def test_arguments_given_to_a_group_go_to_every_member() -> None:
    result = cloudq.group(add.s(1), add.s(2)).apply_async((10,))
    work()

    assert result.get(timeout=0) == [11, 12]


def test_a_chord_with_an_empty_header_calls_back_at_once_with_no_results() -> None:
    result = cloudq.chord([], tsum.s()).apply_async()
    work()

    assert result.get(timeout=0) == 0
    assert runs == ["tsum([])"]


# -- redelivery: the callback runs once ----------------------------------------------------------
def test_header_messages_delivered_twice_fire_the_callback_once() -> None:
    result = cloudq.chord([add.s(i, i) for i in range(5)], tsum.s()).apply_async()
    header = receive(5)

    for message in header:
        process_message(app, message)
        process_message(app, again(message))
    app.transport.ack(header)
    work()

    assert result.get(timeout=0) == 20
    assert callback_runs() == 1


def test_copies_of_the_header_arriving_after_the_callback_ran_do_not_fire_it_again() -> None:
    result = cloudq.chord([add.s(i, i) for i in range(12)], tsum.s()).apply_async()
    header = receive(12)
    deliver(header)
    work()
    assert callback_runs() == 1

    app.transport.send_batch("default", [OutgoingMessage(body=m.body) for m in header])
    done = work()

    assert len(done) == 12  # every copy ran again...
    assert callback_runs() == 1  # ...and none fired the callback
    assert result.get(timeout=0) == 132


def test_a_worker_that_failed_while_sending_the_callback_sends_it_when_the_member_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    first, last = receive(2)
    deliver([first])

    def sqs_unreachable(envelopes: Sequence[Envelope]) -> None:
        raise ConnectionError("SQS unreachable")

    monkeypatch.setattr(app, "publish", sqs_unreachable)
    with pytest.raises(ConnectionError):
        process_message(app, last)  # not acknowledged: SQS will deliver it again
    monkeypatch.undo()
    assert result.state == "PENDING"

    process_message(app, again(last))
    app.transport.ack([last])
    work()

    assert result.get(timeout=0) == 6
    assert callback_runs() == 1


class WorkerKilled(BaseException):
    """The process died here: nothing after this point ran (no handler, no cleanup)."""


def test_a_worker_killed_while_sending_the_callback_is_replaced_by_the_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    first, last = receive(2)
    deliver([first])

    def killed(*_: Any, **__: Any) -> None:
        raise WorkerKilled

    monkeypatch.setattr(app, "publish", killed)
    monkeypatch.setattr(app.store, "delete", killed)  # a killed process cleans nothing up
    with pytest.raises(WorkerKilled):
        process_message(app, last)
    monkeypatch.undo()
    assert result.state == "PENDING"

    after_the_timeout = time.time() + app.settings.visibility_timeout
    monkeypatch.setattr(time, "time", lambda: after_the_timeout)
    process_message(app, again(last))  # SQS hands the member back after its visibility timeout
    app.transport.ack([last])
    work()

    assert result.get(timeout=0) == 6
    assert callback_runs() == 1


def test_two_deliveries_of_the_last_member_at_the_same_time_fire_the_callback_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    first, last = receive(2)
    deliver([first])
    publish = app.publish
    duplicate_ran: list[bool] = []

    def publish_after_a_concurrent_duplicate(envelopes: Sequence[Envelope]) -> None:
        if not duplicate_ran and any(e.task == tsum.name for e in envelopes):
            duplicate_ran.append(True)
            process_message(app, again(last))  # another worker got a copy meanwhile
        publish(envelopes)

    monkeypatch.setattr(app, "publish", publish_after_a_concurrent_duplicate)
    process_message(app, last)
    app.transport.ack([last])
    work()

    assert duplicate_ran
    assert result.get(timeout=0) == 6
    assert callback_runs() == 1


def test_a_chord_bigger_than_a_shard_is_joined_shard_by_shard(
    monkeypatch: pytest.MonkeyPatch, twins: tuple[MemoryTransport, MemoryStore],
) -> None:
    monkeypatch.setattr(join, "SHARD_SIZE", 4)
    _, store = twins
    result = cloudq.chord([add.s(i, i) for i in range(10)], tsum.s()).apply_async()
    header = receive(10)

    for message in header:
        process_message(app, message)
        process_message(app, again(message))
    app.transport.ack(header)
    work()

    assert result.get(timeout=0) == 90
    assert callback_runs() == 1
    shards = {key for action, key in store.calls if action == "UpdateItem?"}
    assert len(shards) == 3  # members 0-3, 4-7, 8-9


def test_a_member_that_retries_counts_once_when_it_finally_succeeds() -> None:
    result = cloudq.chord([add.s(1, 1), flaky.s(5)], tsum.s()).apply_async()
    work()

    assert result.get(timeout=0) == 7
    assert runs == ["flaky#0", "flaky#1", "tsum([2, 5])"]


# -- failure: the chord fails instead of hanging -------------------------------------------------
def test_a_failing_member_fails_the_callback_with_chord_error_and_calls_its_errback() -> None:
    body = tsum.s()
    body.link_error(on_error.s())

    result = cloudq.chord([add.s(1, 1), boom.s("chart")], body).apply_async()
    work()

    assert result.state == "FAILURE"
    with pytest.raises(cloudq.ChordError, match="cannot render 'chart'"):
        result.get(timeout=0)
    assert callback_runs() == 0
    [(request, exc, traceback)] = errbacks
    assert (request["id"], request["task"]) == (result.id, tsum.name)
    assert isinstance(exc, cloudq.ChordError)
    assert isinstance(traceback, str)


ENDINGS = {
    "failed": lambda: boom.s("x"),
    "expired": lambda: add.s(2, 2).set(expires=datetime.now(UTC) - timedelta(seconds=1)),
    "rejected": lambda: refuse.s("x"),
    "not registered": lambda: cloudq.signature("canvas.no_such_task", args=(1,), app=app),
}


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
def test_a_member_that_ends_without_a_result_still_counts(ending: Any) -> None:
    result = cloudq.chord([add.s(1, 1), ending(), add.s(3, 3)], tsum.s()).apply_async()
    work()

    assert result.state == "FAILURE"
    with pytest.raises(cloudq.ChordError):
        result.get(timeout=0)
    assert callback_runs() == 0
    assert queued() == []


def test_a_member_revoked_before_it_ran_still_counts() -> None:
    chord = cloudq.chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], tsum.s())
    revoke_member(chord, 1)

    result = chord.apply_async()
    done = work()

    assert result.state == "FAILURE"
    with pytest.raises(cloudq.ChordError):
        result.get(timeout=0)
    assert [d.outcome.value for d in done] == ["success", "revoked", "success"]
    assert callback_runs() == 0


def test_chord_error_for_a_revoked_member_says_it_was_revoked() -> None:
    chord = cloudq.chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    revoke_member(chord, 1)

    result = chord.apply_async()
    work()

    with pytest.raises(cloudq.ChordError, match=r"(?i)revoked"):
        result.get(timeout=0)


def test_a_chain_that_breaks_inside_a_member_counts_as_failed() -> None:
    member = add.s(1, 1) | boom.s() | add.s(100)
    chord = cloudq.chord([member, add.s(2, 2)], tsum.s())
    chord.freeze()  # gives the member chain's last step its id

    result = chord.apply_async()
    done = work()

    with pytest.raises(cloudq.ChordError, match="cannot render 2"):
        result.get(timeout=0)
    assert [d.task_name for d in done].count(add.name) == 2  # the step after boom never ran
    with pytest.raises(RenderError):  # the member chain's own result is the break
        app.AsyncResult(member.tasks[-1].id or "").get(timeout=0)


def test_a_failed_step_makes_the_chain_result_raise_its_exception() -> None:
    result = (add.s(1, 1) | boom.s() | add.s(2)).apply_async()
    done = work()

    with pytest.raises(RenderError, match="cannot render 2"):
        result.get(timeout=0)
    assert [d.task_name for d in done] == [add.name, boom.name]


def test_a_failing_inner_chord_fails_the_outer_chord() -> None:
    inner = cloudq.chord([add.s(1, 1), boom.s("inner")], tsum.s())

    result = cloudq.chord([inner, add.s(2, 2)], tsum.s()).apply_async()
    work()

    with pytest.raises(cloudq.ChordError):
        result.get(timeout=0)
    assert callback_runs() == 0
    assert queued() == []


def test_a_failed_chord_inside_a_chain_fails_the_chain() -> None:
    flow = cloudq.chain(add.s(1, 1), cloudq.chord([boom.s(), add.s(1)], tsum.s()), double.s())

    result = flow.apply_async()
    work()

    with pytest.raises(cloudq.ChordError):
        result.get(timeout=0)


def test_link_error_on_a_chord_is_called_when_the_chord_fails() -> None:
    chord = cloudq.chord([add.s(1, 1), boom.s("x")], tsum.s())
    chord.link_error(on_error.s())

    result = chord.apply_async()
    work()

    assert result.state == "FAILURE"
    [(request, exc, _)] = errbacks
    assert request["id"] == result.id and isinstance(exc, cloudq.ChordError)


def test_link_on_a_chain_calls_back_with_the_chain_result() -> None:
    result = (add.s(1, 1) | add.s(2)).apply_async(link=note.s())
    work()

    assert result.get(timeout=0) == 4
    assert runs == ["note(4)"]


def test_a_chain_step_whose_arguments_do_not_fit_fails_the_chain_instead_of_looping() -> None:
    result = (add.s(2, 2) | add.s(4, 5)).apply_async()  # add(4, 4, 5)

    done = work()  # nothing escapes the worker: the first step's message is acknowledged

    assert [(d.task_name, d.outcome.value) for d in done] == [(add.name, "success")]
    with pytest.raises(cloudq.ValidationError, match="too many positional arguments"):
        result.get(timeout=0)


def test_a_chord_body_whose_arguments_do_not_fit_fails_the_chord_instead_of_hanging() -> None:
    body = add.s()
    body.link_error(on_error.s())

    result = cloudq.chord([add.s(1, 1)], body).apply_async()  # add([2]): y is missing
    done = work()

    assert [(d.task_name, d.outcome.value) for d in done] == [
        (add.name, "success"), (on_error.name, "success")]  # the member, then the errback
    with pytest.raises(cloudq.ValidationError, match="missing a required argument"):
        result.get(timeout=0)
    [(request, _, _)] = errbacks
    assert request["id"] == result.id


# -- what the join costs -------------------------------------------------------------------------
def test_each_member_costs_one_join_write_and_the_join_reads_nothing_until_it_fires(
    twins: tuple[MemoryTransport, MemoryStore],
) -> None:
    transport, store = twins
    size = 25
    result = cloudq.chord([add.s(i, i) for i in range(size)], tsum.s()).apply_async()
    sent = Counter(action for action, _ in transport.calls)
    store.calls.clear()

    deliver(receive(size))

    join_calls = Counter(action for action, key in store.calls if key.startswith("chord#"))
    assert sent == {"SendMessageBatch": 3}  # 10 per call, none one by one
    assert join_calls == {
        "UpdateItem?": size,  # each member adds its index if absent: the join's only write
        "PutItem?": 1,  # the firing member claims the callback...
        "GetItem": 1,  # ...reads the chord (body, size) once...
        "PutItem": 1,  # ...and marks the claim sent
    }
    assert Counter(action for action, _ in store.calls)["BatchGetItem"] == 1
    work()
    assert result.get(timeout=0) == 600
