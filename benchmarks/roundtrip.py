"""Round trip on the embedded local AWS: ``delay().get()`` latency and AWS requests per task.

    python benchmarks/roundtrip.py [--tasks 200] [--concurrency 8]

Starts moto's server on 127.0.0.1, provisions a fresh app, runs a Poller in a thread of this
process (so one botocore hook sees both the producer's and the worker's requests), then:

1. sequential ``add.delay(i, i).get()`` — latency p50/p95/max;
2. a burst of N ``delay`` calls, then ``get`` on each — throughput;
3. AWS requests per task by action, counted with a botocore ``before-call`` hook.

moto is not AWS: absolute latencies are moto's; request counts are what AWS would bill.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import cloudq
from cloudq.aws import RequestCounter
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.poller import Poller


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def per_task(counter: RequestCounter, tasks: int) -> list[str]:
    rows = sorted(counter.counts.items())
    lines = [f"  {name:<34} {count:>6}  {count / tasks:>6.2f}/task" for name, count in rows]
    lines.append(f"  {'total':<34} {counter.total:>6}  {counter.total / tasks:>6.2f}/task")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()

    with LocalAws() as aws:
        unique = f"bench{uuid.uuid4().hex[:6]}"
        app = cloudq.App("bench", endpoint_url=aws.endpoint_url, queue_prefix=f"{unique}-",
                         result_table=f"{unique}-results", worker_poll_wait=1)

        @app.task
        def add(x: int, y: int) -> int:
            return x + y

        provision(app)
        poller = Poller(app, concurrency=options.concurrency)
        thread = threading.Thread(target=poller.run, daemon=True)
        thread.start()
        for i in range(10):  # warm up connections and caches
            add.delay(i, i).get(timeout=10)

        counter = RequestCounter()
        for client in (app.aws.sqs, app.aws.dynamodb):
            counter.attach(client)

        latencies = []
        for i in range(options.tasks):
            started = time.perf_counter()
            assert add.delay(i, i).get(timeout=10) == 2 * i
            latencies.append((time.perf_counter() - started) * 1000)
        sequential = dict(counter.counts)
        sequential_total = counter.total
        counter.reset()

        started = time.perf_counter()
        results = [add.delay(i, 1) for i in range(options.tasks)]
        sent_s = time.perf_counter() - started
        assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(options.tasks)]
        burst_s = time.perf_counter() - started

        poller.stop()
        thread.join(10)

    print(f"cloudq round trip on moto server ({options.tasks} tasks, "
          f"{options.concurrency} worker threads)")
    print(f"  delay().get() sequential: p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {percentile(latencies, 95):.1f} ms, max {max(latencies):.1f} ms")
    print(f"  burst: sent {options.tasks} in {sent_s:.2f} s, all results in {burst_s:.2f} s "
          f"({options.tasks / burst_s:.0f} tasks/s)")
    print("AWS requests, sequential delay().get() (includes the caller's result polling):")
    seq = RequestCounter()
    seq.counts.update(sequential)
    print("\n".join(per_task(seq, options.tasks)))
    assert seq.total == sequential_total
    print("AWS requests, burst:")
    print("\n".join(per_task(counter, options.tasks)))


if __name__ == "__main__":
    main()
