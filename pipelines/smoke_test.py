"""Post-deploy smoke tests: every exposed service's health path, through the region's load balancer.

The load balancer is internal, so the requests must come from inside the region's VPC. A CDK Pipelines
`CodeBuildStep` cannot get there: its CodeBuild project lives in the pipeline stack, in the primary
region, and a project can only join a VPC of its own region (and the pipeline stack may not reference
another stage's VPC). So each region gets a `smoke-test` stack with a CodeBuild project in its private
subnets that runs the curls, and the pipeline's smoke step starts that project with the load balancer's
DNS name from the services stack's output and waits for its result.

A service that shares its path with a legacy function (config `legacy`, the strangler fig) is the exception:
its listener rule splits requests by weight, 0 % to the service at first, so a request through it may never
reach the service. For such a service the project asks the load balancer how its own health checks of the
service's tasks (the same health path) went: `describe-target-health` of the service's target groups.
"""

from __future__ import annotations

import shlex
from typing import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import pipelines

from constructs.compliance import acknowledge_nag, skip_checkov
from stacks.config import FoundationConfig
from stacks.defaults import profile_defaults
from stacks.region_stage import RegionStage

from .acknowledgments import acknowledge_codebuild_defaults
from .pipeline_stack import BUILD_IMAGE

# The variable the regional project reads; the pipeline's step passes the stack output in it.
LOAD_BALANCER_VARIABLE = "LOAD_BALANCER_DNS_NAME"
# curl: each request may take 10 s; up to 6 tries 10 s apart cover a target group still registering tasks.
_CURL = "curl --fail --silent --show-error --output /dev/null --max-time 10 --retry 5 --retry-delay 10 --retry-all-errors"
# How long the pipeline's step waits for the regional build before CodeBuild stops it.
STEP_TIMEOUT = cdk.Duration.minutes(20)
# A service behind a legacy function passes when the load balancer counts a healthy target in any of its target
# groups (ECS's deployments leave the tasks in one of two), asked up to 6 times 10 s apart, as curl retries.
_CHECK_TARGETS = """check_targets() {
  local name=$1 try arn count healthy; shift
  for try in 1 2 3 4 5 6; do
    healthy=0
    for arn in "$@"; do
      count=$(aws elbv2 describe-target-health --target-group-arn "$arn" --output text \\
        --query "length(TargetHealthDescriptions[?TargetHealth.State=='healthy'])") || count=0
      healthy=$((healthy + count))
    done
    if [ "$healthy" -gt 0 ]; then echo "healthy: $name ($healthy healthy targets)"; return; fi
    [ "$try" -eq 6 ] || sleep 10
  done
  echo "UNHEALTHY: $name (no healthy target in its target groups)"; unhealthy=$((unhealthy + 1))
}"""


def smoke_test_project_name(config: FoundationConfig, region: str) -> str:
    return f"{config.prefix}-{region}-smoke-test"


def health_check_commands(config: FoundationConfig, region: str, target_groups: Mapping[str, Sequence[str]] = {}) -> list[str]:
    """The shell lines that check each exposed service and fail if any is unhealthy.

    Each service's health path is requested through the load balancer. Without a domain the load balancer
    listens on HTTP:80 under its own DNS name. With one it serves HTTPS for the regional name only, so curl
    asks for that name (the certificate is checked) while connecting to the load balancer from the stack
    output. A service with a legacy function is checked through its target groups instead, each named by a
    variable in ``target_groups`` (service name -> variables, as ``ServicesStack.legacy_target_groups`` gives them).
    """
    lines = [
        "unhealthy=0",
        f'check() {{ if {_CURL} "$@"; then echo "healthy: $1"; else echo "UNHEALTHY: $1"; unhealthy=$((unhealthy + 1)); fi; }}',
    ]
    if any(service.legacy for service in config.exposed_services):
        lines.append(_CHECK_TARGETS)
    for service in config.exposed_services:
        if service.legacy:
            lines.append(f"check_targets {service.name} " + " ".join(f'"${{{variable}}}"' for variable in target_groups[service.name]))
            continue
        health_path = service.path + service.health_check_path
        if config.domain:
            name = config.domain.regional_name(region)
            lines.append(f'check {shlex.quote(f"https://{name}{health_path}")} '
                         f'--connect-to "{name}:443:${{{LOAD_BALANCER_VARIABLE}}}:443"')
        else:
            lines.append(f'check "http://${{{LOAD_BALANCER_VARIABLE}}}{health_path}"')
    lines.append(f'echo "$unhealthy of {len(config.exposed_services)} services unhealthy"; test "$unhealthy" -eq 0')
    return lines


