"""``cloudq schedule sync``: make EventBridge's schedules match ``beat_schedule``.

cloudq owns one EventBridge Scheduler *schedule group* (``beat_schedule_group``, default
``<queue_prefix>beat``): schedules in it that the app no longer has are deleted, changed ones
are updated, new ones created, equal ones left alone, so a second sync changes nothing. With
``target="rules"`` it owns the EventBridge rules named ``<group>.<entry>`` instead (UTC only;
the queue's policy must let ``events.amazonaws.com`` send, which the CDK stack grants).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from cloudq.errors import ConfigError
from cloudq.scheduler.eventbridge import RULE_TIME, Target, Wanted, wanted

if TYPE_CHECKING:
    from cloudq.app import App

logger = logging.getLogger(__name__)

TARGET_ID = "cloudq"
"""The id of the one target cloudq puts on each rule."""


@dataclass(frozen=True)
class Change:
    action: Literal["create", "update", "delete"]
    name: str
    detail: str

    def line(self) -> str:
        mark = {"create": "+", "update": "~", "delete": "-"}[self.action]
        return f"{mark} {self.action} {self.name}: {self.detail}"


@dataclass
class SyncReport:
    target: Target
    group: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        where = f"schedule group {self.group!r}" if self.target == "scheduler" \
            else f"rules {self.group}.*"
        lines = [change.line() for change in self.changes]
        verb = "would change" if self.dry_run else "changed"
        lines.append(f"{where}: {verb} {len(self.changes)}, {len(self.unchanged)} unchanged"
                     + (" (dry run: nothing was changed)" if self.dry_run else ""))
        return lines


def group_name(app: App) -> str:
    return app.settings.beat_schedule_group or f"{app.settings.queue_prefix}beat"


def sync(app: App, *, target: Target = "scheduler", role_arn: str | None = None,
         dry_run: bool = False, now: datetime | None = None) -> SyncReport:
    """Create, update and delete EventBridge schedules so they match the app's beat_schedule."""
    group = group_name(app)
    prefix = "" if target == "scheduler" else f"{group}."
    desired = wanted(app, target=target, now=now, prefix=prefix)
    backend: _Backend = _Scheduler(app, group) if target == "scheduler" else _Rules(app, prefix)
    arns = {w.queue: _queue_arn(app, w.queue) for w in desired}
    role_arn = role_arn or app.settings.beat_role_arn
    report = SyncReport(target=target, group=group, dry_run=dry_run)
    existing = backend.existing()
    for item in desired:
        current = existing.pop(item.name, None)
        # with no role given, a schedule keeps the role it has
        spec = backend.spec(item, arns[item.queue],
                            role_arn or (current or {}).get("role"))
        if current is None:
            report.changes.append(Change("create", item.name, _describe(item)))
        elif (difference := _difference(current, spec)):
            report.changes.append(Change("update", item.name, difference))
        else:
            report.unchanged.append(item.name)
            continue
        if not dry_run:
            if spec.get("role", "") is None:
                raise ConfigError(
                    "EventBridge Scheduler needs an IAM role it can assume to send to SQS: pass "
                    "--role-arn or set beat_role_arn (CLOUDQ_BEAT_ROLE_ARN)")
            backend.put(item, spec, create=current is None)
    for name in sorted(existing):
        report.changes.append(Change("delete", name, "no longer in beat_schedule"))
        if not dry_run:
            backend.delete(name)
    return report


def _describe(item: Wanted) -> str:
    where = "" if item.timezone == "UTC" else f" ({item.timezone})"
    return f"{item.expression}{where} -> {item.task} on {item.queue}"


def _difference(current: dict[str, Any], spec: dict[str, Any]) -> str:
    changed = [f"{key} {current.get(key)!r} -> {value!r}" if key != "input" else "input"
               for key, value in spec.items() if current.get(key) != value]
    return ", ".join(changed)


def _queue_arn(app: App, queue: str) -> str:
    from botocore.exceptions import ClientError

    sqs = app.aws.sqs
    try:
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        return sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    except ClientError as exc:
        raise ConfigError(f"queue {queue!r} (a periodic task's target) does not exist or "
                          f"cannot be read: {exc}; create it with `cloudq provision`") from exc


