"""Deploy a synthesized CDK cloud assembly into a moto server through CloudFormation.

What ``cdk deploy`` would do, done by hand against moto over HTTP: the bootstrap version
parameter goes into SSM, every file asset into the bootstrap bucket (directories zipped,
deterministically), then ``create_stack`` with the template less the resource types moto's
CloudFormation cannot create (``UNSUPPORTED_IN_MOTO``), which are returned by name so a test
can say what it did not deploy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOOTSTRAP_QUALIFIER = "hnb659fds"
BOOTSTRAP_VERSION_PARAMETER = f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version"
BOOTSTRAP_VERSION = "30"
"""What ``cdk bootstrap`` of CDK 2.2xx writes; the template's rule wants 6 or more (moto
ignores ``Rules``, but a template parameter of type SSM value fails the stack without it)."""

UNSUPPORTED_IN_MOTO: dict[str, str] = {
    # Each: moto has no CloudFormation model, so create_stack logs "No Moto CloudFormation
    # support", skips the resource, lists it as a row with an empty logical id, and reports
    # CREATE_COMPLETE; a Ref to it in an output or property silently resolves to nothing, a
    # GetAtt in a property is a ValidationError and a GetAtt in an output a 500 from moto.
    "AWS::CloudWatch::Alarm": "skipped (moto's CloudWatch has alarms, but no CFN model)",
    "AWS::Scheduler::Schedule": "skipped (moto's Scheduler has the API, but no CFN model)",
    "AWS::Scheduler::ScheduleGroup": "skipped (moto's Scheduler has the API, but no CFN model)",
    "AWS::S3::BucketPolicy": "skipped (moto has put_bucket_policy, but no CFN model)",
    "AWS::SQS::QueuePolicy": "skipped (moto has SQS queue policies, but no CFN model)",
}
"""Resource types removed from a template before moto's ``create_stack``, and why."""

STACK_TIMEOUT_S = 60.0
class DeployError(AssertionError):
    """The stack did not reach CREATE_COMPLETE; the message carries moto's reasons."""


@dataclass
class Deployed:
    """A stack moto created: its outputs, its resources and what was left out."""

    stack_name: str
    outputs: dict[str, str]
    removed: dict[str, str]
    """Logical id -> resource type of every resource not deployed (unsupported in moto, or
    referring to one that is)."""
    resources: list[dict[str, str]]
    """``list_stack_resources``: LogicalResourceId, PhysicalResourceId, ResourceType."""
    removed_outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def physical_ids(self, resource_type: str) -> dict[str, str]:
        """Logical id -> physical id of the deployed resources of one type."""
        return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in self.resources
                if r["ResourceType"] == resource_type}


