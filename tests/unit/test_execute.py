"""process_message: from a received message to a stored outcome, with the memory twins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq import signals
from cloudq.runners.execute import Outcome, process_message
from cloudq.task import Task
from cloudq.transports.base import OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock, Handled

Drain = Callable[..., "list[Handled]"]
DeadLetters = Callable[..., list[ReceivedMessage]]
Queued = Callable[..., list[wire.Envelope]]


class InsufficientFunds(Exception):
    """Importable by the reader, so it comes back as itself."""


def outcomes(handled: list[Handled]) -> list[str]:
    return [h.outcome for h in handled]


@pytest.fixture
def add(app: cloudq.App) -> Task[Any, int]:
    runs: list[tuple[int, int]] = []

    @app.task(name="shop.add")
    def add(x: int, y: int) -> int:
        runs.append((x, y))
        return x + y

    add.runs = runs  # type: ignore[attr-defined]
    return add


# -- success and failure ---------------------------------------------------------------------------
def test_success_stores_the_value_with_its_types(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.quote")
    def quote(at: datetime) -> dict[str, Any]:
        return {"at": at + timedelta(days=1), "price": Decimal("19.99"), "sizes": (1, 2)}

    result = quote.delay(datetime(2026, 1, 1, tzinfo=UTC))
    handled = drain(app)

    assert outcomes(handled) == ["success"]
    assert result.state == "SUCCESS"
    assert result.successful() and result.ready()
    assert result.get(timeout=1) == {
        "at": datetime(2026, 1, 2, tzinfo=UTC), "price": Decimal("19.99"), "sizes": (1, 2)}
    assert result.date_done is not None
    assert app.transport.depth("default") == 0


def test_failure_stores_type_message_and_traceback(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.charge")
    def charge(amount: int) -> None:
        raise InsufficientFunds(f"cannot charge {amount}")

    result = charge.delay(500)
    handled = drain(app)

    assert outcomes(handled) == ["failure"]
    assert result.state == "FAILURE"
    assert result.failed()
    assert isinstance(result.result, InsufficientFunds)
    assert "InsufficientFunds: cannot charge 500" in (result.traceback or "")
    assert "in charge" in (result.traceback or "")
    with pytest.raises(InsufficientFunds, match="cannot charge 500"):
        result.get(timeout=1)
    assert app.transport.depth("default") == 0  # a failure is an outcome: the message is done


def test_builtin_exception_is_reraised_with_its_type(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.lookup")
    def lookup(sku: str) -> None:
        raise KeyError(sku)

    result = lookup.delay("A-1")
    drain(app)

    with pytest.raises(KeyError, match="A-1"):
        result.get(timeout=1)


def test_exception_of_a_type_the_reader_cannot_import_is_a_remote_task_error(
    app: cloudq.App, drain: Drain
) -> None:
    class PaymentGatewayDown(Exception):
        pass

    @app.task(name="shop.pay")
    def pay() -> None:
        raise PaymentGatewayDown("gateway timeout")

    result = pay.delay()
    drain(app)

    with pytest.raises(cloudq.RemoteTaskError) as caught:
        result.get(timeout=1)
    assert caught.value.exc_type.endswith("PaymentGatewayDown")
    assert "PaymentGatewayDown: gateway timeout" in str(caught.value)


def test_async_task_body_is_awaited(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.fetch")
    async def fetch(n: int) -> int:
        return n * 2

    result = fetch.delay(21)
    drain(app)

    assert result.get(timeout=1) == 42


def test_arguments_are_rebuilt_into_their_annotated_types(
    app: cloudq.App, drain: Drain
) -> None:
    seen: list[Any] = []

    @app.task(name="shop.book")
    def book(when: datetime, amount: Decimal) -> None:
        seen.extend([when, amount])

    # A producer that only speaks plain JSON (an EventBridge schedule, another language):
    app.publish([wire.Envelope(task="shop.book", args=["2026-03-01T10:00:00+00:00", "12.50"])])
    drain(app)

    assert seen == [datetime(2026, 3, 1, 10, tzinfo=UTC), Decimal("12.50")]


def test_result_too_large_to_store_fails_the_task(app: cloudq.App, drain: Drain) -> None:
    @app.task(name="shop.export")
    def export() -> str:
        return "x" * 400_000

    result = export.delay()
    drain(app)

    assert result.state == "FAILURE"
    with pytest.raises(cloudq.EncodeError, match=r"too large to store.*set payload_bucket"):
        result.get(timeout=1)


# -- reject ----------------------------------------------------------------------------------------
def test_reject_without_requeue_dead_letters_and_fails(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    @app.task(name="shop.import_row")
    def import_row(row: str) -> None:
        raise cloudq.Reject("row is malformed", requeue=False)

    result = import_row.delay("a;b")
    handled = drain(app)

    assert outcomes(handled) == ["rejected"]
    assert result.state == "FAILURE"
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"] == "rejected: row is malformed"
    assert app.transport.depth("default") == 0


def test_reject_with_requeue_hands_the_message_back_until_it_is_quarantined(
    app: cloudq.App, drain: Drain, dead_letters: Any
) -> None:
    @app.task(name="shop.later")
    def later() -> None:
        raise cloudq.Reject("not now", requeue=True)

    result = later.delay()
    handled = drain(app)

    max_receives = app.settings.max_receive_count
    assert [(h.outcome, h.disposition.ack) for h in handled] == (
        [("requeued", False)] * max_receives + [("poison", True)]
    )
    assert result.state == "FAILURE"
    [dead] = dead_letters(app)
    assert "received 6 times" in dead.attributes["cloudq-reason"]


# -- not run ---------------------------------------------------------------------------------------
def test_expired_message_is_revoked_and_not_run(
    app: cloudq.App, add: Task[Any, int], drain: Drain, clock: FakeClock
) -> None:
    result = add.apply_async((1, 2), expires=10)
    clock.advance(11)

    handled = drain(app)

    assert outcomes(handled) == ["expired"]
    assert add.runs == []  # type: ignore[attr-defined]
    assert result.state == "REVOKED"
    with pytest.raises(cloudq.TaskRevokedError, match="expired"):
        result.get(timeout=1)


def test_message_before_its_expiry_runs(
    app: cloudq.App, add: Task[Any, int], drain: Drain, clock: FakeClock
) -> None:
    result = add.apply_async((1, 2), expires=10)
    clock.advance(9)

    drain(app)

    assert result.get(timeout=1) == 3


def test_revoked_task_is_not_run(app: cloudq.App, add: Task[Any, int], drain: Drain) -> None:
    result = add.delay(1, 2)

    result.revoke()
    assert result.state == "REVOKED"
    handled = drain(app)

    assert outcomes(handled) == ["revoked"]
    assert add.runs == []  # type: ignore[attr-defined]
    with pytest.raises(cloudq.TaskRevokedError):
        result.get(timeout=1)


def test_message_not_yet_due_hops_instead_of_running(
    app: cloudq.App, add: Task[Any, int], drain: Drain, queued: Queued, clock: FakeClock
) -> None:
    result = add.apply_async((1, 2), countdown=2 * 3600)
    [sent] = queued(app)
    clock.advance(900)  # SQS's longest delay is over, the task's is not

    handled = drain(app)

    assert outcomes(handled) == ["deferred"]
    assert handled[0].disposition.ack
    assert add.runs == []  # type: ignore[attr-defined]
    [hopped] = queued(app)  # the received copy is gone; a fresh one waits
    assert hopped.eta == sent.eta and hopped.id == sent.id
    assert app.transport.depth("default") == 0
    for _ in range(7):  # 900 s at a time until two hours have passed
        clock.advance(900)
        drain(app)
    assert add.runs == [(1, 2)]  # type: ignore[attr-defined]
    assert result.get(timeout=1) == 3


# -- poison ----------------------------------------------------------------------------------------
def test_garbage_body_is_dead_lettered_and_the_next_message_still_runs(
    app: cloudq.App, add: Task[Any, int], drain: Drain, dead_letters: DeadLetters
) -> None:
    app.transport.send("default", OutgoingMessage(body="\x00 not a task"))
    result = add.delay(2, 2)

    handled = drain(app)

    assert outcomes(handled) == ["poison", "success"]
    assert result.get(timeout=1) == 4
    [dead] = dead_letters(app)
    assert dead.body == "\x00 not a task"
    assert dead.attributes["cloudq-reason"].startswith("DecodeError: message body is not JSON")
    assert dead.attributes["cloudq-source-queue"] == "default"
    assert app.transport.bodies("default") == []  # type: ignore[attr-defined]


def test_unknown_task_is_dead_lettered_and_its_result_fails(
    app: cloudq.App, add: Task[Any, int], drain: Drain, dead_letters: DeadLetters
) -> None:
    orphan = app.send_task("shop.removed_last_week", args=(1,))
    good = add.delay(1, 1)

    handled = drain(app)

    assert outcomes(handled) == ["poison", "success"]
    assert good.get(timeout=1) == 2
    assert orphan.state == "FAILURE"
    with pytest.raises(cloudq.NotRegistered, match=r"shop\.removed_last_week"):
        orphan.get(timeout=1)
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith(
        "NotRegistered: task 'shop.removed_last_week' is not registered")


def test_invalid_envelope_with_a_readable_id_fails_that_task(
    app: cloudq.App, drain: Drain, dead_letters: DeadLetters
) -> None:
    body = '{"v": 1, "id": "task-17", "task": "shop.add", "retries": "often"}'
    app.transport.send("default", OutgoingMessage(body=body))

    handled = drain(app)

    assert outcomes(handled) == ["poison"]
    meta = app.backend.get("task-17")
    assert meta.state == "FAILURE"
    assert isinstance(meta.result, cloudq.DecodeError)
    assert "retries" in str(meta.result)
    assert "invalid task message" in dead_letters(app)[0].attributes["cloudq-reason"]


def test_arguments_that_do_not_fit_the_task_are_poison(
    app: cloudq.App, add: Task[Any, int], drain: Drain, dead_letters: DeadLetters
) -> None:
    app.publish([wire.Envelope(id="bad-args", task="shop.add", args=["one", 2])])

    handled = drain(app)

    assert outcomes(handled) == ["poison"]
    assert add.runs == []  # type: ignore[attr-defined]
    assert app.backend.get("bad-args").state == "FAILURE"
    assert "ValidationError" in dead_letters(app)[0].attributes["cloudq-reason"]


def test_unsigned_message_is_poison_to_a_worker_that_requires_signatures(
    make_app: Callable[..., cloudq.App], drain: Drain, dead_letters: DeadLetters
) -> None:
    app = make_app(signing_key="k")
    runs: list[int] = []
    app.task(name="shop.ping")(lambda: runs.append(1))
    unsigned = wire.encode(wire.Envelope(task="shop.ping"))
    app.transport.send("default", OutgoingMessage(body=unsigned))
    app.send_task("shop.ping")  # signed by the app

    handled = drain(app)

    assert outcomes(handled) == ["poison", "success"]
    assert runs == [1]
    assert dead_letters(app)[0].attributes["cloudq-reason"].startswith("SignatureError")


def test_message_delivered_more_than_max_receive_count_times_is_quarantined(
    make_app: Callable[..., cloudq.App], dead_letters: DeadLetters
) -> None:
    app = make_app(max_receive_count=2)
    runs: list[int] = []
    task = app.task(name="shop.crashy")(lambda: runs.append(1))
    result = task.delay()
    for _ in range(2):  # two workers took it and died before finishing
        [message] = app.transport.receive("default")
        app.transport.retry_later(message, 0)
    [third] = app.transport.receive("default")

    disposition = process_message(app, third)

    assert third.receive_count == 3
    assert disposition.outcome is Outcome.POISON and disposition.ack
    assert runs == []
    assert result.state == "FAILURE"
    assert "received 3 times (max_receive_count=2)" in (
        dead_letters(app)[0].attributes["cloudq-reason"])


# -- duplicates ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("idempotent", "runs_expected"), [(True, 1), (False, 2)])
def test_idempotent_task_that_already_succeeded_is_not_run_again(
    app: cloudq.App, idempotent: bool, runs_expected: int
) -> None:
    runs: list[int] = []
    task = app.task(name="shop.ship", idempotent=idempotent)(lambda order: runs.append(order))
    result = task.delay(7)
    [first] = app.transport.receive("default")
    process_message(app, first)
    app.transport.retry_later(first, 0)  # the ack was lost: SQS delivers the message again
    [again] = app.transport.receive("default")

    disposition = process_message(app, again)

    assert len(runs) == runs_expected
    assert disposition.outcome is (Outcome.SKIPPED if idempotent else Outcome.SUCCESS)
    assert result.state == "SUCCESS"


# -- state while running ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "options", "state_while_running"),
    [
        ({"task_track_started": True}, {}, "STARTED"),
        ({}, {"track_started": True}, "STARTED"),
        ({}, {}, "PENDING"),
        ({"task_track_started": True}, {"track_started": False}, "PENDING"),
    ],
)
def test_track_started_writes_started_before_the_body_runs(
    make_app: Callable[..., cloudq.App], drain: Drain, settings: dict[str, Any],
    options: dict[str, Any], state_while_running: str,
) -> None:
    app = make_app(**settings)
    seen: list[str] = []

    @app.task(name="shop.slow", bind=True, **options)
    def slow(self: Task[Any, None]) -> None:
        seen.append(app.AsyncResult(self.request.id).state)

    result = slow.delay()
    drain(app)

    assert seen == [state_while_running]
    assert result.state == "SUCCESS"


def test_update_state_progress_is_visible_to_any_result_handle(
    app: cloudq.App, drain: Drain
) -> None:
    seen: list[tuple[str, Any]] = []

    @app.task(name="shop.resize", bind=True)
    def resize(self: Task[Any, str]) -> str:
        self.update_state(state="PROGRESS", meta={"current": 3, "total": 10})
        other_handle = cloudq.AsyncResult(self.request.id, app=app)
        seen.append((other_handle.state, other_handle.info))
        return "done"

    result = resize.delay()
    drain(app)

    assert seen == [("PROGRESS", {"current": 3, "total": 10})]
    assert result.get(timeout=1) == "done"


@pytest.mark.parametrize(
    ("settings", "options"), [({}, {"ignore_result": True}), ({"task_ignore_result": True}, {})]
)
def test_ignored_result_is_not_stored(
    make_app: Callable[..., cloudq.App], drain: Drain, settings: dict[str, Any],
    options: dict[str, Any],
) -> None:
    app = make_app(**settings)
    task = app.task(name="shop.fire_and_forget", **options)(lambda: "value")
    result = task.delay()

    handled = drain(app)

    assert outcomes(handled) == ["success"]
    assert result.state == "PENDING"
    assert not any(action == "PutItem" for action, _ in app.store.calls)  # type: ignore[attr-defined]


# -- self.request ----------------------------------------------------------------------------------
def test_request_describes_the_running_invocation(app: cloudq.App, drain: Drain) -> None:
    seen: list[cloudq.Request] = []

    @app.task(name="shop.inspect", bind=True)
    def inspect_me(self: Task[Any, None], a: int, b: int = 0, **extra: Any) -> None:
        seen.append(self.request)

    result = inspect_me.apply_async((1, 2), {"note": "n"}, headers={"trace": "t-9"})
    [handled] = drain(app)

    [request] = seen
    assert request.id == result.id
    assert request.task == "shop.inspect"
    assert request.retries == 0
    assert request.args == (1, 2)
    assert request.kwargs == {"note": "n"}
    assert request.root_id == result.id
    assert request.parent_id is None
    assert request.headers == {"trace": "t-9"}
    assert request.delivery_info == {
        "queue": "default", "receive_count": 1, "message_id": handled.message.message_id}
    assert inspect_me.request.id is None  # outside the run there is no current request


def test_request_keeps_arguments_as_they_were_passed(app: cloudq.App, drain: Drain) -> None:
    seen: list[tuple[Any, ...]] = []

    @app.task(name="shop.inspect", bind=True)
    def inspect_me(self: Task[Any, None], a: int, b: int = 0) -> None:
        seen.append((self.request.args, self.request.kwargs))

    inspect_me.apply_async((1,), {"b": 2})
    drain(app)

    assert seen == [((1,), {"b": 2})]


# -- hooks -----------------------------------------------------------------------------------------
def recording_base(calls: list[tuple[Any, ...]], *, raising: bool = False) -> type[Task[Any, Any]]:
    class Recording(Task[Any, Any]):
        def _record(self, *call: Any) -> None:
            calls.append(call)
            if raising and call[0] != "before_start":
                raise RuntimeError(f"{call[0]} hook is broken")

        def before_start(self, task_id, args, kwargs):  # type: ignore[no-untyped-def]
            self._record("before_start", task_id, args, kwargs)

        def on_success(self, retval, task_id, args, kwargs):  # type: ignore[no-untyped-def]
            self._record("on_success", retval, task_id, args, kwargs)

        def on_failure(self, exc, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
            self._record("on_failure", exc, task_id, args, kwargs, einfo)

        def on_retry(self, exc, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
            self._record("on_retry", exc, task_id, args, kwargs, einfo)

        def after_return(self, status, retval, task_id, args, kwargs, einfo):  # type: ignore[no-untyped-def]
            self._record("after_return", status, retval, task_id, args, kwargs, einfo)

    return Recording


def test_hooks_on_success_get_celerys_arguments(app: cloudq.App, drain: Drain) -> None:
    calls: list[tuple[Any, ...]] = []
    add = app.task(name="shop.add", base=recording_base(calls))(lambda x, *, y=0: x + y)

    result = add.apply_async((2,), {"y": 3})
    drain(app)

    tid = result.id
    assert calls == [
        ("before_start", tid, (2,), {"y": 3}),
        ("on_success", 5, tid, (2,), {"y": 3}),
        ("after_return", "SUCCESS", 5, tid, (2,), {"y": 3}, None),
    ]


def test_hooks_on_failure_get_the_exception_and_traceback(app: cloudq.App, drain: Drain) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(name="shop.div", base=recording_base(calls))
    def div(x: int, y: int) -> float:
        return x / y

    result = div.delay(1, 0)
    drain(app)

    names = [c[0] for c in calls]
    assert names == ["before_start", "on_failure", "after_return"]
    _, exc, task_id, args, kwargs, einfo = calls[1]
    assert isinstance(exc, ZeroDivisionError)
    assert (task_id, args, kwargs) == (result.id, (1, 0), {})
    assert "ZeroDivisionError" in einfo and "Traceback" in einfo
    assert calls[2][1:3] == ("FAILURE", exc)


def test_hook_on_retry_gets_the_reason(app: cloudq.App, drain: Drain) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(name="shop.flaky", bind=True, base=recording_base(calls))
    def flaky(self: Task[Any, None]) -> None:
        raise self.retry(exc=ConnectionError("reset"), countdown=60)

    result = flaky.delay()
    drain(app)

    assert [c[0] for c in calls] == ["before_start", "on_retry", "after_return"]
    _, exc, task_id, _args, _kwargs, einfo = calls[1]
    assert isinstance(exc, ConnectionError) and task_id == result.id
    assert isinstance(einfo, str)


@pytest.mark.parametrize(("fails", "state"), [(False, "SUCCESS"), (True, "FAILURE")])
def test_a_hook_that_raises_does_not_change_the_outcome(
    app: cloudq.App, drain: Drain, fails: bool, state: str
) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(name="shop.job", base=recording_base(calls, raising=True))
    def job() -> str:
        if fails:
            raise ValueError("job failed")
        return "ok"

    result = job.delay()
    handled = drain(app)

    assert outcomes(handled) == [state.lower()]
    assert result.state == state
    assert [c[0] for c in calls][-1] == "after_return"  # every hook was still called
    assert app.transport.depth("default") == 0


# -- signals ---------------------------------------------------------------------------------------
@pytest.fixture
def fired() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    log: list[tuple[str, dict[str, Any]]] = []
    watched = [signals.task_received, signals.task_prerun, signals.task_postrun,
               signals.task_success, signals.task_failure, signals.task_retry,
               signals.task_revoked, signals.task_rejected]
    receivers = []
    for signal in watched:
        def receiver(sender: Any = None, signal: Any = signal, **kwargs: Any) -> None:
            log.append((signal.name, {"sender": sender, **kwargs}))
        signal.connect(receiver)
        receivers.append((signal, receiver))
    yield log
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_signals_fire_around_a_successful_run(
    app: cloudq.App, add: Task[Any, int], drain: Drain, fired: list[tuple[str, dict[str, Any]]]
) -> None:
    result = add.delay(1, 2)
    drain(app)

    assert [name for name, _ in fired] == [
        "task_received", "task_prerun", "task_success", "task_postrun"]
    by_name = dict(fired)
    assert by_name["task_prerun"]["task_id"] == result.id
    assert by_name["task_prerun"]["args"] == (1, 2)
    assert by_name["task_success"]["result"] == 3
    assert by_name["task_postrun"]["state"] == "SUCCESS"
    assert all(kwargs["sender"] is add for _, kwargs in fired)


def test_signals_fire_for_failure_retry_revoke_and_reject(
    app: cloudq.App, add: Task[Any, int], drain: Drain, fired: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task(name="shop.fails")
    def fails() -> None:
        raise ValueError("nope")

    @app.task(name="shop.retries", bind=True)
    def retries(self: Task[Any, None]) -> None:
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    failed = fails.delay()
    retries.delay()
    add.delay(1, 1).revoke()
    app.transport.send("default", OutgoingMessage(body="junk"))
    drain(app)

    names = {name for name, _ in fired}
    assert {"task_failure", "task_retry", "task_revoked", "task_rejected"} <= names
    failure = next(kwargs for name, kwargs in fired if name == "task_failure")
    assert failure["task_id"] == failed.id and isinstance(failure["exception"], ValueError)


def test_a_signal_receiver_that_raises_does_not_break_the_task(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    def broken(sender: Any = None, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.task_prerun.connect(broken)
    try:
        result = add.delay(2, 2)
        drain(app)
    finally:
        signals.task_prerun.disconnect(broken)

    assert result.get(timeout=1) == 4


# -- follow-ups ------------------------------------------------------------------------------------
def sig(name: str, *args: Any, immutable: bool = False) -> dict[str, Any]:
    return {"task": name, "args": list(args), "kwargs": {}, "options": {}, "immutable": immutable}


def test_link_callback_gets_the_return_value_prepended(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    seen: list[tuple[Any, ...]] = []
    app.task(name="shop.record")(lambda *args: seen.append(args))

    links = [sig("shop.record", "sum"), sig("shop.record", "x", immutable=True)]
    add.apply_async((2, 3), link=links)
    drain(app)

    assert sorted(seen, key=repr) == [("x",), (5, "sum")]


def test_a_callback_that_does_not_fit_its_task_does_not_rerun_the_parent(
    app: cloudq.App, add: Task[Any, int], drain: Drain, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="shop.label")
    def label(text: str) -> str:  # the parent returns an int: the callback cannot take it
        return text

    result = add.apply_async((2, 3), link=sig("shop.label"))
    handled = drain(app)

    assert [h.outcome for h in handled] == ["success"]  # once: acked, not delivered again
    assert result.get() == 5
    assert "follow-up shop.label not sent" in caplog.text


def test_a_whole_chain_can_be_the_link_callback(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    then = add.s(1) | add.s(10)  # gets the parent's result: add(add(5, 1), 10)
    chain_result = then.freeze()  # frozen first: the caller can hold the link's result

    parent = add.apply_async((2, 3), link=then)
    handled = drain(app)

    assert parent.get() == 5
    assert [h.outcome for h in handled] == ["success"] * 3
    assert chain_result.get() == 16


def test_link_callback_is_a_child_of_the_task(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    seen: list[cloudq.Request] = []

    @app.task(name="shop.child", bind=True)
    def child(self: Task[Any, None], value: int) -> None:
        seen.append(self.request)

    parent = add.apply_async((1, 1), link=sig("shop.child"))
    drain(app)

    assert (seen[0].parent_id, seen[0].root_id) == (parent.id, parent.id)


def test_link_error_errback_gets_request_exception_and_traceback(
    app: cloudq.App, add: Task[Any, int], drain: Drain
) -> None:
    seen: list[tuple[Any, ...]] = []
    app.task(name="shop.alert")(lambda request, exc, tb: seen.append((request, exc, tb)))

    @app.task(name="shop.breaks")
    def breaks(n: int) -> None:
        raise ValueError(f"bad {n}")

    failed = breaks.apply_async((3,), link=sig("shop.record"), link_error=sig("shop.alert"))
    add.apply_async((1, 1), link_error=sig("shop.alert"))  # succeeds: no errback
    drain(app)

    [(request, exc, traceback)] = seen
    assert request["id"] == failed.id
    assert request["task"] == "shop.breaks"
    assert (request["args"], request["kwargs"], request["retries"]) == ([3], {}, 0)
    assert isinstance(exc, ValueError) and str(exc) == "bad 3"
    assert isinstance(traceback, str)
    assert "Traceback" in traceback and "ValueError: bad 3" in traceback
