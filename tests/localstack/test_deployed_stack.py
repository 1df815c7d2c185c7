"""The stack deployed into LocalStack by ``cdklocal deploy``: its Lambda worker runs the example
app's tasks. Skipped unless CLOUDQ_LOCALSTACK_URL names the LocalStack and
CLOUDQ_LOCALSTACK_STACK the stack deployed there (docs/deploy.md, "LocalStack"):

    CLOUDQ_LOCALSTACK_URL=http://localhost:4566 CLOUDQ_LOCALSTACK_STACK=Cloudq \\
        pytest tests/localstack/test_deployed_stack.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.transports.base import dead_letter_queue_name

URL = os.environ.get("CLOUDQ_LOCALSTACK_URL")
STACK = os.environ.get("CLOUDQ_LOCALSTACK_STACK")
# where cdklocal deploys: us-east-1, unless AWS_REGION is set and let through AWS_ENVAR_ALLOWLIST
ALLOWED = {name.strip() for name in os.environ.get("AWS_ENVAR_ALLOWLIST", "").split(",")}
REGION = (os.environ.get("AWS_REGION") if "AWS_REGION" in ALLOWED else None) or "us-east-1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FIRST_RUN_S = 60  # the first message starts the function's container: slow on LocalStack

pytestmark = pytest.mark.skipif(
    not (URL and STACK),
    reason="CLOUDQ_LOCALSTACK_URL and CLOUDQ_LOCALSTACK_STACK are not both set")


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=URL, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    """The stack's outputs, read from CloudFormation as a deployment script would."""
    [stack] = _client("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), stack["StackStatus"]
    return {out["OutputKey"]: out["OutputValue"] for out in stack.get("Outputs", [])}


def _one(outputs: dict[str, str], suffix: str) -> str:
    [value] = [value for key, value in outputs.items() if key.endswith(suffix)]
    return value


def client_settings(outputs: dict[str, str]) -> dict[str, str]:
    """``TasksClientEnvironment`` (CLOUDQ_* variables) as App settings; CLOUDQ_APP is no setting."""
    env: dict[str, str] = json.loads(_one(outputs, "ClientEnvironment"))
    if env.get("CLOUDQ_APP") != "shop.tasks:app":
        pytest.skip(f"stack {STACK} deploys {env.get('CLOUDQ_APP')}, these tests send to "
                    "shop.tasks:app")
    return {key.removeprefix("CLOUDQ_").lower(): value for key, value in env.items()
            if key != "CLOUDQ_APP"}


@pytest.fixture
def shop(outputs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example app (examples/shop/tasks.py), pointed at the deployed stack the way a web tier
    is: the stack's client environment plus LocalStack's endpoint. Settings restored after."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # cdklocal deploys with these: same account
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import shop.tasks

    app: cloudq.App = shop.tasks.app
    settings = {**client_settings(outputs), "endpoint_url": URL}
    before = {name: app.conf[name] for name in settings}
    app.conf.update(settings)
    yield shop.tasks
    app.close()
    app.conf.update(before)


def test_the_deployed_lambda_worker_runs_add(shop: Any, outputs: dict[str, str]) -> None:
    result = shop.add.delay(2, 3)
    try:
        value = result.get(timeout=FIRST_RUN_S)
    except cloudq.TimeoutError:
        name = _one(outputs, "WorkerFunctionName")
        config = _client("lambda").get_function_configuration(FunctionName=name)
        reason = config.get("StateReason") or config.get("LastUpdateStatusReason") or "no reason"
        waiting = shop.app.transport.depth(shop.app.settings.task_default_queue)
        pytest.fail(f"no result in {FIRST_RUN_S} s from function {name} ({config.get('State')}, "
                    f"{reason}); {waiting} message(s) wait in the default queue; see "
                    "`docker compose -f localstack/docker-compose.yml logs localstack`")
    assert value == 5 and result.state == "SUCCESS"


def test_the_default_queue_and_its_dead_letter_queue_are_the_runtimes(
        shop: Any, outputs: dict[str, str]) -> None:
    transport = shop.app.transport
    default = shop.app.settings.task_default_queue
    urls = [value for key, value in outputs.items() if key.endswith("QueueUrl")]
    [url] = [u for u in urls if u.rsplit("/", 1)[-1] == transport.physical_name(default)]

    attributes = _client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    target = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    dlq = dead_letter_queue_name(default)

    assert target.rsplit(":", 1)[-1] == transport.physical_name(dlq)
    assert transport.depth(dlq) >= 0  # found by the runtime's own lookup, and readable


def test_a_bad_argument_is_refused_before_any_aws_call(shop: Any) -> None:
    # nothing listens on port 9: had the send reached AWS it would fail otherwise, and slowly
    shop.app.conf.update(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(cloudq.ValidationError, match="argument 'x'"):
        shop.add.delay("two", 3)
