"""Unit-tier fixtures: an App on the in-memory transport and store, and a worker that drains it.

Time is explicit: ``clock`` drives both the memory transport (delays, visibility) and the
envelope clock (``cloudq.message.utcnow``: ETAs, expiry), so a test moves time forward with
``clock.advance(900)`` instead of sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.runners.execute import Disposition, process_message
from cloudq.runners.poller import Poller
from cloudq.stores.memory import MemoryStore
from cloudq.transports.base import ReceivedMessage
from cloudq.transports.memory import MemoryTransport
from tests.unit.running import Running


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@dataclass(frozen=True)
class Handled:
    """One message a drain took off a queue, and what process_message made of it."""

    message: ReceivedMessage
    disposition: Disposition

    @property
    def outcome(self) -> str:
        return self.disposition.outcome.value


def is_dead_letter_queue(name: str) -> bool:
    return name.endswith("-dlq") or name.endswith("-dlq.fifo")


def drain_queues(app: cloudq.App, queues: list[str] | None = None,
                 *, limit: int = 500) -> list[Handled]:
    """Play the poller: receive every visible message, process it, then ack it, or hand it
    back for ``delay_s`` seconds, as the disposition says.

    Repeats until a pass finds nothing visible.
    """
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    handled: list[Handled] = []
    while True:
        names = queues or [q for q in transport.queue_names() if not is_dead_letter_queue(q)]
        batch = [m for name in names for m in transport.receive(name, max_messages=10)]
        if not batch:
            return handled
        for message in batch:
            disposition = process_message(app, message)
            if disposition.ack:
                transport.ack([message])
            else:
                transport.retry_later(message, disposition.delay_s)
            handled.append(Handled(message, disposition))
        assert len(handled) <= limit, "drain did not settle: a message keeps coming back"


def receive_dead_letters(app: cloudq.App, queue: str = "default") -> list[ReceivedMessage]:
    """Everything in ``queue``'s dead-letter queue, with the attributes saying why."""
    from cloudq.transports.base import dead_letter_queue_name

    return app.transport.receive(dead_letter_queue_name(queue), max_messages=10)


def queued_envelopes(app: cloudq.App, queue: str = "default") -> list[wire.Envelope]:
    """The envelopes waiting in ``queue`` (visible or not), oldest first."""
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    envelopes = []
    for body in transport.bodies(queue):
        decoded = wire.decode(body, signing_key=app.settings.signing_key)
        assert isinstance(decoded, wire.Envelope)
        envelopes.append(decoded)
    return envelopes


@pytest.fixture(autouse=True)
def _no_cloudq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("CLOUDQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(float(int(time.time())))
    monkeypatch.setattr(wire, "utcnow", fake.utcnow)
    return fake


@pytest.fixture
def make_app(clock: FakeClock) -> Iterator[Callable[..., cloudq.App]]:
    """``make_app(**settings)``: an App on fresh memory twins, sharing the test's clock."""
    made: list[cloudq.App] = []

    def make(**settings: Any) -> cloudq.App:
        app = cloudq.App("t", transport=MemoryTransport(clock=clock), store=MemoryStore(),
                         set_as_current=False, **settings)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., cloudq.App]) -> cloudq.App:
    return make_app()


@pytest.fixture
def drain() -> Callable[..., list[Handled]]:
    return drain_queues


@pytest.fixture
def dead_letters() -> Callable[..., list[ReceivedMessage]]:
    return receive_dead_letters


@pytest.fixture
def queued() -> Callable[..., list[wire.Envelope]]:
    return queued_envelopes


@pytest.fixture
def start() -> Iterator[Callable[[Poller], Running]]:
    running: list[Running] = []

    def start(poller: Poller) -> Running:
        running.append(Running(poller))
        return running[-1]

    yield start
    for item in running:
        item.stop()
