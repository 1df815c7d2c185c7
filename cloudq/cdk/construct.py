"""``CloudqService``: one CDK construct that deploys an app as its task registry describes it.

Everything is derived from the App through ``cloudq.cdk.plan`` (the names the runtime uses),
never hand-listed: every queue band with its dead-letter queue, the result table, the payload
bucket, the workers (one Lambda function with an SQS event source per band, or Fargate
``cloudq poll`` tasks that scale on queue depth), the EventBridge schedules of
``beat_schedule`` with a role that may only send to their queues, alarms and outputs.

    from cloudq.cdk import CloudqService

    service = CloudqService(self, "Tasks", app="shop.tasks:app", code="src", workers="lambda")
    service.grant_send(web_role)
    service.grant_read_results(web_role)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cloudq.cdk import plan as planning
from cloudq.cdk import suppressions as checkov
from cloudq.cdk.fargate import FargateOptions, FargateWorkers
from cloudq.cdk.plan import Plan, QueuePlan, Workers

if TYPE_CHECKING:
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_sns as sns

    from cloudq.app import App

Architecture = Literal["x86_64", "arm64"]
PYTHON_RUNTIMES = {"3.11": "PYTHON_3_11", "3.12": "PYTHON_3_12", "3.13": "PYTHON_3_13"}
DLQ_RETENTION = cdk.Duration.days(14)
KEY_FIELD = "pk"
TTL_FIELD = "ttl"


class CloudqService(Construct):
    """Queues, table, bucket, workers, schedules, alarms and outputs for one cloudq app.

    ``app``: the App, or its ``module:attr`` path (imported with ``code`` on ``sys.path``).
    ``code``: the directory holding the app's packages (bundled for the workers with pip, no
    Docker); default: the current directory. ``production``: keep the table and bucket when
    the stack is deleted (RETAIN, deletion protection); ``False`` for throw-away stacks.
    """

    def __init__(
        self, scope: Construct, id: str, *, app: str | App, app_path: str | None = None,
        code: str | Path | None = None, workers: Workers = "lambda",
        queues: Sequence[str] | None = None, production: bool = True,
        architecture: Architecture = "x86_64", python_version: str = "3.11",
        memory_mib: int = 512, requirements: Sequence[str] = (),
        lambda_code: lambda_.Code | None = None, fargate: FargateOptions | None = None,
        alarm_topic: sns.ITopic | None = None, oldest_message_alarm_s: int = 900,
        outputs: bool = True,
    ) -> None:
        super().__init__(scope, id)
        self.code_dir = Path(code).resolve() if code is not None else Path.cwd()
        self.app, path = _load(app, app_path, self.code_dir)
        self.plan: Plan = planning.plan(self.app, app_path=path, workers=workers, queues=queues)
        self._production = production
        self._alarm_topic = alarm_topic
        self.queues: dict[str, sqs.Queue] = {}
        """Every band's queue, by logical name (``default-high``), in polling order."""
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for band in self.plan.queues:
            self._queue(band, oldest_message_alarm_s)
        self.table = self._table()
        self.bucket = self._bucket()
        self.worker_role: iam.IRole | None = None
        self.function: lambda_.Function | None = None
        self.fargate: FargateWorkers | None = None
        if workers == "lambda":
            self.function = self._lambda(lambda_code, architecture, python_version, memory_mib,
                                         requirements)
        else:
            self.fargate = self._fargate(fargate or FargateOptions(), architecture,
                                         python_version, requirements)
        self.schedule_group, self.schedule_role = self._schedules()
        if outputs:
            self._outputs(id)

    # -- grants ------------------------------------------------------------------------------------
    def grant_send(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` send tasks: every queue band; chord joins, saved groups and revokes
        in the table, ``forget()``; large arguments in the payload bucket."""
        grant = self._grant_queues(grantee, planning.SEND_ACTIONS, dead_letters=False)
        self.table.grant(grantee, *planning.SEND_TABLE_ACTIONS)
        self._grant_payloads(grantee, planning.SEND_BUCKET_ACTIONS)
        return grant

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read results (``AsyncResult.get``, ``GroupResult.get``), those too
        big for their item from the payload bucket too."""
        grant = self.table.grant(grantee, *planning.READ_RESULT_ACTIONS)
        self._grant_payloads(grantee, planning.READ_RESULT_BUCKET_ACTIONS)
        return grant

    def grant_worker(self, grantee: iam.IGrantable) -> None:
        """What a worker (Lambda function or ``cloudq poll``) does, and nothing more."""
        self._grant_queues(grantee, planning.WORKER_SQS_ACTIONS, dead_letters=False)
        self._grant_queues(grantee, planning.WORKER_DLQ_ACTIONS, dead_letters=True)
        self.table.grant(grantee, *planning.WORKER_TABLE_ACTIONS)
        self._grant_payloads(grantee, planning.WORKER_BUCKET_ACTIONS)

    def _grant_payloads(self, grantee: iam.IGrantable, actions: Sequence[str]) -> None:
        if self.bucket is not None:
            iam.Grant.add_to_principal(
                grantee=grantee, actions=list(actions),
                resource_arns=[self.bucket.arn_for_objects(f"{self.plan.payload_prefix}*")])

    def _grant_queues(self, grantee: iam.IGrantable, actions: Sequence[str], *,
                      dead_letters: bool) -> iam.Grant:
        queues = self.dead_letter_queues if dead_letters else self.queues
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=list(actions),
            resource_arns=[queue.queue_arn for queue in queues.values()])

    # -- queues, table, bucket --------------------------------------------------------------------
    def _queue(self, band: QueuePlan, oldest_message_alarm_s: int) -> None:
        cid = band.construct_id
        fifo = band.fifo or None
        source_arn = cdk.Stack.of(self).format_arn(
            service="sqs", resource=band.name, arn_format=cdk.ArnFormat.NO_RESOURCE_NAME)
        dead_letter = sqs.Queue(
            self, f"{cid}DeadLetter", queue_name=band.dead_letter_name, fifo=fifo,
            content_based_deduplication=False if fifo else None,
            retention_period=DLQ_RETENTION, encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.BY_QUEUE,
                source_queues=[sqs.Queue.from_queue_arn(self, f"{cid}Source", source_arn)]),
        )
        queue = sqs.Queue(
            self, cid, queue_name=band.name, fifo=fifo,
            content_based_deduplication=False if fifo else None,
            visibility_timeout=cdk.Duration.seconds(band.visibility_timeout_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=band.max_receive_count, queue=dead_letter),
        )
        self.queues[band.logical] = queue
        self.dead_letter_queues[band.logical] = dead_letter
        checkov.suppress(queue, checkov.SQS_MANAGED_SSE)
        checkov.suppress(dead_letter, checkov.SQS_MANAGED_SSE)
        minute = cdk.Duration.minutes(1)
        depth = dead_letter.metric_approximate_number_of_messages_visible
        self._alarm(f"{cid}DeadLetterAlarm", depth(
            period=minute, statistic="Maximum"), threshold=0,
            description=f"messages in dead-letter queue {band.dead_letter_name} "
                        "(each message's cloudq-reason attribute says why)")
        self._alarm(f"{cid}OldestMessageAlarm", queue.metric_approximate_age_of_oldest_message(
            period=minute, statistic="Maximum"),
            threshold=oldest_message_alarm_s,
            description=f"a message has waited over {oldest_message_alarm_s} s in {band.name}: "
                        "workers are behind or down")

    def _alarm(self, cid: str, metric: cloudwatch.IMetric, *, threshold: float,
               description: str) -> None:
        alarm = cloudwatch.Alarm(
            self, cid, metric=metric, threshold=threshold, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description)
        if self._alarm_topic is not None:
            alarm.add_alarm_action(cw_actions.SnsAction(self._alarm_topic))

    def _table(self) -> dynamodb.Table:
        production = self._production
        table = dynamodb.Table(
            self, "Results", table_name=self.plan.table,
            partition_key=dynamodb.Attribute(name=KEY_FIELD, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST, time_to_live_attribute=TTL_FIELD,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            deletion_protection=production,
            removal_policy=cdk.RemovalPolicy.RETAIN if production else cdk.RemovalPolicy.DESTROY,
        )
        checkov.suppress(table, checkov.DYNAMODB_CMK)
        return table

    def _bucket(self) -> s3.Bucket | None:
        if not self.plan.bucket:
            return None
        bucket = s3.Bucket(
            self, "Payloads", bucket_name=self.plan.bucket,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[s3.LifecycleRule(
                id="cloudq-payloads-expire", prefix=self.plan.payload_prefix,
                expiration=cdk.Duration.days(self.plan.payload_expiry_days),
                abort_incomplete_multipart_upload_after=cdk.Duration.days(1))],
            removal_policy=(cdk.RemovalPolicy.RETAIN if self._production
                            else cdk.RemovalPolicy.DESTROY),
        )
        checkov.suppress(bucket, checkov.BUCKET_ACCESS_LOGS, checkov.BUCKET_VERSIONING)
        return bucket

    # -- workers ----------------------------------------------------------------------------------
    def _staged(self, architecture: Architecture, python_version: str,
                requirements: Sequence[str]) -> Path:
        from cloudq.cdk.bundling import stage_code

        return stage_code(self.code_dir, requirements=requirements, architecture=architecture,
                          python_version=python_version)

    def _lambda(self, code: lambda_.Code | None, architecture: Architecture,
                python_version: str, memory_mib: int,
                requirements: Sequence[str]) -> lambda_.Function:
        if python_version not in PYTHON_RUNTIMES:
            from cloudq.errors import ConfigError

            raise ConfigError(f"python_version={python_version!r}: Lambda workers run on "
                              f"{', '.join(PYTHON_RUNTIMES)}")
        if code is None:
            code = lambda_.Code.from_asset(
                str(self._staged(architecture, python_version, requirements)))
        log_group = logs.LogGroup(
            self, "WorkerLogs", retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY)
        checkov.suppress(log_group, checkov.LOG_GROUP_KMS)
        function = lambda_.Function(
            self, "Worker", handler="cloudq.lambda_handler.handler", code=code,
            runtime=getattr(lambda_.Runtime, PYTHON_RUNTIMES[python_version]),
            architecture=(lambda_.Architecture.ARM_64 if architecture == "arm64"
                          else lambda_.Architecture.X86_64),
            timeout=cdk.Duration.seconds(self.plan.lambda_timeout_s), memory_size=memory_mib,
            environment={**self.client_environment,
                         "POWERTOOLS_SERVICE_NAME": self.app.main or "cloudq"},
            log_group=log_group,
            description=f"cloudq worker for {self.plan.app_path}",
        )
        checkov.suppress(function, checkov.LAMBDA_DLQ, checkov.LAMBDA_VPC,
                         checkov.LAMBDA_CONCURRENCY, checkov.LAMBDA_ENV_KMS)
        self.grant_worker(function)
        self.worker_role = function.role
        for band in self.plan.queues:
            window = band.batching_window_s
            function.add_event_source(event_sources.SqsEventSource(
                self.queues[band.logical], batch_size=band.batch_size,
                max_batching_window=cdk.Duration.seconds(window) if window else None,
                max_concurrency=band.max_concurrency, report_batch_item_failures=True))
        return function

    def _fargate(self, options: FargateOptions, architecture: Architecture,
                 python_version: str, requirements: Sequence[str]) -> FargateWorkers:
        image = options.image or _worker_image(
            self._staged(architecture, python_version, requirements))
        workers = FargateWorkers(
            self, "Workers", plan=self.plan, queues=list(self.queues.values()), image=image,
            environment=self.client_environment, grant_worker=self.grant_worker,
            architecture=architecture, min_tasks=options.min_tasks,
            max_tasks=options.max_tasks, cpu=options.cpu, memory_mib=options.memory_mib,
            concurrency=options.concurrency, backlog_per_task=options.backlog_per_task,
            vpc=options.vpc)
        self.worker_role = workers.task_definition.task_role
        return workers

    # -- schedules --------------------------------------------------------------------------------
    def _schedules(self) -> tuple[scheduler.CfnScheduleGroup | None, iam.Role | None]:
        if not self.plan.schedules:
            return None, None
        group = scheduler.CfnScheduleGroup(self, "Schedules", name=self.plan.schedule_group)
        role = iam.Role(
            self, "ScheduleRole", assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {
                    "aws:SourceAccount": cdk.Stack.of(self).account}}),
            description="EventBridge Scheduler sends cloudq's periodic task messages")
        targets = {self.plan.queue_named(s.queue).logical for s in self.plan.schedules}
        role.add_to_policy(iam.PolicyStatement(
            actions=list(planning.SCHEDULE_ACTIONS),
            resources=[self.queues[logical].queue_arn for logical in sorted(targets)]))
        for wanted in self.plan.schedules:
            queue = self.queues[self.plan.queue_named(wanted.queue).logical]
            schedule = scheduler.CfnSchedule(
                self, f"Schedule{_construct_id(wanted.name)}", name=wanted.name,
                group_name=self.plan.schedule_group,
                schedule_expression=wanted.expression,
                schedule_expression_timezone=wanted.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED",
                description=f"cloudq periodic task {wanted.entry!r}: {wanted.task}"[:512],
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=queue.queue_arn, role_arn=role.role_arn, input=wanted.input),
            )
            schedule.node.add_dependency(group)
        return group, role

    # -- outputs ----------------------------------------------------------------------------------
    def _outputs(self, prefix: str) -> None:
        def output(name: str, value: str, description: str) -> None:
            out = cdk.CfnOutput(self, name, value=value, description=description)
            out.override_logical_id(f"{_construct_id(prefix)}{name}")

        for band in self.plan.queues:
            output(f"{band.construct_id}QueueUrl", self.queues[band.logical].queue_url,
                   f"SQS queue {band.name}")
        output("TableName", self.table.table_name, "DynamoDB result table")
        if self.bucket is not None:
            output("BucketName", self.bucket.bucket_name, "S3 payload bucket")
        if self.function is not None:
            output("WorkerFunctionName", self.function.function_name, "Lambda worker")
        output("ClientEnvironment", cdk.Stack.of(self).to_json_string(self.client_environment),
               "CLOUDQ_* variables a client (web tier, scripts) needs, as JSON")

    @property
    def client_environment(self) -> dict[str, str]:
        """What a worker or client of the deployed app needs in its environment (the region is
        the stack's, a token until deploy time)."""
        return {**self.plan.environment, "CLOUDQ_REGION": cdk.Aws.REGION}


def _load(app: str | App, app_path: str | None, code_dir: Path) -> tuple[App, str]:
    """The App and the ``module:attr`` path the workers import it by."""
    from cloudq.errors import ConfigError
    from cloudq.loading import load_app

    if not isinstance(app, str):
        if app_path is None:
            raise ConfigError("CloudqService(app=<App>) needs app_path='module:attr' too: the "
                              "workers import the app by that path")
        return app, app_path
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    return load_app(app, option="app"), app


def _construct_id(name: str) -> str:
    return "".join(ch for ch in name.title() if ch.isalnum())


def _worker_image(staged: Path) -> ecs.ContainerImage:
    """The Fargate worker image: the staged tree (the same as the Lambda asset) on a Python
    base image. Synth only stages the build context; `cdk deploy` builds it (with Docker)."""
    from aws_cdk import aws_ecs as ecs

    from cloudq.cdk.bundling import write_fargate_context

    return ecs.ContainerImage.from_asset(str(write_fargate_context(staged)))
