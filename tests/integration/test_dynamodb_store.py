"""What only the DynamoDB store does: provisioning, error translation, call counts."""

from __future__ import annotations

import pytest

from cloudq.aws import AwsClients, RequestCounter
from cloudq.errors import ConfigError
from cloudq.stores.dynamodb import DynamoStore

pytestmark = pytest.mark.integration

DAY_S = 86400


@pytest.fixture
def store(aws_clients: AwsClients, unique_prefix: str) -> DynamoStore:
    store = DynamoStore(aws_clients, f"{unique_prefix}results")
    store.ensure()
    return store


def test_a_missing_table_is_a_config_error_naming_it(
    aws_clients: AwsClients, unique_prefix: str
) -> None:
    store = DynamoStore(aws_clients, f"{unique_prefix}never-made")

    with pytest.raises(ConfigError) as raised:
        store.get("task#1")

    assert f"{unique_prefix}never-made" in str(raised.value)
    assert "cloudq provision" in str(raised.value)


def test_ensure_makes_an_on_demand_table_with_ttl(
    store: DynamoStore, aws_clients: AwsClients
) -> None:
    store.ensure()  # a second time changes nothing

    table = aws_clients.dynamodb.describe_table(TableName=store.table)["Table"]
    ttl = aws_clients.dynamodb.describe_time_to_live(TableName=store.table)
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}


def test_get_many_reads_100_keys_per_call(store: DynamoStore, aws_clients: AwsClients) -> None:
    keys = [f"task#{i}" for i in range(150)]
    for key in keys:
        store.put(key, {"state": "SUCCESS"}, ttl_s=DAY_S)
    counter = RequestCounter()
    counter.attach(aws_clients.dynamodb)

    assert len(store.get_many(keys)) == 150

    assert counter.counts == {"DynamoDB.BatchGetItem": 2}


def test_updates_are_one_call(store: DynamoStore, aws_clients: AwsClients) -> None:
    counter = RequestCounter()
    counter.attach(aws_clients.dynamodb)

    store.add_to_set("chord#1", "done", ["a"], ttl_s=DAY_S)
    store.increment("chord#1", "count", ttl_s=DAY_S)

    assert counter.counts == {"DynamoDB.UpdateItem": 2}


def test_an_empty_set_is_left_out(store: DynamoStore) -> None:
    """DynamoDB cannot store an empty set; the attribute is omitted instead."""
    store.put("group#1", {"members": set(), "nested": {"tags": frozenset()}}, ttl_s=DAY_S)

    item = store.get("group#1")

    assert item is not None and "members" not in item and item["nested"] == {}
