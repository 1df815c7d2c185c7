"""Checkov findings the stack accepts, each with its reason, written on the resource it excuses.

``suppress(construct, CHECK, ...)`` adds ``Metadata: {"checkov": {"skip": [{"id", "comment"}]}}``
to the construct's CloudFormation resource, which is where checkov reads suppressions from a
template. The checks and reasons live here, once; the call stands next to the resource.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import IConstruct

Check = tuple[str, str]
"""A checkov check id and why the stack does not follow it."""

SQS_MANAGED_SSE: Check = (
    "CKV_AWS_27", "encrypted at rest with SQS-managed SSE (SqsManagedSseEnabled); the check "
    "only recognises a KMS key, which every producer, worker and schedule role would then need "
    "kms grants for")
DYNAMODB_CMK: Check = (
    "CKV_AWS_119", "encrypted at rest with DynamoDB's AWS-owned key; a customer-managed key is "
    "the account owner's choice, not one a task queue should impose")
LOG_GROUP_KMS: Check = (
    "CKV_AWS_158", "CloudWatch Logs encrypts log data at rest by default; a customer-managed "
    "key is the account owner's choice")
LAMBDA_DLQ: Check = (
    "CKV_AWS_116", "invoked only by SQS event source mappings, where a function's "
    "DeadLetterConfig never applies; each queue's redrive policy to its own dead-letter queue "
    "is the DLQ")
LAMBDA_VPC: Check = (
    "CKV_AWS_117", "the function calls only public AWS endpoints (SQS, DynamoDB, S3, "
    "CloudWatch); a VPC would add NAT or endpoint cost and cold-start latency, isolating nothing")
LAMBDA_CONCURRENCY: Check = (
    "CKV_AWS_115", "concurrency is bounded per queue by each event source mapping's "
    "MaximumConcurrency (settings or a task's rate limit); reserved concurrency would take from "
    "the account's unreserved pool (refused on accounts at the minimum of 10)")
PUBLISHER_DLQ: Check = (
    "CKV_AWS_116", "a metric publisher run each minute by a schedule rule (0 retries): a failed "
    "run is superseded by the next one, so a DLQ would keep nothing worth acting on")
PUBLISHER_CONCURRENCY: Check = (
    "CKV_AWS_115", "one schedule rule invokes it once a minute; reserved concurrency would take "
    "from the account's unreserved pool (refused on accounts at the minimum of 10)")
LAMBDA_ENV_KMS: Check = (
    "CKV_AWS_173", "the environment holds resource names and settings, no secrets; Lambda "
    "encrypts it at rest with an AWS-managed key")
BUCKET_ACCESS_LOGS: Check = (
    "CKV_AWS_18", "payloads are short-lived task arguments and results read by the runtime "
    "itself; access logs would need a second bucket (CloudTrail data events audit it instead)")
BUCKET_VERSIONING: Check = (
    "CKV_AWS_21", "each payload is written once under a unique key and expires by lifecycle "
    "rule; versioning would only keep expired payloads as noncurrent versions")


def suppress(construct: IConstruct, *checks: Check) -> None:
    """Record ``checks`` as accepted on ``construct``'s CloudFormation resource (the construct
    itself if it is one, else its default child)."""
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise TypeError(f"{construct.node.path}: no CloudFormation resource to annotate")
    current: Any = resource.get_metadata("checkov") or {}
    skips = [*current.get("skip", []), *({"id": cid, "comment": why} for cid, why in checks)]
    resource.add_metadata("checkov", {**current, "skip": skips})
