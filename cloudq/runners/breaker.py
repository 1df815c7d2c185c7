"""The poller's circuit breaker on the result store: stop taking messages while DynamoDB is down.

Without it, a store outage longer than ``max_receive_count * visibility_timeout`` would let
SQS's redrive policy move healthy messages to the dead-letter queue: every receive of a
message the worker cannot handle spends one of its receives.

The rule (``cloudq.runners.poller`` applies it):

- A message whose handling raised :class:`~cloudq.errors.StoreUnavailable` (a connection
  error, throttling or a 5xx from DynamoDB, after the client's own ``aws_max_attempts``) is
  made visible again at once (ChangeMessageVisibility 0: that call spends no receive; the next
  receive does). Any message handled to the end resets the count.
- At ``worker_store_failure_threshold`` such messages in a row the breaker opens: one line is
  logged (``DynamoDB unreachable: pausing receives, N messages handed back``), the signal
  :data:`cloudq.signals.store_unavailable` is sent and ``stats["store_pauses"]`` counted; the
  poller makes no more ReceiveMessage calls, and every message it holds that has not started
  is made visible again at once (what a long poll returns meanwhile too). Running tasks go on.
- While open, the store is probed with one GetItem, after 0.5 s, 1 s, 2 s... up to
  ``worker_store_probe_max_interval`` (30 s) apart. The first probe that succeeds closes it:
  ``DynamoDB reachable again after Ns: resuming receives``, the signal
  :data:`cloudq.signals.store_available`, and receiving starts again.

So a message spends at most one receive per failed attempt (at most ``threshold`` of them, the
last of which opens the breaker) plus the one that finally runs it, however long the outage:
with ``max_receive_count`` above ``threshold + 1`` (5 vs. 2 by default) no healthy message is
dead-lettered by one worker's outage. A message that still gets there (workers without the
breaker, killed workers) carries no reason; ``sqs_wire.dead_letter_reason`` names it as such.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cloudq.errors import StoreUnavailable

if TYPE_CHECKING:
    from cloudq.stores.base import Store

logger = logging.getLogger(__name__)

PROBE_KEY = "probe#store"
"""The item a probe reads: never written, so a probe costs one read and returns nothing."""
FIRST_PROBE_S = 0.5


def is_store_outage(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) says the store is unreachable."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StoreUnavailable):
            return True
        seen = seen.__cause__
    return False


class StoreBreaker:
    """Store failures in a row, and whether receiving is paused. Not thread-safe: the poller
    calls it under its own lock."""

    def __init__(self, threshold: int, max_interval_s: float) -> None:
        self.threshold = threshold
        self.max_interval_s = max_interval_s
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def failed(self) -> bool:
        """A message failed because the store is unreachable; True if that opens the breaker."""
        self.failures += 1
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            return True
        return False

    def succeeded(self) -> None:
        """A message was handled to the end (so the store answered)."""
        if self.opened_at is None:
            self.failures = 0

    def close(self) -> float:
        """A probe succeeded: receive again; how long the breaker was open (seconds)."""
        opened, self.opened_at, self.failures = self.opened_at, None, 0
        return 0.0 if opened is None else time.monotonic() - opened

    def probe_delays(self) -> Iterator[float]:
        """Seconds before each probe: 0.5, 1, 2, ... up to ``max_interval_s``."""
        delay_s = min(FIRST_PROBE_S, self.max_interval_s)
        while True:
            yield delay_s
            delay_s = min(delay_s * 2, self.max_interval_s)


def wait_for_store(store: Store, breaker: StoreBreaker, stop: threading.Event) -> int | None:
    """Probe ``store`` with back-off until it answers; the number of failed probes, or None
    when ``stop`` was set first."""
    for failed, delay_s in enumerate(breaker.probe_delays()):
        if stop.wait(delay_s):
            return None
        try:
            store.get(PROBE_KEY)
        except Exception as exc:
            logger.info("store probe %d failed (next in at most %gs): %s: %s", failed + 1,
                        breaker.max_interval_s, type(exc).__name__, exc)
            continue
        return failed
    raise AssertionError("unreachable")  # pragma: no cover - probe_delays never ends
