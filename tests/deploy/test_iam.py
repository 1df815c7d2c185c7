"""Least privilege, and enough of it: the stack's IAM against the runtime's real AWS calls.

The scenario app (``iam_app``) is synthesized by ``CloudqService`` twice, Lambda and Fargate
workers, each with the names of its own fresh world on moto server (``queue_prefix``, table
and bucket made unique for this run, and provisioned by ``cloudq provision``), plus a client
role given ``grant_send`` and ``grant_read_results``. So a recorded call names exactly the
resource the deployed stack would have, and is checked by ARN, the way IAM checks it, with no
mapping between two sets of names. The session's three stacks (``assembly``) are then held to
the same grants, queue by queue, and all five templates to the wildcard rules.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cloudq.localaws import LocalAws
from tests.deploy import iam_app
from tests.deploy import iam_scenario as scenario
from tests.deploy.iam_check import (
    Call,
    Template,
    denied,
    granted,
    star_resources,
    used,
    wildcard_findings,
)

if TYPE_CHECKING:
    from tests.deploy.conftest import Synthesized

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

REGION = "us-east-1"
ACCOUNT = "123456789012"
APP_PATH = "tests.deploy.iam_app:fargate_worker"
WORKER_ACTORS = {"lambda": ("lambda", "event-source"), "fargate": ("poller",)}
"""Who calls AWS with each worker kind's role: Lambda's SQS event source polls with the
function's own role."""
EVENT_SOURCE_NEEDS = {"queue": {"sqs:GetQueueAttributes"}}
"""What Lambda's SQS event source needs beyond the receives and deletes it is seen making:
the AWS Lambda developer guide lists ReceiveMessage, DeleteMessage and GetQueueAttributes as
the execution role's permissions for an SQS event source (it reads the queue's attributes)."""
STAR_RESOURCE_ACTIONS = {
    # ECR's login token is for the registry, not a repository: the API has no resource type.
    "ecr:GetAuthorizationToken",
    # No resource type either; the backlog publisher's statement is held to the "cloudq"
    # namespace by a cloudwatch:namespace condition.
    "cloudwatch:PutMetricData",
}
"""The only actions any of the stacks grants on ``*``: none is on a data-plane service. (The
Lambda role's AWS managed AWSLambdaBasicExecutionRole, logs:CreateLogGroup, CreateLogStream
and PutLogEvents on ``*``, is attached by ARN and is not in the template.)"""


@dataclass
class Kind:
    """One worker kind's stack and the recorded run of the scenario against its names."""

    name: str
    prefix: str
    template: Template
    worker_role: str
    client_role: str
    schedule_role: str
    calls: list[Call]
    outcome: dict[str, Any]

    def worker_calls(self) -> list[Call]:
        return [c for c in self.calls if c.actor in WORKER_ACTORS[self.name]]

    def of(self, actor: str) -> list[Call]:
        return [c for c in self.calls if c.actor == actor]


# -- the stacks and the runs ---------------------------------------------------------------------
def synthesize(workers: dict[str, iam_app.ObservedApp], outdir: Path) -> dict[str, Template]:
    """The scenario app's stacks, each with a client role granted send and read-results."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_lambda as lambda_

    from cloudq.cdk import CloudqService, FargateOptions

    cdk_app = cdk.App(outdir=str(outdir))
    stacks = {}
    for kind, worker in workers.items():
        stack = cdk.Stack(cdk_app, f"Iam{kind.title()}",
                          env=cdk.Environment(account=ACCOUNT, region=REGION))
        service = CloudqService(
            stack, "Tasks", app=worker, app_path=APP_PATH, workers=kind,
            production=False, lambda_code=lambda_.Code.from_inline("handler = None"),
            fargate=FargateOptions(image=ecs.ContainerImage.from_registry("python:3.12-slim")))
        client = iam.Role(stack, "Client", assumed_by=iam.AccountRootPrincipal())
        service.grant_send(client)
        service.grant_read_results(client)
        stacks[kind] = stack
    assembly = cdk_app.synth()
    return {kind: Template(assembly.get_stack_by_name(stack.stack_name).template,
                           region=REGION, account=ACCOUNT) for kind, stack in stacks.items()}


def role_of(template: Template, kind: str) -> str:
    """The logical id of the worker kind's role: the Lambda function's or the task's."""
    if kind == "lambda":
        [function] = [r for r in template.of_type("AWS::Lambda::Function").values()
                      if r["Properties"]["Handler"] == "cloudq.lambda_handler.handler"]
        arn = function["Properties"]["Role"]
    else:
        [definition] = template.of_type("AWS::ECS::TaskDefinition").values()
        arn = definition["Properties"]["TaskRoleArn"]
    return str(arn["Fn::GetAtt"][0])


def poll_command(template: Template) -> list[str]:
    """The Fargate container's arguments (``poll -A ... -Q ...``), as the stack runs them."""
    [definition] = template.of_type("AWS::ECS::TaskDefinition").values()
    [container] = definition["Properties"]["ContainerDefinitions"]
    return [str(arg) for arg in container["Command"]]


