"""The synthesized stacks hold what the runtime expects, named as the runtime names it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cloudq.cdk.plan import LAMBDA_TIMEOUT_MARGIN_S, VISIBILITY_PER_LAMBDA_TIMEOUT
from cloudq.routing import bands
from cloudq.scheduler.eventbridge import wanted
from cloudq.transports.base import dead_letter_queue_name
from tests.deploy.conftest import INFRA, Synthesized

pytestmark = pytest.mark.deploy


def queue_names(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["QueueName"]: r["Properties"]
            for r in synth.resources("AWS::SQS::Queue").values()}


def logical_id(synth: Synthesized, kind: str, **properties: Any) -> str:
    for lid, resource in synth.resources(kind).items():
        if all(resource["Properties"].get(k) == v for k, v in properties.items()):
            return lid
    raise AssertionError(f"no {kind} with {properties}")


# -- the example app, Lambda workers -------------------------------------------------------------
def test_every_band_of_every_queue_has_its_dead_letter_queue(example_assembly: Synthesized):
    app = example_assembly.service.app
    expected = [f"cloudq-{band}" for queue in ("default", "reports") for band in bands(queue)]
    queues = queue_names(example_assembly)
    dead = {f"cloudq-{dead_letter_queue_name(b)}" for q in ("default", "reports") for b in bands(q)}
    assert set(queues) == set(expected) | dead
    assert sorted(q.name for q in example_assembly.service.plan.queues) == sorted(expected)
    for name in expected:
        props = queues[name]
        dlq_id = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        dlq = example_assembly.template["Resources"][dlq_id]["Properties"]
        assert dlq["QueueName"] == f"{name}-dlq"
        assert props["RedrivePolicy"]["maxReceiveCount"] == app.settings.max_receive_count
        assert props["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
        assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert dlq["RedriveAllowPolicy"]["redrivePermission"] == "byQueue"
        (source,) = dlq["RedriveAllowPolicy"]["sourceQueueArns"]
        assert source["Fn::Join"][1][-1] == f":{name}"


def test_visibility_is_six_function_timeouts(example_assembly: Synthesized):
    function = next(iter(example_assembly.resources("AWS::Lambda::Function").values()))
    timeout = function["Properties"]["Timeout"]
    assert timeout == example_assembly.service.app.settings.lambda_default_timeout
    for props in queue_names(example_assembly).values():
        if not props["QueueName"].endswith("-dlq"):
            assert props["VisibilityTimeout"] >= VISIBILITY_PER_LAMBDA_TIMEOUT * timeout


def test_queues_refuse_plain_http(example_assembly: Synthesized):
    policies = example_assembly.resources("AWS::SQS::QueuePolicy")
    assert len(policies) == len(queue_names(example_assembly))
    for policy in policies.values():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_table_is_what_the_store_expects(example_assembly: Synthesized):
    template = Template.from_json(example_assembly.template)
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    template.has_resource("AWS::DynamoDB::Table", {
        "Properties": {
            "TableName": "cloudq-results",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "DeletionProtectionEnabled": True,
        },
        "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
    })


def test_one_worker_function_with_an_event_source_per_band(example_assembly: Synthesized):
    template = Template.from_json(example_assembly.template)
    template.resource_count_is("AWS::Lambda::Function", 1)
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "cloudq.lambda_handler.handler",
        "Runtime": "python3.11",
        "Architectures": ["x86_64"],
        "Environment": {"Variables": Match.object_like({
            "CLOUDQ_APP": "shop.tasks:app", "CLOUDQ_QUEUE_PREFIX": "cloudq-",
            "CLOUDQ_RESULT_TABLE": "cloudq-results", "CLOUDQ_REGION": {"Ref": "AWS::Region"},
        })},
    })
    mappings = example_assembly.resources("AWS::Lambda::EventSourceMapping")
    sources = {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings.values()}
    bands_ = [q.name for q in example_assembly.service.plan.queues]
    assert sources == {logical_id(example_assembly, "AWS::SQS::Queue", QueueName=n)
                       for n in bands_}
    for mapping in mappings.values():
        props = mapping["Properties"]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["BatchSize"] == 10
        assert "ScalingConfig" not in props  # no cap unless asked for


def test_schedules_are_what_schedule_export_prints(example_assembly: Synthesized):
    exported = wanted(example_assembly.service.app, target="scheduler")
    schedules = {r["Properties"]["Name"]: r["Properties"]
                 for r in example_assembly.resources("AWS::Scheduler::Schedule").values()}
    assert set(schedules) == {w.name for w in exported} == {"heartbeat", "daily-report"}
    (group,) = example_assembly.resources("AWS::Scheduler::ScheduleGroup").values()
    assert group["Properties"]["Name"] == "cloudq-beat"
    for item in exported:
        props = schedules[item.name]
        assert props["GroupName"] == "cloudq-beat"
        assert props["ScheduleExpression"] == item.expression
        assert props["ScheduleExpressionTimezone"] == item.timezone == "Europe/Berlin"
        assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert props["Target"]["Input"] == item.input
        queue_id = props["Target"]["Arn"]["Fn::GetAtt"][0]
        target = example_assembly.template["Resources"][queue_id]["Properties"]
        assert target["QueueName"] == item.queue


def test_the_schedule_role_may_only_send_to_the_target_queues(example_assembly: Synthesized):
    roles = example_assembly.resources("AWS::IAM::Role")
    (role_id,) = [lid for lid, r in roles.items()
                  if "scheduler.amazonaws.com" in json.dumps(r["Properties"])]
    policies = [p for p in example_assembly.resources("AWS::IAM::Policy").values()
                if {"Ref": role_id} in p["Properties"]["Roles"]]
    (statement,) = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert statement["Action"] == "sqs:SendMessage"
    targets = {example_assembly.template["Resources"][r["Fn::GetAtt"][0]]["Properties"]
               ["QueueName"] for r in statement["Resource"]} \
        if isinstance(statement["Resource"], list) else {
            example_assembly.template["Resources"][statement["Resource"]["Fn::GetAtt"][0]]
            ["Properties"]["QueueName"]}
    assert targets == {"cloudq-default", "cloudq-reports"}


def test_alarms_on_every_dead_letter_queue_and_every_queue_age(example_assembly: Synthesized):
    alarms = list(example_assembly.resources("AWS::CloudWatch::Alarm").values())
    by_metric: dict[str, set[str]] = {}
    for alarm in alarms:
        props = alarm["Properties"]
        queue_id = props["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        name = example_assembly.template["Resources"][queue_id]["Properties"]["QueueName"]
        by_metric.setdefault(props["MetricName"], set()).add(name)
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["TreatMissingData"] == "notBreaching"
    queues = set(queue_names(example_assembly))
    assert by_metric["ApproximateNumberOfMessagesVisible"] == {q for q in queues
                                                               if q.endswith("-dlq")}
    assert by_metric["ApproximateAgeOfOldestMessage"] == {q for q in queues
                                                          if not q.endswith("-dlq")}


def test_outputs_give_a_client_what_it_needs(example_assembly: Synthesized):
    outputs = example_assembly.template["Outputs"]
    assert "TasksTableName" in outputs and "TasksWorkerFunctionName" in outputs
    assert {f"Tasks{q.construct_id}QueueUrl" for q in example_assembly.service.plan.queues} \
        <= set(outputs)
    env = outputs["TasksClientEnvironment"]["Value"]["Fn::Join"][1]
    assert '"CLOUDQ_RESULT_TABLE":"cloudq-results"' in env[0]


def test_no_bucket_when_the_app_has_no_payload_bucket(example_assembly: Synthesized):
    assert example_assembly.resources("AWS::S3::Bucket") == {}


# -- a second app: FIFO, a router function, a payload bucket, a dev stack -------------------------
def test_fifo_queue_and_its_fifo_dead_letter_queue(assembly: dict[str, Synthesized]):
    orders = assembly["orders"]
    queues = queue_names(orders)
    assert queues["orders-billing.fifo"]["FifoQueue"] is True
    assert queues["orders-billing.fifo"]["ContentBasedDeduplication"] is False
    assert queues["orders-billing-dlq.fifo"]["FifoQueue"] is True
    assert "orders-billing-high.fifo" not in queues  # FIFO queues have one band
    assert queues["orders-billing.fifo"]["RedrivePolicy"]["maxReceiveCount"] == 3


def test_event_sources_follow_the_settings_and_rate_limits(assembly: dict[str, Synthesized]):
    orders = assembly["orders"]
    by_queue = {}
    for mapping in orders.resources("AWS::Lambda::EventSourceMapping").values():
        queue_id = mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        by_queue[orders.template["Resources"][queue_id]["Properties"]["QueueName"]] = \
            mapping["Properties"]
    fifo = by_queue["orders-billing.fifo"]
    assert fifo["BatchSize"] == 10 and "MaximumBatchingWindowInSeconds" not in fifo
    assert by_queue["orders-default"]["BatchSize"] == 50
    assert by_queue["orders-default"]["MaximumBatchingWindowInSeconds"] == 2
    # mail's tasks are limited to 5/s and 60/m: no more than 6 invocations at once
    for band in ("orders-mail", "orders-mail-high", "orders-mail-low"):
        assert by_queue[band]["ScalingConfig"] == {"MaximumConcurrency": 6}
    assert "ScalingConfig" not in by_queue["orders-default"]


def test_function_timeout_follows_the_longest_task(assembly: dict[str, Synthesized]):
    orders = assembly["orders"]
    function = next(iter(orders.resources("AWS::Lambda::Function").values()))
    assert function["Properties"]["Timeout"] == 120 + LAMBDA_TIMEOUT_MARGIN_S
    for props in queue_names(orders).values():
        if "dlq" not in props["QueueName"]:
            assert props["VisibilityTimeout"] == 6 * (120 + LAMBDA_TIMEOUT_MARGIN_S)


def test_payload_bucket_is_private_encrypted_and_expires(assembly: dict[str, Synthesized]):
    template = Template.from_json(assembly["orders"].template)
    template.has_resource_properties("AWS::S3::Bucket", {
        "BucketName": "orders-payloads",
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "LifecycleConfiguration": {"Rules": [Match.object_like({
            "Prefix": "payloads/", "ExpirationInDays": 14, "Status": "Enabled"})]},
    })
    template.has_resource_properties("AWS::S3::BucketPolicy", {
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})


def test_a_dev_stack_deletes_its_data_with_it(assembly: dict[str, Synthesized]):
    template = Template.from_json(assembly["orders"].template)
    template.has_resource("AWS::DynamoDB::Table", {
        "Properties": Match.object_like({"DeletionProtectionEnabled": False}),
        "DeletionPolicy": "Delete"})
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Delete"})


def test_no_schedules_no_scheduler_resources(assembly: dict[str, Synthesized]):
    orders = assembly["orders"]
    assert orders.resources("AWS::Scheduler::Schedule") == {}
    assert orders.resources("AWS::Scheduler::ScheduleGroup") == {}


# -- Fargate workers -----------------------------------------------------------------------------
def test_fargate_stack_runs_pollers_and_no_function(assembly: dict[str, Synthesized]):
    fargate = assembly["fargate"]
    assert not [f for f in fargate.resources("AWS::Lambda::Function").values()
                if f["Properties"].get("Handler") == "cloudq.lambda_handler.handler"]
    assert fargate.resources("AWS::Lambda::EventSourceMapping") == {}
    (service,) = fargate.resources("AWS::ECS::Service").values()
    assert service["Properties"]["LaunchType"] == "FARGATE"
    (task,) = fargate.resources("AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert container["Command"][:3] == ["poll", "-A", "shop.tasks:app"]
    # visibility is the app's own (pollers extend it), not six Lambda timeouts
    for props in queue_names(fargate).values():
        if "dlq" not in props["QueueName"]:
            assert props["VisibilityTimeout"] == fargate.service.app.settings.visibility_timeout


# -- the infra app --------------------------------------------------------------------------------
def test_cdk_json_app_command_with_no_context_synthesizes_the_example_stack(
        example_assembly: Synthesized, tmp_path):
    command = json.loads((INFRA / "cdk.json").read_text())["app"]
    assert command == "python3 app.py"
    done = subprocess.run([sys.executable, "app.py"], cwd=INFRA, capture_output=True, text=True,
                          env={**_env(), "CDK_OUTDIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    template = json.loads((tmp_path / "Cloudq.template.json").read_text())
    assert template == example_assembly.template


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
