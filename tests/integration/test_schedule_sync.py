"""``cloudq schedule sync`` and ``export`` against moto server: EventBridge Scheduler schedules and
EventBridge rules created, updated and deleted over HTTP, as CRUD.

moto never fires a schedule and validates nothing (expressions, time zones), so these tests
check what sync leaves in EventBridge and which calls it makes; ``test_schedule_messages``
does what EventBridge would do with the target input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

import cloudq
from cloudq import message as wire
from cloudq.aws import RequestCounter
from cloudq.cli import cli
from cloudq.errors import ConfigError, ScheduleError
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.scheduler.eventbridge import wanted
from cloudq.scheduler.sync import SyncReport, group_name, sync
from tests.integration.apps import periodic

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/cloudq-scheduler"
APP_SPEC = "tests.integration.apps.periodic:app"
SCHEDULER_WRITES = ("Scheduler.CreateSchedule", "Scheduler.UpdateSchedule",
                    "Scheduler.DeleteSchedule", "Scheduler.CreateScheduleGroup")
RULE_WRITES = ("EventBridge.PutRule", "EventBridge.PutTargets", "EventBridge.RemoveTargets",
               "EventBridge.DeleteRule")
BERLIN = "Europe/Berlin"


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Two entries every test starts from: a crontab and an interval of whole minutes."""
    return {
        "nightly-report": {"task": "per.report", "schedule": cloudq.crontab(minute=30, hour=7),
                           "args": ["nightly"]},
        "cleanup": {"task": "per.charge", "schedule": 600.0, "args": ["cleanup"]},
    }


@pytest.fixture
def app(local_aws: LocalAws, unique_prefix: str) -> Iterator[cloudq.App]:
    """The periodic app on fresh queues (its schedule group is ``<prefix>beat``)."""
    app = periodic.app
    app.conf.update(
        endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
        result_table=f"{unique_prefix}results", beat_schedule=beat_schedule(),
        beat_timezone=BERLIN, beat_role_arn=None, beat_schedule_group=None, beat_solar_days=7,
        signing_key=None,
    )
    provision(app, ["default"])
    periodic.runs.clear()
    yield app
    app.close()


# -- helpers -------------------------------------------------------------------------------------
def watch(app: cloudq.App) -> RequestCounter:
    """Every EventBridge Scheduler and EventBridge call the app makes from now on (until its
    settings change: that gives it new clients)."""
    counter = RequestCounter()
    counter.attach(app.aws.client("scheduler"))
    counter.attach(app.aws.client("events"))
    return counter


def no_group(app: cloudq.App) -> bool:
    client = app.aws.client("scheduler")
    try:
        client.get_schedule_group(Name=group_name(app))
    except client.exceptions.ResourceNotFoundException:
        return True
    return False


def schedules(app: cloudq.App, group: str | None = None) -> dict[str, dict[str, Any]]:
    """Every schedule of the group, in full (list_schedules' summaries lack the target)."""
    client = app.aws.client("scheduler")
    group = group or group_name(app)
    names = [s["Name"] for s in client.list_schedules(GroupName=group)["Schedules"]]
    return {name: client.get_schedule(GroupName=group, Name=name) for name in names}


def writes(counter: RequestCounter, names: tuple[str, ...] = SCHEDULER_WRITES) -> dict[str, int]:
    return {name: counter.counts[name] for name in names if counter.counts[name]}


def actions(report: SyncReport) -> list[tuple[str, str]]:
    return sorted((change.action, change.name) for change in report.changes)


def queue_arn(app: cloudq.App, queue: str = "default") -> str:
    sqs = app.aws.sqs
    url = sqs.get_queue_url(QueueName=app.settings.queue_prefix + queue)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def set_entry(app: cloudq.App, name: str, spec: dict[str, Any] | None) -> None:
    """Add, replace (spec) or remove (None) one beat_schedule entry."""
    entries = dict(app.settings.beat_schedule)
    if spec is None:
        del entries[name]
    else:
        entries[name] = spec
    app.conf.update(beat_schedule=entries)


