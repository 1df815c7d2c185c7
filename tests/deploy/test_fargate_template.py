"""``FargateWorkers`` synthesized: the task, the network, and the scaling on queue depth.

One cloud assembly for the module, two stacks: the example shop app (six queue bands, so the
backlog comes from the publisher function) with the defaults, and a small app whose longest
task runs 30 s (three bands, summed by metric math in the alarms), tuned and in a given VPC.
"""

from __future__ import annotations

import itertools
import math
import os
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import cloudq
from cloudq.cdk import backlog as backlog_mod
from cloudq.cdk import fargate
from cloudq.cdk.plan import Plan, plan
from cloudq.errors import ConfigError

pytestmark = pytest.mark.deploy

short_app = cloudq.App("short", queue_prefix="short-")


@short_app.task(name="short.work", time_limit=30)
def work(n: int) -> int:
    return n


@dataclass(frozen=True)
class Built:
    plan: Plan
    workers: Any
    template: dict[str, Any]
    queue_ids: list[str]
    """The logical ids of the stack's queues, in the order given to the workers."""

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.template["Resources"].items() if r["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        (resource,) = self.resources(kind).values()
        return resource["Properties"]  # type: ignore[no-any-return]

    def container(self) -> dict[str, Any]:
        (container,) = self.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
        return container  # type: ignore[no-any-return]

    def environment(self) -> dict[str, Any]:
        return {e["Name"]: e["Value"] for e in self.container()["Environment"]}


def _stack(app: Any, name: str, the_plan: Plan, **options: Any) -> tuple[Any, Any, list[Any]]:
    import aws_cdk as cdk
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_sqs as sqs

    stack = cdk.Stack(app, name, env=cdk.Environment(account="123456789012", region="us-east-1"))
    queues = [sqs.Queue(stack, band.construct_id, queue_name=band.name)
              for band in the_plan.queues]

    def grant_worker(grantee: iam.IGrantable) -> None:
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            sid="TestWorkerGrant", actions=["sqs:ReceiveMessage"],
            resources=[queue.queue_arn for queue in queues]))

    vpc = options.pop("vpc", None)
    workers = fargate.FargateWorkers(
        stack, "Workers", plan=the_plan, queues=queues,
        image=ecs.ContainerImage.from_registry("public.ecr.aws/docker/library/python:3.11-slim"),
        environment={**the_plan.environment, "CLOUDQ_REGION": "us-east-1"},
        grant_worker=grant_worker, vpc=vpc(stack) if vpc else None, **options)
    return stack, workers, queues


def _given_vpc(stack: Any) -> Any:
    from aws_cdk import aws_ec2 as ec2

    return ec2.Vpc(stack, "GivenVpc", max_azs=2, nat_gateways=1)


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Built]]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk

    from examples.shop.tasks import app as shop_app

    app = cdk.App()
    plans = {
        "shop": plan(shop_app, app_path="shop.tasks:app", workers="fargate"),
        "short": plan(short_app, app_path="tests.deploy.test_fargate_template:short_app",
                      workers="fargate"),
    }
    made = {
        "shop": _stack(app, "FargateShop", plans["shop"]),
        "short": _stack(app, "FargateShort", plans["short"], min_tasks=1, max_tasks=40,
                        backlog_per_task=50, concurrency=4, cpu=1024, memory_mib=2048,
                        architecture="arm64", vpc=_given_vpc),
    }
    cloud = app.synth()
    yield {
        key: Built(plan=plans[key], workers=workers,
                   template=cloud.get_stack_by_name(stack.stack_name).template,
                   queue_ids=[stack.get_logical_id(q.node.default_child) for q in queues])
        for key, (stack, workers, queues) in made.items()
    }


# -- the task -------------------------------------------------------------------------------------
def test_the_container_runs_cloudq_poll_for_the_apps_queues(built: dict[str, Built]) -> None:
    shop, short = built["shop"], built["short"]
    assert shop.plan.worker_queues == ["default", "reports"]
    assert shop.container()["Command"] == ["poll", "-A", "shop.tasks:app", "-Q", "default,reports"]
    assert short.container()["Command"] == [
        "poll", "-A", "tests.deploy.test_fargate_template:short_app", "-Q", "default", "-c", "4"]


def test_the_environment_is_the_apps_plus_a_shutdown_grace_inside_the_stop_timeout(
        built: dict[str, Built]) -> None:
    shop = built["shop"]
    env = shop.environment()
    assert {k: env[k] for k in shop.plan.environment} == shop.plan.environment
    assert env["CLOUDQ_REGION"] == "us-east-1"
    # no task time limit: Fargate's longest grace, the worker's own ends before it
    assert shop.plan.longest_task_s is None
    assert shop.container()["StopTimeout"] == 120
    assert float(env["CLOUDQ_WORKER_SHUTDOWN_TIMEOUT"]) == 120 - fargate.SHUTDOWN_FLUSH_S


