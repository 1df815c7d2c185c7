"""The DynamoDB store: the Store primitives on one table keyed by ``pk``, with a ``ttl``.

DynamoDB deletes expired items lazily, so every read and every conditional write treats
an item whose ``ttl`` has passed as absent, exactly like the in-memory twin. Conditions
and update expressions are the named pieces below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloudq.errors import ConfigError, StoreError, StoreUnavailable
from cloudq.stores.base import (
    KEY_FIELD,
    TTL_FIELD,
    VERSION_FIELD,
    Item,
    Store,
    expires_at,
    is_expired,
)

if TYPE_CHECKING:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
    from mypy_boto3_dynamodb import DynamoDBClient

    from cloudq.aws import AwsClients

logger = logging.getLogger(__name__)

BATCH_GET_KEYS = 100
"""The most keys one BatchGetItem takes."""
BATCH_GET_ATTEMPTS = 8
EXPIRED_RETRIES = 3

# -- expressions --------------------------------------------------------------------------------
NAMES = {"#pk": KEY_FIELD, "#ttl": TTL_FIELD, "#version": VERSION_FIELD}
ABSENT_OR_EXPIRED = "attribute_not_exists(#pk) OR #ttl <= :now"
"""Condition of put_if_absent: nothing live at the key."""
LIVE_OR_ABSENT = "attribute_not_exists(#ttl) OR #ttl > :now"
"""Condition of updates that build on what is there: not an expired leftover."""
SAME_VERSION = "#version = :expected AND #ttl > :now"
"""Condition of compare-and-set: the live item is the version the caller read."""
STILL_EXPIRED = "#ttl <= :now"
"""Condition of replacing an expired leftover (nobody revived it meanwhile)."""
ADD_MEMBERS = "ADD #f :members SET #ttl = :ttl"
ADD_NUMBER = "ADD #f :by SET #ttl = :ttl"
NOT_A_MEMBER = "NOT contains(#f, :member)"
TOUCH = "SET #ttl = :ttl"


class DynamoStore(Store):
    """Items in one DynamoDB table (``pk`` string key, ``ttl`` epoch-seconds attribute)."""

    def __init__(self, clients: AwsClients, table: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._clients = clients
        self.table = table
        self._serializer: TypeSerializer = TypeSerializer()
        self._deserializer: TypeDeserializer = TypeDeserializer()

    @property
    def _db(self) -> DynamoDBClient:
        return self._clients.dynamodb

    # -- reads ------------------------------------------------------------------------------------
    def get(self, key: str) -> Item | None:
        try:
            response = self._db.get_item(
                TableName=self.table, Key=self.key(key), ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc) from exc
        item = self.item(response.get("Item"))
        return None if item is None or is_expired(item) else item

    def get_many(self, keys: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for request in self.batch_requests(keys):
            for attempt in range(BATCH_GET_ATTEMPTS):
                if attempt:
                    time.sleep(batch_pause(attempt))
                try:
                    response = self._db.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise self.error(exc) from exc
                request = self.absorb(response, found)
                if not request:
                    break
            else:
                raise self.throttled(request)
        return found

    # -- the I/O-free parts of BatchGetItem, shared with the awaitable face (cloudq.aio) ---------
    def batch_requests(self, keys: Sequence[str]) -> Iterator[Any]:
        """BatchGetItem requests for ``keys``: unique (DynamoDB refuses duplicates), 100 each."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_GET_KEYS):
            chunk = unique[start:start + BATCH_GET_KEYS]
            yield {self.table: {"Keys": [self.key(k) for k in chunk], "ConsistentRead": True}}

    def absorb(self, response: Any, found: dict[str, Item]) -> Any:
        """Add a response's live items to ``found``; return the request for the keys DynamoDB
        left unprocessed, or None."""
        for raw in response.get("Responses", {}).get(self.table, []):
            item = self.item(raw)
            if item is not None and not is_expired(item):
                found[item[KEY_FIELD]] = item
        unprocessed = response.get("UnprocessedKeys") or None
        if unprocessed:
            logger.debug("BatchGetItem on %s left %d keys unprocessed; retrying",
                         self.table, len(unprocessed[self.table]["Keys"]))
        return unprocessed

    def throttled(self, request: Any) -> StoreError:
        keys = len(request[self.table]["Keys"])
        return StoreUnavailable(f"DynamoDB kept throttling reads of {keys} items in {self.table!r}")

    # -- writes -----------------------------------------------------------------------------------
    def put(self, key: str, item: Item, *, ttl_s: float) -> None:
        try:
            self._db.put_item(TableName=self.table, Item=self.stamped(key, item, ttl_s))
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc) from exc

    def put_if_absent(self, key: str, item: Item, *, ttl_s: float) -> bool:
        return self._put_if(key, item, ttl_s, ABSENT_OR_EXPIRED)

    def put_if_version(self, key: str, item: Item, *, expected: int | None, ttl_s: float) -> bool:
        if expected is None:
            return self._put_if(key, item, ttl_s, ABSENT_OR_EXPIRED)
        return self._put_if(key, item, ttl_s, SAME_VERSION, {":expected": expected})

    def _put_if(
        self, key: str, item: Item, ttl_s: float, condition: str,
        values: dict[str, Any] | None = None,
    ) -> bool:
        try:
            self._db.put_item(
                TableName=self.table, Item=self.stamped(key, item, ttl_s),
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(condition),
                ExpressionAttributeValues=self._values({":now": _now(), **(values or {})}),
            )
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise self.error(exc) from exc
        return True

    def add_to_set(self, key: str, field: str, members: Iterable[str], *, ttl_s: float) -> int:
        wanted = set(members)
        if not wanted:  # DynamoDB has no empty sets: just refresh the TTL and count
            item = self._update(key, field, TOUCH, {}, ttl_s)
            return len(item.get(field, ()))
        item = self._update(key, field, ADD_MEMBERS, {":members": wanted}, ttl_s)
        return len(item[field])

    def add_new_member(self, key: str, field: str, member: str, *, ttl_s: float) -> int | None:
        try:
            response = self._db.update_item(
                TableName=self.table, Key=self.key(key), UpdateExpression=ADD_MEMBERS,
                ConditionExpression=NOT_A_MEMBER,
                ExpressionAttributeNames=_names(ADD_MEMBERS, field),
                ExpressionAttributeValues=self._values(
                    {":members": {member}, ":member": member, ":ttl": expires_at(ttl_s)}),
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise self.error(exc) from exc
        item = self.item(response.get("Attributes")) or {}
        return len(item.get(field, ()))

    def increment(self, key: str, field: str, by: int = 1, *, ttl_s: float) -> int:
        item = self._update(key, field, ADD_NUMBER, {":by": by}, ttl_s)
        return int(item[field])

    def _update(
        self, key: str, field: str, expression: str, values: dict[str, Any], ttl_s: float,
    ) -> Item:
        """UpdateItem on a live (or absent) item, returning it; an expired one is replaced first.

        ALL_NEW, not UPDATED_NEW: moto leaves unchanged attributes out of UPDATED_NEW, and
        returned values cost no capacity.
        """
        for _ in range(EXPIRED_RETRIES):
            try:
                response = self._db.update_item(
                    TableName=self.table, Key=self.key(key),
                    UpdateExpression=expression,
                    ConditionExpression=LIVE_OR_ABSENT,
                    ExpressionAttributeNames=_names(expression + LIVE_OR_ABSENT, field),
                    ExpressionAttributeValues=self._values(
                        {**values, ":ttl": expires_at(ttl_s), ":now": _now()}),
                    ReturnValues="ALL_NEW",
                )
            except (ClientError, BotoCoreError) as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise self.error(exc) from exc
                logger.debug("item %s in %s has expired; starting it afresh", key, self.table)
                self._put_if(key, {}, ttl_s, STILL_EXPIRED)
                continue
            return self.item(response.get("Attributes")) or {}
        raise StoreError(f"item {key!r} in {self.table!r} kept changing under an update")

    def delete(self, key: str) -> None:
        try:
            self._db.delete_item(TableName=self.table, Key=self.key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc) from exc

    # -- provisioning -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the table (on-demand, ``pk`` key) if missing, wait for it, enable TTL."""
        try:
            self._db.describe_table(TableName=self.table)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise self.error(exc) from exc
            self._create_table()
        self._db.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        ttl = self._db.describe_time_to_live(TableName=self.table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            return
        try:
            self._db.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_FIELD},
            )
        except ClientError as exc:
            if "already enabled" not in str(exc):
                raise self.error(exc) from exc

    def _create_table(self) -> None:
        try:
            self._db.create_table(
                TableName=self.table,
                AttributeDefinitions=[{"AttributeName": KEY_FIELD, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": KEY_FIELD, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # else being created by someone else
                raise self.error(exc) from exc
        else:
            logger.info("created DynamoDB table %s", self.table)

    # -- conversion -------------------------------------------------------------------------------
    def key(self, key: str) -> Any:
        return {KEY_FIELD: {"S": key}}

    def stamped(self, key: str, item: Item, ttl_s: float) -> Any:
        return self._values({**item, KEY_FIELD: key, TTL_FIELD: expires_at(ttl_s)})

    def _values(self, values: Item) -> Any:
        return {name: self._serializer.serialize(_to_dynamo(value))
                for name, value in values.items() if not _is_empty_set(value)}

    def item(self, raw: Any) -> Item | None:
        if raw is None:
            return None
        return {name: _from_dynamo(self._deserializer.deserialize(value))
                for name, value in raw.items()}

    def error(self, exc: ClientError | BotoCoreError) -> ConfigError | StoreError:
        if _code(exc) == "ResourceNotFoundException":
            return ConfigError(
                f"DynamoDB table {self.table!r} does not exist; create it with `cloudq provision`")
        operation = getattr(exc, "operation_name", None) or "call"
        text = f"DynamoDB {operation} on table {self.table!r} failed: {exc}"
        return StoreUnavailable(text) if unreachable(exc) else StoreError(text)


UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "LimitExceededException",
})
"""Error codes that say DynamoDB cannot serve now (throttling, its own failures)."""


def unreachable(exc: ClientError | BotoCoreError) -> bool:
    """Whether a failed call says the store is unreachable or failing, not that it refused."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):  # refused, reset, timed out
        return True
    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 or _code(exc) in UNAVAILABLE_CODES


def batch_pause(attempt: int) -> float:
    """Seconds to wait before retrying unprocessed keys (exponential, at most 1 s)."""
    return min(0.05 * 2.0**attempt, 1.0)


def _code(exc: ClientError | BotoCoreError) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _names(expression: str, field: str | None = None) -> dict[str, str]:
    """The ``#name`` placeholders ``expression`` uses (``#f`` stands for ``field``)."""
    names = {**NAMES, "#f": field} if field is not None else NAMES
    return {name: value for name, value in names.items() if name in expression}


def _now() -> int:
    return int(time.time())


def _is_empty_set(value: Any) -> bool:
    return isinstance(value, set | frozenset) and not value


def _to_dynamo(value: Any) -> Any:
    """Floats to Decimal (the serializer refuses floats), tuples to lists, recursively."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if not _is_empty_set(v)}
    if isinstance(value, list | tuple):
        return [[] if _is_empty_set(v) else _to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """Decimal back to int (when integral) or float, recursively; sets stay sets."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value