def foreign_schedule(app: cloudq.App, group: str, name: str) -> None:
    """A schedule cloudq did not create."""
    client = app.aws.client("scheduler")
    try:
        client.get_schedule_group(Name=group)
    except client.exceptions.ResourceNotFoundException:
        client.create_schedule_group(Name=group)  # (moto replaces a group created again)
    client.create_schedule(
        GroupName=group, Name=name, ScheduleExpression="rate(5 minutes)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": queue_arn(app), "RoleArn": ROLE, "Input": '{"not": "cloudq"}'})


# -- EventBridge Scheduler -----------------------------------------------------------------------
def test_sync_creates_one_schedule_per_entry_in_the_group(app: cloudq.App) -> None:
    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("create", "cleanup"), ("create", "nightly-report")]
    assert report.unchanged == []
    found = schedules(app)
    assert sorted(found) == ["cleanup", "nightly-report"]
    expected = {"nightly-report": ("cron(30 7 * * ? *)", "per.report", ["nightly"]),
                "cleanup": ("rate(10 minutes)", "per.charge", ["cleanup"])}
    for name, (expression, task, args) in expected.items():
        got = found[name]
        assert got["GroupName"] == group_name(app) == f"{app.settings.queue_prefix}beat"
        assert got["ScheduleExpression"] == expression
        assert got["ScheduleExpressionTimezone"] == BERLIN
        assert got["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert got["State"] == "ENABLED"
        target = got["Target"]
        assert target["Arn"] == queue_arn(app)
        assert target["RoleArn"] == ROLE
        body = json.loads(target["Input"])
        assert (body["task"], body["args"]) == (task, args)
        assert body["beat"] == {"name": name, "at": wire.SCHEDULED_TIME}
        assert "id" not in body  # the worker derives it from the tick's time


def test_a_second_sync_changes_nothing_and_writes_nothing(
    app: cloudq.App
) -> None:
    sync(app, role_arn=ROLE)
    before = schedules(app)
    eb_calls = watch(app)

    again = sync(app, role_arn=ROLE)

    assert again.changes == []
    assert sorted(again.unchanged) == ["cleanup", "nightly-report"]
    assert writes(eb_calls) == {}
    after = schedules(app)
    assert {n: s["LastModificationDate"] for n, s in after.items()} == {
        n: s["LastModificationDate"] for n, s in before.items()}
    assert again.lines()[-1] == f"schedule group {group_name(app)!r}: changed 0, 2 unchanged"


def test_a_changed_crontab_is_exactly_one_update(
    app: cloudq.App
) -> None:
    sync(app, role_arn=ROLE)
    set_entry(app, "nightly-report", {"task": "per.report", "args": ["nightly"],
                                      "schedule": cloudq.crontab(minute=0, hour="6,18")})
    eb_calls = watch(app)

    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("update", "nightly-report")]
    [change] = report.changes
    assert "'cron(30 7 * * ? *)' -> 'cron(0 6,18 * * ? *)'" in change.detail
    assert report.unchanged == ["cleanup"]
    assert writes(eb_calls) == {"Scheduler.UpdateSchedule": 1}
    assert schedules(app)["nightly-report"]["ScheduleExpression"] == "cron(0 6,18 * * ? *)"


def test_a_changed_time_zone_updates_every_schedule(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)
    app.conf.update(beat_timezone="America/New_York")

    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("update", "cleanup"), ("update", "nightly-report")]
    assert {s["ScheduleExpressionTimezone"] for s in schedules(app).values()} == {
        "America/New_York"}


def test_a_removed_entry_is_one_delete(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)
    set_entry(app, "cleanup", None)
    eb_calls = watch(app)

    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("delete", "cleanup")]
    assert report.changes[0].detail == "no longer in beat_schedule"
    assert writes(eb_calls) == {"Scheduler.DeleteSchedule": 1}
    assert sorted(schedules(app)) == ["nightly-report"]