class SmokeTestStack(cdk.Stack):
    """A CodeBuild project in the region's private subnets that runs ``health_check_commands``.

    It has no source and no artifacts; its security group may reach the load balancer's listener and
    HTTPS (AWS APIs, through the NAT gateway or the VPC endpoints), nothing else.
    """

    def __init__(self, stage: RegionStage, construct_id: str, *, config: FoundationConfig, **kwargs) -> None:
        super().__init__(stage, construct_id, **kwargs)
        region = stage.region
        load_balancer = stage.services.ingress.load_balancer
        listener_port = 443 if config.domain else 80
        target_groups = stage.services.legacy_target_groups

        security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=stage.network.vpc, allow_all_outbound=False,
            description=f"{config.prefix} {region} smoke test: only the load balancer listener and AWS APIs",
        )
        security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs (CodeBuild, CloudWatch Logs)")
        # allow_to puts the load balancer's ingress rule in this stack: the services stack stays unaware of it.
        security_group.connections.allow_to(load_balancer, ec2.Port.tcp(listener_port), "smoke test to the listener")

        log_group = logs.LogGroup(
            self, "Logs", encryption_key=stage.network.logs_key, removal_policy=cdk.RemovalPolicy.DESTROY,
            retention=logs.RetentionDays[profile_defaults(config.profile).log_retention],
        )
        self.project = codebuild.Project(
            self, "Project",
            project_name=smoke_test_project_name(config, region),
            description=f"Requests each service's health path through the {region} load balancer; fails if any is unhealthy",
            vpc=stage.network.vpc,
            subnet_selection=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[security_group],
            environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.SMALL),  # the pipeline's projects' image
            # The default lets an operator run it by hand; the pipeline passes the output it just deployed.
            environment_variables={
                LOAD_BALANCER_VARIABLE: codebuild.BuildEnvironmentVariable(value=load_balancer.load_balancer_dns_name),
                **{variable: codebuild.BuildEnvironmentVariable(value=group.target_group_arn)
                   for groups in target_groups.values() for variable, group in groups.items()},
            },
            build_spec=codebuild.BuildSpec.from_object({
                "version": "0.2",
                "env": {"shell": "bash"},
                "phases": {"build": {"commands": ["\n".join(health_check_commands(config, region, target_groups))]}},
            }),
            timeout=cdk.Duration.minutes(15),
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
        )
        nothing_to_encrypt = ("The smoke test project has no source and no artifacts, and its logs go to a log group "
                              "encrypted with the stage's logs key: there is nothing for a project key to encrypt")
        acknowledge_nag(self.project, nothing_to_encrypt, "AwsSolutions-CB4")
        skip_checkov(self.project.node.default_child, {"CKV_AWS_147": nothing_to_encrypt})
        vpc_attachment = ("CodeBuild in a VPC: ec2:CreateNetworkInterface and the ec2:Describe* calls that attach the build "
                          "to the subnets have no resource-level permissions, and CreateNetworkInterfacePermission is limited "
                          "to this VPC's private subnets and the CodeBuild service, not to interface IDs that do not exist yet")
        skip_checkov(self.project.node.find_child("PolicyDocument").node.default_child, {"CKV_AWS_111": vpc_attachment})
        acknowledge_nag(
            self.project,
            vpc_attachment,
            "AwsSolutions-IAM5[Resource::*]",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*]",
        )
        acknowledge_nag(
            self.project,
            "CodeBuild writes the project's grants (its VPC attachment, logs and reports) into inline policies that "
            "live and die with the project's role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_codebuild_defaults(self.project, self.region, self.account)
        if target_groups:
            target_health = iam.Policy(self, "TargetHealth", statements=[iam.PolicyStatement(
                actions=["elasticloadbalancing:DescribeTargetHealth"], resources=["*"])])
            self.project.role.attach_inline_policy(target_health)
            acknowledge_nag(target_health, "elasticloadbalancing:DescribeTargetHealth has no resource-level permissions; it "
                            "only reads the health of the targets of a service that shares its path with a legacy function",
                            "AwsSolutions-IAM5[Resource::*]")
            acknowledge_nag(target_health, "The smoke test's one read-only permission besides CodeBuild's grants, in a policy "
                            "that lives and dies with the project's role", "NIST.800.53.R5-IAMNoInlinePolicy")


def smoke_test_step(config: FoundationConfig, stage: RegionStage) -> pipelines.CodeBuildStep:
    """The pipeline's post-deploy step of ``stage``: start the regional project with the load balancer's
    DNS name (and the target groups of services with a legacy function) from the services stack's outputs,
    wait for it, and fail unless it succeeded. Read from this deploy's outputs, they are current even where the
    smoke-test stack's own references would be stale (README, "Deploy one region", on Fn::GetStackOutput).
    """
    region = stage.region
    project_arn = f"arn:{cdk.Aws.PARTITION}:codebuild:{region}:{config.account}:project/{smoke_test_project_name(config, region)}"
    outputs = {LOAD_BALANCER_VARIABLE: stage.services.node.find_child("LoadBalancerDnsName"),
               **stage.services.legacy_target_group_outputs}
    overrides = " ".join(f'"name={variable},value=${variable},type=PLAINTEXT"' for variable in outputs)
    aws = 'aws codebuild --region "$SMOKE_TEST_REGION"'
    return pipelines.CodeBuildStep(
        f"SmokeTest-{region}",
        env={"SMOKE_TEST_REGION": region, "SMOKE_TEST_PROJECT": smoke_test_project_name(config, region)},
        env_from_cfn_outputs=outputs,
        commands=[
            f'build_id=$({aws} start-build --project-name "$SMOKE_TEST_PROJECT" '
            f'--environment-variables-override {overrides} --query build.id --output text)',
            'echo "started $build_id in $SMOKE_TEST_REGION"',
            f'status=IN_PROGRESS; while [ "$status" = IN_PROGRESS ]; do sleep 15; '
            # A failed call (throttling, a network blip) is no verdict: keep polling, within the step's timeout.
            f"status=$({aws} batch-get-builds --ids \"$build_id\" --query 'builds[0].buildStatus' --output text) "
            "|| status=IN_PROGRESS; done",
            'echo "smoke test $build_id: $status (logs: CodeBuild project $SMOKE_TEST_PROJECT in $SMOKE_TEST_REGION)"',
            'test "$status" = SUCCEEDED',
        ],
        role_policy_statements=[iam.PolicyStatement(
            actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds"], resources=[project_arn])],
        timeout=STEP_TIMEOUT,
    )
