"""``GroupResult``: a group's results read back in order, in batches, and found again by id.

The group's messages are run here with ``process_message`` in whatever order a test needs,
so "members finish out of order" and "half of them are done" are set up, not hoped for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import cloudq
from cloudq.runners.execute import process_message
from cloudq.stores.memory import MemoryStore
from cloudq.testing import BurstWorker, memory_app, use_memory
from cloudq.transports.base import ReceivedMessage
from cloudq.transports.memory import MemoryTransport

app = memory_app("groups")


class StockError(Exception):
    """A domain error raised by a member."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def out_of_stock(sku: str) -> int:
    raise StockError(f"{sku} is out of stock")


@pytest.fixture(autouse=True)
def twins() -> Iterator[tuple[MemoryTransport, MemoryStore]]:
    with use_memory(app) as fresh:
        yield fresh


def receive(expect: int) -> list[ReceivedMessage]:
    got: list[ReceivedMessage] = []
    while batch := app.transport.receive("default", max_messages=10):
        got += batch
    assert len(got) == expect
    return got


def deliver(messages: Sequence[ReceivedMessage]) -> None:
    for message in messages:
        process_message(app, message)
    app.transport.ack(messages)


def store_actions(store: MemoryStore) -> Counter[str]:
    return Counter(action for action, _ in store.calls)


# -- reading results -----------------------------------------------------------------------------
def test_get_returns_results_in_group_order_whatever_order_members_finish() -> None:
    result = cloudq.group(add.s(i, 100) for i in range(10)).apply_async()

    deliver(list(reversed(receive(10))))

    assert result.get(timeout=0) == [100 + i for i in range(10)]


def test_state_questions_follow_the_members_as_they_finish() -> None:
    result = cloudq.group(add.s(1, 1), add.s(2, 2), add.s(3, 3)).apply_async()
    first, *rest = receive(3)
    assert (result.ready(), result.successful(), result.failed()) == (False, False, False)
    assert result.completed_count() == 0

    deliver([first])
    assert (result.ready(), result.completed_count()) == (False, 1)

    deliver(rest)
    assert (result.ready(), result.successful(), result.failed()) == (True, True, False)
    assert result.completed_count() == 3


def test_a_failed_member_makes_the_group_failed_and_get_raise_its_error() -> None:
    result = cloudq.group(add.s(1, 1), out_of_stock.s("sku-9"), add.s(3, 3)).apply_async()
    BurstWorker(app).join()

    assert (result.ready(), result.successful(), result.failed()) == (True, False, True)
    assert result.completed_count() == 2
    with pytest.raises(StockError, match="sku-9 is out of stock"):
        result.get(timeout=0)
    values = result.get(timeout=0, propagate=False)
    assert values[0] == 2 and values[2] == 6
    assert isinstance(values[1], StockError)


def test_a_revoked_member_is_ready_but_neither_successful_nor_failed() -> None:
    result = cloudq.group(add.s(1, 1), add.s(2, 2)).apply_async()
    result.results[1].revoke()
    BurstWorker(app).join()

    assert (result.ready(), result.successful(), result.failed()) == (True, False, False)
    with pytest.raises(cloudq.TaskRevokedError):
        result.get(timeout=0)


def test_results_are_the_members_async_results_under_the_group_id() -> None:
    group = cloudq.group(add.s(i, i) for i in range(3))

    result = group.apply_async()
    ran = BurstWorker(app).join()

    assert isinstance(result.id, str) and result.id
    assert [r.id for r in result.results] == [d.task_id for d in ran]
    assert all(isinstance(r, cloudq.AsyncResult) for r in result.results)
    assert len(result) == 3 and list(result) == result.results
    assert result[2].get(timeout=0) == 4


def test_get_gives_up_after_its_timeout_instead_of_waiting_forever() -> None:
    result = cloudq.group(add.s(1, 1), add.s(2, 2)).apply_async()

    with pytest.raises(cloudq.TimeoutError, match="2 of 2 results not ready"):
        result.get(timeout=0.05)


def test_every_poll_is_one_batch_read_not_one_read_per_member(
    twins: tuple[MemoryTransport, MemoryStore],
) -> None:
    _, store = twins
    result = cloudq.group(add.s(i, i) for i in range(150)).apply_async()
    BurstWorker(app).join()
    store.calls.clear()

    assert result.ready()
    assert store_actions(store) == {"BatchGetItem": 1}
    assert len(result.get(timeout=0)) == 150
    assert store_actions(store) == {"BatchGetItem": 2}


# -- finding a group again -----------------------------------------------------------------------
def test_restore_finds_a_sent_group_by_its_id() -> None:
    sent = cloudq.group(add.s(i, i) for i in range(4)).apply_async()
    BurstWorker(app).join()

    restored = cloudq.GroupResult.restore(sent.id, app=app)

    assert restored is not None
    assert restored.id == sent.id
    assert [r.id for r in restored.results] == [r.id for r in sent.results]
    assert restored.get(timeout=0) == [0, 2, 4, 6]


def test_restore_finds_the_header_of_a_chord_too() -> None:
    chord = cloudq.chord([add.s(1, 1), add.s(2, 2)], add.si(0, 0))
    chord.freeze()
    chord.apply_async()
    BurstWorker(app).join()

    header = cloudq.GroupResult.restore(chord.options["group_id"], app=app)

    assert header is not None and header.get(timeout=0) == [2, 4]


def test_restore_of_an_unknown_or_forgotten_group_is_none() -> None:
    sent = cloudq.group(add.s(1, 1)).apply_async()
    BurstWorker(app).join()

    sent.forget()

    assert cloudq.GroupResult.restore(sent.id, app=app) is None
    assert cloudq.GroupResult.restore("no-such-group", app=app) is None
    assert sent.results[0].state == "PENDING"  # forgetting the group forgot its members


def test_save_then_restore_keeps_the_results_it_was_given() -> None:
    results: list[cloudq.AsyncResult[Any]] = [add.delay(1, 1), add.delay(2, 2)]
    BurstWorker(app).join()
    cloudq.GroupResult("nightly-batch", results, app=app).save()

    restored = cloudq.GroupResult.restore("nightly-batch", app=app)

    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in results]
    assert restored.get(timeout=0.1) == [2, 4]
