"""The Store contract: the in-memory twin and DynamoDB (moto server) pass the same assertions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudq.aws import AwsClients
from cloudq.stores.base import Store
from cloudq.stores.dynamodb import DynamoStore
from cloudq.stores.memory import MemoryStore

pytestmark = pytest.mark.integration

DAY_S = 86400


@pytest.fixture(params=["memory", "aws"])
def store(request: pytest.FixtureRequest, unique_prefix: str) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    clients: AwsClients = request.getfixturevalue("aws_clients")
    dynamo = DynamoStore(clients, f"{unique_prefix}results")
    dynamo.ensure()
    yield dynamo
    dynamo.close()


def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert store.get("task#missing") is None


def test_put_then_get_round_trips_the_item(store: Store) -> None:
    store.put("task#1", {"state": "SUCCESS", "retries": 0}, ttl_s=DAY_S)

    item = store.get("task#1")

    assert item is not None
    assert {k: v for k, v in item.items() if k != "ttl"} == {
        "pk": "task#1", "state": "SUCCESS", "retries": 0,
    }


def test_put_replaces_the_whole_item(store: Store) -> None:
    store.put("task#1", {"state": "STARTED", "worker": "w1"}, ttl_s=DAY_S)
    store.put("task#1", {"state": "SUCCESS"}, ttl_s=DAY_S)

    item = store.get("task#1")

    assert item is not None and item["state"] == "SUCCESS" and "worker" not in item


def test_put_sets_ttl_in_epoch_seconds(store: Store) -> None:
    now = time.time()

    store.put("task#1", {"state": "SUCCESS"}, ttl_s=3600)

    item = store.get("task#1")
    assert item is not None
    assert isinstance(item["ttl"], int)
    assert now + 3600 - 2 <= item["ttl"] <= now + 3600 + 2


def test_values_round_trip_with_their_types(store: Store) -> None:
    value: dict[str, Any] = {
        "int": 3, "negative": -7, "big": 2**53 + 1, "float": 0.1, "neg_float": -2.5,
        "bool": True, "none": None, "text": "héllo ✓", "empty_text": "",
        "list": [1, 2.5, "x", None, False, {"deep": 0.25}], "empty_list": [],
        "nested": {"a": {"b": [1, {"c": 1.5}]}}, "empty_dict": {},
        "tags": {"x", "y"},
    }

    store.put("task#types", value, ttl_s=DAY_S)
    item = store.get("task#types")

    assert item is not None
    assert {k: v for k, v in item.items() if k not in ("pk", "ttl")} == value
    assert type(item["int"]) is int and type(item["big"]) is int
    assert type(item["float"]) is float and type(item["list"][1]) is float
    assert isinstance(item["tags"], set)


def test_get_ignores_an_expired_item(store: Store) -> None:
    store.put("task#old", {"state": "SUCCESS"}, ttl_s=-5)

    assert store.get("task#old") is None
    assert store.get_many(["task#old"]) == {}


def test_put_if_absent_writes_only_once(store: Store) -> None:
    assert store.put_if_absent("chord#1#fired", {"by": "w1"}, ttl_s=DAY_S) is True
    assert store.put_if_absent("chord#1#fired", {"by": "w2"}, ttl_s=DAY_S) is False

    item = store.get("chord#1#fired")
    assert item is not None and item["by"] == "w1"


def test_put_if_absent_treats_an_expired_item_as_absent(store: Store) -> None:
    store.put("lock#beat", {"owner": "old"}, ttl_s=-5)

    assert store.put_if_absent("lock#beat", {"owner": "new"}, ttl_s=DAY_S) is True

    item = store.get("lock#beat")
    assert item is not None and item["owner"] == "new"


def test_add_to_set_counts_distinct_members(store: Store) -> None:
    assert store.add_to_set("chord#1", "done", ["a", "b"], ttl_s=DAY_S) == 2
    assert store.add_to_set("chord#1", "done", ["b", "c"], ttl_s=DAY_S) == 3
    assert store.add_to_set("chord#1", "done", ["a"], ttl_s=DAY_S) == 3  # a duplicate delivery
    assert store.add_to_set("chord#1", "done", [], ttl_s=DAY_S) == 3

    item = store.get("chord#1")
    assert item is not None and item["done"] == {"a", "b", "c"}


def test_add_new_member_adds_once_and_says_when_it_was_already_there(store: Store) -> None:
    store.put("chord#1#s0", {"shard": 0}, ttl_s=DAY_S)

    assert store.add_new_member("chord#1#s0", "done", "0", ttl_s=DAY_S) == 1
    assert store.add_new_member("chord#1#s0", "done", "7", ttl_s=DAY_S) == 2
    assert store.add_new_member("chord#1#s0", "done", "7", ttl_s=DAY_S) is None  # redelivered
    assert store.add_new_member("chord#2#s0", "done", "0", ttl_s=DAY_S) == 1  # absent item

    item = store.get("chord#1#s0")
    assert item is not None and item["done"] == {"0", "7"} and item["shard"] == 0


def test_add_to_set_keeps_the_other_fields(store: Store) -> None:
    store.put("chord#1", {"size": 3, "callback": {"task": "cb"}}, ttl_s=DAY_S)

    store.add_to_set("chord#1", "done", ["a"], ttl_s=DAY_S)

    item = store.get("chord#1")
    assert item is not None and item["size"] == 3 and item["callback"] == {"task": "cb"}


def test_add_to_set_on_an_expired_item_starts_afresh(store: Store) -> None:
    store.put("chord#1", {"done": {"x", "y"}, "size": 9}, ttl_s=-5)

    assert store.add_to_set("chord#1", "done", ["a"], ttl_s=DAY_S) == 1

    item = store.get("chord#1")
    assert item is not None and item["done"] == {"a"} and "size" not in item


def test_increment(store: Store) -> None:
    assert store.increment("rate#add", "tokens", ttl_s=DAY_S) == 1
    assert store.increment("rate#add", "tokens", 5, ttl_s=DAY_S) == 6
    assert store.increment("rate#add", "tokens", -2, ttl_s=DAY_S) == 4

    item = store.get("rate#add")
    assert item is not None and item["tokens"] == 4 and type(item["tokens"]) is int


def test_increment_on_an_expired_item_starts_from_zero(store: Store) -> None:
    store.put("rate#add", {"tokens": 40}, ttl_s=-5)

    assert store.increment("rate#add", "tokens", 2, ttl_s=DAY_S) == 2


def test_updates_refresh_the_ttl(store: Store) -> None:
    store.put("chord#1", {"size": 2}, ttl_s=60)

    store.add_to_set("chord#1", "done", ["a"], ttl_s=DAY_S)

    item = store.get("chord#1")
    assert item is not None and item["ttl"] >= time.time() + DAY_S - 5


def test_delete(store: Store) -> None:
    store.put("revoked#1", {"terminate": False}, ttl_s=DAY_S)

    store.delete("revoked#1")
    store.delete("revoked#never-there")

    assert store.get("revoked#1") is None


def test_get_many_across_more_than_100_keys(store: Store) -> None:
    keys = [f"task#{i}" for i in range(130)]
    for i, key in enumerate(keys):
        store.put(key, {"n": i}, ttl_s=DAY_S)
    store.put("task#expired", {"n": -1}, ttl_s=-5)

    found = store.get_many([*keys, "task#expired", "task#missing", keys[0]])

    assert set(found) == set(keys)
    assert all(found[key]["n"] == i for i, key in enumerate(keys))


def test_put_if_version_creates_only_when_absent(store: Store) -> None:
    assert store.put_if_version("beat#a", {"version": 1, "tick": "t1"}, expected=None,
                                ttl_s=DAY_S) is True
    assert store.put_if_version("beat#a", {"version": 1, "tick": "t9"}, expected=None,
                                ttl_s=DAY_S) is False
    item = store.get("beat#a")
    assert item is not None and item["tick"] == "t1"


def test_put_if_version_needs_the_version_that_was_read(store: Store) -> None:
    store.put_if_version("beat#a", {"version": 1, "tick": "t1"}, expected=None, ttl_s=DAY_S)

    first = store.put_if_version("beat#a", {"version": 2, "tick": "t2"}, expected=1, ttl_s=DAY_S)
    second = store.put_if_version("beat#a", {"version": 2, "tick": "t2'"}, expected=1,
                                  ttl_s=DAY_S)

    item = store.get("beat#a")
    assert (first, second) == (True, False)
    assert item is not None and item["tick"] == "t2" and item["version"] == 2


def test_put_if_version_with_a_version_fails_on_a_missing_item(store: Store) -> None:
    assert store.put_if_version("beat#a", {"version": 2}, expected=1, ttl_s=DAY_S) is False
    assert store.get("beat#a") is None


def test_put_if_version_treats_an_expired_item_as_absent(store: Store) -> None:
    store.put("beat#a", {"version": 7}, ttl_s=-5)

    assert store.put_if_version("beat#a", {"version": 7}, expected=7, ttl_s=DAY_S) is False
    assert store.put_if_version("beat#a", {"version": 1}, expected=None, ttl_s=DAY_S) is True
