"""Record the AWS calls cloudq makes, and judge them against a synthesized stack's IAM.

``Recorder.attach(actor, clients)`` hooks botocore's ``before-parameter-build`` event on an
``AwsClients``' clients, so every API call is seen once (botocore's own retries are not) with
the parameters cloudq passed: the queue URL or name, the table, the bucket and key.
``Policy`` reads a role's statements from a CloudFormation template, resolving the
intrinsics CDK writes (``Fn::GetAtt [Queue, Arn]``, ``Fn::Join`` with ``AWS::Partition`` ...)
to the ARNs the deployed resources would have, so a recorded call is checked the way IAM
checks it: some Allow statement matches both its action and its resource's ARN.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATA_PLANE = ("sqs", "dynamodb", "s3")
"""The services whose permissions must name their resources."""
PARTITION = "aws"

IAM_ACTION = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
}
"""API operations whose IAM action has another name (the service authorization reference);
every other operation is authorized by ``<service>:<Operation>``."""


@dataclass(frozen=True)
class Call:
    """One API call, as IAM sees it: who made it, the operation, and one resource it names."""

    actor: str
    service: str
    operation: str
    resource: str
    """Queue name, table name, ``bucket/key`` (or ``bucket``); ``*`` when none is named."""

    @property
    def action(self) -> str:
        return IAM_ACTION.get((self.service, self.operation), f"{self.service}:{self.operation}")

    def arn(self, region: str, account: str) -> str:
        if self.resource == "*":
            return "*"
        if self.service == "sqs":
            return f"arn:{PARTITION}:sqs:{region}:{account}:{self.resource}"
        if self.service == "dynamodb":
            return f"arn:{PARTITION}:dynamodb:{region}:{account}:table/{self.resource}"
        if self.service == "s3":
            return f"arn:{PARTITION}:s3:::{self.resource}"
        return f"arn:{PARTITION}:{self.service}:{region}:{account}:{self.resource}"


def named_resources(service: str, params: dict[str, Any]) -> list[str]:
    """The resources an API call's parameters name."""
    if service == "sqs":
        if "QueueUrl" in params:
            return [str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]]
        return [str(params["QueueName"])] if "QueueName" in params else ["*"]
    if service == "dynamodb":
        if "TableName" in params:
            return [str(params["TableName"])]
        if "RequestItems" in params:  # BatchGetItem, BatchWriteItem
            return sorted(params["RequestItems"])
        if "TransactItems" in params:
            return sorted({next(iter(item.values()))["TableName"]
                           for item in params["TransactItems"]})
        return ["*"]
    if service == "s3" and "Bucket" in params:
        key = params.get("Key")
        return [f"{params['Bucket']}/{key}" if key else str(params["Bucket"])]
    return ["*"]


@dataclass
class Recorder:
    """Every call made through the attached clients, in order, attributed to an actor."""

    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attach(self, actor: str, clients: Any) -> None:
        """Record what ``clients`` (an ``AwsClients``) does from now on as ``actor``'s: its
        SQS, DynamoDB and S3 clients, and any other client it is asked for later."""
        for client in (clients.sqs, clients.dynamodb, clients.s3):
            self._hook(actor, client)
        other = clients.client

        def client(service: str) -> Any:
            made = other(service)
            self._hook(actor, made)
            return made

        clients.client = client

    def _hook(self, actor: str, client: Any) -> None:
        client.meta.events.register(  # unique_id: hooking a client twice records once
            "before-parameter-build", functools.partial(self._record, actor),
            unique_id=f"iam-check-{actor}-{id(client)}")

    def _record(self, actor: str, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        calls = [Call(actor, service, model.name, resource)
                 for resource in named_resources(service, params)]
        with self._lock:
            self.calls.extend(calls)

    def dump(self, path: Path) -> None:
        with self._lock:
            path.write_text(json.dumps([asdict(call) for call in self.calls], indent=1))

    def summary(self) -> str:
        """Calls per actor and operation, one line each."""
        with self._lock:
            counts = Counter((c.actor, f"{c.service}.{c.operation}") for c in self.calls)
        return "\n".join(f"{actor:>14} {operation:<40} {n:>4}"
                         for (actor, operation), n in sorted(counts.items()))


# -- templates -------------------------------------------------------------------------------------
def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    """One policy statement with its resources resolved to ARNs."""

    origin: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, action: str, arn: str) -> bool:
        return (self.effect == "Allow"
                and any(_matches(pattern, action, case=False) for pattern in self.actions)
                and any(_matches(pattern, arn, case=True) for pattern in self.resources))


