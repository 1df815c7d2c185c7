"""The ``cloudq`` command line (click).

Only the ``cloudq`` entry point imports this module, so ``import cloudq`` never loads click.
Every command takes ``-A/--app module:attr`` (or ``CLOUDQ_APP``), ``--endpoint-url`` and
``--region``; the last two override the app's settings. Like Celery's, they may also be
given before the command: ``cloudq -A shop.tasks poll``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from cloudq.errors import CloudqError

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.results import ResultMeta

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


# -- loading the app -----------------------------------------------------------------------------
class AppNotFound(click.UsageError):
    """``-A`` does not name a cloudq App."""


def load_app(spec: str) -> App:
    """The App named by ``-A``, with loading errors turned into click errors."""
    from cloudq import loading

    try:
        return loading.load_app(spec)
    except loading.AppNotFound as exc:
        raise AppNotFound(exc.message) from exc
    except loading.AppImportError as exc:
        raise click.ClickException(exc.message) from exc


@dataclass
class AppOptions:
    """``-A``, ``--endpoint-url`` and ``--region``, from the group or the command."""

    app_path: str | None = None
    endpoint_url: str | None = None
    region: str | None = None

    def merged(self, outer: AppOptions | None) -> AppOptions:
        outer = outer or AppOptions()
        return AppOptions(
            app_path=self.app_path or outer.app_path or os.environ.get("CLOUDQ_APP"),
            endpoint_url=self.endpoint_url or outer.endpoint_url,
            region=self.region or outer.region,
        )

    def build(self) -> App:
        if not self.app_path:
            raise click.UsageError(
                "no app given: pass -A module:attr (e.g. -A shop.tasks:app) or set CLOUDQ_APP"
            )
        app = load_app(self.app_path)
        overrides = {"endpoint_url": self.endpoint_url, "region": self.region}
        app.conf.update({name: value for name, value in overrides.items() if value})
        return app


def app_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-A``, ``--endpoint-url`` and ``--region`` to a group or command."""
    options = [
        click.option("-A", "--app", "app_path", metavar="MODULE:ATTR",
                     help="The cloudq App, e.g. shop.tasks:app (or shop.tasks if the module "
                          "has an `app`). Default: $CLOUDQ_APP."),
        click.option("--endpoint-url", metavar="URL",
                     help="Send AWS calls here (moto, LocalStack) instead of AWS."),
        click.option("--region", metavar="REGION", help="AWS region (overrides the app's)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def with_app(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the app options into an ``app`` argument; cloudq errors become click errors."""

    @functools.wraps(fn)
    def command(
        *args: Any, app_path: str | None, endpoint_url: str | None, region: str | None,
        **kwargs: Any,
    ) -> Any:
        ctx = click.get_current_context()
        given = AppOptions(app_path, endpoint_url, region)
        kwargs["app_options"] = given.merged(ctx.find_object(AppOptions))
        try:
            app = kwargs["app_options"].build()
            return fn(*args, app=app, **kwargs)
        except CloudqError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, BotoCoreError | ClientError):
                raise click.ClickException(f"AWS: {exc}") from exc
            raise

    return app_options(command)


# -- shared options ------------------------------------------------------------------------------
def _split_queues(_ctx: click.Context, _param: click.Parameter, value: Sequence[str]) -> list[str]:
    return [name.strip() for item in value for name in item.split(",") if name.strip()]


queues_option = click.option(
    "-Q", "--queues", multiple=True, callback=_split_queues, metavar="Q1,Q2",
    help="Queues (comma-separated or repeated), each with all its priority bands. "
         "Default: every queue the app's settings and tasks name.",
)
loglevel_option = click.option(
    "-l", "--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
    show_default=True, help="Logging level.",
)


def setup_logging(level_name: str, fmt: str = LOG_FORMAT) -> None:
    """Log to stderr at ``level_name``; AWS libraries only speak up for warnings."""
    level = getattr(logging, level_name.upper())
    logging.basicConfig(level=level, format=fmt)
    logging.getLogger().setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


# -- commands ------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@app_options
@click.version_option(package_name="cloudq", prog_name="cloudq")
@click.pass_context
def cli(ctx: click.Context, app_path: str | None, endpoint_url: str | None,
        region: str | None) -> None:
    """cloudq: Celery's API on AWS SQS and DynamoDB.

    \b
    Examples:
      cloudq dev -A shop.tasks:app              # local AWS + a poller, no account needed
      cloudq provision -A shop.tasks:app        # create the queues, DLQs and result table
      cloudq poll -A shop.tasks:app -c 8        # run a worker
      cloudq call -A shop.tasks:app shop.tasks.add --args '[1, 2]'
      cloudq result -A shop.tasks:app TASK_ID --wait 10
      cloudq beat -A shop.tasks:app             # send the periodic tasks
      cloudq schedule sync -A shop.tasks:app    # ...or have EventBridge send them
      cloudq deploy -A shop.tasks:app --print   # the CloudFormation template that deploys it
    """
    ctx.obj = AppOptions(app_path, endpoint_url, region)


@cli.command()
@with_app
@queues_option
@click.option("-c", "--concurrency", type=click.IntRange(1, 1024),
              help="Tasks run at once. Default: the app's worker_concurrency (8).")
@click.option("--pool", type=click.Choice(["threads", "processes", "asyncio"]),
              help="How tasks run. Default: the app's worker_pool (threads).")
@click.option("--prefetch-multiplier", type=click.IntRange(1, 100),
              help="Messages held per slot of concurrency.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1),
              help="Replace a pool process after this many tasks (processes pool).")
@click.option("--burst", is_flag=True,
              help="Exit once the queues are drained (in-flight and delayed messages count, "
                   "for up to worker_burst_wait seconds).")
@loglevel_option
def poll(app: App, queues: list[str], concurrency: int | None, pool: str | None,
         prefetch_multiplier: int | None, max_tasks_per_child: int | None, burst: bool,
         loglevel: str, **_: Any) -> None:
    """Run a worker that long-polls the app's SQS queues.

    Stops on SIGTERM or Ctrl-C after the tasks in flight have finished.

    \b
    Examples:
      cloudq poll -A shop.tasks:app
      cloudq poll -A shop.tasks:app -Q emails,default -c 16
      cloudq poll -A shop.tasks:app --pool processes --max-tasks-per-child 100
      cloudq poll -A shop.tasks:app --pool asyncio -c 500   # async def tasks, one loop
      cloudq poll -A shop.tasks:app --burst      # drain the queues, then exit
    """
    from cloudq.runners.poller import Poller

    setup_logging(loglevel)
    for band in app.queues(queues or None):
        app.transport.depth(band)  # a missing queue is an error now, not a retry loop
    poller = Poller(
        app, queues or None, concurrency=concurrency,
        pool=pool,  # type: ignore[arg-type]
        prefetch_multiplier=prefetch_multiplier, max_tasks_per_child=max_tasks_per_child,
        burst=burst,
    )
    sys.exit(poller.run())


@cli.command()
@with_app
@queues_option
def provision(app: App, queues: list[str], **_: Any) -> None:
    """Create the app's queues, dead-letter queues, table and bucket.

    Every priority band of every queue gets its own dead-letter queue; the payload bucket
    is made only when payload_bucket is set. Safe to run again: what exists is checked
    and its settings are brought in line.

    \b
    Examples:
      cloudq provision -A shop.tasks:app
      cloudq provision -A shop.tasks:app -Q emails,reports
      cloudq provision -A shop.tasks:app --endpoint-url http://localhost:4566
    """
    from cloudq.provision import provision as provision_app

    setup_logging("info", fmt="%(message)s")
    report = provision_app(app, queues or None)
    for line in report.lines():
        click.echo(line)


@cli.command()
@with_app
@click.argument("name")
@click.option("--args", "args_json", default="[]", metavar="JSON",
              help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON",
              help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Run no sooner than this many seconds from now.")
@click.option("--queue", help="Send to this queue instead of the routed one.")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (lowest) to 9 (most urgent).")
def call(app: App, name: str, args_json: str, kwargs_json: str, countdown: float | None,
         queue: str | None, priority: int | None, **_: Any) -> None:
    """Send the task NAME and print its id.

    \b
    Examples:
      cloudq call -A shop.tasks:app shop.tasks.add --args '[1, 2]'
      cloudq call -A shop.tasks:app shop.tasks.send_email \\
          --kwargs '{"to": "ann@example.com", "subject": "Hi"}' --countdown 60
      ID=$(cloudq call -A shop.tasks:app shop.tasks.add --args '[1, 2]')
      cloudq result -A shop.tasks:app "$ID" --wait 10
    """
    args = _json_option(args_json, "--args", list, "a JSON array, e.g. '[1, 2]'")
    kwargs = _json_option(kwargs_json, "--kwargs", dict, "a JSON object, e.g. '{\"x\": 1}'")
    if app.tasks and name not in app.tasks:
        close = difflib.get_close_matches(name, list(app.tasks), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        click.echo(f"warning: {name} is not a task of this app{hint}; sending it anyway",
                   err=True)
    result = app.send_task(name, args, kwargs, countdown=countdown, queue=queue,
                           priority=priority)
    click.echo(result.id)


def _json_option(text: str, option: str, kind: type, expected: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}); expected {expected}",
                                 param_hint=f"'{option}'") from exc
    if not isinstance(value, kind):
        raise click.BadParameter(f"got {type(value).__name__}; expected {expected}",
                                 param_hint=f"'{option}'")
    return value


@cli.command()
@with_app
@click.argument("task_id")
@click.option("--wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait up to this long for the task to finish.")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Also print the traceback of a failed task.")
def result(app: App, task_id: str, wait: float | None, show_traceback: bool, **_: Any) -> None:
    """Print the state and result (as JSON) of the task TASK_ID.

    A task the result table does not know (not run yet, or expired) is PENDING. With
    --wait, exits with status 1 if the task is still not finished when the time is up.

    \b
    Examples:
      cloudq result -A shop.tasks:app 0b5f4c1e-...
      cloudq result -A shop.tasks:app 0b5f4c1e-... --wait 30
      cloudq result -A shop.tasks:app 0b5f4c1e-... --traceback
    """
    from cloudq.errors import TimeoutError as ResultTimeout

    timed_out = False
    if wait is not None:
        try:
            app.AsyncResult(task_id).get(timeout=wait, propagate=False)
        except ResultTimeout:
            timed_out = True
    meta = app.backend.get(task_id)
    for line in describe(meta, show_traceback):
        click.echo(line)
    if timed_out:
        click.echo(f"error: task {task_id} not finished after {wait:g}s", err=True)
        sys.exit(1)


def describe(meta: ResultMeta, show_traceback: bool = False) -> list[str]:
    """``state: ...`` and ``result: <JSON>`` lines (and the traceback) for one task."""
    lines = [f"task_id: {meta.task_id}"]
    if meta.name:
        lines.append(f"task: {meta.name}")
    lines.append(f"state: {meta.state}")
    lines.append(f"result: {result_json(meta.result)}")
    if meta.retries:
        lines.append(f"retries: {meta.retries}")
    if meta.date_done:
        lines.append(f"date_done: {meta.date_done.isoformat()}")
    if show_traceback and meta.traceback:
        lines += ["traceback:", meta.traceback.rstrip()]
    return lines


def result_json(value: Any) -> str:
    """A task's result as JSON; an exception as ``{"exc_type": ..., "exc_message": ...}``."""
    if isinstance(value, BaseException):
        from cloudq.errors import RemoteTaskError
        from cloudq.serialization import exception_path

        exc_type = value.exc_type if isinstance(value, RemoteTaskError) else exception_path(value)
        message = value.message if isinstance(value, RemoteTaskError) else str(value)
        value = {"exc_type": exc_type, "exc_message": message}
    return json.dumps(value, default=str, ensure_ascii=False)


@cli.command()
@with_app
@queues_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(app: App, queues: list[str], yes: bool, **_: Any) -> None:
    """Delete every waiting message from the app's queues.

    Every priority band of the queues is purged; dead-letter queues are left alone.
    SQS allows one purge per queue per minute.

    \b
    Examples:
      cloudq purge -A shop.tasks:app
      cloudq purge -A shop.tasks:app -Q emails --yes
    """
    bands = app.queues(queues or None)
    prefix = app.settings.queue_prefix
    names = ", ".join(prefix + band for band in bands)
    if not yes:
        click.confirm(f"Delete every message waiting in {names}?", abort=True)
    total = 0
    for band in bands:
        count = app.transport.purge(band)
        total += count
        click.echo(f"purged {prefix}{band} ({count} messages)")
    click.echo(f"purged about {total} messages from {len(bands)} queues")


@cli.command()
@with_app
@queues_option
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port of the local AWS. Default: a free one.")
@click.option("-c", "--concurrency", type=click.IntRange(1, 1024),
              help="Tasks run at once. Default: the app's worker_concurrency (8).")
@click.option("--pool", type=click.Choice(["threads", "processes", "asyncio"]),
              help="How tasks run. Default: the app's worker_pool (threads).")
@loglevel_option
def dev(app: App, queues: list[str], port: int | None, concurrency: int | None,
        pool: str | None, loglevel: str, app_options: AppOptions, **_: Any) -> None:
    """Run a local AWS, provision the app in it, and poll its queues.

    The local AWS is moto's server on 127.0.0.1, inside this process: no AWS account is
    used. Stop everything with Ctrl-C (or SIGTERM).

    \b
    Examples:
      cloudq dev -A shop.tasks:app
      cloudq dev -A shop.tasks:app --port 5000 -c 4
      cloudq dev -A web.tasks:app --pool asyncio -c 200
    and, in a second shell, send to it:
      export CLOUDQ_ENDPOINT_URL=http://127.0.0.1:5000
      cloudq call -A shop.tasks:app shop.tasks.add --args '[1, 2]'
    """
    if app_options.endpoint_url:
        raise click.BadParameter(
            "cloudq dev runs its own local AWS; it cannot use another endpoint",
            param_hint="'--endpoint-url'",
        )
    from cloudq.dev import run_dev

    setup_logging(loglevel)
    if pool:
        app.conf.update(worker_pool=pool)
    sys.exit(run_dev(app, queues or None, port=port, concurrency=concurrency, echo=click.echo))


@cli.command()
@with_app
@click.option("--max-interval", type=click.FloatRange(min=0.01),
              help="Longest sleep between looks at the schedule, in seconds (default 5).")
@loglevel_option
def beat(app: App, max_interval: float | None, loglevel: str, **_: Any) -> None:
    """Send the app's periodic tasks (beat_schedule) on time, from this machine.

    Run as many as you like: each tick is sent once (a claim in DynamoDB), and a restarted
    beat neither repeats nor skips a tick it had sent. Stops on SIGTERM or Ctrl-C.

    \b
    Examples:
      cloudq beat -A shop.tasks:app
      cloudq beat -A shop.tasks:app -l debug --max-interval 1
    """
    from cloudq.scheduler.beat import Beat

    setup_logging(loglevel)
    runner = Beat(app, max_interval=max_interval)
    if not runner.entries:
        raise click.ClickException("the app's beat_schedule is empty: nothing to send")
    app.store.get("beat#")  # a missing table is an error now, not a retry loop
    with stop_on_signals(runner.stop):
        sys.exit(runner.run())


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGTERM and SIGINT while the block runs."""
    previous = {sig: signal.signal(sig, lambda *_: stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.group(name="schedule")
def schedule_group() -> None:
    """The periodic tasks as EventBridge schedules: export them, or sync them to AWS."""


target_option = click.option(
    "--target", type=click.Choice(["scheduler", "rules"]), default="scheduler",
    show_default=True,
    help="EventBridge Scheduler (time zones, one-time schedules) or EventBridge rules (UTC).")


@schedule_group.command(name="export")
@with_app
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True,
              help="Output format.")
@target_option
def schedule_export(app: App, fmt: str, target: str, **_: Any) -> None:
    """Print the EventBridge schedules the app's beat_schedule needs (no AWS calls).

    One JSON object per schedule: name, task, expression (cron/rate/at), timezone,
    target_queue and input (the message EventBridge sends). A schedule EventBridge cannot
    express is an error that names it.

    \b
    Examples:
      cloudq schedule export -A shop.tasks:app --format json
      cloudq schedule export -A shop.tasks:app --target rules
    """
    from cloudq.scheduler.eventbridge import export_json, wanted
    from cloudq.scheduler.sync import group_name

    prefix = "" if target == "scheduler" else f"{group_name(app)}."
    click.echo(export_json(wanted(app, target=target, prefix=prefix)))  # type: ignore[arg-type]


@schedule_group.command(name="sync")
@with_app
@target_option
@click.option("--role-arn", metavar="ARN",
              help="IAM role EventBridge Scheduler assumes to send to SQS. "
                   "Default: the app's beat_role_arn.")
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
def schedule_sync(app: App, target: str, role_arn: str | None, dry_run: bool,
                  **_: Any) -> None:
    """Create, update and delete EventBridge schedules to match beat_schedule.

    cloudq owns one schedule group (beat_schedule_group, default <queue_prefix>beat), or the
    rules named <group>.*: what the app no longer has is deleted. Safe to run again: an
    unchanged schedule is left alone. Solar entries are kept beat_solar_days ahead as one-time
    schedules, so run it at least that often (e.g. daily, from CI or a scheduled job).

    \b
    Examples:
      cloudq schedule sync -A shop.tasks:app --dry-run
      cloudq schedule sync -A shop.tasks:app --role-arn arn:aws:iam::123456789012:role/cq
      cloudq schedule sync -A shop.tasks:app --target rules
    """
    from cloudq.scheduler.sync import sync

    report = sync(app, target=target, role_arn=role_arn,  # type: ignore[arg-type]
                  dry_run=dry_run)
    for line in report.lines():
        click.echo(line)


def main() -> None:
    """The ``cloudq`` entry point."""
    cli(prog_name="cloudq")


from cloudq.cli import deploy as _deploy  # noqa: E402,F401 - registers `cloudq deploy`