# -- backends -------------------------------------------------------------------------------------
class _Backend:
    """One kind of EventBridge schedule: read what is there, write one, delete one.

    ``spec`` is the comparable form: expression, timezone, target arn, role, input, state."""

    def existing(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def spec(self, item: Wanted, arn: str, role_arn: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def put(self, item: Wanted, spec: dict[str, Any], *, create: bool) -> None:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError


class _Scheduler(_Backend):
    def __init__(self, app: App, group: str) -> None:
        self.client: Any = app.aws.client("scheduler")
        self.group = group

    def existing(self) -> dict[str, dict[str, Any]]:
        from botocore.exceptions import ClientError

        try:
            names = [s["Name"] for s in self._pages()]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            return {}  # the group does not exist yet
        found = {}
        for name in names:
            got = self.client.get_schedule(GroupName=self.group, Name=name)
            target = got.get("Target", {})
            found[name] = {
                "expression": got.get("ScheduleExpression"),
                "timezone": got.get("ScheduleExpressionTimezone", "UTC"),
                "arn": target.get("Arn"), "role": target.get("RoleArn"),
                "input": target.get("Input"), "state": got.get("State"),
            }
        return found

    def _pages(self) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_schedules").paginate(
            GroupName=self.group, PaginationConfig={"PageSize": 100})
        for page in pages:
            yield from page.get("Schedules", [])

    def spec(self, item: Wanted, arn: str, role_arn: str | None) -> dict[str, Any]:
        return {"expression": item.expression, "timezone": item.timezone, "arn": arn,
                "role": role_arn, "input": item.input, "state": "ENABLED"}

    def put(self, item: Wanted, spec: dict[str, Any], *, create: bool) -> None:
        self._ensure_group()
        target = {"Arn": spec["arn"], "RoleArn": spec["role"], "Input": item.input}
        params: dict[str, Any] = {
            "GroupName": self.group, "Name": item.name,
            "ScheduleExpression": item.expression,
            "ScheduleExpressionTimezone": item.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"}, "State": "ENABLED",
            "Description": f"cloudq periodic task {item.entry!r}: {item.task}"[:512],
            "Target": target,
        }
        if item.one_time:
            params["ActionAfterCompletion"] = "DELETE"
        (self.client.create_schedule if create else self.client.update_schedule)(**params)
        logger.info("%s schedule %s/%s: %s", "created" if create else "updated", self.group,
                    item.name, item.expression)

    def _ensure_group(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.get_schedule_group(Name=self.group)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            self.client.create_schedule_group(Name=self.group)

    def delete(self, name: str) -> None:
        self.client.delete_schedule(GroupName=self.group, Name=name)
        logger.info("deleted schedule %s/%s", self.group, name)


class _Rules(_Backend):
    def __init__(self, app: App, prefix: str) -> None:
        self.client: Any = app.aws.client("events")
        self.prefix = prefix

    def existing(self) -> dict[str, dict[str, Any]]:
        found = {}
        for rule in self._pages():
            if not rule.get("ScheduleExpression"):
                continue
            targets = self.client.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
            target: dict[str, Any] = next(
                (t for t in targets if t.get("Id") == TARGET_ID), {})
            found[rule["Name"]] = {
                "expression": rule.get("ScheduleExpression"), "timezone": "UTC",
                "arn": target.get("Arn"),
                "input": target.get("InputTransformer", {}).get("InputTemplate"),
                "state": rule.get("State"),
            }
        return found

    def _pages(self) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_rules").paginate(NamePrefix=self.prefix):
            yield from page.get("Rules", [])

    def spec(self, item: Wanted, arn: str, role_arn: str | None) -> dict[str, Any]:
        return {"expression": item.expression, "timezone": "UTC", "arn": arn,
                "input": item.input, "state": "ENABLED"}

    def put(self, item: Wanted, spec: dict[str, Any], *, create: bool) -> None:
        self.client.put_rule(
            Name=item.name, ScheduleExpression=item.expression, State="ENABLED",
            Description=f"cloudq periodic task {item.entry!r}: {item.task}"[:512])
        target: dict[str, Any] = {
            "Id": TARGET_ID, "Arn": spec["arn"],
            "InputTransformer": {"InputPathsMap": {RULE_TIME.strip("<>"): "$.time"},
                                 "InputTemplate": item.input},
        }
        self.client.put_targets(Rule=item.name, Targets=[target])
        logger.info("%s rule %s: %s", "created" if create else "updated", item.name,
                    item.expression)

    def delete(self, name: str) -> None:
        self.client.remove_targets(Rule=name, Ids=[TARGET_ID])
        self.client.delete_rule(Name=name)
        logger.info("deleted rule %s", name)
