"""An in-memory store with the same primitives and TTL behaviour as the DynamoDB store."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable
from typing import Any

from cloudq.stores.base import (
    KEY_FIELD,
    TTL_FIELD,
    VERSION_FIELD,
    Item,
    Store,
    expires_at,
    is_expired,
)


class MemoryStore(Store):
    """Items in a dict; every call is recorded in ``calls`` as (action, key)."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self._items: dict[str, Item] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.calls: list[tuple[str, str]] = []

    def _live(self, key: str) -> Item | None:
        item = self._items.get(key)
        if item is not None and is_expired(item, self._clock()):
            return None
        return item

    def get(self, key: str) -> Item | None:
        with self._lock:
            self.calls.append(("GetItem", key))
            item = self._live(key)
            return copy.deepcopy(item) if item is not None else None

    def get_many(self, keys: Any) -> dict[str, Item]:
        with self._lock:
            self.calls.append(("BatchGetItem", ",".join(keys)))
            found = {key: self._live(key) for key in keys}
            return {k: copy.deepcopy(v) for k, v in found.items() if v is not None}

    def put(self, key: str, item: Item, *, ttl_s: float) -> None:
        with self._lock:
            self.calls.append(("PutItem", key))
            self._items[key] = self._stamp(key, item, ttl_s)

    def put_if_absent(self, key: str, item: Item, *, ttl_s: float) -> bool:
        with self._lock:
            self.calls.append(("PutItem?", key))
            if self._live(key) is not None:
                return False
            self._items[key] = self._stamp(key, item, ttl_s)
            return True

    def put_if_version(self, key: str, item: Item, *, expected: int | None, ttl_s: float) -> bool:
        with self._lock:
            self.calls.append(("PutItem?", key))
            live = self._live(key)
            current = None if live is None else live.get(VERSION_FIELD)
            if (live is not None or expected is not None) and current != expected:
                return False
            self._items[key] = self._stamp(key, item, ttl_s)
            return True

    def add_to_set(self, key: str, field: str, members: Iterable[str], *, ttl_s: float) -> int:
        with self._lock:
            self.calls.append(("UpdateItem", key))
            item = self._live(key) or {KEY_FIELD: key}
            values = set(item.get(field, ())) | set(members)
            item = {**item, field: values, TTL_FIELD: expires_at(ttl_s, self._clock())}
            self._items[key] = item
            return len(values)

    def add_new_member(self, key: str, field: str, member: str, *, ttl_s: float) -> int | None:
        with self._lock:
            self.calls.append(("UpdateItem?", key))
            item = self._live(key) or {KEY_FIELD: key}
            values = set(item.get(field, ()))
            if member in values:
                return None
            values.add(member)
            self._items[key] = {**item, field: values, TTL_FIELD: expires_at(ttl_s, self._clock())}
            return len(values)

    def increment(self, key: str, field: str, by: int = 1, *, ttl_s: float) -> int:
        with self._lock:
            self.calls.append(("UpdateItem", key))
            item = self._live(key) or {KEY_FIELD: key}
            value = int(item.get(field, 0)) + by
            self._items[key] = {**item, field: value, TTL_FIELD: expires_at(ttl_s, self._clock())}
            return value

    def delete(self, key: str) -> None:
        with self._lock:
            self.calls.append(("DeleteItem", key))
            self._items.pop(key, None)

    def _stamp(self, key: str, item: Item, ttl_s: float) -> Item:
        return {**copy.deepcopy(item), KEY_FIELD: key, TTL_FIELD: expires_at(ttl_s, self._clock())}
