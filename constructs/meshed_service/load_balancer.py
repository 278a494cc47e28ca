"""Extension: puts a service's app container behind an Application Load Balancer target group."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2

from constructs.compliance import acknowledge_nag, skip_cfn_lint

from .extensions import ServiceExtension
from .service import APP_CONTAINER, MeshedFargateService


class LoadBalancerTarget(ServiceExtension):
    """Registers every task's app container in ``target_group`` (IP targets on the app port).

    CDK opens the service's security group to the load balancer's on that port. New tasks get
    ``health_check_grace_period_seconds`` (default 60) before failed load balancer health checks
    count against them.

    For ECS canary and linear deployments, also give ``alternate_target_group`` (empty) and the
    ``listener_rule`` that forwards to both: ECS registers the new revision's tasks in the
    alternate group and shifts the rule's weights, through a role it assumes for that.
    """

    def __init__(self, target_group: elbv2.IApplicationTargetGroup, *, health_check_grace_period_seconds: int = 60,
                 alternate_target_group: elbv2.IApplicationTargetGroup | None = None,
                 listener_rule: elbv2.ApplicationListenerRule | None = None) -> None:
        if (alternate_target_group is None) != (listener_rule is None):
            raise ValueError("alternate_target_group and listener_rule go together: give both for canary or linear deployments, or neither")
        self.target_group = target_group
        self.health_check_grace_period = cdk.Duration.seconds(health_check_grace_period_seconds)
        self.alternate_target_group = alternate_target_group
        self.listener_rule = listener_rule

    def modify_service_props(self, props: dict[str, Any]) -> dict[str, Any]:
        props["health_check_grace_period"] = self.health_check_grace_period
        return props

    def use_service(self, service: MeshedFargateService) -> None:
        alternate = None
        if self.alternate_target_group is not None:
            alternate = ecs.AlternateTarget(
                "AlternateTarget", alternate_target_group=self.alternate_target_group,
                production_listener=ecs.ListenerRuleConfiguration.application_listener_rule(self.listener_rule),
            )
        target = service.service.load_balancer_target(
            container_name=APP_CONTAINER, container_port=service.props.container_port, alternate_target=alternate)
        target.attach_to_application_target_group(self.target_group)
        if alternate is not None:
            skip_cfn_lint(service.service.node.default_child, {
                "W3005": "CDK makes the service depend on its production listener rule, which the service's AdvancedConfiguration also references",
            })
            role = service.service.node.find_child("AlternateTargetRole")  # created by ecs.AlternateTarget
            acknowledge_nag(
                role,
                "The role ECS assumes to shift a deployment's traffic between the target groups carries AWS's "
                "AmazonECSInfrastructureRolePolicyForLoadBalancers, which AWS keeps in step with what ECS calls",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers]",
            )