def test_an_added_entry_is_one_create(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)
    set_entry(app, "hourly", {"task": "per.report", "schedule": 3600, "args": ["hourly"]})
    eb_calls = watch(app)

    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("create", "hourly")]
    assert writes(eb_calls) == {"Scheduler.CreateSchedule": 1}
    assert schedules(app)["hourly"]["ScheduleExpression"] == "rate(1 hour)"


def test_dry_run_reports_every_change_and_changes_nothing(app: cloudq.App) -> None:
    eb_calls = watch(app)
    first = sync(app, dry_run=True)  # no role needed to look

    assert actions(first) == [("create", "cleanup"), ("create", "nightly-report")]
    assert first.lines()[-1].endswith("would change 2, 0 unchanged (dry run: nothing was changed)")
    assert writes(eb_calls) == {}
    assert no_group(app)  # not even the group was created

    sync(app, role_arn=ROLE)
    set_entry(app, "cleanup", None)
    set_entry(app, "nightly-report", {"task": "per.report", "args": ["nightly"],
                                      "schedule": cloudq.crontab(minute=45, hour=7)})
    set_entry(app, "hourly", {"task": "per.report", "schedule": 3600, "args": ["hourly"]})
    eb_calls = watch(app)

    second = sync(app, role_arn=ROLE, dry_run=True)

    assert actions(second) == [("create", "hourly"), ("delete", "cleanup"),
                               ("update", "nightly-report")]
    assert writes(eb_calls) == {}
    found = schedules(app)
    assert sorted(found) == ["cleanup", "nightly-report"]
    assert found["nightly-report"]["ScheduleExpression"] == "cron(30 7 * * ? *)"


def test_the_group_is_owned_and_other_groups_are_untouched(
    app: cloudq.App, unique_prefix: str
) -> None:
    other_group = f"{unique_prefix}someone-else"
    foreign_schedule(app, group_name(app), "hand-made")
    foreign_schedule(app, other_group, "hand-made")
    foreign_schedule(app, other_group, "cleanup")  # same name as an entry, other group

    report = sync(app, role_arn=ROLE)

    assert actions(report) == [("create", "cleanup"), ("create", "nightly-report"),
                               ("delete", "hand-made")]
    assert sorted(schedules(app)) == ["cleanup", "nightly-report"]
    others = schedules(app, other_group)
    assert sorted(others) == ["cleanup", "hand-made"]
    assert {s["Target"]["Input"] for s in others.values()} == {'{"not": "cloudq"}'}


def test_a_named_group_is_used_instead_of_the_prefix_one(
    app: cloudq.App, unique_prefix: str
) -> None:
    app.conf.update(beat_schedule_group=f"{unique_prefix}nightly-jobs", beat_role_arn=ROLE)

    report = sync(app)  # the role from the settings

    assert report.group == f"{unique_prefix}nightly-jobs"
    assert sorted(schedules(app, f"{unique_prefix}nightly-jobs")) == ["cleanup", "nightly-report"]
    assert {s["Target"]["RoleArn"] for s in schedules(app).values()} == {ROLE}


def test_without_a_role_sync_refuses_and_creates_nothing(app: cloudq.App) -> None:
    eb_calls = watch(app)
    with pytest.raises(ConfigError, match="--role-arn"):
        sync(app)

    assert writes(eb_calls) == {}
    dry = sync(app, dry_run=True)
    assert len(dry.changes) == 2


def test_without_a_role_an_up_to_date_group_has_nothing_to_change(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)

    dry = sync(app, dry_run=True)
    assert dry.changes == []
    assert sorted(dry.unchanged) == ["cleanup", "nightly-report"]
    assert sync(app).changes == []


