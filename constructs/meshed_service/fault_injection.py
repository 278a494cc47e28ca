"""FaultInjection: what a Fargate task needs before AWS FIS can add latency or packet loss to it."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam

from constructs.compliance import acknowledge_nag, arn_as_nag_shows, skip_checkov
from constructs.permissions_boundary import SSM_AGENT_CHANNEL_ACTIONS

from .extensions import ServiceExtension
from .service import MeshedFargateService

SSM_AGENT_CONTAINER = "amazon-ssm-agent"
# Pinned: bump deliberately, with the FIS user guide's sidecar script below. The guide's example uses
# ":latest" (Amazon Linux 2023, dnf); this early-2024 tag predates the agent's 2025 security fix and may
# lack dnf: README, FaultInjection, says what to check before an experiment relies on it.
SSM_AGENT_IMAGE = "public.ecr.aws/amazon-ssm-agent/amazon-ssm-agent:3.2.2222.0"
# The tag the FIS script puts on every activation and managed instance it registers.
SIDECAR_TAG = "FAULT_INJECTION_SIDECAR"
# AWS's script from "Use the AWS FIS aws:ecs:task actions" (FIS user guide), unchanged: it registers
# the task as an SSM managed instance tagged with its task ARN and AZ (FIS finds the task's instance
# by that tag), and on SIGTERM deletes the activation and deregisters the instance.
_ACTIVATION_SCRIPT = r"""set -e; dnf upgrade -y; dnf install jq procps awscli -y; term_handler() { echo "Deleting SSM activation $ACTIVATION_ID"; if ! aws ssm delete-activation --activation-id $ACTIVATION_ID --region $ECS_TASK_REGION; then echo "SSM activation $ACTIVATION_ID failed to be deleted" 1>&2; fi; MANAGED_INSTANCE_ID=$(jq -e -r .ManagedInstanceID /var/lib/amazon/ssm/registration); echo "Deregistering SSM Managed Instance $MANAGED_INSTANCE_ID"; if ! aws ssm deregister-managed-instance --instance-id $MANAGED_INSTANCE_ID --region $ECS_TASK_REGION; then echo "SSM Managed Instance $MANAGED_INSTANCE_ID failed to be deregistered" 1>&2; fi; kill -SIGTERM $SSM_AGENT_PID; }; trap term_handler SIGTERM SIGINT; if [[ -z $MANAGED_INSTANCE_ROLE_NAME ]]; then echo "Environment variable MANAGED_INSTANCE_ROLE_NAME not set, exiting" 1>&2; exit 1; fi; if ! ps ax | grep amazon-ssm-agent | grep -v grep > /dev/null; then if [[ -n $ECS_CONTAINER_METADATA_URI_V4 ]] ; then echo "Found ECS Container Metadata, running activation with metadata"; TASK_METADATA=$(curl "${ECS_CONTAINER_METADATA_URI_V4}/task"); ECS_TASK_AVAILABILITY_ZONE=$(echo $TASK_METADATA | jq -e -r '.AvailabilityZone'); ECS_TASK_ARN=$(echo $TASK_METADATA | jq -e -r '.TaskARN'); ECS_TASK_REGION=$(echo $ECS_TASK_AVAILABILITY_ZONE | sed 's/.$//'); ECS_TASK_AVAILABILITY_ZONE_REGEX='^(af|ap|ca|cn|eu|me|sa|us|us-gov)-(central|north|(north(east|west))|south|south(east|west)|east|west)-[0-9]{1}[a-z]{1}$'; if ! [[ $ECS_TASK_AVAILABILITY_ZONE =~ $ECS_TASK_AVAILABILITY_ZONE_REGEX ]]; then echo "Error extracting Availability Zone from ECS Container Metadata, exiting" 1>&2; exit 1; fi; ECS_TASK_ARN_REGEX='^arn:(aws|aws-cn|aws-us-gov):ecs:[a-z0-9-]+:[0-9]{12}:task/[a-zA-Z0-9_-]+/[a-zA-Z0-9]+$'; if ! [[ $ECS_TASK_ARN =~ $ECS_TASK_ARN_REGEX ]]; then echo "Error extracting Task ARN from ECS Container Metadata, exiting" 1>&2; exit 1; fi; CREATE_ACTIVATION_OUTPUT=$(aws ssm create-activation --iam-role $MANAGED_INSTANCE_ROLE_NAME --tags Key=ECS_TASK_AVAILABILITY_ZONE,Value=$ECS_TASK_AVAILABILITY_ZONE Key=ECS_TASK_ARN,Value=$ECS_TASK_ARN Key=FAULT_INJECTION_SIDECAR,Value=true --region $ECS_TASK_REGION); ACTIVATION_CODE=$(echo $CREATE_ACTIVATION_OUTPUT | jq -e -r .ActivationCode); ACTIVATION_ID=$(echo $CREATE_ACTIVATION_OUTPUT | jq -e -r .ActivationId); if ! amazon-ssm-agent -register -code $ACTIVATION_CODE -id $ACTIVATION_ID -region $ECS_TASK_REGION; then echo "Failed to register with AWS Systems Manager (SSM), exiting" 1>&2; exit 1; fi; amazon-ssm-agent & SSM_AGENT_PID=$!; wait $SSM_AGENT_PID; else echo "ECS Container Metadata not found, exiting" 1>&2; exit 1; fi; else echo "SSM agent is already running, exiting" 1>&2; exit 1; fi"""


class FaultInjection(ServiceExtension):
    """Lets AWS FIS run ``aws:ecs:task-network-latency`` and ``-packet-loss`` on the service's tasks.

    On Fargate those actions need (FIS user guide, "Use the AWS FIS aws:ecs:task actions"): the task
    definition's ``enableFaultInjection`` (the ECS agent's fault endpoints, which the action's
    ``useEcsFaultInjectionEndpoints`` uses) and ``pidMode: task``; a non-essential SSM agent sidecar
    that registers the task as an SSM managed instance, since FIS delivers the fault as an SSM
    command; a managed-instance role that the sidecar hands to SSM; and task-role permission to
    create the activation and pass that role. Add it only to the service an experiment targets:
    the sidecar runs in every task, and the task role gains those SSM permissions.

    Exposes ``managed_instance_role`` and ``container`` (after the task definition exists).
    """

    def __init__(self, *, image: str = SSM_AGENT_IMAGE, managed_instance_role_name: str | None = None) -> None:
        self.image = image
        self.managed_instance_role_name = managed_instance_role_name
        self.managed_instance_role: iam.Role | None = None
        self.container: ecs.ContainerDefinition | None = None
        self.task_policy: iam.Policy | None = None

    def modify_task_definition_props(self, props: dict[str, Any]) -> dict[str, Any]:
        return {**props, "enable_fault_injection": True, "pid_mode": ecs.PidMode.TASK}

    def use_task_definition(self, service: MeshedFargateService) -> None:
        stack = cdk.Stack.of(service)
        self.managed_instance_role = iam.Role(
            service, "FaultInjectionManagedInstanceRole",
            role_name=self.managed_instance_role_name,
            description=f"{service.props.name} tasks as SSM managed instances, for AWS FIS network faults",
            assumed_by=iam.ServicePrincipal("ssm.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(service="ssm", resource="*")},
            }),
        )
        managed_instances = stack.format_arn(service="ssm", resource="managed-instance", resource_name="*")
        # The SSM agent's own channel, granted explicitly instead of the FIS guide's AmazonSSMManagedInstanceCore,
        # which also reads every SSM parameter of the account (ssm:GetParameter/GetParameters on *). This is that
        # policy without Parameter Store, State Manager documents, Inventory and Patch Manager, close to AWS's own
        # AmazonSSMManagedEC2InstanceDefaultPolicy (Core minus GetParameter(s)):
        # https://docs.aws.amazon.com/systems-manager/latest/userguide/managed-instances-default-host-management.html
        # Run Command (FIS's AWSFIS-Run-* documents) arrives over the ssmmessages control channel, or ec2messages
        # where that cannot be opened (Systems Manager user guide, "Reference: ec2messages, ssmmessages, and other
        # API operations"): both, no data channels (no Session Manager), the same actions the stage's boundary
        # allows this role. This departs from the FIS guide and is not yet verified against a real experiment:
        # README, FaultInjection.
        self.managed_instance_role.add_to_policy(iam.PolicyStatement(
            actions=["ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations"], resources=[managed_instances]))
        self.managed_instance_role.add_to_policy(iam.PolicyStatement(actions=list(SSM_AGENT_CHANNEL_ACTIONS), resources=["*"]))
        # The sidecar's shutdown handler runs with the instance's credentials: it cleans up after itself.
        self.managed_instance_role.add_to_policy(iam.PolicyStatement(
            actions=["ssm:DeregisterManagedInstance"],
            resources=[managed_instances],
            conditions={"StringEquals": {f"aws:ResourceTag/{SIDECAR_TAG}": "true"}},
        ))
        self.managed_instance_role.add_to_policy(iam.PolicyStatement(actions=["ssm:DeleteActivation"], resources=["*"]))
        acknowledge_nag(
            self.managed_instance_role,
            "SSM (ssm) DeleteActivation and the SSM agent's message channels (ec2messages, ssmmessages) have no "
            "resource-level permissions; managed-instance IDs are assigned at registration so no resource-level ARN "
            "can name them: UpdateInstanceInformation and ListInstanceAssociations are on the account's managed "
            "instances, DeregisterManagedInstance only on those tagged as FIS sidecars",
            "AwsSolutions-IAM5[Resource::*]",
            f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(service, 'ssm', 'managed-instance/*')}]",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )

        # A policy of its own on the task role, so its findings and reasons stay apart from the app's.
        self.task_policy = iam.Policy(service, "FaultInjectionTaskPolicy", roles=[service.task_role], statements=[
            iam.PolicyStatement(
                actions=["ssm:CreateActivation", "ssm:AddTagsToResource"], resources=["*"],
                conditions={"StringEquals": {f"aws:RequestTag/{SIDECAR_TAG}": "true"}}),
            iam.PolicyStatement(actions=["iam:PassRole"], resources=[self.managed_instance_role.role_arn],
                                conditions={"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}}),
        ])
        acknowledge_nag(
            self.task_policy,
            "SSM (ssm) CreateActivation and AddTagsToResource get no resource-level permissions here (the activation does "
            "not exist yet); the statement only allows requests tagged as FIS fault-injection sidecars, which the FIS "
            "sidecar script makes",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(self.task_policy, "The fault-injection grants live and die with the extension, in a policy of the task role's own",
                        "NIST.800.53.R5-IAMNoInlinePolicy")

        self.container = service.task_definition.add_container(
            SSM_AGENT_CONTAINER,
            image=ecs.ContainerImage.from_registry(self.image),
            # Not essential: if registration fails, the app keeps serving; only the experiment cannot reach the task.
            essential=False,
            cpu=0,
            entry_point=[],
            command=["/bin/bash", "-c", _ACTIVATION_SCRIPT],
            environment={"MANAGED_INSTANCE_ROLE_NAME": self.managed_instance_role.role_name},
            logging=service.container_logs(SSM_AGENT_CONTAINER),
        )
        task_definition = service.task_definition.node.default_child
        skip_checkov(task_definition, {
            "CKV_AWS_336": "The FIS SSM agent sidecar installs its tools (dnf) and writes its registration at start, "
                           "as AWS's script requires; the app and every other container keep read-only root filesystems",
        })

    def use_service(self, service: MeshedFargateService) -> None:
        # The sidecar calls ssm:CreateActivation once, as its task starts, and exits for good if that is denied (not
        # essential, no restart). CDK makes the service wait for the task role's default policy only (aws/aws-cdk#24880),
        # not for this one: without this, a first deploy's tasks could start before it is attached and never register.
        # The ECS service alone waits (not its scaling target and roles), as for the default policy.
        service.service.node.default_child.add_dependency(self.task_policy.node.default_child)
