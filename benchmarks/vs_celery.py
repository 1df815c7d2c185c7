"""cloudq beside Celery on one moto server: AWS requests, cost, latency, throughput, start-up.

    python benchmarks/vs_celery.py [--repeat 3] [--quick] [--only ROW ...] [--json PATH]

Run by ``make bench``; not part of ``make test``. Celery is never a dependency of cloudq: the
first run creates ``.venv/bench-celery`` with ``celery[sqs,dynamodb]`` (kombu's SQS
transport: boto3 + pycurl, whose wheel installs without libcurl headers on this machine; the
DynamoDB result backend: boto3) and reuses it while its stamp matches.

How it measures:

* one moto server (cloudq's ``LocalAws``) in a child process; in front of it a counting proxy
  (``aws_proxy.py``) with one listener per role, so the caller's requests and the worker's are
  counted apart, per service and operation, with bytes and billable units (``aws_billing.py``);
* each system runs as subprocesses in its own virtualenv: a worker (``cloudq poll --pool
  threads -c 8``; ``celery worker --pool threads -c 8``, and ``prefork`` too for throughput:
  see ``bench_harness.Side.pools`` for why not prefork everywhere) and a caller
  (``caller.py``: the same scenario code for both, only the app module differs);
* repetitions interleave the systems (cloudq then Celery, then the other way round); moto is
  reset before every run, so queues and tables start empty; the printed figure is the median
  over repetitions, and for a system measured in several configurations, its best one;
* a count is taken from the moment the caller says go (connections already warm) until the
  queue is empty again; throughput is timed from the first task sent until the queue is empty,
  the caller sending 50 at a time whenever the queue is 50 deep or less (moto slows as queues
  deepen), and shown with the deepest the queue was.

Both systems use their default settings apart from the endpoint and names. Prints the Markdown
table (figure | cloudq | Celery | ratio | goal | met?) and the per-operation breakdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aws_proxy import CountingProxy
from bench_harness import (
    BENCHMARKS,
    ROOT,
    BenchError,
    Harness,
    MotoServer,
    Side,
    celery_side,
    cloudq_side,
    run_json,
    versions,
)
from vs_celery_rows import DASH, ROW_KEYS, ROWS, Repetition, Row, SideRun, markdown_table

COUNTED_SCENARIOS = ("single", "threaded", "group", "roundtrip", "chord")
FEED_CHUNK = 50
"""The throughput run sends this many tasks at a time, the next ones when the queue is back
at this depth or less: two chunks deep at most."""


@dataclass(frozen=True)
class Sizes:
    """How many tasks each measurement runs."""

    single: int
    threaded: int
    group: int
    roundtrip: int
    chord: int
    throughput: int
    floor_rounds: int
    cpu_tasks: int
    lambda_runs: int


FULL = Sizes(single=200, threaded=320, group=300, roundtrip=30, chord=100, throughput=2000,
             floor_rounds=50, cpu_tasks=3000, lambda_runs=5)
QUICK = Sizes(single=50, threaded=96, group=100, roundtrip=10, chord=100, throughput=200,
              floor_rounds=20, cpu_tasks=1000, lambda_runs=3)


def measure_side(harness: Harness, side: Side, sizes: Sizes, needs: set[str]) -> SideRun:
    """One system's run of every selected measurement that needs moto."""
    run = SideRun()
    scenarios = [s for s in COUNTED_SCENARIOS if s in needs]
    if scenarios or "ready" in needs:
        harness.fresh_run(side)
        worker = harness.start_worker(side, side.pools[0])
        run.ready_s.setdefault(side.pools[0], []).append(worker.ready_s)
        try:
            for scenario in scenarios:
                tasks = getattr(sizes, scenario)
                _progress(f"  {side.name}: {scenario} ({tasks} tasks)")
                try:
                    run.windows[scenario] = harness.call(side, scenario, tasks)
                except BenchError as exc:  # one failed run is reported, not fatal
                    run.failures[scenario] = exc.summary
                    _progress(f"  {side.name}: {scenario} failed: {exc.summary}")
                    continue
                run.tasks[scenario] = tasks
        finally:
            harness.stop_worker(worker)
    if "throughput" in needs:
        for pool in side.pools:
            _progress(f"  {side.name}: throughput, {pool} ({sizes.throughput} tasks)")
            run.throughput[pool] = measure_throughput(harness, side, pool, sizes.throughput,
                                                      run)
    return run