def only_lid(template: Template, kind: str, name_part: str) -> str:
    [lid] = [lid for lid in template.of_type(kind) if name_part in lid]
    return lid


@pytest.fixture(scope="module")
def moto() -> Iterator[LocalAws]:
    aws = LocalAws().start()
    yield aws
    aws.stop()


@pytest.fixture(scope="module")
def kinds(moto: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Kind]:
    run = uuid.uuid4().hex[:6]
    prefixes = {"lambda": f"iam{run}l-", "fargate": f"iam{run}f-"}
    workers = {"lambda": iam_app.build(), "fargate": iam_app.fargate_worker}
    for kind, worker in workers.items():
        worker.conf.update(scenario.settings(prefixes[kind], moto.endpoint_url))
    out = tmp_path_factory.mktemp("iam")
    started = time.monotonic()
    templates = synthesize(workers, out / "cdk.out")
    print(f"\n-- synthesized {sorted(templates)} in {time.monotonic() - started:.1f} s")
    kinds = {}
    for kind, template in templates.items():
        world = scenario.make_world(workers[kind], WORKER_ACTORS[kind][0], prefixes[kind],
                                    moto.endpoint_url)
        run_round = (scenario.run_lambda(world) if kind == "lambda"
                     else scenario.run_poller(world, poll_command(template)))
        started = time.monotonic()
        outcome = scenario.run(world, run_round)
        world.recorder.dump(out / f"calls-{kind}.json")
        print(f"\n-- {kind}: scenario in {time.monotonic() - started:.1f} s; AWS calls by "
              f"actor (all in {out / f'calls-{kind}.json'})")
        print(world.recorder.summary())
        kinds[kind] = Kind(
            name=kind, prefix=prefixes[kind], template=template,
            worker_role=role_of(template, kind),
            client_role=only_lid(template, "AWS::IAM::Role", "Client"),
            schedule_role=only_lid(template, "AWS::IAM::Role", "ScheduleRole"),
            calls=list(world.recorder.calls), outcome=outcome)
    return kinds


@pytest.fixture(params=["lambda", "fargate"])
def kind(request: pytest.FixtureRequest, kinds: dict[str, Kind]) -> Kind:
    return kinds[request.param]


# -- the scenario is what it claims to be ----------------------------------------------------------
def test_the_scenario_ran_every_path_it_names(kind: Kind) -> None:
    outcome = kind.outcome
    assert outcome["faults"] == ["SendMessage"]  # the chord callback's first send
    assert outcome["states"] == {
        "plain": "SUCCESS", "countdown": "PENDING", "expired": "REVOKED", "flaky": "SUCCESS",
        "exhaust": "FAILURE", "fail": "FAILURE", "unknown": "FAILURE", "progress": "SUCCESS",
        "slow": "SUCCESS", "size": "SUCCESS", "big_retry": "SUCCESS", "requeue": "SUCCESS",
        "limited": "SUCCESS", "limited_later": "PENDING", "once": "SUCCESS",
        "revoked": "REVOKED", "chord": "SUCCESS", "group0": "SUCCESS", "group1": "SUCCESS",
        "group2": "SUCCESS", "chain": "SUCCESS", "large": "SUCCESS",
    }
    assert (outcome["early"], outcome["tick"]) == ("PENDING", "SUCCESS")  # hopped; fanned out
    assert outcome["read"] == {"plain": 5, "chord": 6, "chain": 6, "group": [0, 2, 4],
                               "restored": True, "progress_state": "SUCCESS",
                               "large": scenario.LARGE}
    assert outcome["forgotten"] == {"plain": "PENDING", "group0": "PENDING"}
    dead_lettered = {c.resource for c in kind.worker_calls()
                     if c.operation == "SendMessage" and c.resource.endswith("-dlq")}
    assert dead_lettered == {f"{kind.prefix}default-dlq"}  # poison, rejected, out of retries


# -- the worker's role ---------------------------------------------------------------------------
def test_every_call_the_worker_made_is_allowed_by_its_role(kind: Kind) -> None:
    statements = kind.template.role_statements(kind.worker_role)

    assert kind.worker_calls()
    assert denied(kind.worker_calls(), statements, kind.template) == []


def test_the_worker_role_grants_exactly_the_actions_the_worker_used(kind: Kind) -> None:
    statements = kind.template.role_statements(kind.worker_role)
    needed = used(kind.worker_calls(), kind.template)
    if kind.name == "lambda":
        for part, actions in EVENT_SOURCE_NEEDS.items():
            needed[part] = needed.get(part, set()) | actions

    assert granted(statements, kind.template) == needed


# -- clients and schedules -----------------------------------------------------------------------
def test_every_client_call_is_allowed_by_grant_send_and_grant_read_results(kind: Kind) -> None:
    statements = kind.template.role_statements(kind.client_role)

    assert kind.of("client")
    assert denied(kind.of("client"), statements, kind.template) == []


def test_client_grants_on_queues_and_table_are_exactly_what_clients_use(kind: Kind) -> None:
    have = granted(kind.template.role_statements(kind.client_role), kind.template)
    need = used(kind.of("client"), kind.template)

    assert {part: have.get(part) for part in ("queue", "dlq", "table")} == \
        {part: need.get(part) for part in ("queue", "dlq", "table")}


