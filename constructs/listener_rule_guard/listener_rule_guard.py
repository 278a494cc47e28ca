"""ListenerRuleGuard: after a stack update, puts the weights of listener rules that ECS shifts traffic on
back onto the target group that has the service's tasks (aws/aws-cdk#36649)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov, skip_role_dependency_lint
from constructs.event_bus import target_dead_letter_queue
# The strangler fig's function: its `guard` entry point runs the same reconcile step without a legacy function.
from constructs.strangler_fig.strangler_fig import ARCHITECTURE, FUNCTION_DIR, RUNTIME, reconcile_triggers


@dataclass(frozen=True)
class GuardedRule:
    """A listener rule that ECS shifts ``service``'s traffic on: the service's load balancer names it, and the two
    target groups, in its ``advancedConfiguration``. The function reads them there; the rule scopes its role."""

    listener_rule: elbv2.ApplicationListenerRule
    service: ecs.IBaseService


class ListenerRuleGuard(Construct):
    """One function for all ``rules`` of the stack, invoked when CloudFormation has updated a guarded rule, when an
    update of the stack completes or rolls back, and when a deployment of a guarded service ends.

    ECS's canary and linear deployments alternate the live target group; CloudFormation knows only the
    template's weights (all on the first group) and writes them back whenever an update changes the rule,
    which after an odd number of deployments sends all traffic to a group without tasks (aws/aws-cdk#36649).
    The rule's own update ends within seconds, the stack's only once every service in it has stabilised (a canary's
    bake can take half an hour), so the function runs on the first.
    The function puts each rule's weight on the groups with healthy targets and leaves a rule alone when
    its weights already sit there, or while a deployment of its service is under way (ECS owns the
    weights then). A rule without any group with healthy targets keeps its weights and fails the run:
    Lambda retries twice, then the dead-letter queue, whose alarm an operator answers. A stack update that ends
    while a deployment is under way may have written the rule after ECS's last shift: the deployment's end
    runs the function again.

    The function's environment names only the cluster and the services (``CLUSTER``, ``SERVICES``); it asks
    ECS (DescribeServices) for each service's production listener rule and its two target groups.
    """

    def __init__(self, scope: Construct, construct_id: str, *, rules: Sequence[GuardedRule], log_group: logs.ILogGroup,
                 function_name: str | None = None, dead_letter_queue_name: str | None = None) -> None:
        super().__init__(scope, construct_id)
        if not rules:
            raise ValueError("rules=[] is invalid: give at least one listener rule to guard")
        stack = cdk.Stack.of(self)
        clusters = {json.dumps(stack.resolve(rule.service.cluster.cluster_name), sort_keys=True) for rule in rules}
        if len(clusters) > 1:
            raise ValueError(f"the services of rules are in {len(clusters)} clusters: one guard guards one cluster's services")
        cluster = rules[0].service.cluster
        self.dead_letter_queue = target_dead_letter_queue(
            self, "DeadLetterQueue", dead_letter_of="the rule's target and of the function's failed runs", senders="EventBridge and Lambda",
            queue_name=dead_letter_queue_name)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Puts traffic-shifting listener rules' weights back on the serving target group")
        self.function = lambda_.Function(
            self, "Function", function_name=function_name, runtime=RUNTIME, architecture=ARCHITECTURE, role=self.role,
            code=lambda_.Code.from_asset(str(FUNCTION_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.guard", timeout=cdk.Duration.seconds(60), memory_size=128, log_group=log_group,
            dead_letter_queue=self.dead_letter_queue, retry_attempts=2,
            # A name per service, not its rule and groups: ECS describes those, and Lambda allows 4 KB of environment.
            environment={"CLUSTER": cluster.cluster_name, "SERVICES": cdk.Fn.join(",", [rule.service.service_name for rule in rules])},
            description="After CloudFormation updates a guarded rule, a stack update or an ECS deployment, moves listener rules' weights onto the target group with healthy targets",
        )
        log_group.grant_write(self.role)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["elasticloadbalancing:ModifyRule"], resources=[rule.listener_rule.listener_rule_arn for rule in rules]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecs:DescribeServices", "ecs:ListServiceDeployments"], resources=[rule.service.service_arn for rule in rules]))
        # Describe calls take no resource-level permissions in Elastic Load Balancing.
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetHealth"], resources=["*"]))
        # The function skips a service while its deployment is under way; a stack update that wrote the rule then
        # (after ECS's last shift, during the bake) is put right when the deployment ends.
        _, self.stack_rule, self.listener_rule_rule, self.deployment_rule = reconcile_triggers(
            self, self.function, self.dead_letter_queue, listener_rules=[rule.listener_rule for rule in rules],
            service_arns=[rule.service.service_arn for rule in rules],
            stack_description="The stack was updated: put its traffic-shifting listener rules' weights on the serving groups",
            rule_description="CloudFormation updated a guarded listener rule: put its weights on the serving groups",
            deployment_description="A guarded service's ECS deployment ended: put the listener rules' weights on the serving groups")
        self._acknowledge()

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "Elastic Load Balancing's DescribeRules and DescribeTargetHealth support no resource-level permissions; the "
            "role's only write, ModifyRule, is scoped to the guarded listener rules",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            self.role,
            "CDK writes the function's grants (its rules, services, log group and dead-letter queue) into the role's own "
            "inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_nag(
            self.function,
            "the function runs once per stack update or deployment; reserving concurrency would only take capacity from the "
            "account's unreserved pool and protect nothing",
            "NIST.800.53.R5-LambdaConcurrency",
        )
        acknowledge_nag(
            self.function,
            "the function only calls the Elastic Load Balancing and ECS APIs and reaches nothing inside a VPC; attaching "
            "it to one would add ENIs and a NAT dependency for no isolation gained",
            "NIST.800.53.R5-LambdaInsideVPC",
        )
        skip_checkov(self.function.node.default_child, {
            "CKV_AWS_115": "The function runs once per stack update or deployment; reserved concurrency would protect nothing",
            "CKV_AWS_117": "The function only calls the Elastic Load Balancing and ECS APIs and needs no network path into the VPC",
            "CKV_AWS_173": "The environment holds a cluster's and services' names, nothing secret; a customer key for it would protect nothing",
        })
        skip_role_dependency_lint(self.function.node.default_child)
