"""The moving parts of ``vs_celery.py``: moto in a child process, the two systems (each in its
own virtualenv), their workers and callers as subprocesses, and the queues' depth.

Every process of a system talks to moto through the counting proxy (``aws_proxy``), on the
listener of its role: ``setup`` (provisioning), ``caller`` or ``worker``. The harness itself
reads queue depth from moto directly, so its own calls are never counted.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
from aws_proxy import CountingProxy, Counts

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
CELERY_VERSION = "5.7.0"
CELERY_REQUIREMENTS = (f"celery[sqs,dynamodb]=={CELERY_VERSION}",)
"""The extras pull kombu's SQS transport (boto3, urllib3, and pycurl, whose wheel needs no
libcurl headers here) and the DynamoDB result backend (boto3)."""
CELERY_VENV = ROOT / ".venv" / "bench-celery"
DUMMY_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}
START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0
DEPTH_POLL_S = 0.05


class BenchError(Exception):
    """A process of the benchmark failed; the message has the end of its log."""

    @property
    def summary(self) -> str:
        """The last line of the process's output that says something, and where its log is."""
        lines = [line for line in str(self).splitlines() if line.strip()]
        said = [line for line in lines[1:-1] if not line.startswith(" ")]
        return f"{said[-1] if said else lines[0]} {lines[-1]}"


@dataclass(frozen=True)
class Side:
    """One of the two systems: its interpreter, its directory and how to start a worker."""

    name: str
    python: Path
    directory: Path
    """The processes' working directory, where the app module is."""
    app_module: str
    queue: str
    """The default queue's name, without the run's prefix."""
    worker_args: tuple[str, ...]
    """The worker's command line after the interpreter, before ``--pool`` and ``-c``."""
    pools: tuple[str, ...]
    """Worker pools to measure throughput with; the first is the one every other row uses.

    Celery's rows use its threads pool, not its default prefork: prefork children inherit the
    DynamoDB backend's client, made in the main process before the fork, and so share its
    kept-alive socket; their requests interleave, moto rejects the mangled ones, and a child
    whose answer another child read waits out botocore's 60 s read timeout (a 58 s stall in
    one group of 100 out of two, here). Throughput is measured with both pools."""

    def worker_command(self, pool: str, concurrency: int) -> list[str]:
        return [str(self.python), *self.worker_args, "--pool", pool, "-c", str(concurrency),
                "-l", "warning"]


def cloudq_side() -> Side:
    return Side("cloudq", Path(sys.executable), BENCHMARKS / "cloudq_side", "bench_cloudq_app",
                "default", ("-m", "cloudq.cli", "poll", "-A", "bench_cloudq_app:app"),
                ("threads",))


def celery_side() -> Side:
    """Celery's side, in its own virtualenv (created, or re-created when its stamp is stale)."""
    python = CELERY_VENV / "bin" / "python"
    stamp = CELERY_VENV / ".installed"
    wanted = "\n".join(CELERY_REQUIREMENTS)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"creating {CELERY_VENV.relative_to(ROOT)} with {wanted}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(CELERY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *CELERY_REQUIREMENTS],
                       check=True)
        stamp.write_text(wanted)
    return Side("Celery", python, BENCHMARKS / "celery_side", "bench_celery_app", "celery",
                ("-m", "celery", "-A", "bench_celery_app", "worker"), ("threads", "prefork"))


def versions(side: Side, modules: Sequence[str]) -> dict[str, str]:
    """The installed versions of ``modules`` in the side's interpreter."""
    script = ("import importlib.metadata as m, json, sys; "
              "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(side.python), "-c", script, *modules], capture_output=True,
                         text=True, check=True, cwd=side.directory).stdout
    return dict(json.loads(out))


