"""The backlog Fargate workers scale on: visible plus in-flight messages of every queue band.

A CloudWatch alarm on metric math may read at most 10 metrics (a hard limit), two per queue
here, so up to five bands are summed in the alarm itself (``FILL`` turns the silence of an
idle queue into 0). An app with more bands gets a small scheduled function that reads every
band's depth with ``GetQueueAttributes`` once a minute and publishes the sum as one metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cloudq.cdk import suppressions as checkov

MAX_ALARM_METRICS = 10
"""CloudWatch's limit of metrics in one alarm on metric math (not adjustable)."""
PERIOD = cdk.Duration.minutes(1)
NAMESPACE = "cloudq"
METRIC_NAME = "QueueBacklog"
DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
"""``GetQueueAttributes``' names for CloudWatch's ...Visible and ...NotVisible."""

PUBLISHER_SOURCE = """\
import os

import boto3

sqs = boto3.client("sqs")
cloudwatch = boto3.client("cloudwatch")
ATTRIBUTES = os.environ["DEPTH_ATTRIBUTES"].split()


def handler(event, context):
    total = 0
    for url in os.environ["QUEUE_URLS"].split():
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=ATTRIBUTES)["Attributes"]
        total += sum(int(got.get(name, 0)) for name in ATTRIBUTES)
    cloudwatch.put_metric_data(Namespace=os.environ["NAMESPACE"], MetricData=[{
        "MetricName": os.environ["METRIC_NAME"], "Value": total, "Unit": "Count",
        "Dimensions": [{"Name": "ClusterName", "Value": os.environ["CLUSTER_NAME"]}],
    }])
    return {"backlog": total}
"""


def fits_one_alarm(queue_count: int) -> bool:
    """Whether the visible and in-flight metrics of ``queue_count`` queues fit one alarm."""
    return 2 * queue_count <= MAX_ALARM_METRICS


def queue_math(queues: Sequence[sqs.IQueue]) -> cloudwatch.MathExpression:
    """Sum of ``ApproximateNumberOfMessagesVisible`` + ``...NotVisible`` over ``queues``
    (each the per-minute maximum; a queue that published nothing counts 0)."""
    metrics: dict[str, cloudwatch.IMetric] = {}
    for index, queue in enumerate(queues):
        metrics[f"visible{index}"] = queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=PERIOD)
        metrics[f"inflight{index}"] = queue.metric_approximate_number_of_messages_not_visible(
            statistic="Maximum", period=PERIOD)
    return cloudwatch.MathExpression(
        expression="+".join(f"FILL({key},0)" for key in metrics), using_metrics=metrics,
        period=PERIOD, label="messages visible + in flight")


class BacklogPublisher(Construct):
    """A function, run every minute, that publishes the summed depth of ``queues`` as
    ``cloudq/QueueBacklog`` (dimension ``ClusterName``); ``.metric`` reads it."""

    def __init__(self, scope: Construct, id: str, *, queues: Sequence[sqs.IQueue],
                 cluster_name: str) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=cdk.RemovalPolicy.DESTROY)
        checkov.suppress(self.log_group, checkov.LOG_GROUP_KMS)
        self.function = lambda_.Function(
            self, "Function", runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64, handler="index.handler",
            code=lambda_.Code.from_inline(PUBLISHER_SOURCE), memory_size=128,
            timeout=cdk.Duration.seconds(30), log_group=self.log_group,
            description="cloudq: publishes the workers' queue backlog each minute",
            environment={
                "QUEUE_URLS": cdk.Fn.join(" ", [queue.queue_url for queue in queues]),
                "DEPTH_ATTRIBUTES": " ".join(DEPTH_ATTRIBUTES), "NAMESPACE": NAMESPACE,
                "METRIC_NAME": METRIC_NAME, "CLUSTER_NAME": cluster_name,
            },
        )
        checkov.suppress(self.function, checkov.PUBLISHER_DLQ, checkov.LAMBDA_VPC,
                         checkov.PUBLISHER_CONCURRENCY, checkov.LAMBDA_ENV_KMS)
        for queue in queues:
            queue.grant(self.function, "sqs:GetQueueAttributes")
        # PutMetricData has no resource type: the namespace condition is what narrows it
        self.function.add_to_role_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}}))
        self.rule = events.Rule(
            self, "EveryMinute", schedule=events.Schedule.rate(cdk.Duration.minutes(1)),
            description="cloudq: publish the workers' queue backlog",
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)])
        self.metric = cloudwatch.Metric(
            namespace=NAMESPACE, metric_name=METRIC_NAME,
            dimensions_map={"ClusterName": cluster_name}, statistic="Maximum", period=PERIOD,
            label="messages visible + in flight")


def backlog_metric(scope: Construct, *, queues: Sequence[sqs.IQueue],
                   cluster_name: str) -> cloudwatch.IMetric:
    """The backlog of ``queues``: metric math when it fits one alarm, else a
    :class:`BacklogPublisher` (made in ``scope``) and its metric."""
    if fits_one_alarm(len(queues)):
        return queue_math(queues)
    return BacklogPublisher(scope, "Backlog", queues=queues, cluster_name=cluster_name).metric
