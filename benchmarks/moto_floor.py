"""The moto floor: what one task's AWS round trip costs with raw boto3, no framework at all.

    python moto_floor.py --endpoint-url http://127.0.0.1:PORT --rounds 50

Each round is the least a task queue with results can do: SendMessage, ReceiveMessage,
DeleteMessage, PutItem (the result), GetItem (reading it), one after another on one queue and
one table of its own. Prints one JSON object: ``{"latencies_ms": [...]}``. ``vs_celery.py``
runs it through the same proxy and moto server as both systems, so ``delay().get()`` can be
compared with it.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import boto3

WARM_UP_ROUNDS = 5


def one_round(sqs: Any, dynamodb: Any, queue_url: str, table: str, n: int) -> None:
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"n": n}))
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1,
                                   WaitTimeSeconds=5)["Messages"][0]
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=received["ReceiptHandle"])
    key = {"id": {"S": str(n)}}
    dynamodb.put_item(TableName=table, Item={**key, "result": {"S": received["Body"]}})
    dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    options = parser.parse_args()
    sqs = boto3.client("sqs", endpoint_url=options.endpoint_url, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=options.endpoint_url,
                            region_name="us-east-1")
    name = f"floor-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    for n in range(WARM_UP_ROUNDS):
        one_round(sqs, dynamodb, queue_url, name, n)
    latencies_ms = []
    for n in range(options.rounds):
        started = time.perf_counter()
        one_round(sqs, dynamodb, queue_url, name, n)
        latencies_ms.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"latencies_ms": latencies_ms}))


if __name__ == "__main__":
    main()
