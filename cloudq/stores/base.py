"""The store seam: a few DynamoDB-shaped primitives on items keyed by one string.

Results, revokes, chord joins, beat leases and rate buckets are all built on these
(see ``cloudq.results``). Items are flat dicts of JSON-compatible values; every write
carries a time-to-live, and reads never return an item whose TTL has passed even if
DynamoDB has not deleted it yet (TTL deletion is lazy, up to ~48 h).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Sequence
from typing import Any

Item = dict[str, Any]

TTL_FIELD = "ttl"
KEY_FIELD = "pk"
VERSION_FIELD = "version"


def expires_at(ttl_s: float, now: float | None = None) -> int:
    """The epoch second at which an item written now with ``ttl_s`` expires."""
    return int((time.time() if now is None else now) + ttl_s)


def is_expired(item: Item, now: float | None = None) -> bool:
    ttl = item.get(TTL_FIELD)
    return ttl is not None and float(ttl) <= (time.time() if now is None else now)


class Store(abc.ABC):
    """Key-value primitives with conditional writes."""

    @abc.abstractmethod
    def get(self, key: str) -> Item | None:
        """The item at ``key`` (strongly consistent), or None if absent or expired."""

    def get_many(self, keys: Sequence[str]) -> dict[str, Item]:
        """Items for many keys (absent and expired keys are left out)."""
        found = {key: self.get(key) for key in keys}
        return {key: item for key, item in found.items() if item is not None}

    @abc.abstractmethod
    def put(self, key: str, item: Item, *, ttl_s: float) -> None:
        """Write ``item`` at ``key``, replacing what was there."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, item: Item, *, ttl_s: float) -> bool:
        """Write ``item`` only if no live item is at ``key``; return whether it was written."""

    @abc.abstractmethod
    def put_if_version(self, key: str, item: Item, *, expected: int | None, ttl_s: float) -> bool:
        """Compare-and-set: write ``item`` (whose ``version`` field the caller has advanced) only
        if the live item's ``version`` is ``expected``, or, with ``expected=None``, only if no
        live item is there. Return whether it was written."""

    @abc.abstractmethod
    def add_to_set(self, key: str, field: str, members: Iterable[str], *, ttl_s: float) -> int:
        """Add ``members`` to the string set ``field``; return the set's size afterwards."""

    @abc.abstractmethod
    def add_new_member(self, key: str, field: str, member: str, *, ttl_s: float) -> int | None:
        """Atomically add ``member`` to the set ``field`` only if it is not there yet; return the
        set's size afterwards, or None when it was already a member (nothing changed)."""

    @abc.abstractmethod
    def increment(self, key: str, field: str, by: int = 1, *, ttl_s: float) -> int:
        """Add ``by`` to the number ``field`` (0 if missing); return the new value."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the item at ``key`` (no error if absent)."""

    def ensure(self) -> None:
        """Create the underlying table if it does not exist (provisioning, tests)."""

    def close(self) -> None:
        """Release connections."""
