"""The local beat: sends each periodic task when its tick comes, once, however many beats run.

Each entry has one item in the store, ``beat#<name>``: the last tick claimed, whether it was
sent, who claimed it and when. A beat sends a tick only after a compare-and-set on that item
moved it to the new tick, so two beats never both send it; the item says "sent" once the
message is on the queue. A beat that crashed between the two leaves a claim that another beat
(or itself, restarted) takes over when the claim's lease has passed, and sends the tick with the
same task id.

After a stop, a restarted beat sends the latest tick it missed, once (missed ticks collapse,
as in Celery), and never one it had sent. An entry that has never run starts with its first
tick after the beat started. Reads happen only when a tick is due.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cloudq import message as wire
from cloudq.scheduler.entries import Entry, load_entries, timezone_of
from cloudq.sending import publish

if TYPE_CHECKING:
    from collections.abc import Callable

    from cloudq.app import App

logger = logging.getLogger(__name__)

STATE_TTL_S = 400 * 86400
"""How long an entry's state outlives its last tick (beyond a yearly schedule)."""
LEASE_S = 30.0
"""How long a claim on a tick is honoured before another beat may take it over."""
CONTENDED_RECHECK_S = 1.0


def state_key(name: str) -> str:
    return f"beat#{name}"


class Beat:
    """Sends the app's ``beat_schedule``. ``run()`` until ``stop()``; ``tick()`` is one pass."""

    def __init__(self, app: App, *, max_interval: float | None = None,
                 clock: Callable[[], datetime] = wire.utcnow,
                 owner: str | None = None) -> None:
        self.app = app
        self.entries: list[Entry] = load_entries(app)
        self.tz = timezone_of(app)
        self.max_interval = max_interval or app.settings.beat_max_interval
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = clock()
        self.stats: Counter[str] = Counter()
        """``sent``, ``lost_race`` (another beat had the tick), ``send_errors``."""
        self._done: dict[str, datetime] = {}  # entry -> latest tick known to be sent
        self._stop = threading.Event()

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> int:
        logger.info("beat %s: %d periodic task(s), time zone %s", self.owner, len(self.entries),
                    self.app.settings.beat_timezone)
        for entry in self.entries:
            first = entry.schedule.next_after(self.clock(), self.tz)
            logger.info("  %s -> %s, %r, next at %s", entry.name, entry.task, entry.schedule,
                        first.astimezone(self.tz).isoformat())
        while not self._stop.is_set():
            self._stop.wait(self.tick())
        logger.info("beat %s stopped: %s", self.owner, dict(self.stats))
        return 0

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> float:
        """Send every due tick; return the seconds until the next one (at most max_interval)."""
        now = self.clock()
        wait = self.max_interval
        for entry in self.entries:
            due = entry.schedule.last_at_or_before(now, self.tz)
            if due is not None and not self._sent_or_sending(entry, due, now):
                wait = min(wait, CONTENDED_RECHECK_S)
            upcoming = entry.schedule.next_after(now, self.tz)
            wait = min(wait, (upcoming - self.clock()).total_seconds())
        return max(0.0, wait)

    # -- one entry --------------------------------------------------------------------------------
    def _sent_or_sending(self, entry: Entry, due: datetime, now: datetime) -> bool:
        """Make sure tick ``due`` of ``entry`` is sent (by us or another beat).

        False when another beat holds a fresh claim on it: look again soon."""
        known = self._done.get(entry.name)
        if known is not None and known >= due:
            return True
        store = self.app.store
        key = state_key(entry.name)
        item = store.get(key)
        version = None if item is None else int(item["version"])
        if item is None:
            if due < self.started:
                self._done[entry.name] = due  # never ran: start with the next tick
                return True
        else:
            last = datetime.fromisoformat(item["tick"])
            if last > due or (last == due and item["sent"]):
                self._done[entry.name] = last
                return True
            if last == due and item["owner"] != self.owner \
                    and now.timestamp() - float(item["claimed_at"]) < LEASE_S:
                return False  # another beat is sending it right now
        claimed = (version or 0) + 1
        claim = {"tick": wire.tick_text(due), "sent": False, "owner": self.owner,
                 "claimed_at": now.timestamp(), "version": claimed,
                 "schedule": repr(entry.schedule)}
        if not store.put_if_version(key, claim, expected=version, ttl_s=STATE_TTL_S):
            self.stats["lost_race"] += 1
            return False  # someone moved it: read it again on the next pass
        try:
            publish(self.app, [entry.envelope(self.app, due)])
        except Exception:
            self.stats["send_errors"] += 1
            logger.exception("beat: could not send %s (%s) for %s; will retry", entry.name,
                             entry.task, wire.tick_text(due))
            return False
        store.put_if_version(key, {**claim, "sent": True, "version": claimed + 1},
                             expected=claimed, ttl_s=STATE_TTL_S)
        self._done[entry.name] = due
        self.stats["sent"] += 1
        lateness = (self.clock() - due).total_seconds()
        logger.info("beat: sent %s (%s) for %s as %s, %.3f s after its time", entry.name,
                    entry.task, due.astimezone(UTC).isoformat(), wire.tick_id(entry.name, due),
                    lateness)
        return True
