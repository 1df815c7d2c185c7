"""CDK stacks deployed into moto server through CloudFormation, then used by cloudq's runtime."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.moto_cfn import (
    UNSUPPORTED_IN_MOTO,
    Deployed,
    DeployError,
    asset_source,
    deploy,
    probe_unsupported,
    zip_directory,
)
from tests.deploy.moto_server import MotoProcess

pytestmark = [
    pytest.mark.deploy, pytest.mark.integration,
    pytest.mark.timeout(600),  # the first test here may pay the session's synthesis (pip)
]

ACCOUNT = "123456789012"
"""moto's account for any credentials that do not name another."""
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoProcess]:
    """A moto server in a process of its own: nothing shared with other tests' servers."""
    with MotoProcess() as aws:
        yield aws


def boto_client(aws: MotoProcess, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=aws.endpoint_url, region_name=REGION)


# -- the harness ----------------------------------------------------------------------------------
def test_unsupported_types_are_really_unsupported(moto_server: MotoProcess) -> None:
    """Every type the harness removes is one moto's CloudFormation skips: when moto learns
    one, this fails, and the type should leave ``UNSUPPORTED_IN_MOTO``."""
    # in a region of its own: the probe makes a queue, the example's tests count them
    created = probe_unsupported(moto_server.endpoint_url, sorted(UNSUPPORTED_IN_MOTO),
                                region="eu-west-1")
    assert created == dict.fromkeys(UNSUPPORTED_IN_MOTO, False)


def test_a_stack_moto_cannot_create_is_an_error_with_moto_s_reason(
        moto_server: MotoProcess, tmp_path: Path) -> None:
    """A function whose code asset was never published: moto's reason reaches the caller."""
    function = {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.11", "Handler": "index.handler", "Role": "arn:aws:iam::"
        f"{ACCOUNT}:role/none", "Code": {"S3Bucket": "missing-code", "S3Key": "code.zip"}}}
    (tmp_path / "Broken.template.json").write_text(json.dumps({"Resources": {"Fn": function}}))
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"Broken": {
        "type": "aws:cloudformation:stack",
        "properties": {"templateFile": "Broken.template.json"}}}}))
    with pytest.raises(DeployError, match=r"(?s)create_stack Broken failed: .*NoSuchBucket"):
        deploy(tmp_path, "Broken", endpoint_url=moto_server.endpoint_url, region="eu-west-1")


# -- the example app's stack, and cloudq's runtime against what it created --------------------
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MOTO_SKIPS = {"AWS::SQS::QueuePolicy", "AWS::CloudWatch::Alarm",
              "AWS::Scheduler::ScheduleGroup", "AWS::Scheduler::Schedule"}
"""What the example stack has that moto's CloudFormation does not create: the queues'
SSL-only policies, the alarms, the schedules and their group (the template tests cover them)."""
LAMBDA_BOOTSTRAP = """\
import importlib, json, os, sys, time, uuid
started = time.monotonic()
module, _, name = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module), name)

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    invoked_function_arn = sys.argv[2]
    aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self):
        timeout = float(os.environ["LAMBDA_TIMEOUT_S"])
        return int(max(0.0, timeout - (time.monotonic() - started)) * 1000)

with open(sys.argv[1]) as file:
    event = json.load(file)
response = handler(event, Context())
with open(sys.argv[1] + ".out", "w") as file:
    json.dump(response, file)
"""
"""What Lambda's Python runtime does for one invocation: import the handler named by
``_HANDLER`` from the code root, call it with the event and a context."""


@pytest.fixture(scope="module")
def example(moto_server: MotoProcess, example_assembly: Any) -> Deployed:
    return deploy(example_assembly.outdir, example_assembly.stack_name,
                  endpoint_url=moto_server.endpoint_url, region=REGION)


def template_resources(assembly: Any, kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in assembly.template["Resources"].items() if r["Type"] == kind}


def output(deployed: Deployed, suffix: str) -> str:
    [value] = [v for key, v in deployed.outputs.items() if key.endswith(suffix)]
    return value


@pytest.fixture(scope="module")
def client_env(example: Deployed) -> dict[str, str]:
    """The ``CLOUDQ_*`` variables the stack's output gives a client."""
    env: dict[str, str] = json.loads(output(example, "ClientEnvironment"))
    return env