def measure_throughput(harness: Harness, side: Side, pool: str, tasks: int,
                       run: SideRun) -> tuple[float, int]:
    """Tasks per second of one worker fed ``tasks`` at a shallow depth, and the deepest the
    queue was."""
    harness.fresh_run(side)
    worker = harness.start_worker(side, pool)
    run.ready_s.setdefault(pool, []).append(worker.ready_s)
    try:
        window = harness.feed(side, tasks, FEED_CHUNK)
    finally:
        harness.stop_worker(worker)
    return window.measured["sent"] / window.elapsed_s, window.max_depth


def measure_floor(harness: Harness, rounds: int) -> float:
    """p50 of raw boto3 send, receive, delete, put, get through the same proxy and moto."""
    got = run_json([sys.executable, str(BENCHMARKS / "moto_floor.py"), "--endpoint-url",
                    harness.proxy.endpoint("floor"), "--rounds", str(rounds)], BENCHMARKS)
    return float(statistics.median(got["latencies_ms"]))


def measure_lambda_init(runs: int) -> float:
    """Median handler init minus median bare ``import boto3``, fresh processes, alternated."""
    script = str(BENCHMARKS / "cloudq_side" / "lambda_init.py")
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for mode in ("handler", "boto3"):
            got = run_json([sys.executable, script, mode], BENCHMARKS / "cloudq_side")
            samples[mode].append(got["ms"])
    return float(statistics.median(samples["handler"]) - statistics.median(samples["boto3"]))


def measure_cpu(side: Side, tasks: int) -> float:
    """Tasks per CPU-second: cloudq's in-memory transport, Celery's eager mode."""
    script = "memory_cpu.py" if side.name == "cloudq" else "eager_cpu.py"
    got = run_json([str(side.python), str(side.directory / script), "--tasks", str(tasks)],
                   side.directory)
    return float(got["tasks"]) / float(got["cpu_s"])


def repetition(harness: Harness, sides: Sequence[Side], sizes: Sizes,
               needs: set[str]) -> Repetition:
    rep = Repetition({side.name: measure_side(harness, side, sizes, needs) for side in sides})
    if "roundtrip" in needs:
        rep.floor_ms = measure_floor(harness, sizes.floor_rounds)
    if "lambda" in needs:
        rep.sides["cloudq"].lambda_init_ms = measure_lambda_init(sizes.lambda_runs)
    if "cpu" in needs:
        for side in sides:
            rep.sides[side.name].cpu_tasks_per_s = measure_cpu(side, sizes.cpu_tasks)
    return rep


def breakdown(reps: Sequence[Repetition], scenario: str) -> str:
    """Requests per task by (role, service, operation), both sides, over all repetitions."""
    per_task: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    totals: dict[str, float] = {}
    for name in ("cloudq", "Celery"):
        runs = [rep.sides[name] for rep in reps if scenario in rep.sides[name].windows]
        tasks = sum(run.tasks[scenario] for run in runs)
        for run in runs:
            for key, tally in run.windows[scenario].counts:
                per_task[key][name] = per_task[key].get(name, 0.0) + tally.requests / tasks
        totals[name] = sum(row.get(name, 0.0) for row in per_task.values())
    lines = [f"#### {scenario}: AWS requests per task", "",
             "| role | service | operation | cloudq | Celery |", "| --- | --- | --- | --- | --- |"]
    for (role, service, operation), values in sorted(per_task.items()):
        cells = " | ".join(f"{values[n]:.3f}" if n in values else DASH
                           for n in ("cloudq", "Celery"))
        lines.append(f"| {role} | {service} | {operation} | {cells} |")
    lines.append(f"| total | | | {totals['cloudq']:.3f} | {totals['Celery']:.3f} |")
    return "\n".join(lines)