def test_a_schedule_disabled_by_hand_is_enabled_again(app: cloudq.App) -> None:
    sync(app, role_arn=ROLE)
    client = app.aws.client("scheduler")
    got = client.get_schedule(GroupName=group_name(app), Name="cleanup")
    client.update_schedule(
        GroupName=group_name(app), Name="cleanup", State="DISABLED",
        ScheduleExpression=got["ScheduleExpression"],
        ScheduleExpressionTimezone=got["ScheduleExpressionTimezone"],
        FlexibleTimeWindow=got["FlexibleTimeWindow"], Target=got["Target"])

    report = sync(app, role_arn=ROLE)

    assert [(c.action, c.name, c.detail) for c in report.changes] == [
        ("update", "cleanup", "state 'DISABLED' -> 'ENABLED'")]
    assert schedules(app)["cleanup"]["State"] == "ENABLED"


def test_signed_templates_are_stable_and_a_new_key_updates_every_schedule(
    app: cloudq.App,
) -> None:
    app.conf.update(signing_key="first key")
    sync(app, role_arn=ROLE)
    signed = {n: json.loads(s["Target"]["Input"]) for n, s in schedules(app).items()}
    assert all("sig" in body for body in signed.values())

    assert sync(app, role_arn=ROLE).changes == []  # signing is deterministic

    app.conf.update(signing_key="second key")
    report = sync(app, role_arn=ROLE)

    assert [(c.action, c.detail) for c in report.changes] == [("update", "input")] * 2


def test_more_than_a_page_of_schedules_is_read_in_full(app: cloudq.App) -> None:
    """Two solar entries 51 days ahead: 102 schedules, over list_schedules' 100 a page."""
    app.conf.update(beat_solar_days=51, beat_schedule={
        event: {"task": "per.report", "schedule": cloudq.solar(event, 52.52, 13.40),
                "args": [event]} for event in ("sunrise", "sunset")})
    now = datetime(2026, 11, 24, tzinfo=UTC)
    created = sync(app, role_arn=ROLE, now=now)
    assert len(created.changes) == 102
    eb_calls = watch(app)

    again = sync(app, role_arn=ROLE, now=now)

    assert again.changes == []
    assert len(again.unchanged) == 102
    assert eb_calls.counts["Scheduler.ListSchedules"] == 2
    assert writes(eb_calls) == {}


def test_a_priority_option_targets_its_band_queue(app: cloudq.App) -> None:
    set_entry(app, "urgent", {"task": "per.report", "schedule": 300, "args": ["u"],
                              "options": {"priority": 9}})

    sync(app, role_arn=ROLE)

    target = schedules(app)["urgent"]["Target"]
    assert target["Arn"] == queue_arn(app, "default-high")
    assert json.loads(target["Input"])["queue"] == "default-high"


def test_a_missing_queue_says_to_provision(app: cloudq.App) -> None:
    set_entry(app, "weekly", {"task": "per.report", "schedule": 3600, "args": ["w"],
                              "options": {"queue": "reports"}})  # never provisioned

    with pytest.raises(ConfigError, match="cloudq provision") as raised:
        sync(app, role_arn=ROLE)

    assert f"{app.settings.queue_prefix}reports" in str(raised.value)
    with pytest.raises(ConfigError, match="cloudq provision"):
        sync(app, dry_run=True)


def test_an_inexpressible_entry_is_refused_by_name_and_nothing_is_created(
    app: cloudq.App
) -> None:
    set_entry(app, "first-monday", {
        "task": "per.report", "args": ["x"],
        "schedule": cloudq.crontab(minute=0, hour=9, day_of_month="1-7", day_of_week="mon")})
    eb_calls = watch(app)

    with pytest.raises(ScheduleError, match="'first-monday'") as raised:
        sync(app, role_arn=ROLE)

    assert "day_of_month and day_of_week" in str(raised.value)
    assert writes(eb_calls) == {}
    assert no_group(app)