def run_json(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run a measuring script; its last line of output is a JSON object."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    if done.returncode:
        raise BenchError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


_SERVE = """\
import os, sys
from cloudq.localaws import LocalAws
aws = LocalAws(port=int(sys.argv[1])).start()
print("ready", flush=True)
os.dup2(2, 1)
sys.stdin.read()  # until the parent closes the pipe (or dies)
aws.stop()
"""


class MotoServer:
    """cloudq's embedded moto server (``LocalAws``) in a child process, off this one's GIL."""

    def __init__(self) -> None:
        from cloudq.localaws import free_port

        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> MotoServer:
        from cloudq.localaws import use_dummy_credentials

        use_dummy_credentials()  # for the harness's own client
        self._process = subprocess.Popen([sys.executable, "-c", _SERVE, str(self.port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, cwd=BENCHMARKS)
        assert self._process.stdout is not None
        if _read_line(self._process.stdout, START_TIMEOUT_S) != "ready":
            raise BenchError("the moto server did not start")
        return self

    def reset(self) -> None:
        """Forget every queue and table, so each run starts on an empty (fast) moto."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(30)


@dataclass
class Worker:
    """A running worker process and how long it took to become ready."""

    process: subprocess.Popen[bytes]
    log: Path
    started_s: float
    ready_s: float
    """From process start to its first ReceiveMessage (as the proxy saw it)."""
    first_receive_s: float
    """``time.monotonic()`` of that first ReceiveMessage."""


@dataclass
class Window:
    """What one measured stretch of a scenario cost and took."""

    counts: Counts
    measured: dict[str, Any]
    """What the caller measured itself (e.g. latencies)."""
    elapsed_s: float
    """From ``go`` until the queue was empty again."""
    max_depth: int


@dataclass
class Harness:
    """Runs a side's processes against one moto server through one counting proxy."""

    moto: MotoServer
    proxy: CountingProxy
    concurrency: int = 8
    prefix: str = ""
    """The current run's queue and table name prefix."""
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vs_celery-")))
    """Where every process's output goes (an error names the file)."""

    def __post_init__(self) -> None:
        self._sqs = boto3.client("sqs", endpoint_url=self.moto.endpoint_url,
                                 region_name="us-east-1")

    def fresh_run(self, side: Side) -> None:
        """Empty moto, pick new names, create the side's queues and table."""
        self.moto.reset()
        self.prefix = f"b{uuid.uuid4().hex[:6]}-"
        command = [str(side.python), str(BENCHMARKS / "caller.py"), "--app", side.app_module,
                   "--provision"]
        log = self._log_path(side, "provision")
        with log.open("wb") as out:
            done = subprocess.run(command, cwd=side.directory, env=self._env("setup"),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
        if done.returncode:
            raise BenchError(f"{side.name}: provisioning failed\n{_tail(log)}")

    def start_worker(self, side: Side, pool: str) -> Worker:
        log = self._log_path(side, f"worker-{pool}")
        first_receive = self.proxy.expect("worker", "ReceiveMessage")
        started_s = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(side.worker_command(pool, self.concurrency),
                                       cwd=side.directory, env=self._env("worker"),
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            first_s = first_receive.wait(START_TIMEOUT_S)
        except TimeoutError as exc:
            _stop(process, session=True)
            raise BenchError(f"{side.name} worker ({pool}) never polled\n{_tail(log)}") from exc
        return Worker(process, log, started_s, first_s - started_s, first_s)

    def stop_worker(self, worker: Worker) -> None:
        _stop(worker.process, session=True)

    def call(self, side: Side, scenario: str, tasks: int) -> Window:
        """Run one scenario's caller: warm up, empty queue, count from ``go`` until the queue
        is empty again after the caller is done."""
        with self._caller(side, scenario, tasks) as (caller, depth):
            before, started_s = self.proxy.snapshot(), time.monotonic()
            caller.say("go")
            measured = caller.result()
            emptied_s = depth.wait_at_most(0, RUN_TIMEOUT_S)
            counts = self.proxy.snapshot() - before
        return Window(counts, measured, emptied_s - started_s, depth.max_depth)

    def feed(self, side: Side, tasks: int, chunk: int) -> Window:
        """Send ``tasks`` to a running worker a chunk at a time, the next chunk once the queue
        is back at ``chunk`` deep or less (moto slows as queues deepen); timed and counted
        from the first chunk until the queue is empty."""
        with self._caller(side, "feed", chunk) as (caller, depth):
            before, started_s = self.proxy.snapshot(), time.monotonic()
            caller.say("go")
            for sent in range(chunk, tasks + 1, chunk):
                caller.expect("sent")
                if sent + chunk > tasks:
                    break
                depth.wait_at_most(chunk, RUN_TIMEOUT_S)
                caller.say("more")
            caller.say("stop")
            measured = caller.result()
            emptied_s = depth.wait_at_most(0, RUN_TIMEOUT_S)
            counts = self.proxy.snapshot() - before
        return Window(counts, measured, emptied_s - started_s, depth.max_depth)

    @contextmanager
    def _caller(self, side: Side, scenario: str,
                tasks: int) -> Iterator[tuple[Caller, DepthWatch]]:
        """A warmed-up caller, the queue empty, and a watch on its depth."""
        log = self._log_path(side, scenario)
        command = [str(side.python), str(BENCHMARKS / "caller.py"), "--app", side.app_module,
                   "--scenario", scenario, "--tasks", str(tasks)]
        with log.open("wb") as err:
            process = subprocess.Popen(command, cwd=side.directory, env=self._env("caller"),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=err, text=True)
        caller = Caller(f"{side.name} caller ({scenario})", process, log)
        try:
            caller.expect("ready", START_TIMEOUT_S)
            queues = self.queue_urls(side)
            with DepthWatch(self._sqs, queues) as depth:
                depth.wait_at_most(0, RUN_TIMEOUT_S)
                yield caller, depth
        finally:
            caller.close()

    def queue_urls(self, side: Side) -> list[str]:
        return [self._sqs.get_queue_url(QueueName=f"{self.prefix}{side.queue}")["QueueUrl"]]

    def _env(self, role: str) -> dict[str, str]:
        env = {**DUMMY_AWS_ENV, **os.environ, "BENCH_PREFIX": self.prefix,
               "BENCH_ENDPOINT_URL": self.proxy.endpoint(role), "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)
        return env

    def _log_path(self, side: Side, what: str) -> Path:
        return self.logs / f"{side.name}-{what}-{uuid.uuid4().hex[:4]}.log"


class Caller:
    """A caller process and its side of the line protocol (see ``caller.py``)."""

    def __init__(self, name: str, process: subprocess.Popen[str], log: Path) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.name, self.log = name, log
        self._process, self._stdin, self._stdout = process, process.stdin, process.stdout

    def say(self, line: str) -> None:
        self._stdin.write(line + "\n")
        self._stdin.flush()

    def expect(self, line: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
        got = _read_line(self._stdout, timeout_s)
        if got != line:
            raise BenchError(f"{self.name} said {got!r}, not {line!r}\n{_tail(self.log)}")

    def result(self) -> dict[str, Any]:
        got = _read_line(self._stdout, RUN_TIMEOUT_S)
        if not got.startswith("{"):
            raise BenchError(f"{self.name} failed\n{_tail(self.log)}")
        return dict(json.loads(got))

    def close(self) -> None:
        """Let it exit by itself (it does once it has printed its result), else end it."""
        self._stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            _stop(self._process)
        self._stdout.close()


class DepthWatch:
    """Samples the queues' depth (visible + in flight + delayed) every 50 ms, from moto."""

    _ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                   "ApproximateNumberOfMessagesDelayed")

    def __init__(self, sqs: Any, queue_urls: list[str]) -> None:
        self._sqs, self._urls = sqs, queue_urls
        self.max_depth = 0
        self._depth = 0
        self._samples = 0
        self._sampled = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> DepthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(10)

    def wait_at_most(self, depth: int, timeout_s: float) -> float:
        """``time.monotonic()`` when a sample taken from now on is ``depth`` deep or less."""
        deadline = time.monotonic() + timeout_s
        with self._sampled:
            since = self._samples
            while self._samples == since or self._depth > depth:
                if not self._sampled.wait(deadline - time.monotonic()):
                    raise BenchError(f"the queue was not {depth} deep or less within "
                                     f"{timeout_s:.0f} s")
            return time.monotonic()

    def _sample(self) -> None:
        while not self._stopped.is_set():
            depth = sum(self._depth_of(url) for url in self._urls)
            with self._sampled:
                self._depth = depth
                self._samples += 1
                self.max_depth = max(self.max_depth, depth)
                self._sampled.notify_all()
            self._stopped.wait(DEPTH_POLL_S)

    def _depth_of(self, url: str) -> int:
        got = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(self._ATTRIBUTES))
        return sum(int(got["Attributes"].get(name, 0)) for name in self._ATTRIBUTES)


def _stop(process: subprocess.Popen[Any], *, session: bool = False) -> None:
    """End a process we started; with ``session``, every process in the session it leads
    (a worker's pool processes)."""
    if process.poll() is None:
        _signal(process, signal.SIGTERM, session)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL, session)
            process.wait(10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def _signal(process: subprocess.Popen[Any], signum: int, session: bool) -> None:
    if session:
        os.killpg(process.pid, signum)  # start_new_session: its group id is its pid
    else:
        process.send_signal(signum)


def _read_line(stream: IO[str], timeout_s: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return stream.readline().strip() if ready else ""


def _tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:]) + f"\n(log: {log})"