def report(reps: Sequence[Repetition], rows: Sequence[Row], sizes: Sizes,
           found: dict[str, dict[str, str]]) -> str:
    needs = {row.needs for row in rows}
    parts = [f"cloudq vs Celery on one moto server: {len(reps)} repetitions, medians "
             f"({_describe(found)}; {platform.machine()}, {_cpus()} CPUs)", "",
             markdown_table(rows, reps), ""]
    failed = [f"- {name}, repetition {number}: {scenario}: {summary}"
              for number, rep in enumerate(reps, 1) for name, run in rep.sides.items()
              for scenario, summary in run.failures.items()]
    if failed:
        parts += ["Failed runs (left out of the medians):", *failed, ""]
    parts += [breakdown(reps, s) + "\n" for s in COUNTED_SCENARIOS if s in needs]
    parts.append(f"sizes: {asdict(sizes)}")
    return "\n".join(parts)


def as_json(reps: Sequence[Repetition], sizes: Sizes, found: dict[str, dict[str, str]],
            table: str) -> dict[str, Any]:
    def side(run: SideRun) -> dict[str, Any]:
        return {
            "tasks": run.tasks, "failures": run.failures, "ready_s": run.ready_s,
            "throughput": run.throughput,
            "lambda_init_ms": run.lambda_init_ms, "cpu_tasks_per_s": run.cpu_tasks_per_s,
            "windows": {name: {"elapsed_s": w.elapsed_s, "max_depth": w.max_depth,
                               "measured": w.measured,
                               "counts": [[*key, asdict(tally)] for key, tally in w.counts]}
                        for name, w in run.windows.items()},
        }
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(), "versions": found,
            "machine": {"platform": platform.platform(), "cpus": _cpus()},
            "sizes": asdict(sizes), "table": table,
            "repetitions": [{"floor_ms": rep.floor_ms,
                             "sides": {n: side(r) for n, r in rep.sides.items()}}
                            for rep in reps]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=ROW_KEYS, metavar="ROW",
                        help=f"only these rows: {', '.join(ROW_KEYS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    rows = [row for row in ROWS if not options.only or row.key in options.only]
    needs = {row.needs for row in rows}
    cloudq, celery = cloudq_side(), celery_side()
    found = {"cloudq": {**versions(cloudq, ["cloudq", "boto3", "moto"]), "commit": _commit()},
             "Celery": versions(celery, ["celery", "kombu", "boto3", "pycurl"])}
    reps = []
    with MotoServer() as moto, CountingProxy(moto.endpoint_url) as proxy:
        harness = Harness(moto, proxy)
        for number in range(options.repeat):
            order = (cloudq, celery) if number % 2 == 0 else (celery, cloudq)
            _progress(f"repetition {number + 1}/{options.repeat}: "
                      f"{' then '.join(s.name for s in order)}")
            reps.append(repetition(harness, order, sizes, needs))
    text = report(reps, rows, sizes, found)
    print(text)
    if options.json:
        options.json.write_text(json.dumps(as_json(reps, sizes, found, text), indent=1))


def _describe(found: dict[str, dict[str, str]]) -> str:
    ours, theirs = found["cloudq"], found["Celery"]
    return (f"cloudq {ours['cloudq']} at {ours['commit']}, Celery {theirs['celery']} "
            f"(kombu {theirs['kombu']}), moto {ours['moto']}")


def _commit() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _cpus() -> int:
    return os.cpu_count() or 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
