"""Chords on the embedded local AWS: time to the callback's result, and AWS calls per member.

    python benchmarks/chord.py [--sizes 100,1000] [--concurrency 8]

Starts moto's server on 127.0.0.1, provisions a fresh app, runs a Poller in a thread of this
process, then for each size sends ``chord([add.s(i, i) for i in range(size)], tsum.s())`` and
waits for the callback's result. The chord is sent and read by a second App with the same
settings, so the request counter (a botocore ``before-call`` hook on the worker's clients)
sees only what the worker does: running the members, the join, firing the callback, and its
own polling (ReceiveMessage, DeleteMessageBatch, the revoke watch).

moto is not AWS: absolute times are moto's; request counts are what AWS would bill.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

import cloudq
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.poller import Poller

JOIN_ACTIONS = ("DynamoDB.UpdateItem", "DynamoDB.PutItem", "DynamoDB.GetItem",
                "DynamoDB.BatchGetItem")


def per_member(counter: RequestCounter, members: int) -> list[str]:
    rows = sorted(counter.counts.items())
    lines = [f"  {name:<28} {count:>7}  {count / members:>6.3f}/member" for name, count in rows]
    lines.append(f"  {'total':<28} {counter.total:>7}  {counter.total / members:>6.3f}/member")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="chord sizes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]

    with LocalAws() as aws:
        unique = f"bench{uuid.uuid4().hex[:6]}"
        settings: dict[str, Any] = {
            "endpoint_url": aws.endpoint_url, "queue_prefix": f"{unique}-",
            "result_table": f"{unique}-results", "worker_poll_wait": 1,
        }
        worker = cloudq.App("bench", set_as_current=False, **settings)
        client = cloudq.App("bench", set_as_current=False, **settings)
        callbacks: list[int] = []

        @worker.task(name="bench.add")
        def add(x: int, y: int) -> int:
            return x + y

        @worker.task(name="bench.tsum")
        def tsum(numbers: list[int]) -> int:
            callbacks.append(len(numbers))
            return sum(numbers)

        def chord(size: int) -> cloudq.Chord:
            header = [cloudq.signature(add.name, args=(i, i), app=client) for i in range(size)]
            return cloudq.chord(header, cloudq.signature(tsum.name, app=client))

        provision(worker)
        poller = Poller(worker, concurrency=options.concurrency)
        thread = threading.Thread(target=poller.run, daemon=True)
        thread.start()
        assert chord(10).apply_async().get(timeout=30) == 90  # warm up connections and caches
        callbacks.clear()

        counter = RequestCounter()
        for aws_client in (worker.aws.sqs, worker.aws.dynamodb):
            counter.attach(aws_client)

        reports = []
        for size in sizes:
            counter.reset()
            started = time.perf_counter()
            result = chord(size).apply_async()
            sent_s = time.perf_counter() - started
            value = result.get(timeout=600, interval=0.1)
            done_s = time.perf_counter() - started
            assert value == size * (size - 1), value
            snapshot = RequestCounter()
            snapshot.counts.update(counter.counts)
            reports.append((size, sent_s, done_s, snapshot))

        poller.stop()
        thread.join(10)

    print(f"cloudq chords on moto server ({options.concurrency} worker threads, in-process Poller)")
    print(f"  callback runs per chord: {callbacks} (one entry per callback run: its result count)")
    for size, sent_s, done_s, snapshot in reports:
        print(f"{size}-member chord: sent in {sent_s:.2f} s, callback result after {done_s:.2f} s "
              f"({size / done_s:.0f} members/s)")
        print("  worker-side AWS requests (members, join, callback, polling):")
        print("\n".join(per_member(snapshot, size)))
        join = {name: snapshot.counts[name] for name in JOIN_ACTIONS}
        print("  DynamoDB per member: " + ", ".join(
            f"{name.split('.')[1]} {count / size:.3f}" for name, count in join.items()))


if __name__ == "__main__":
    main()