def deploy(assembly_dir: Path, stack_name: str, *, endpoint_url: str,
           region: str = "us-east-1") -> Deployed:
    """Create ``stack_name`` of the cloud assembly in ``assembly_dir`` on moto at
    ``endpoint_url``; DeployError unless it reaches CREATE_COMPLETE."""
    started = time.monotonic()
    clients = _Clients(endpoint_url, region)
    account = clients.client("sts").get_caller_identity()["Account"]
    template_file, asset_manifest = stack_files(assembly_dir, stack_name)
    template = json.loads((assembly_dir / template_file).read_text())
    bootstrap(clients)
    if asset_manifest is not None:
        publish_assets(clients, assembly_dir, asset_manifest, account=account, region=region)
    deployable, removed, removed_outputs = without_unsupported(template)
    cfn = clients.client("cloudformation")
    try:  # moto creates the resources inside the call: most failures are its errors
        cfn.create_stack(
            StackName=stack_name, TemplateBody=json.dumps(deployable),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"])
    except Exception as exc:
        raise DeployError(f"create_stack {stack_name} failed: {exc}") from exc
    stack = wait_complete(cfn, stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return Deployed(
        stack_name=stack_name, outputs=outputs, removed=removed,
        resources=list_resources(cfn, stack_name), removed_outputs=removed_outputs,
        seconds=time.monotonic() - started)


def stack_files(assembly_dir: Path, stack_name: str) -> tuple[str, str | None]:
    """The template file and the asset manifest file of a stack in ``manifest.json``."""
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    artifacts: dict[str, Any] = manifest["artifacts"]
    for artifact_id, artifact in artifacts.items():
        props = artifact.get("properties", {})
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        if stack_name not in (artifact_id, props.get("stackName")):
            continue
        assets = [artifacts[dep]["properties"]["file"] for dep in artifact.get("dependencies", [])
                  if artifacts.get(dep, {}).get("type") == "cdk:asset-manifest"]
        return props["templateFile"], (assets[0] if assets else None)
    raise DeployError(f"no stack {stack_name!r} in {assembly_dir / 'manifest.json'}")


def bootstrap(clients: _Clients) -> None:
    """What ``cdk bootstrap`` leaves that a template reads: the version parameter (the asset
    bucket is made per destination by ``publish_assets``)."""
    clients.client("ssm").put_parameter(
        Name=BOOTSTRAP_VERSION_PARAMETER, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True)


def publish_assets(clients: _Clients, assembly_dir: Path, manifest_file: str, *,
                   account: str, region: str) -> list[str]:
    """Upload every file asset to its destination bucket and key; returns the keys."""
    manifest = json.loads((assembly_dir / manifest_file).read_text())
    s3 = clients.client("s3")
    keys: list[str] = []
    made: set[str] = set()
    for asset in manifest.get("files", {}).values():
        source = assembly_dir / asset["source"]["path"]
        packaging = asset["source"].get("packaging", "file")
        body = zip_directory(source) if packaging == "zip" and source.is_dir() else (
            source.read_bytes())
        for destination in asset["destinations"].values():
            bucket = _substitute(destination["bucketName"], account=account, region=region)
            if bucket not in made:
                _ensure_bucket(s3, bucket, region)
                made.add(bucket)
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)
            keys.append(destination["objectKey"])
    return keys


def zip_directory(directory: Path) -> bytes:
    """The directory as a zip whose bytes depend only on the files' paths, contents and
    executable bits (sorted entries, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(_files(directory)):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), (1980, 1, 1, 0, 0, 0))
            executable = os.stat(path).st_mode & stat.S_IXUSR
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _files(directory: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(directory, followlinks=True):
        for name in names:
            yield Path(root) / name


def without_unsupported(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str],
                                                           list[str]]:
    """The template less every resource of an ``UNSUPPORTED_IN_MOTO`` type and every
    resource or output that refers to one (``DependsOn`` entries are just dropped)."""
    resources: dict[str, Any] = dict(template.get("Resources", {}))
    removed = {lid: r["Type"] for lid, r in resources.items() if r["Type"] in UNSUPPORTED_IN_MOTO}
    while True:
        referring = {lid: r["Type"] for lid, r in resources.items()
                     if lid not in removed and references(r.get("Properties", {})) & removed.keys()}
        if not referring:
            break
        removed.update(referring)
    kept: dict[str, Any] = {}
    for lid, resource in resources.items():
        if lid in removed:
            continue
        resource = dict(resource)
        depends = resource.get("DependsOn")
        if depends is not None:
            names = [depends] if isinstance(depends, str) else list(depends)
            names = [name for name in names if name not in removed]
            if names:
                resource["DependsOn"] = names
            else:
                del resource["DependsOn"]
        kept[lid] = resource
    outputs = template.get("Outputs", {})
    removed_outputs = [key for key, out in outputs.items() if references(out) & removed.keys()]
    result = {**template, "Resources": kept}
    if outputs:
        result["Outputs"] = {k: v for k, v in outputs.items() if k not in removed_outputs}
    return result, removed, removed_outputs


_SUB_NAME = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


def references(node: Any) -> set[str]:
    """Logical ids named by Ref, Fn::GetAtt and Fn::Sub anywhere in ``node``."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else str(value).split(".")[0]
                found.add(target)
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found |= set(_SUB_NAME.findall(text))
            found |= references(value)
    return found


def wait_complete(cfn: Any, stack_name: str, timeout_s: float = STACK_TIMEOUT_S) -> Any:
    """The stack once it leaves IN_PROGRESS; DeployError with the failed events unless it
    reached CREATE_COMPLETE."""
    deadline = time.monotonic() + timeout_s
    while True:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {status} after {timeout_s:g} s")
        time.sleep(0.1)
    if status != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
        reasons = [f"{e['LogicalResourceId']} ({e.get('ResourceType')}): "
                   f"{e.get('ResourceStatusReason')}"
                   for e in events if e["ResourceStatus"].endswith("FAILED")]
        raise DeployError(f"stack {stack_name} is {status}: " + "; ".join(reasons or [
            str(stack.get("StackStatusReason"))]))
    return stack


def list_resources(cfn: Any, stack_name: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        rows += [{key: summary.get(key, "") for key in
                  ("LogicalResourceId", "PhysicalResourceId", "ResourceType")}
                 for summary in page["StackResourceSummaries"]]
    return rows


def _substitute(text: str, *, account: str, region: str) -> str:
    return (text.replace("${AWS::AccountId}", account).replace("${AWS::Region}", region)
            .replace("${AWS::Partition}", "aws"))


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    kwargs: dict[str, Any] = {}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, **kwargs)


class _Clients:
    """boto3 clients for one endpoint and region, with moto's dummy credentials."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        import boto3

        self._session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
        self._endpoint_url = endpoint_url

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self._endpoint_url)


def probe_unsupported(endpoint_url: str, types: list[str], *, region: str = "us-east-1",
                      stack_name: str = "MotoSupportProbe") -> dict[str, bool]:
    """Whether moto's CloudFormation creates each type: a stack of one bare resource per type
    (beside a queue); a type is created when its logical id is among the stack's resources."""
    ids = {resource_type: "Probe" + re.sub(r"[^A-Za-z0-9]", "", resource_type)
           for resource_type in types}
    template = {"Resources": {
        "ProbeQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        **{lid: {"Type": resource_type, "Properties": {}} for resource_type, lid in ids.items()},
    }}
    cfn = _Clients(endpoint_url, region).client("cloudformation")
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    wait_complete(cfn, stack_name)
    created = {row["LogicalResourceId"] for row in list_resources(cfn, stack_name)}
    cfn.delete_stack(StackName=stack_name)
    return {resource_type: lid in created for resource_type, lid in ids.items()}


def asset_source(assembly_dir: Path, stack_name: str, object_key: str) -> Path:
    """The cloud assembly's file or directory that was published as ``object_key``."""
    _template, manifest_file = stack_files(assembly_dir, stack_name)
    manifest = json.loads((assembly_dir / (manifest_file or "")).read_text())
    for asset in manifest.get("files", {}).values():
        if any(d["objectKey"] == object_key for d in asset["destinations"].values()):
            return assembly_dir / asset["source"]["path"]
    raise KeyError(object_key)
