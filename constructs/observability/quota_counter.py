"""QuotaCounter: publishes usage of the quotas AWS/Usage has no metric for (Cloud Map, ECR counts) every 15 minutes.

A Python function (``quota_count/handler.py``) counts Cloud Map namespaces of the region, instances per namespace
and per service of the platform's namespaces, ECR repositories of the region and images per repository of the
app's repositories, reads each quota's applied value from Service Quotas and puts ``100 * count / quota`` into
``<metric_namespace>`` ``PercentOfQuota`` (dimension ``Quota``). ``quotas`` are what PlatformMonitoring alarms on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.compliance import acknowledge_nag, arn_as_nag_shows, skip_checkov, skip_role_dependency_lint
from constructs.event_bus import target_dead_letter_queue

from .quotas import CountedQuota

HANDLER_DIR = Path(__file__).resolve().parent / "quota_count"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
SCHEDULE = cdk.Duration.minutes(15)
METRIC_NAME = "PercentOfQuota"
# What the handler publishes, by the alarm's name (<prefix>-quota-<name>); the quota codes live in the handler.
COUNTED = (
    ("cloud-map-namespaces", "Cloud Map namespaces in the region"),
    ("cloud-map-instances-per-namespace", "Cloud Map instances in the fullest platform namespace"),
    ("cloud-map-instances-per-service", "Cloud Map instances of the fullest platform service"),
    ("ecr-repositories", "ECR repositories in the region"),
    ("ecr-images-per-repository", "ECR images in the fullest service repository"),
)
# Listing calls that support no resource-level permissions (Resource "*"): Cloud Map's namespace and service
# lists, and Service Quotas' reads of a quota's applied and default values.
UNSCOPED_ACTIONS = ("servicediscovery:ListNamespaces", "servicediscovery:ListServices",
                    "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota")


class QuotaCounter(Construct):
    """Exposes ``function``, ``role``, ``rule`` (the schedule), ``dead_letter_queue`` (runs that failed or could not
    be started; alarm on it) and ``quotas`` (``CountedQuota`` per published metric)."""

    def __init__(self, scope: Construct, construct_id: str, *, function_name: str, metric_namespace: str,
                 cloud_map_namespaces: Sequence[str], ecr_repositories: Sequence[str], encryption_key: kms.IKey,
                 retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.quotas = tuple(CountedQuota(name=name, description=description, metric_namespace=metric_namespace,
                                         metric_name=METRIC_NAME, period=SCHEDULE) for name, description in COUNTED)
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=f"/aws/lambda/{function_name}", encryption_key=encryption_key,
                                       retention=retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        # A run that failed (or could not start) leaves the quota metrics stale: both land here, and an alarm watches.
        self.dead_letter_queue = target_dead_letter_queue(
            self, "DeadLetterQueue", dead_letter_of="the schedule's target and of the function's failed runs", senders="EventBridge and Lambda",
            queue_name=f"{function_name}-dlq")
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Counts Cloud Map and ECR resources against their quotas")
        self.function = lambda_.Function(
            self, "Function", function_name=function_name, runtime=RUNTIME, architecture=ARCHITECTURE, role=self.role,
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler", timeout=cdk.Duration.minutes(1), memory_size=256, log_group=self.log_group,
            # The next scheduled run replaces a failed one; two retries cover a throttled call.
            dead_letter_queue=self.dead_letter_queue, retry_attempts=2,
            environment={"METRIC_NAMESPACE": metric_namespace, "CLOUD_MAP_NAMESPACES": ",".join(cloud_map_namespaces),
                         "ECR_REPOSITORIES": ",".join(ecr_repositories)},
            description="Publishes Cloud Map and ECR usage as a percentage of each quota (runbooks/quota-exhaustion.md)",
        )
        self.log_group.grant_write(self.role)
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=list(UNSCOPED_ACTIONS), resources=["*"]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["servicediscovery:GetService", "servicediscovery:ListInstances"],
            resources=[stack.format_arn(service="servicediscovery", resource="service", resource_name="*")]))
        # DescribeRepositories over the region's repositories (the quota is per region), DescribeImages over the app's.
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecr:DescribeRepositories"], resources=[stack.format_arn(service="ecr", resource="repository", resource_name="*")]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecr:DescribeImages"],
            resources=[stack.format_arn(service="ecr", resource="repository", resource_name=name) for name in ecr_repositories]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": metric_namespace}}))
        self.rule = events.Rule(
            self, "Schedule", schedule=events.Schedule.rate(SCHEDULE),
            description="Counts Cloud Map and ECR resources against their quotas",
            targets=[targets.LambdaFunction(
                self.function, dead_letter_queue=self.dead_letter_queue,
                # A run older than the next one is worth nothing.
                retry_attempts=4, max_event_age=SCHEDULE)],
        )
        self._acknowledge()

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "servicediscovery ListNamespaces and ListServices and servicequotas GetServiceQuota and "
            "GetAWSDefaultServiceQuota support no resource-level permissions, and cloudwatch PutMetricData is pinned to "
            "one namespace by the cloudwatch:namespace condition; the rest is scoped to this region's Cloud Map "
            "services and ECR repositories",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            self.role,
            "Cloud Map service IDs (srv-...) and the region's ECR repositories are not known at synthesis: the function "
            "reads every service of the region's namespaces and counts every repository of the region",
            f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(self, 'servicediscovery', 'service/*')}]",
            f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(self, 'ecr', 'repository/*')}]",
        )
        acknowledge_nag(
            self.role,
            "CDK writes the function's grants (its log group, dead-letter queue and the counting calls) into the role's "
            "own inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_nag(
            self.function,
            "the function runs once per 15 minutes; reserving concurrency would only take capacity from the account's "
            "unreserved pool and protect nothing",
            "NIST.800.53.R5-LambdaConcurrency",
        )
        acknowledge_nag(
            self.function,
            "the function only calls the Cloud Map, ECR, Service Quotas and CloudWatch APIs and reaches nothing inside a "
            "VPC; attaching it to one would add ENIs and a NAT dependency for no isolation gained",
            "NIST.800.53.R5-LambdaInsideVPC",
        )
        skip_checkov(self.function.node.default_child, {
            "CKV_AWS_115": "The function runs once per 15 minutes; reserved concurrency would protect nothing",
            "CKV_AWS_117": "The function only calls AWS APIs (Cloud Map, ECR, Service Quotas, CloudWatch) and needs no network path into the VPC",
            "CKV_AWS_173": "The environment holds a metric namespace and resource names, nothing secret; a customer key for it would protect nothing",
        })
        skip_role_dependency_lint(self.function.node.default_child)
