"""1,000 concurrent ``adelay()`` calls from one event loop, against the embedded local AWS.

    python benchmarks/aio_send.py [--tasks 1000] [--run]

Starts moto's server on 127.0.0.1 in a child process (so its CPU and memory are not counted
here), provisions a fresh app, then from one event loop:

1. ``asyncio.gather`` of N ``add.adelay(i, i)`` — wall time, and this process's peak RSS
   before and after (``ru_maxrss``); aioboto3 clients are created by the first call;
2. for comparison, the same N sends with the blocking ``delay`` from a pool of 32 threads;
3. with ``--run``: a ``cloudq poll --pool asyncio -c 1000`` worker runs N async tasks that each
   ``await asyncio.sleep(1)``, and ``GroupResult.aget`` waits for all of them.

moto is not AWS: its SQS takes a lock per request, so absolute times are moto's.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import cloudq
from cloudq.provision import provision

SERVER = """
from cloudq.localaws import LocalAws
import time
local = LocalAws(host="127.0.0.1").start()
print(local.endpoint_url, flush=True)
while True:
    time.sleep(60)
"""

app = cloudq.App("bench-aio")


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="bench.nap", queue="naps")
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


async def send_async(tasks: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    results = await asyncio.gather(*(add.adelay(i, i) for i in range(tasks)))
    took = time.perf_counter() - start
    await app.aclose()
    return took, [r.id for r in results]


def send_threads(tasks: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: add.apply_async((i, i), queue="threads"), range(tasks)))
    return time.perf_counter() - start


async def run_naps(tasks: int) -> float:
    start = time.perf_counter()
    group = await cloudq.group(nap.s(1.0) for _ in range(tasks)).aapply_async()
    await group.aget(timeout=300)
    took = time.perf_counter() - start
    await app.aclose()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--run", action="store_true", help="also run async tasks in a worker")
    options = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    endpoint_url = server.stdout.readline().strip()
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    app.conf.update(endpoint_url=endpoint_url, queue_prefix=prefix,
                    result_table=f"{prefix}results")
    provision(app, ["default", "threads", "naps"])
    try:
        before = rss_mib()
        threads_before = threading.active_count()
        seconds, ids = asyncio.run(send_async(options.tasks))
        print(f"{options.tasks} concurrent adelay() from one loop: {seconds:.2f} s "
              f"({options.tasks / seconds:.0f}/s); peak RSS {before:.1f} -> {rss_mib():.1f} MiB; "
              f"threads {threads_before} -> {threading.active_count()}; "
              f"{len(set(ids))} distinct task ids")
        print(f"  messages on the queue afterwards: {app.transport.depth('default')}")
        print(f"{options.tasks} blocking delay() from 32 threads: "
              f"{send_threads(options.tasks):.2f} s; peak RSS now {rss_mib():.1f} MiB")
        if options.run:
            env = {"CLOUDQ_ENDPOINT_URL": endpoint_url, "CLOUDQ_QUEUE_PREFIX": prefix,
                   "CLOUDQ_RESULT_TABLE": f"{prefix}results"}
            import os

            worker = subprocess.Popen(
                [sys.executable, "-m", "cloudq.cli", "poll", "-A", "benchmarks.aio_send:app",
                 "-Q", "naps", "--pool", "asyncio", "-c", str(options.tasks), "-l", "warning"],
                env={**os.environ, **env})
            try:
                took = asyncio.run(run_naps(options.tasks))
                print(f"{options.tasks} async tasks sleeping 1 s on `--pool asyncio -c "
                      f"{options.tasks}`: all results after {took:.1f} s")
            finally:
                worker.terminate()
                worker.wait(30)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
