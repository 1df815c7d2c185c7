"""The poller's admission rules: which queue may receive now, and which message runs next.

Pure state, no I/O and no lock of its own: the poller (``cloudq.runners.poller``) calls it
under its lock. Two rules meet here.

The prefetch bound: ``limit`` slots count messages received and not finished plus the
reservations of batch calls in flight; a probe's message takes a slot, or its queue's one
token when every slot is taken (see the poller).

Strict priority by tier (``routing.polling_tiers``: every high band, then the normal bands and
FIFO queues, then the low bands). A band *has work* until a call on it comes back empty (so at
start, every band has). A band is received from only while no band of a higher tier has work:
a lower tier is read only after each higher band's last call returned nothing (its probe,
waiting for new messages, counts as nothing). A slot that frees while a higher band has work
is left to it, and a buffered lower-tier message is not started while a higher band with work
has a call in flight or a free slot to make one. The cost: before a lower tier is read, each
band above it makes one empty call (a batch, waiting up to 1 s on SQS), at start and each time
its backlog runs out; a lower tier makes no call at all while a higher one has a backlog.
Messages already taken (at most the prefetch bound, buffered before a higher band got work)
still run in tier order as workers free up: with ``prefetch_multiplier`` 1 the order holds
message by message.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudq.transports.base import MAX_BATCH

if TYPE_CHECKING:
    from cloudq.transports.base import ReceivedMessage


@dataclass(eq=False)
class Held:
    """A message in memory: in the buffer, or running."""

    message: ReceivedMessage
    tier: int
    seq: int
    on_token: bool
    extended_at: float
    running: bool = False
    done: bool = False
    """Finished but not yet released (being made visible again)."""


@dataclass(frozen=True)
class Grant:
    """Leave to make one receive call: ``count`` messages, a probe (long poll) or a batch."""

    count: int
    probe: bool
    epoch: int


class Admission:
    """Slots, tokens, the buffer and each queue's work, for queues grouped in ``tiers``."""

    def __init__(self, tiers: list[list[str]], limit: int) -> None:
        self.queues = [band for tier in tiers for band in tier]
        self.tier = {band: index for index, tier in enumerate(tiers) for band in tier}
        self.limit = limit
        self.paused = False
        """No queue receives (the store is down): nothing is waited for either."""
        self.held: dict[int, Held] = {}
        self.slots_used = 0
        self.has_work = dict.fromkeys(self.queues, True)
        """Whether a queue's last call returned messages (True until its first call)."""
        self.calling: set[str] = set()
        """Queues with a receive call in flight."""
        self.token_held: dict[str, Held] = {}
        self._buffer: list[tuple[int, int, Held]] = []
        self._seq = itertools.count()

    # -- receiving ----------------------------------------------------------------------------
    def grant(self, name: str, epoch: int) -> Grant | None:
        """Leave for ``name`` to call receive now, or None (wait for a change)."""
        if self.paused or self.outranked(self.tier[name]):
            return None
        free = self.limit - self.slots_used
        if self.has_work[name] and free > 0:
            count = min(MAX_BATCH, free)
            self.slots_used += count
            self.calling.add(name)
            return Grant(count, probe=False, epoch=epoch)
        if not self.has_work[name] and name not in self.token_held:
            self.calling.add(name)
            return Grant(1, probe=True, epoch=epoch)
        return None

    def returned(self, name: str, grant: Grant, got: int) -> None:
        """A call ended with ``got`` messages (0 also when it failed)."""
        self.calling.discard(name)
        if not grant.probe:
            self.slots_used -= grant.count
        self.has_work[name] = got > 0

    def outranked(self, tier: int) -> bool:
        """Whether a queue of a higher tier than ``tier`` has work (so ``tier`` is not read)."""
        return any(self.has_work[q] for q in self.queues if self.tier[q] < tier)

    def awaited(self, tier: int) -> bool:
        """Whether a queue of a higher tier than ``tier`` has work and is receiving it, or has a
        free slot to: its messages, on their way, go before ``tier``'s."""
        if self.paused:
            return False
        free = self.slots_used < self.limit
        return any(self.has_work[q] and (q in self.calling or free)
                   for q in self.queues if self.tier[q] < tier)

    # -- holding and running ------------------------------------------------------------------
    def hold(self, name: str, message: ReceivedMessage, now: float) -> Held:
        held = Held(message, self.tier[name], next(self._seq),
                    on_token=self.slots_used >= self.limit, extended_at=now)
        if held.on_token:  # only a probe's message: every slot is taken
            self.token_held[name] = held
        else:
            self.slots_used += 1
        self.held[held.seq] = held
        heapq.heappush(self._buffer, (held.tier, held.seq, held))
        return held

    def release(self, held: Held) -> None:
        """Forget a message that finished or was given back; free its slot or token."""
        del self.held[held.seq]
        if held.on_token:
            self.token_held.pop(held.message.queue, None)
        else:
            self.slots_used -= 1
            self.move_to_slots()

    def move_to_slots(self) -> None:
        """Move messages held on tokens to free slots, most urgent first; a slot a more urgent
        queue with work can use is left to it."""
        while self.token_held and self.slots_used < self.limit:
            held = min(self.token_held.values(), key=lambda h: (h.tier, h.seq))
            if self.awaited(held.tier):
                return
            del self.token_held[held.message.queue]
            held.on_token = False
            self.slots_used += 1

    def next_to_run(self) -> Held | None:
        """The most urgent buffered message, taken out of the buffer, unless it must wait."""
        if not self._buffer or self.awaited(self._buffer[0][0]):
            return None
        _, _, held = heapq.heappop(self._buffer)
        held.running = True
        return held

    def take_buffered(self) -> list[Held]:
        """Every buffered message, released (to be made visible again)."""
        buffered = [held for _, _, held in self._buffer]
        self._buffer.clear()
        for held in buffered:
            self.release(held)
        return buffered
