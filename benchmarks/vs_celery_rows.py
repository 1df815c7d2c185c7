"""The rows of ``vs_celery.py``'s table: what each figure is computed from, its goal (issue 12's
table), and how medians over repetitions become the printed Markdown.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aws_billing import usd
from bench_harness import Window


@dataclass
class SideRun:
    """Everything measured of one system in one repetition."""

    windows: dict[str, Window] = field(default_factory=dict)
    """Scenario name -> its measured window."""
    tasks: dict[str, int] = field(default_factory=dict)
    """Scenario name -> how many tasks it ran."""
    ready_s: dict[str, list[float]] = field(default_factory=dict)
    """Worker pool -> start-to-first-ReceiveMessage times."""
    throughput: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Worker pool -> (tasks per second, deepest the queue was)."""
    lambda_init_ms: float | None = None
    cpu_tasks_per_s: float | None = None
    failures: dict[str, str] = field(default_factory=dict)
    """Scenario name -> why it failed (a failed run is left out of the medians)."""


@dataclass
class Repetition:
    sides: dict[str, SideRun]
    floor_ms: float | None = None
    """p50 of the raw boto3 round trip (send, receive, delete, put, get)."""


@dataclass(frozen=True)
class Figure:
    """One value of a row for one side in one repetition."""

    value: float
    variant: str = ""
    """Which configuration gave it (a worker pool), when a side is measured in several."""
    depth: int | None = None
    """The deepest the queue was while it was measured (moto slows as queues deepen)."""


@dataclass(frozen=True)
class Cell:
    """A row's median for one side, over the repetitions (the best variant's)."""

    value: float
    variant: str = ""
    depth: int | None = None


@dataclass(frozen=True)
class Goal:
    """What cloudq's figure should be: ``bound``, or ``bound`` times the moto floor or
    Celery's figure, as an upper (or, with ``at_least``, lower) limit."""

    text: str
    bound: float
    at_least: bool = False
    times: str | None = None
    """None, "floor" or "celery"."""

    def met(self, cloudq: float, celery: float | None, floor_ms: float | None) -> bool | None:
        scale = {None: 1.0, "floor": floor_ms, "celery": celery}[self.times]
        if scale is None:
            return None
        limit = self.bound * scale
        return cloudq >= limit if self.at_least else cloudq <= limit


Extract = Callable[[SideRun], list[Figure]]
DASH = "\u2013"
"""What an empty cell shows (an en dash, as in issue 12's table)."""


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    needs: str
    """The measurement it comes from: a scenario, "throughput", "ready", "lambda" or "cpu"."""
    extract: Extract
    fmt: str
    goal: Goal
    higher_is_better: bool = False


def _per_task(scenario: str, count: Callable[[Window], float]) -> Extract:
    def extract(run: SideRun) -> list[Figure]:
        window = run.windows.get(scenario)
        if window is None:
            return []
        return [Figure(count(window) / run.tasks[scenario], depth=window.max_depth)]
    return extract


def _aws_requests(window: Window) -> float:
    return float(window.counts.total(service="sqs").requests
                 + window.counts.total(service="dynamodb").requests)


def _usd_per_million(window: Window) -> float:
    sqs, dynamodb = window.counts.total(service="sqs"), window.counts.total(service="dynamodb")
    return usd(sqs.sqs_requests, dynamodb.read_units, dynamodb.write_units) * 1e6


def _latency_p50(run: SideRun) -> list[Figure]:
    window = run.windows.get("roundtrip")
    if window is None:
        return []
    return [Figure(statistics.median(window.measured["latencies_ms"]))]


def _throughput(run: SideRun) -> list[Figure]:
    return [Figure(rate, pool, depth) for pool, (rate, depth) in run.throughput.items()]


def _ready(run: SideRun) -> list[Figure]:
    return [Figure(statistics.median(samples), pool) for pool, samples in run.ready_s.items()]


def _scalar(value: Callable[[SideRun], float | None]) -> Extract:
    def extract(run: SideRun) -> list[Figure]:
        got = value(run)
        return [] if got is None else [Figure(got)]
    return extract