def test_client_grants_on_the_bucket_are_exactly_what_clients_use(kind: Kind) -> None:
    have = granted(kind.template.role_statements(kind.client_role), kind.template)
    need = used(kind.of("client"), kind.template)

    assert {part: have.get(part) for part in ("bucket", "objects")} == \
        {part: need.get(part) for part in ("bucket", "objects")}


def test_the_schedule_role_may_send_what_eventbridge_sends_and_nothing_else(kind: Kind) -> None:
    statements = kind.template.role_statements(kind.schedule_role)
    sent = kind.of("scheduler")

    assert sent and denied(sent, statements, kind.template) == []
    assert granted(statements, kind.template) == used(sent, kind.template) == {
        "queue": {"sqs:SendMessage"}}


# -- the session's stacks and every template ------------------------------------------------------
WORKER_OF = {"example": "lambda", "fargate": "fargate", "orders": "lambda"}


@pytest.mark.parametrize("stack", sorted(WORKER_OF))
def test_the_session_stacks_grant_each_resource_what_the_scenario_proved(
        stack: str, assembly: dict[str, Synthesized], kinds: dict[str, Kind]) -> None:
    proved = kinds[WORKER_OF[stack]]
    expected = granted(proved.template.role_statements(proved.worker_role), proved.template)
    template = Template(assembly[stack].template, region=REGION, account=ACCOUNT)
    statements = template.role_statements(role_of(template, WORKER_OF[stack]))

    if "bucket" not in template.kinds.values():
        expected.pop("objects")
    assert granted(statements, template) == expected  # nothing on resources of other stacks
    per_resource = {arn: {a for s in statements for a in s.actions if arn in s.resources}
                    for arn in template.kinds}
    assert per_resource == {arn: expected.get(part, set())  # every band, every DLQ
                            for arn, part in template.kinds.items()}


@pytest.mark.parametrize("stack", sorted(WORKER_OF))
def test_no_managed_policy_is_attached_but_lambdas_log_writing_one(
        stack: str, assembly: dict[str, Synthesized]) -> None:
    """AWS managed policies are not in the template, so they are pinned here by name."""
    template = Template(assembly[stack].template, region=REGION, account=ACCOUNT)
    basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"

    assert template.managed_policies(role_of(template, WORKER_OF[stack])) == (
        [basic] if WORKER_OF[stack] == "lambda" else [])


def all_templates(assembly: dict[str, Synthesized], kinds: dict[str, Kind]) -> dict[str, Template]:
    found = {f"scenario-{k.name}": k.template for k in kinds.values()}
    found.update({name: Template(s.template, region=REGION, account=ACCOUNT)
                  for name, s in assembly.items()})
    return found


def test_no_statement_in_any_template_has_a_data_plane_wildcard(
        assembly: dict[str, Synthesized], kinds: dict[str, Kind]) -> None:
    findings = {name: wildcard_findings(t) for name, t in all_templates(assembly, kinds).items()}

    assert findings == {name: [] for name in findings}


def test_only_apis_without_resource_types_are_granted_on_star(
        assembly: dict[str, Synthesized], kinds: dict[str, Kind]) -> None:
    star = {action for t in all_templates(assembly, kinds).values()
            for _, actions in star_resources(t) for action in actions}

    assert star == STAR_RESOURCE_ACTIONS


# -- the checker itself --------------------------------------------------------------------------
def test_the_checker_resolves_arns_and_flags_wildcards_and_unmatched_calls() -> None:
    template = Template({"Resources": {
        "Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}},
        "B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "b"}},
        "R": {"Type": "AWS::IAM::Role", "Properties": {}},
        "P": {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "R"}],
              "PolicyDocument": {"Statement": [
                  {"Effect": "Allow", "Action": "sqs:SendMessage",
                   "Resource": {"Fn::GetAtt": ["Q", "Arn"]}},
                  {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": {"Fn::Join": [
                      "", [{"Fn::GetAtt": ["B", "Arn"]}, "/payloads/*"]]}},
                  {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
              ]}}},
    }}, region=REGION, account=ACCOUNT)
    statements = template.role_statements("R")
    calls = [Call("w", "sqs", "SendMessageBatch", "q"),  # allowed: sqs:SendMessage on q
             Call("w", "s3", "GetObject", "b/x.json"),  # outside payloads/
             Call("w", "s3", "GetObject", "b/payloads/a/b.json"),
             Call("w", "dynamodb", "GetItem", "t")]  # nothing on the table

    assert statements[0].resources == (f"arn:aws:sqs:{REGION}:{ACCOUNT}:q",)
    assert denied(calls, statements[:2], template) == [calls[3], calls[1]]
    assert wildcard_findings(template) == ["P.PolicyDocument: action sqs:*",
                                           "P.PolicyDocument: resource * for ['sqs:*']"]
    assert granted(statements[:2], template) == {"queue": {"sqs:SendMessage"},
                                                 "objects": {"s3:GetObject"}}
