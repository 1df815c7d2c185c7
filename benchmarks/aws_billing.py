"""What one AWS request would cost: SQS billing units and DynamoDB read/write units.

Computed from the request and response bodies as a proxy sees them, by these rules (AWS's
published ones, simplified where the proxy cannot know more):

* SQS: every request is billed in 64 KB chunks of payload, at least one; the payload is taken
  as the larger of the request and response bodies (a little high: it includes the envelope).
* DynamoDB item size: attribute names plus values, as DynamoDB counts them (strings in UTF-8
  bytes, numbers one byte per two digits plus one, binary decoded, 1 byte for BOOL/NULL,
  3 bytes plus one per element for lists and maps).
* Reads: ``GetItem`` and each key of ``BatchGetItem`` cost one unit per 4 KB of the item found
  (at least one unit, found or not); ``Query``/``Scan`` one unit per 4 KB of all items returned
  together; eventually consistent reads cost half, ``ConsistentRead`` the full unit;
  ``TransactGetItems`` twice the strong read per item.
* Writes: one unit per 1 KB of the item written, at least one. ``PutItem`` and
  ``BatchWriteItem`` puts use the item sent; ``UpdateItem`` uses the new image when the
  response returns it (``ReturnValues``), else the key and values sent (a lower bound);
  ``DeleteItem`` costs one; ``TransactWriteItems`` twice per item. A failed conditional write
  still costs its units, as on AWS.

Prices (us-east-1, on-demand, no free tier): SQS $0.40 per million requests, DynamoDB $0.625 per
million write units and $0.125 per million read units.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

SQS_CHUNK_BYTES = 64 * 1024
READ_UNIT_BYTES = 4 * 1024
WRITE_UNIT_BYTES = 1024

SQS_USD_PER_MILLION_REQUESTS = 0.40
DYNAMODB_USD_PER_MILLION_WRITE_UNITS = 0.625
DYNAMODB_USD_PER_MILLION_READ_UNITS = 0.125


@dataclass(frozen=True)
class Units:
    """The billable units of one request."""

    sqs_requests: int = 0
    read_units: float = 0.0
    write_units: float = 0.0


def usd(sqs_requests: float, read_units: float, write_units: float) -> float:
    """Dollars for the given units, at the prices above."""
    return (sqs_requests * SQS_USD_PER_MILLION_REQUESTS
            + read_units * DYNAMODB_USD_PER_MILLION_READ_UNITS
            + write_units * DYNAMODB_USD_PER_MILLION_WRITE_UNITS) / 1e6


def units_of(service: str, operation: str, request: bytes, response: bytes) -> Units:
    """The units one request costs, by the rules in this module's docstring."""
    if service == "sqs":
        return Units(sqs_requests=max(1, math.ceil(max(len(request), len(response))
                                                   / SQS_CHUNK_BYTES)))
    if service == "dynamodb":
        return _dynamodb_units(operation, _json(request), _json(response))
    return Units()


def item_size_bytes(item: dict[str, Any]) -> int:
    """The size DynamoDB bills for an item in its JSON wire form (``{"name": {"S": "x"}}``)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        digits = str(data).lstrip("-").replace(".", "").strip("0")
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(base64.b64decode(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(element) for element in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: element}) for element in data)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def _read_units(size_bytes: int, consistent: bool) -> float:
    units = max(1, math.ceil(size_bytes / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def _write_units(size_bytes: int) -> float:
    return float(max(1, math.ceil(size_bytes / WRITE_UNIT_BYTES)))


def _dynamodb_units(operation: str, request: dict[str, Any], response: dict[str, Any]) -> Units:
    consistent = bool(request.get("ConsistentRead"))
    if operation == "GetItem":
        return Units(read_units=_read_units(item_size_bytes(response.get("Item", {})),
                                            consistent))
    if operation == "BatchGetItem":
        return Units(read_units=_batch_get_units(request, response))
    if operation in ("Query", "Scan"):
        total = sum(item_size_bytes(item) for item in response.get("Items", []))
        return Units(read_units=_read_units(total, consistent))
    if operation == "TransactGetItems":
        return Units(read_units=2.0 * len(request.get("TransactItems", [])))
    if operation == "PutItem":
        return Units(write_units=_write_units(item_size_bytes(request.get("Item", {}))))
    if operation == "UpdateItem":
        return Units(write_units=_write_units(_updated_size(request, response)))
    if operation == "DeleteItem":
        return Units(write_units=1.0)
    if operation == "BatchWriteItem":
        return Units(write_units=_batch_write_units(request))
    if operation == "TransactWriteItems":
        return Units(write_units=2.0 * len(request.get("TransactItems", [])))
    return Units()


def _batch_get_units(request: dict[str, Any], response: dict[str, Any]) -> float:
    units = 0.0
    found: dict[str, list[dict[str, Any]]] = response.get("Responses", {})
    unprocessed = response.get("UnprocessedKeys", {})
    for table, wanted in request.get("RequestItems", {}).items():
        consistent = bool(wanted.get("ConsistentRead"))
        items = found.get(table, [])
        units += sum(_read_units(item_size_bytes(item), consistent) for item in items)
        missing = (len(wanted.get("Keys", [])) - len(items)
                   - len(unprocessed.get(table, {}).get("Keys", [])))
        units += max(0, missing) * _read_units(0, consistent)
    return units


def _batch_write_units(request: dict[str, Any]) -> float:
    units = 0.0
    for writes in request.get("RequestItems", {}).values():
        for write in writes:
            put = write.get("PutRequest")
            units += _write_units(item_size_bytes(put["Item"])) if put else 1.0
    return units


def _updated_size(request: dict[str, Any], response: dict[str, Any]) -> int:
    if "Attributes" in response and request.get("ReturnValues") in ("ALL_NEW", "ALL_OLD"):
        return item_size_bytes(response["Attributes"])
    sent = dict(request.get("Key", {}))
    sent.update(request.get("ExpressionAttributeValues", {}))
    return item_size_bytes(sent)


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