ROWS: tuple[Row, ...] = (
    Row("single", "AWS requests per task, single `delay()`, no result (all SQS + DynamoDB)",
        "single", _per_task("single", _aws_requests), "{:.2f}", Goal("≤ 1.25", 1.25)),
    Row("threaded", "same, 32 threads calling `delay()` at once (coalesced sends)",
        "threaded", _per_task("threaded", _aws_requests), "{:.2f}", Goal("≤ 0.35", 0.35)),
    Row("group-sqs", "SQS requests per task, group of 100 + `.get()`", "group",
        _per_task("group", lambda w: w.counts.total(service="sqs").requests), "{:.2f}",
        Goal("≤ 0.35", 0.35)),
    Row("group-dynamodb", "DynamoDB calls per task, group of 100 + `.get()`", "group",
        _per_task("group", lambda w: w.counts.total(service="dynamodb").requests), "{:.2f}",
        Goal("≤ 1.15", 1.15)),
    Row("group-reads", "DynamoDB read units per member for `GroupResult.get()`", "group",
        _per_task("group", lambda w: w.counts.total(role="caller", service="dynamodb")
                  .read_units), "{:.2f}", Goal("≤ 1.2", 1.2)),
    Row("worker-result", "worker DynamoDB calls per task with a result", "roundtrip",
        _per_task("roundtrip", lambda w: w.counts.total(role="worker", service="dynamodb")
                  .requests), "{:.2f}", Goal("1.0", 1.0)),
    Row("chord", "worker DynamoDB calls per chord member", "chord",
        _per_task("chord", lambda w: w.counts.total(role="worker", service="dynamodb")
                  .requests), "{:.2f}", Goal("≤ 2.05", 2.05)),
    Row("cost", "$ per million tasks, group of 100 (SQS requests + DynamoDB units, on-demand)",
        "group", _per_task("group", _usd_per_million), "{:.2f}", Goal("≤ 0.95", 0.95)),
    Row("latency", "`delay().get()` p50, default settings", "roundtrip", _latency_p50,
        "{:.1f} ms", Goal("≤ 1.2 \u00d7 the moto floor", 1.2, times="floor")),
    Row("throughput", "tasks/s, one worker `-c 8`, fed 50 at a time", "throughput",
        _throughput, "{:.0f}", Goal("≥ 1.5 \u00d7 Celery's best config", 1.5, True, "celery"),
        higher_is_better=True),
    Row("ready", "worker start → ready (first ReceiveMessage)", "ready", _ready, "{:.2f} s",
        Goal("≤ 0.2 s", 0.2)),
    Row("lambda-init", "Lambda init: handler + boto3 + Powertools batch, over bare "
        "`import boto3`", "lambda", _scalar(lambda run: run.lambda_init_ms), "+{:.0f} ms",
        Goal("≤ +40 ms", 40.0)),
    Row("cpu", "framework CPU, in-memory transport (Celery: eager), tasks per CPU-second",
        "cpu", _scalar(lambda run: run.cpu_tasks_per_s), "{:,.0f}", Goal("≥ 25k", 25_000.0,
                                                                           True),
        higher_is_better=True),
)
ROW_KEYS = tuple(row.key for row in ROWS)


def median_cell(row: Row, runs: Sequence[SideRun]) -> Cell | None:
    """The median over repetitions, per variant; the best variant's."""
    values: dict[str, list[float]] = defaultdict(list)
    depths: dict[str, list[int]] = defaultdict(list)
    for run in runs:
        for figure in row.extract(run):
            values[figure.variant].append(figure.value)
            if figure.depth is not None:
                depths[figure.variant].append(figure.depth)
    if not values:
        return None
    cells = [Cell(statistics.median(v), variant if len(values) > 1 else "",
                  max(depths[variant]) if depths[variant] else None)
             for variant, v in values.items()]
    return (max if row.higher_is_better else min)(cells, key=lambda cell: cell.value)


def floor_median(reps: Sequence[Repetition]) -> float | None:
    floors = [rep.floor_ms for rep in reps if rep.floor_ms is not None]
    return statistics.median(floors) if floors else None


def markdown_table(rows: Sequence[Row], reps: Sequence[Repetition],
                   sides: tuple[str, str] = ("cloudq", "Celery")) -> str:
    """The side-by-side table: figure | cloudq | Celery | ratio | goal | met?"""
    floor_ms = floor_median(reps)
    lines = ["| figure | cloudq | Celery | ratio | goal | met? |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ours, theirs = (median_cell(row, [rep.sides[s] for rep in reps if s in rep.sides])
                        for s in sides)
        if ours is None and theirs is None:
            continue
        ratio = (f"{ours.value / theirs.value:.2f}" if ours and theirs and theirs.value
                 else DASH)
        goal = row.goal.text
        if row.goal.times == "floor" and floor_ms is not None:
            goal += f" ({floor_ms:.1f} ms here)"
        met = row.goal.met(ours.value, theirs.value if theirs else None, floor_ms) if ours \
            else None
        lines.append(f"| {row.label} | {_show(row, ours)} | {_show(row, theirs)} | {ratio} "
                     f"| {goal} | {_yes_no(met)} |")
    return "\n".join(lines)


def _show(row: Row, cell: Cell | None) -> str:
    if cell is None:
        return DASH
    notes = [note for note in (cell.variant, f"depth {cell.depth}"
                               if cell.depth is not None and row.needs == "throughput" else "")
             if note]
    text = row.fmt.format(cell.value)
    return f"{text} ({', '.join(notes)})" if notes else text


def _yes_no(met: bool | None) -> str:
    return DASH if met is None else ("yes" if met else "no")
