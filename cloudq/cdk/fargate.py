"""Fargate workers: ``cloudq poll`` tasks in an ECS service that scales on queue depth."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cloudq.cdk import suppressions as checkov
from cloudq.cdk.backlog import backlog_metric
from cloudq.cdk.plan import Plan
from cloudq.errors import ConfigError

FARGATE_MAX_STOP_TIMEOUT_S = 120
"""The longest grace ECS on Fargate gives a container between SIGTERM and SIGKILL."""
STOP_MARGIN_S = 15
"""Added to the longest task: the result write, follow-ups and acks after it."""
SHUTDOWN_FLUSH_S = 5
"""The worker gives up on running tasks this long before SIGKILL, to flush acks and exit."""
MAX_STEP_ADJUSTMENTS = 20
"""Application Auto Scaling's default quota of step adjustments per policy."""
SCALE_IN_EMPTY_MINUTES = 5
"""Minutes of an empty backlog before the service goes down to ``min_tasks``."""
COOLDOWN = cdk.Duration.seconds(60)
ARCHITECTURES = {"x86_64": ecs.CpuArchitecture.X86_64, "arm64": ecs.CpuArchitecture.ARM64}
FARGATE_MEMORY_MIB: dict[int, Sequence[int]] = {
    256: (512, 1024, 2048),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}
"""Fargate's task sizes: CPU units and the memory (MiB) each allows."""


@dataclass(frozen=True)
class FargateOptions:
    """How ``CloudqService(workers="fargate", fargate=FargateOptions(...))`` runs its workers."""

    image: ecs.ContainerImage | None = None
    """The worker image; default: the staged code on a Python base image (built on deploy)."""
    min_tasks: int = 0
    max_tasks: int = 10
    cpu: int = 512
    memory_mib: int = 1024
    concurrency: int | None = None
    """``cloudq poll -c``; default: the app's ``worker_concurrency``."""
    backlog_per_task: int = 100
    vpc: ec2.IVpc | None = None


class FargateWorkers(Construct):
    """``cloudq poll -A <app> -Q <queues>`` on Fargate, scaled by the queues' backlog.

    Scaling: backlog = visible + in-flight messages summed over every band in ``queues``
    (``cloudq.cdk.backlog``), its per-minute maximum. A backlog of 0 for
    ``SCALE_IN_EMPTY_MINUTES`` minutes sets the service to ``min_tasks`` (0 allowed); any
    backlog sets ``ceil(backlog / backlog_per_task)`` tasks (exact capacity), at least one and
    at most ``max_tasks``. Past 20 steps the counts are spaced out, rounding up. The alarms
    read the queues, not the tasks, so a message wakes a service at 0 tasks. In-flight
    messages count, so tasks are not stopped under running work. SQS stops publishing metrics
    for a queue idle for six hours; its first message may then take minutes to be seen: keep
    ``min_tasks=1`` where that latency matters.

    Stopping: ECS on Fargate gives at most 120 s between SIGTERM and SIGKILL. The stop
    timeout is ``min(120, longest task + STOP_MARGIN_S)`` and ``CLOUDQ_WORKER_SHUTDOWN_TIMEOUT``
    ends the worker's own grace ``SHUTDOWN_FLUSH_S`` before it. A task still running then is
    abandoned and its message is delivered again after its visibility timeout (at-least-once),
    which is why the queues' visibility is at least the longest task.

    Network: ``vpc``, in its private subnets with egress if it has any, else its public ones;
    by default a new VPC of two public subnets and no NAT gateway (the workers only call AWS
    APIs), tasks with public IPs and a security group that lets nothing in. The root file
    system is read only; ``/tmp`` is a tmpfs of an eighth of the task's memory.
    """

    def __init__(
        self, scope: Construct, id: str, *, plan: Plan, queues: Sequence[sqs.IQueue],
        image: ecs.ContainerImage, environment: Mapping[str, str],
        grant_worker: Callable[[iam.IGrantable], None],
        min_tasks: int = 0, max_tasks: int = 10, cpu: int = 512, memory_mib: int = 1024,
        concurrency: int | None = None, backlog_per_task: int = 100,
        vpc: ec2.IVpc | None = None, architecture: str = "x86_64",
    ) -> None:
        _check(queues=queues, min_tasks=min_tasks, max_tasks=max_tasks, cpu=cpu,
               memory_mib=memory_mib, concurrency=concurrency,
               backlog_per_task=backlog_per_task, architecture=architecture)
        super().__init__(scope, id)
        self.plan = plan
        self.stop_timeout_s = stop_timeout_s(plan.longest_task_s)
        self.shutdown_timeout_s = self.stop_timeout_s - SHUTDOWN_FLUSH_S
        self.vpc = vpc or _public_vpc(self)
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=cdk.RemovalPolicy.DESTROY)
        checkov.suppress(self.log_group, checkov.LOG_GROUP_KMS)
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", cpu=cpu, memory_limit_mib=memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ARCHITECTURES[architecture]))
        self.container = self._container(image, environment, concurrency, memory_mib)
        grant_worker(self.task_definition.task_role)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=self.vpc, allow_all_outbound=True,
            description="cloudq workers: nothing inbound")
        private = bool(vpc is not None and vpc.private_subnets)
        self.service = ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=self.task_definition,
            desired_count=min_tasks, assign_public_ip=not private,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                                            if private else ec2.SubnetType.PUBLIC),
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            enable_execute_command=False, min_healthy_percent=100, max_healthy_percent=200)
        self.scaling = self.service.auto_scale_task_count(min_capacity=min_tasks,
                                                          max_capacity=max_tasks)
        self.backlog = backlog_metric(self, queues=queues, cluster_name=self.cluster.cluster_name)
        self.scaling.scale_on_metric(
            "Backlog", metric=self.backlog,
            scaling_steps=scaling_steps(min_tasks, max_tasks, backlog_per_task),
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY, cooldown=COOLDOWN)
        self._slow_scale_in()

    def command(self, concurrency: int | None) -> list[str]:
        """The container's arguments to the image's ``python -m cloudq.cli`` entrypoint;
        without ``-c`` the worker runs the app's own ``worker_concurrency``."""
        args = ["poll", "-A", self.plan.app_path, "-Q", ",".join(self.plan.worker_queues)]
        return [*args, "-c", str(concurrency)] if concurrency is not None else args

    def _container(self, image: ecs.ContainerImage, environment: Mapping[str, str],
                   concurrency: int | None, memory_mib: int) -> ecs.ContainerDefinition:
        linux = ecs.LinuxParameters(self, "Linux", init_process_enabled=True)
        linux.add_tmpfs(ecs.Tmpfs(container_path="/tmp", size=memory_mib // 8, mount_options=[
            ecs.TmpfsMountOption.NOSUID, ecs.TmpfsMountOption.NODEV]))
        return self.task_definition.add_container(
            "Worker", image=image, command=self.command(concurrency), essential=True,
            environment={**environment,
                         "CLOUDQ_WORKER_SHUTDOWN_TIMEOUT": str(self.shutdown_timeout_s)},
            stop_timeout=cdk.Duration.seconds(self.stop_timeout_s),
            readonly_root_filesystem=True, linux_parameters=linux,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=self.log_group))

    def _slow_scale_in(self) -> None:
        """Let the scale-in alarm wait for ``SCALE_IN_EMPTY_MINUTES`` empty minutes, so a
        trickle of messages does not start and stop tasks every minute."""
        policy = self.scaling.node.find_child("Target").node.find_child("Backlog")
        alarm = policy.node.find_child("LowerAlarm").node.default_child
        assert isinstance(alarm, cloudwatch.CfnAlarm)
        alarm.evaluation_periods = SCALE_IN_EMPTY_MINUTES
        alarm.datapoints_to_alarm = SCALE_IN_EMPTY_MINUTES