@pytest.fixture(scope="module")
def client(moto_server: MotoProcess, client_env: dict[str, str]) -> Iterator[Any]:
    """A client app configured only from the stack's outputs (and moto's endpoint)."""
    import cloudq

    settings = {name.removeprefix("CLOUDQ_").lower(): value
                for name, value in client_env.items() if name != "CLOUDQ_APP"}
    app = cloudq.App("deployed-client", set_as_current=False,
                     endpoint_url=moto_server.endpoint_url, **settings)
    yield app
    app.close()


def worker_app() -> Any:
    """The example app the workers import (its task and periodic queues name the bands)."""
    from cloudq.loading import load_app

    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return load_app("shop.tasks:app", option="app")


def queue_names(aws: MotoProcess) -> set[str]:
    urls = boto_client(aws, "sqs").list_queues().get("QueueUrls", [])
    return {url.rsplit("/", 1)[1] for url in urls}


def template_queue_names(assembly: Any) -> set[str]:
    return {r["Properties"]["QueueName"]
            for r in template_resources(assembly, "AWS::SQS::Queue").values()}


def test_example_stack_is_created_less_what_moto_skips(example: Deployed,
                                                       example_assembly: Any) -> None:
    assert set(example.removed.values()) == MOTO_SKIPS
    assert set(UNSUPPORTED_IN_MOTO) >= MOTO_SKIPS
    for kind in MOTO_SKIPS:  # every one of them, nothing else
        assert {lid for lid, t in example.removed.items() if t == kind} == set(
            template_resources(example_assembly, kind))
    assert example.removed_outputs == []
    created = {row["LogicalResourceId"] for row in example.resources}
    assert created == set(example_assembly.template["Resources"]) - set(example.removed)


def test_queues_and_table_have_the_names_the_runtime_uses(
        moto_server: MotoProcess, example: Deployed, example_assembly: Any, client: Any) -> None:
    from cloudq.transports.base import dead_letter_queue_name

    names = template_queue_names(example_assembly)
    prefix = client.settings.queue_prefix
    bands = worker_app().queues()
    assert names == {prefix + band for band in bands} | {
        prefix + dead_letter_queue_name(band) for band in bands}
    assert queue_names(moto_server) == names
    for band in bands:
        assert any(url.endswith(f"/{prefix}{band}") for key, url in example.outputs.items()
                   if key.endswith("QueueUrl"))
    [table] = template_resources(example_assembly, "AWS::DynamoDB::Table").values()
    assert table["Properties"]["TableName"] == client.settings.result_table
    tables = boto_client(moto_server, "dynamodb").list_tables()["TableNames"]
    assert tables == [client.settings.result_table]
    buckets = template_resources(example_assembly, "AWS::S3::Bucket")
    assert [b["Properties"]["BucketName"] for b in buckets.values()] == (
        [client.settings.payload_bucket] if client.settings.payload_bucket else [])