def test_a_periodic_task_on_a_fifo_queue_is_refused_by_name(app: cloudq.App) -> None:
    """EventBridge's message has no task id for a FIFO queue's deduplication, and a fan-out
    cannot delay messages on one: both kinds of entry are refused, before any call."""
    provision(app, ["jobs.fifo"])
    set_entry(app, "fast", {"task": "per.report", "schedule": 15, "args": ["f"],
                            "options": {"queue": "jobs.fifo"}})
    set_entry(app, "daily-fifo", {"task": "per.report", "schedule": cloudq.crontab(minute=0),
                                  "args": ["d"], "options": {"queue": "jobs.fifo"}})
    eb_calls = watch(app)

    with pytest.raises(ScheduleError) as raised:
        sync(app, role_arn=ROLE)

    assert "'fast'" in str(raised.value)
    assert "'daily-fifo'" in str(raised.value)
    assert "FIFO" in str(raised.value)
    assert eb_calls.total == 0
    assert no_group(app)


# -- EventBridge rules ---------------------------------------------------------------------------
def test_rules_target_creates_rules_with_a_time_transformer_idempotently_and_deletes(
    app: cloudq.App
) -> None:
    app.conf.update(beat_timezone="UTC")
    group = group_name(app)
    events = app.aws.client("events")

    report = sync(app, target="rules")  # rules need no role: the queue policy grants it

    assert actions(report) == [("create", f"{group}.cleanup"),
                               ("create", f"{group}.nightly-report")]
    rules = {r["Name"]: r for r in events.list_rules(NamePrefix=f"{group}.")["Rules"]}
    assert sorted(rules) == [f"{group}.cleanup", f"{group}.nightly-report"]
    assert rules[f"{group}.nightly-report"]["ScheduleExpression"] == "cron(30 7 * * ? *)"
    assert rules[f"{group}.cleanup"]["ScheduleExpression"] == "rate(10 minutes)"
    assert {r["State"] for r in rules.values()} == {"ENABLED"}
    [target] = events.list_targets_by_rule(Rule=f"{group}.nightly-report")["Targets"]
    assert target["Id"] == "cloudq"
    assert target["Arn"] == queue_arn(app)
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"at": "$.time"}
    body = json.loads(transformer["InputTemplate"])
    assert body["task"] == "per.report"
    assert body["beat"] == {"name": "nightly-report", "at": "<at>"}

    eb_calls = watch(app)
    again = sync(app, target="rules")

    assert again.changes == []
    assert sorted(again.unchanged) == [f"{group}.cleanup", f"{group}.nightly-report"]
    assert writes(eb_calls, RULE_WRITES) == {}

    set_entry(app, "cleanup", None)
    eb_calls = watch(app)
    removed = sync(app, target="rules")

    assert actions(removed) == [("delete", f"{group}.cleanup")]
    assert writes(eb_calls, RULE_WRITES) == {"EventBridge.RemoveTargets": 1,
                                             "EventBridge.DeleteRule": 1}
    assert [r["Name"] for r in events.list_rules(NamePrefix=f"{group}.")["Rules"]] == [
        f"{group}.nightly-report"]


def test_rules_target_refuses_a_time_zone_other_than_utc(app: cloudq.App) -> None:
    with pytest.raises(ScheduleError, match=r"'nightly-report'.*UTC only"):
        sync(app, target="rules", dry_run=True)