@functools.cache
def _pattern(pattern: str, case: bool) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters (``/`` and ``:`` too), ``?`` one."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{regex}$", 0 if case else re.IGNORECASE)


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    return bool(_pattern(pattern, case).match(value))


class Template:
    """A synthesized CloudFormation template, read the way the deployed stack would be."""

    def __init__(self, template: dict[str, Any], *, region: str, account: str) -> None:
        self.resources: dict[str, dict[str, Any]] = template["Resources"]
        self.region = region
        self.account = account

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind}

    def resolve(self, value: Any) -> str:
        """A string, or an intrinsic CDK writes in policies and names, as deployed."""
        if isinstance(value, str):
            return value
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"cannot resolve {value!r}")
        [(fn, arg)] = value.items()
        if fn == "Fn::Join":
            separator, parts = arg
            return str(separator).join(self.resolve(part) for part in parts)
        if fn == "Ref":
            pseudo = {"AWS::Partition": PARTITION, "AWS::Region": self.region,
                      "AWS::AccountId": self.account, "AWS::URLSuffix": "amazonaws.com"}
            if arg in pseudo:
                return pseudo[arg]
            return self._name(arg)
        if fn == "Fn::Sub" and isinstance(arg, str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: self.resolve({"Ref": m[1]}), arg)
        if fn == "Fn::GetAtt":
            lid, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            if attribute == "Arn":
                return self.arn(lid)
        raise ValueError(f"cannot resolve {value!r}")

    def _name(self, lid: str) -> str:
        resource = self.resources[lid]
        props = resource.get("Properties", {})
        for key in ("QueueName", "TableName", "BucketName", "RoleName", "LogGroupName"):
            if key in props:
                return self.resolve(props[key])
        return lid  # CloudFormation would generate a name: the logical id stands for it

    def arn(self, lid: str) -> str:
        kind, name = self.resources[lid]["Type"], self._name(lid)
        region, account = self.region, self.account
        return {
            "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{region}:{account}:{name}",
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{region}:{account}:table/{name}",
            "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{account}:role/{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{region}:{account}:log-group:{name}:*",
        }.get(kind, f"arn:{PARTITION}:cloudformation-other:{region}:{account}:{kind}/{lid}")

    # -- statements --------------------------------------------------------------------------------
    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every policy document in the template, identity and resource policies alike."""
        for lid, resource in self.resources.items():
            props = resource.get("Properties", {})
            for key in ("PolicyDocument", "AssumeRolePolicyDocument"):
                if key in props:
                    yield f"{lid}.{key}", props[key]
            for index, inline in enumerate(props.get("Policies", [])):
                yield f"{lid}.Policies[{index}]", inline["PolicyDocument"]

    def role_statements(self, role: str) -> list[Statement]:
        """The identity statements of role ``role``: its inline policies and the
        ``AWS::IAM::Policy``/``ManagedPolicy`` resources attached to it."""
        documents = [(f"{role}.Policies[{i}]", p["PolicyDocument"]) for i, p in
                     enumerate(self.resources[role]["Properties"].get("Policies", []))]
        for lid, resource in self.resources.items():
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") \
                    and {"Ref": role} in resource["Properties"].get("Roles", []):
                documents.append((lid, resource["Properties"]["PolicyDocument"]))
        return [self.statement(origin, raw) for origin, document in documents
                for raw in document["Statement"]]

    def statement(self, origin: str, raw: dict[str, Any]) -> Statement:
        unsupported = {"NotAction", "NotResource", "Condition", "NotPrincipal"} & set(raw)
        if unsupported:  # this evaluator would judge them wrongly: refuse, loudly
            raise ValueError(f"{origin}: statement with {sorted(unsupported)}: {raw}")
        return Statement(origin=origin, effect=raw["Effect"],
                         actions=tuple(as_list(raw["Action"])),
                         resources=tuple(self.resolve(r) for r in as_list(raw["Resource"])))

    def managed_policies(self, role: str) -> list[str]:
        arns = self.resources[role]["Properties"].get("ManagedPolicyArns", [])
        return [self.resolve(arn) for arn in arns]

    # -- what plays which part ---------------------------------------------------------------------
    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        """The stack's data-plane ARNs by the part they play: ``queue``, ``dlq`` (a queue
        that is some queue's dead-letter target), ``table``, ``bucket``."""
        queues = self.of_type("AWS::SQS::Queue")
        targets = {self.resolve(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
                   for q in queues.values() if "RedrivePolicy" in q.get("Properties", {})}
        kinds = {}
        for lid in queues:
            arn = self.arn(lid)
            kinds[arn] = "dlq" if arn in targets else "queue"
        kinds.update({self.arn(lid): "table" for lid in self.of_type("AWS::DynamoDB::Table")})
        kinds.update({self.arn(lid): "bucket" for lid in self.of_type("AWS::S3::Bucket")})
        return kinds

    def kind_of(self, arn: str) -> str:
        """The part ``arn`` (or an ARN pattern) plays; objects of a bucket are ``objects``."""
        kinds = self.kinds
        if arn in kinds:
            return kinds[arn]
        for known, kind in kinds.items():
            if kind == "bucket" and arn.startswith(known + "/"):
                return "objects"
        return f"other:{arn}"


def granted(statements: Iterable[Statement], template: Template) -> dict[str, set[str]]:
    """Data-plane actions the Allow statements grant, by the part their resource plays."""
    parts: dict[str, set[str]] = defaultdict(set)
    for statement in statements:
        data = [a for a in statement.actions if a.split(":")[0] in DATA_PLANE]
        if statement.effect != "Allow" or not data:
            continue
        for resource in statement.resources:
            parts[template.kind_of(resource)].update(data)
    return dict(parts)


def used(calls: Iterable[Call], template: Template) -> dict[str, set[str]]:
    """Actions the calls needed, by the part their resource plays in ``template``."""
    parts: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        parts[template.kind_of(call.arn(template.region, template.account))].add(call.action)
    return dict(parts)


def denied(calls: Iterable[Call], statements: list[Statement], template: Template) -> list[Call]:
    """The calls no Allow statement matches (there are no Deny statements on these roles)."""
    return sorted({call for call in calls if not any(
        s.allows(call.action, call.arn(template.region, template.account)) for s in statements)},
        key=lambda c: (c.actor, c.operation, c.resource))


def wildcard_findings(template: Template) -> list[str]:
    """Allow statements in any policy of the template with a ``*`` action, a whole-service
    wildcard or a ``*`` resource on a data-plane service."""
    findings = []
    for origin, document in template.documents():
        for raw in document.get("Statement", []):
            if raw.get("Effect") != "Allow":
                continue  # a Deny (enforce_ssl's aws:SecureTransport) only takes rights away
            if {"NotAction", "NotResource"} & set(raw):
                findings.append(f"{origin}: NotAction/NotResource")
            actions = [str(a) for a in as_list(raw.get("Action", []))]
            data = [a for a in actions if a.split(":")[0] in DATA_PLANE]
            findings += [f"{origin}: action {a}" for a in actions
                         if a == "*" or (a in data and a.split(":", 1)[1] == "*")]
            if data and "*" in [template.resolve(r) for r in as_list(raw.get("Resource", []))]:
                findings.append(f"{origin}: resource * for {data}")
    return findings


def star_resources(template: Template) -> list[tuple[str, tuple[str, ...]]]:
    """Allow statements whose resource is ``*`` (none may be data-plane), with their actions."""
    found = []
    for origin, document in template.documents():
        for raw in document.get("Statement", []):
            if raw.get("Effect") == "Allow" and "Resource" in raw and "*" in [
                    template.resolve(r) for r in as_list(raw["Resource"])]:
                found.append((origin, tuple(as_list(raw["Action"]))))
    return found