def stop_timeout_s(longest_task_s: float | None) -> int:
    """ECS's stop timeout for workers whose longest task runs ``longest_task_s`` (None:
    unbounded): the longest task and a margin, at most Fargate's 120 s."""
    if longest_task_s is None:
        return FARGATE_MAX_STOP_TIMEOUT_S
    return min(FARGATE_MAX_STOP_TIMEOUT_S, math.ceil(longest_task_s) + STOP_MARGIN_S)


def scaling_steps(min_tasks: int, max_tasks: int,
                  backlog_per_task: int) -> list[appscaling.ScalingInterval]:
    """Exact-capacity steps: backlog 0 → ``min_tasks``; else enough tasks that none has more
    than ``backlog_per_task`` messages, at least one, at most ``max_tasks``."""
    steps = [appscaling.ScalingInterval(upper=0, change=min_tasks)]
    previous = 0
    for count in task_counts(max(1, min_tasks), max_tasks):
        steps.append(appscaling.ScalingInterval(lower=previous * backlog_per_task + 1,
                                                change=count))
        previous = count
    return steps


def task_counts(low: int, high: int) -> list[int]:
    """The task counts the scale-out steps set: every count from ``low`` to ``high``, or
    ``MAX_STEP_ADJUSTMENTS`` of them spread evenly (always ``low`` and ``high``)."""
    if high - low < MAX_STEP_ADJUSTMENTS:
        return list(range(low, high + 1))
    spread = MAX_STEP_ADJUSTMENTS - 1
    return sorted({low + math.ceil((high - low) * i / spread) for i in range(spread + 1)})


def _public_vpc(scope: Construct) -> ec2.Vpc:
    return ec2.Vpc(scope, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC,
                                cidr_mask=24)])


def _check(*, queues: Sequence[sqs.IQueue], min_tasks: int, max_tasks: int, cpu: int,
           memory_mib: int, concurrency: int | None, backlog_per_task: int,
           architecture: str) -> None:
    """ConfigError naming the first parameter Fargate or the scaler cannot take."""
    if not queues:
        raise ConfigError("FargateWorkers(queues=[]): the workers need at least one queue")
    if max_tasks < 1:
        raise ConfigError(f"max_tasks={max_tasks}: at least 1 task must be able to run")
    if not 0 <= min_tasks <= max_tasks:
        raise ConfigError(f"min_tasks={min_tasks}: expected 0 <= min_tasks <= "
                          f"max_tasks ({max_tasks})")
    if backlog_per_task < 1:
        raise ConfigError(f"backlog_per_task={backlog_per_task}: expected at least 1")
    if concurrency is not None and not 1 <= concurrency <= 1024:
        raise ConfigError(f"concurrency={concurrency}: `cloudq poll -c` takes 1 to 1024")
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture={architecture!r}: expected 'x86_64' or 'arm64'")
    if cpu not in FARGATE_MEMORY_MIB:
        raise ConfigError(f"cpu={cpu}: Fargate takes {', '.join(map(str, FARGATE_MEMORY_MIB))}")
    allowed = FARGATE_MEMORY_MIB[cpu]
    if memory_mib not in allowed:
        sizes = (f"{allowed.start}-{allowed.stop - 1} MiB in steps of {allowed.step}"
                 if isinstance(allowed, range) else f"{', '.join(map(str, allowed))} MiB")
        raise ConfigError(f"memory_mib={memory_mib}: with cpu={cpu} Fargate takes {sizes}")