def queue_attributes(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs: dict[str, str] = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return attrs


def test_queue_and_table_attributes_as_moto_reports_them(
        moto_server: MotoProcess, example: Deployed, example_assembly: Any, client: Any) -> None:
    from cloudq.transports.base import dead_letter_queue_name

    sqs = boto_client(moto_server, "sqs")
    function = boto_client(moto_server, "lambda").get_function_configuration(
        FunctionName=output(example, "WorkerFunctionName"))
    by_name = {r["Properties"]["QueueName"]: r["Properties"]
               for r in template_resources(example_assembly, "AWS::SQS::Queue").values()}
    prefix = client.settings.queue_prefix
    settings = worker_app().settings
    for band in worker_app().queues():
        attrs = queue_attributes(sqs, prefix + band)
        dead = queue_attributes(sqs, prefix + dead_letter_queue_name(band))
        assert attrs["VisibilityTimeout"] == str(by_name[prefix + band]["VisibilityTimeout"])
        assert int(attrs["VisibilityTimeout"]) >= 6 * function["Timeout"]
        assert json.loads(attrs["RedrivePolicy"]) == {
            "deadLetterTargetArn": dead["QueueArn"],
            "maxReceiveCount": settings.max_receive_count}
        assert attrs["SqsManagedSseEnabled"] == dead["SqsManagedSseEnabled"] == "true"
        # moto keeps the DLQs' RedriveAllowPolicy but never reports it: the template tests
        # check it
    table = boto_client(moto_server, "dynamodb").describe_table(
        TableName=client.settings.result_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_worker_function_and_its_event_sources(moto_server: MotoProcess, example: Deployed,
                                               client_env: dict[str, str]) -> None:
    lam = boto_client(moto_server, "lambda")
    name = output(example, "WorkerFunctionName")
    function = lam.get_function_configuration(FunctionName=name)
    assert function["Handler"] == "cloudq.lambda_handler.handler"
    assert client_env.items() <= function["Environment"]["Variables"].items()
    mappings = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    sqs = boto_client(moto_server, "sqs")
    prefix = client_env["CLOUDQ_QUEUE_PREFIX"]
    arns = [queue_attributes(sqs, prefix + band)["QueueArn"] for band in worker_app().queues()]
    assert sorted(m["EventSourceArn"] for m in mappings) == sorted(arns)
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["State"] == "Enabled"


def worker_env(moto_server: MotoProcess, variables: dict[str, str]) -> dict[str, str]:
    """The process environment of a worker: ``variables`` and moto, nothing of the caller's
    ``CLOUDQ_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDQ_", "AWS_"))}
    env.update(variables)
    env.update({"CLOUDQ_ENDPOINT_URL": moto_server.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "PYTHONUNBUFFERED": "1"})
    return env


def test_send_then_cloudq_poll_then_result(moto_server: MotoProcess, client: Any,
                                           client_env: dict[str, str],
                                           example_assembly: Any) -> None:
    result = client.send_task("shop.tasks.add", (2, 3))
    env = worker_env(moto_server, client_env)
    env["PYTHONPATH"] = str(EXAMPLES)
    done = subprocess.run(
        [sys.executable, "-m", "cloudq.cli", "poll", "-A", client_env["CLOUDQ_APP"], "--burst",
         "-c", "2"], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result.get(timeout=10) == 5
    assert client.AsyncResult(result.id).state == "SUCCESS"
    assert queue_names(moto_server) == template_queue_names(example_assembly)  # none made


def test_lambda_handler_as_deployed_on_messages_from_the_queue(
        moto_server: MotoProcess, example: Deployed, example_assembly: Any, client: Any,
        tmp_path: Path) -> None:
    """The deployed function's code, handler and environment (as moto reports them) run the
    way Lambda's Python runtime runs them, on an SQS event made of received messages."""
    from cloudq import message as wire
    from cloudq.testing import sqs_event

    lam = boto_client(moto_server, "lambda")
    function = lam.get_function(FunctionName=output(example, "WorkerFunctionName"))
    config = function["Configuration"]
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if config["Runtime"] != runtime or config["Architectures"] != [platform.machine()]:
        pytest.skip(f"the bundle is for {config['Runtime']} on {config['Architectures']}")
    [fn] = template_resources(example_assembly, "AWS::Lambda::Function").values()
    code = asset_source(example_assembly.outdir, example_assembly.stack_name,
                        fn["Properties"]["Code"]["S3Key"])
    digest = base64.b64encode(hashlib.sha256(zip_directory(code)).digest()).decode()
    assert config["CodeSha256"] == digest

    result = client.send_task("shop.tasks.add", (20, 22))
    messages = client.transport.receive("default", max_messages=10, wait_s=1)
    assert [wire.decode(m.body).id for m in messages] == [result.id]  # type: ignore[union-attr]
    event = tmp_path / "event.json"
    event.write_text(json.dumps(sqs_event(messages, prefix=client.settings.queue_prefix,
                                          region=REGION, account=ACCOUNT)))
    env = worker_env(moto_server, config["Environment"]["Variables"])
    env.update({"_HANDLER": config["Handler"], "AWS_LAMBDA_FUNCTION_NAME": config["FunctionName"],
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config["MemorySize"]),
                "LAMBDA_TIMEOUT_S": str(config["Timeout"]), "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "LAMBDA_TASK_ROOT": str(code),
                "PYTHONPATH": str(code)})
    done = subprocess.run(  # -S: the bundle and the standard library only, as on Lambda
        [sys.executable, "-S", "-c", LAMBDA_BOOTSTRAP, str(event), config["FunctionArn"]],
        cwd=code, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    response = json.loads((tmp_path / "event.json.out").read_text())
    assert response == {"batchItemFailures": []}
    client.transport.ack(messages)  # what the event source does with a batch that succeeded
    assert result.get(timeout=10) == 42