def test_a_30s_task_gets_30s_plus_the_margin_and_a_grace_between(built: dict[str, Built]) -> None:
    short = built["short"]
    assert short.plan.longest_task_s == 30
    stop = short.container()["StopTimeout"]
    assert stop == 30 + fargate.STOP_MARGIN_S
    grace = float(short.environment()["CLOUDQ_WORKER_SHUTDOWN_TIMEOUT"])
    assert 30 < grace < stop


def test_the_task_definition_is_fargate_on_the_asked_architecture(built: dict[str, Built]) -> None:
    shop, short = built["shop"].one("AWS::ECS::TaskDefinition"), \
        built["short"].one("AWS::ECS::TaskDefinition")
    assert shop["RequiresCompatibilities"] == ["FARGATE"]
    assert shop["RuntimePlatform"] == {"CpuArchitecture": "X86_64",
                                       "OperatingSystemFamily": "LINUX"}
    assert (shop["Cpu"], shop["Memory"]) == ("512", "1024")
    assert short["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    assert (short["Cpu"], short["Memory"]) == ("1024", "2048")


def test_the_root_file_system_is_read_only_with_a_tmpfs_for_tmp(built: dict[str, Built]) -> None:
    container = built["shop"].container()
    assert container["ReadonlyRootFilesystem"] is True
    linux = container["LinuxParameters"]
    assert linux["InitProcessEnabled"] is True  # signals forwarded, forked children reaped
    (tmp,) = linux["Tmpfs"]
    assert tmp["ContainerPath"] == "/tmp"
    assert tmp["Size"] == 1024 // 8


def test_the_task_role_is_what_grant_worker_made_it(built: dict[str, Built]) -> None:
    shop = built["shop"]
    task_role = shop.one("AWS::ECS::TaskDefinition")["TaskRoleArn"]["Fn::GetAtt"][0]
    granted = [p["Properties"] for p in shop.resources("AWS::IAM::Policy").values()
               if {"Ref": task_role} in p["Properties"]["Roles"]]
    (statement,) = [s for p in granted for s in p["PolicyDocument"]["Statement"]]
    assert statement["Sid"] == "TestWorkerGrant"
    assert len(statement["Resource"]) == len(shop.queue_ids)


def test_logs_go_to_a_log_group_kept_a_month(built: dict[str, Built]) -> None:
    shop = built["shop"]
    options = shop.container()["LogConfiguration"]
    assert options["LogDriver"] == "awslogs"
    group_id = options["Options"]["awslogs-group"]["Ref"]
    group = shop.template["Resources"][group_id]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Delete"


# -- cluster, service and network ---------------------------------------------------------------
def test_the_cluster_has_container_insights(built: dict[str, Built]) -> None:
    settings = built["shop"].one("AWS::ECS::Cluster")["ClusterSettings"]
    assert {"Name": "containerInsights", "Value": "enabled"} in settings


def test_the_service_starts_at_min_tasks_and_rolls_back_failed_deployments(
        built: dict[str, Built]) -> None:
    shop, short = built["shop"].one("AWS::ECS::Service"), built["short"].one("AWS::ECS::Service")
    assert shop["DesiredCount"] == 0
    assert short["DesiredCount"] == 1
    deployment = shop["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)
    assert shop["EnableExecuteCommand"] is False
    assert shop["LaunchType"] == "FARGATE"


def test_a_new_vpc_is_two_public_subnets_without_nat(built: dict[str, Built]) -> None:
    shop = built["shop"]
    assert not shop.resources("AWS::EC2::NatGateway")
    subnets = shop.resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())
    network = shop.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    assert sorted(s["Ref"] for s in network["Subnets"]) == sorted(subnets)


def test_a_given_vpc_with_private_subnets_runs_the_tasks_there(built: dict[str, Built]) -> None:
    short = built["short"]
    network = short.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    private = {lid for lid, s in short.resources("AWS::EC2::Subnet").items()
               if not s["Properties"]["MapPublicIpOnLaunch"]}
    assert private and {s["Ref"] for s in network["Subnets"]} == private


def test_the_security_group_lets_nothing_in(built: dict[str, Built]) -> None:
    for key in ("shop", "short"):
        group = built[key].resources("AWS::EC2::SecurityGroup")
        workers_group = [g for lid, g in group.items() if lid.startswith("Workers")]
        (only,) = workers_group
        assert "SecurityGroupIngress" not in only["Properties"]
        assert not built[key].resources("AWS::EC2::SecurityGroupIngress")


# -- scaling on the backlog ----------------------------------------------------------------------
def _scaling(built: Built) -> Callable[[int], int]:
    """The capacity the template's alarms and step policies set for a given backlog."""
    target = built.one("AWS::ApplicationAutoScaling::ScalableTarget")
    low, high = target["MinCapacity"], target["MaxCapacity"]
    policies = built.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    rules = []
    for alarm in built.resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        (action,) = props["AlarmActions"]
        config = policies[action["Ref"]]["Properties"]["StepScalingPolicyConfiguration"]
        assert config["AdjustmentType"] == "ExactCapacity"
        rules.append((props["ComparisonOperator"], props["Threshold"], config["StepAdjustments"]))

    def capacity(backlog: int) -> int:
        for operator, threshold, steps in rules:
            delta = backlog - threshold
            above = operator == "GreaterThanOrEqualToThreshold"
            if (delta < 0) if above else (delta > 0):
                continue
            for step in steps:  # above the threshold: [lower, upper), below it: (lower, upper]
                lower = step.get("MetricIntervalLowerBound", -math.inf)
                upper = step.get("MetricIntervalUpperBound", math.inf)
                if (lower <= delta < upper) if above else (lower < delta <= upper):
                    return max(low, min(high, step["ScalingAdjustment"]))
        raise AssertionError(f"no alarm acts on a backlog of {backlog}")

    return capacity


def test_the_scalable_target_spans_min_to_max_tasks(built: dict[str, Built]) -> None:
    shop = built["shop"].one("AWS::ApplicationAutoScaling::ScalableTarget")
    short = built["short"].one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert (shop["MinCapacity"], shop["MaxCapacity"]) == (0, 10)
    assert (short["MinCapacity"], short["MaxCapacity"]) == (1, 40)
    assert shop["ScalableDimension"] == "ecs:service:DesiredCount"


def test_one_task_per_backlog_per_task_messages_and_none_when_empty(
        built: dict[str, Built]) -> None:
    capacity = _scaling(built["shop"])
    for backlog in (0, 1, 2, 99, 100, 101, 250, 999, 1000, 1001, 50_000):
        assert capacity(backlog) == min(10, math.ceil(backlog / 100)), backlog


def test_many_tasks_are_reached_in_at_most_20_steps_never_short(built: dict[str, Built]) -> None:
    short = built["short"]
    upper = [p["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
             for lid, p in short.resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
             if "Upper" in lid]
    assert len(upper[0]) <= fargate.MAX_STEP_ADJUSTMENTS
    capacity = _scaling(short)
    assert capacity(0) == 1  # min_tasks
    for backlog in range(1, 2200, 7):
        wanted = min(40, max(1, math.ceil(backlog / 50)))
        assert wanted <= capacity(backlog) <= 40, backlog
    assert capacity(40 * 50 + 1) == 40


def test_scaling_in_waits_for_five_empty_minutes_scaling_out_for_one(
        built: dict[str, Built]) -> None:
    alarms = {p["Properties"]["ComparisonOperator"]: p["Properties"]
              for p in built["shop"].resources("AWS::CloudWatch::Alarm").values()}
    scale_in = alarms["LessThanOrEqualToThreshold"]
    scale_out = alarms["GreaterThanOrEqualToThreshold"]
    assert (scale_in["Threshold"], scale_in["EvaluationPeriods"]) == (0, 5)
    assert scale_in["DatapointsToAlarm"] == 5
    assert (scale_out["Threshold"], scale_out["EvaluationPeriods"]) == (1, 1)


def test_few_bands_are_summed_in_the_alarm_itself(built: dict[str, Built]) -> None:
    short = built["short"]
    assert len(short.queue_ids) == 3
    for alarm in short.resources("AWS::CloudWatch::Alarm").values():
        queries = alarm["Properties"]["Metrics"]
        (expression,) = [q for q in queries if "Expression" in q]
        stats = [q for q in queries if "MetricStat" in q]
        assert expression["ReturnData"] is True
        assert len(stats) <= backlog_mod.MAX_ALARM_METRICS
        seen = {(q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0],
                 q["MetricStat"]["Metric"]["MetricName"]) for q in stats}
        assert seen == {(queue, name) for queue in short.queue_ids for name in (
            "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible")}
        assert all(q["MetricStat"]["Period"] == 60 for q in stats)
        assert expression["Expression"].count("FILL(") == len(stats)
        assert not short.resources("AWS::Lambda::Function")


def test_many_bands_are_summed_by_the_publisher_every_minute(built: dict[str, Built]) -> None:
    shop = built["shop"]
    assert len(shop.queue_ids) == 6 and not backlog_mod.fits_one_alarm(6)
    for alarm in shop.resources("AWS::CloudWatch::Alarm").values():
        (query,) = alarm["Properties"]["Metrics"]
        metric = query["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("cloudq", "QueueBacklog")
        assert query["MetricStat"]["Period"] == 60
    function = shop.one("AWS::Lambda::Function")
    urls = function["Environment"]["Variables"]["QUEUE_URLS"]["Fn::Join"][1]
    assert [u["Ref"] for u in urls] == shop.queue_ids
    rule = shop.one("AWS::Events::Rule")
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    statements = [s for p in shop.resources("AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    depth = [s for s in statements if s["Action"] == "sqs:GetQueueAttributes"]
    assert sorted(s["Resource"]["Fn::GetAtt"][0] for s in depth) == sorted(shop.queue_ids)
    (put,) = [s for s in statements if s["Action"] == "cloudwatch:PutMetricData"]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "cloudq"}}


@pytest.mark.integration
def test_the_publishers_code_sums_visible_and_in_flight_messages(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline function's source, run against a moto server."""
    import boto3

    from cloudq.localaws import DUMMY_CREDENTIALS, LocalAws

    with LocalAws() as aws:
        for name, value in {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": aws.endpoint_url,
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        sqs = boto3.client("sqs")
        urls = [sqs.create_queue(QueueName=f"pub-{i}")["QueueUrl"] for i in range(3)]
        for url, count in zip(urls, (2, 0, 3), strict=True):
            for n in range(count):
                sqs.send_message(QueueUrl=url, MessageBody=str(n))
        sqs.receive_message(QueueUrl=urls[2], MaxNumberOfMessages=2)  # two now in flight
        monkeypatch.setenv("QUEUE_URLS", " ".join(urls))
        monkeypatch.setenv("DEPTH_ATTRIBUTES", " ".join(backlog_mod.DEPTH_ATTRIBUTES))
        monkeypatch.setenv("NAMESPACE", "cloudq")
        monkeypatch.setenv("METRIC_NAME", "QueueBacklog")
        monkeypatch.setenv("CLUSTER_NAME", "workers")
        module = types.ModuleType("publisher")
        exec(compile(backlog_mod.PUBLISHER_SOURCE, "index.py", "exec"), module.__dict__)
        assert module.handler({}, None) == {"backlog": 5}
        listed = boto3.client("cloudwatch").list_metrics(Namespace="cloudq")["Metrics"]
        assert [(m["MetricName"], m["Dimensions"]) for m in listed] == [
            ("QueueBacklog", [{"Name": "ClusterName", "Value": "workers"}])]


# -- refusals and helpers (no synthesis) ---------------------------------------------------------
@pytest.mark.parametrize(("options", "named"), [
    ({"min_tasks": 5, "max_tasks": 2}, "min_tasks=5"),
    ({"min_tasks": -1}, "min_tasks=-1"),
    ({"max_tasks": 0}, "max_tasks=0"),
    ({"backlog_per_task": 0}, "backlog_per_task=0"),
    ({"concurrency": 0}, "concurrency=0"),
    ({"architecture": "ppc64"}, "architecture='ppc64'"),
    ({"cpu": 300}, "cpu=300"),
    ({"cpu": 256, "memory_mib": 4096}, "memory_mib=4096"),
])
def test_bad_parameters_are_refused_by_name_before_anything_is_built(
        options: dict[str, Any], named: str) -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_sqs as sqs

    the_plan = plan(short_app, app_path="short:app", workers="fargate")
    stack = cdk.Stack(cdk.App(), "Refused")
    queue = sqs.Queue(stack, "Queue")
    with pytest.raises(ConfigError, match=f"^{named}"):
        fargate.FargateWorkers(
            stack, "Workers", plan=the_plan, queues=[queue], environment={},
            image=ecs.ContainerImage.from_registry("python:3.11-slim"),
            grant_worker=lambda grantee: None, **options)
    assert stack.node.try_find_child("Workers") is None


def test_stop_timeouts() -> None:
    assert fargate.stop_timeout_s(None) == 120
    assert fargate.stop_timeout_s(0.5) == 1 + fargate.STOP_MARGIN_S
    assert fargate.stop_timeout_s(30) == 30 + fargate.STOP_MARGIN_S
    assert fargate.stop_timeout_s(3600) == 120


def test_task_counts_are_every_count_or_twenty_spread_evenly() -> None:
    assert fargate.task_counts(1, 10) == list(range(1, 11))
    assert fargate.task_counts(3, 3) == [3]
    spread = fargate.task_counts(1, 200)
    assert len(spread) == fargate.MAX_STEP_ADJUSTMENTS
    assert spread[0] == 1 and spread[-1] == 200
    assert spread == sorted(set(spread))
    assert max(b - a for a, b in itertools.pairwise(spread)) <= math.ceil(199 / 19)