# -- solar: one-time schedules -------------------------------------------------------------------
def test_a_solar_entry_keeps_one_time_schedules_ahead_and_rolls_them_forward(
    app: cloudq.App,
) -> None:
    sunrise = cloudq.solar("sunrise", 52.52, 13.40)
    app.conf.update(beat_schedule={"sunrise": {"task": "per.report", "schedule": sunrise,
                                               "args": ["sun"]}}, beat_solar_days=3)
    now = datetime(2026, 11, 24, tzinfo=UTC)
    days = [sunrise.on((now + timedelta(days=n)).date()) for n in range(4)]
    names = [f"sunrise.{at:%Y%m%dT%H%M%S}" for at in days if at is not None]
    assert len(names) == 4 and all(n.startswith("sunrise.202611") for n in names)

    report = sync(app, role_arn=ROLE, now=now)

    assert actions(report) == [("create", name) for name in names[:3]]
    found = schedules(app)
    assert sorted(found) == names[:3]
    for name, at in zip(names[:3], days, strict=False):
        got = found[name]
        assert got["ScheduleExpression"] == f"at({at:%Y-%m-%dT%H:%M:%S})"
        assert got["ScheduleExpressionTimezone"] == "UTC"
        if "ActionAfterCompletion" in got:  # moto 5 returns it
            assert got["ActionAfterCompletion"] == "DELETE"
        body = json.loads(got["Target"]["Input"])
        assert body["beat"] == {"name": "sunrise", "at": wire.tick_text(at)}  # a fixed time

    again = sync(app, role_arn=ROLE, now=now)
    assert again.changes == []

    later = sync(app, role_arn=ROLE, now=now + timedelta(days=1))

    assert actions(later) == [("create", names[3]), ("delete", names[0])]
    assert sorted(later.unchanged) == names[1:3]
    assert sorted(schedules(app)) == names[1:4]


def test_rules_target_refuses_a_solar_entry(app: cloudq.App) -> None:
    app.conf.update(beat_timezone="UTC", beat_schedule={
        "sunset": {"task": "per.report", "schedule": cloudq.solar("sunset", 48.85, 2.35),
                   "args": ["s"]}})

    with pytest.raises(ScheduleError, match="'sunset'"):
        sync(app, target="rules", dry_run=True)


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def run(app: cloudq.App, local_aws: LocalAws) -> Any:
    def invoke(*args: str) -> Any:
        argv = ["schedule", *args[:1], "-A", APP_SPEC, "--endpoint-url",
                local_aws.endpoint_url, *args[1:]]
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    return invoke


def test_cli_export_prints_a_json_array_of_schedules(run: Any, app: cloudq.App) -> None:
    result = run("export", "--format", "json")

    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert isinstance(exported, list)
    assert [item["name"] for item in exported] == ["nightly-report", "cleanup"]
    for item in exported:
        assert {"name", "task", "expression", "timezone", "target_queue", "input"} <= set(item)
        assert item["timezone"] == BERLIN
        assert item["target_queue"] == f"{app.settings.queue_prefix}default"
        assert json.loads(item["input"])["task"] == item["task"]
    assert exported[0]["expression"] == "cron(30 7 * * ? *)"
    assert exported[1]["expression"] == "rate(10 minutes)"
    assert [w.input for w in wanted(app)] == [item["input"] for item in exported]


def test_cli_sync_dry_run_prints_the_creates(run: Any, app: cloudq.App) -> None:
    result = run("sync", "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("+ ")] == [
        "+ create nightly-report", "+ create cleanup"]
    assert "dry run: nothing was changed" in lines[-1]
    assert no_group(app)


def test_cli_sync_creates_the_schedules(run: Any, app: cloudq.App) -> None:
    result = run("sync", "--role-arn", ROLE)

    assert result.exit_code == 0, result.output
    assert sorted(schedules(app)) == ["cleanup", "nightly-report"]
    assert "changed 2, 0 unchanged" in result.stdout

    again = run("sync", "--role-arn", ROLE)
    assert again.exit_code == 0, again.output
    assert "changed 0, 2 unchanged" in again.stdout


def test_cli_refuses_an_inexpressible_schedule_naming_it(run: Any, app: cloudq.App) -> None:
    set_entry(app, "payday", {
        "task": "per.report", "args": ["x"],
        "schedule": cloudq.crontab(minute=0, hour=9, day_of_month=15, day_of_week="fri")})

    exported = run("export")
    synced = run("sync", "--role-arn", ROLE)

    for result in (exported, synced):
        assert result.exit_code != 0
        assert "'payday'" in result.stderr
        assert "Traceback" not in result.output
    assert no_group(app)
