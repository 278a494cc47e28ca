"""StranglerFig: a legacy Lambda function and a new ECS service behind one load balancer rule, with the
split between them in an SSM parameter that operators flip."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_cfn_lint, skip_checkov
from constructs.event_bus import target_dead_letter_queue

FUNCTION_DIR = Path(__file__).resolve().parent / "function"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
# Only the flag's form: the handler checks the range again and logs what it rejects.
PERCENT_PATTERN = "^(100|[1-9]?[0-9])$"
# What ends an ECS deployment: ECS may have rewritten the rule's weights while it shifted traffic.
DEPLOYMENT_ENDED = ("SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED")
# The ends of a stack update that may have rewritten the listener rule's weights: a completed update writes the
# template's, a rolled-back one the previous template's.
STACK_UPDATE_ENDED = ("UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE")
# The end of CloudFormation's update of a listener rule, which writes the template's weights; a rollback reverts the
# rule with an update of its own. Not CREATE_COMPLETE: a new rule is not yet the one the service or function names.
RULE_UPDATED = ("UPDATE_COMPLETE",)
# A flag change is worth applying for a day; EventBridge's retries back off over that time.
MAX_EVENT_AGE = cdk.Duration.hours(24)
RETRY_ATTEMPTS = 185
_FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,128})?$")
_TARGET_GROUP_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")


def reconcile_triggers(
    scope: Construct, function: lambda_.IFunction, dead_letter_queue: sqs.IQueue, *,
    listener_rules: Sequence[elbv2.ApplicationListenerRule], stack_description: str, rule_description: str,
    deployment_description: str, service_arns: Sequence[str],
) -> tuple[events_targets.LambdaFunction, events.Rule, events.Rule, events.Rule | None]:
    """What runs the reconcile function (this construct's and ListenerRuleGuard's) when the listener rule's
    weights may have been rewritten: ``(target, stack_rule, listener_rule_rule, deployment_rule)``.

    ``StackUpdated``: an update of ``scope``'s stack completed or rolled back (STACK_UPDATE_ENDED): CloudFormation
    wrote the template's weights, or the previous template's. ``ListenerRuleUpdated``: CloudFormation finished
    updating one of ``listener_rules`` (RULE_UPDATED), which may be long before the stack's update ends.
    ``DeploymentEnded`` (None without ``service_arns``): an ECS deployment of one of them ended (DEPLOYMENT_ENDED):
    ECS may have shifted the weights. All invoke ``target``, the function with EventBridge's retries and
    ``dead_letter_queue``."""
    stack = cdk.Stack.of(scope)
    # CloudFormation's resource events name a rule by its logical ID within its stack's ID.
    foreign = [rule.node.path for rule in listener_rules if cdk.Stack.of(rule) is not stack]
    if foreign:
        raise ValueError(f"listener rules {foreign} are invalid: they must be in the stack of {scope.node.path}")
    target = events_targets.LambdaFunction(
        function, dead_letter_queue=dead_letter_queue, retry_attempts=RETRY_ATTEMPTS, max_event_age=MAX_EVENT_AGE)
    stack_rule = events.Rule(
        scope, "StackUpdated", description=stack_description,
        event_pattern=events.EventPattern(
            source=["aws.cloudformation"], detail_type=["CloudFormation Stack Status Change"],
            detail={"stack-id": [stack.stack_id], "status-details": {"status": list(STACK_UPDATE_ENDED)}}),
        targets=[target],
    )
    # The stack's update ends only once every ECS service in it has stabilised (a canary's bake: tens of minutes),
    # while the rule, written with the template's weights, may send traffic to a group without tasks all that time.
    # The event's fields (detail.stack-id, detail.logical-resource-id, detail.status-details.status): CloudFormation
    # User Guide, https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/event-detail-resource-status-change.html
    listener_rule_rule = events.Rule(
        scope, "ListenerRuleUpdated", description=rule_description,
        event_pattern=events.EventPattern(
            source=["aws.cloudformation"], detail_type=["CloudFormation Resource Status Change"],
            detail={"stack-id": [stack.stack_id],
                    "logical-resource-id": [stack.get_logical_id(rule.node.default_child) for rule in listener_rules],
                    "status-details": {"status": list(RULE_UPDATED)}}),
        targets=[target],
    )
    deployment_rule = events.Rule(
        scope, "DeploymentEnded", description=deployment_description,
        event_pattern=events.EventPattern(
            source=["aws.ecs"], detail_type=["ECS Deployment State Change"], resources=list(service_arns),
            detail={"eventName": list(DEPLOYMENT_ENDED)}),
        targets=[target],
    ) if service_arns else None
    return target, stack_rule, listener_rule_rule, deployment_rule


class StranglerFig(Construct):
    """Puts ``legacy_function_arn`` behind ``listener_rule`` beside the service's target groups.

    The rule forwards to the service's groups and a Lambda target group of the legacy function, with
    weights from the String parameter ``parameter_name`` (percent of requests to the service, 0-100).
    Changing the parameter triggers a function that rewrites the rule's weights; so does the end of
    each deployment of ``deployment_service_arns`` (ECS's canary and linear deployments rewrite the
    rule), CloudFormation's update of the rule and each completed update of the stack (both write the
    template's weights). The service's groups keep the proportion ECS gave them; only the legacy share
    is the flag's.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, name: str, listener_rule: elbv2.ApplicationListenerRule,
        service_target_groups: Sequence[elbv2.IApplicationTargetGroup], legacy_function_arn: str,
        target_group_name: str, parameter_name: str, log_group: logs.ILogGroup,
        initial_percent_to_service: int = 0, deployment_service_arns: Sequence[str] = (), function_name: str | None = None,
        dead_letter_queue_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 0 <= initial_percent_to_service <= 100:
            raise ValueError(f"initial_percent_to_service={initial_percent_to_service} is invalid: expected 0 to 100")
        if not cdk.Token.is_unresolved(legacy_function_arn) and not _FUNCTION_ARN.match(legacy_function_arn):
            raise ValueError(f"legacy_function_arn={legacy_function_arn!r} is invalid: expected arn:aws:lambda:<region>:<account>:function:<name>")
        if not _TARGET_GROUP_NAME.match(target_group_name):
            raise ValueError(f"target_group_name={target_group_name!r} is invalid: 1-32 letters, digits or hyphens, no hyphen at either end")
        if not service_target_groups:
            raise ValueError("service_target_groups=[] is invalid: the service needs at least one target group")
        stack = cdk.Stack.of(self)
        cdk.Tags.of(self).add("service", name)  # the migration is the service's: its target group, flag, function, queue, rules

        self.target_group = self._legacy_target_group(stack, legacy_function_arn, target_group_name)
        self._weigh(listener_rule, service_target_groups, initial_percent_to_service)
        self.parameter = ssm.StringParameter(
            self, "PercentToService", parameter_name=parameter_name, string_value=str(initial_percent_to_service),
            allowed_pattern=PERCENT_PATTERN,
            description=f"{name}: percent of requests the load balancer sends to the service instead of the legacy "
                        "function (0-100); runbooks/strangler-fig-traffic-shift.md",
        )
        self.dead_letter_queue = target_dead_letter_queue(
            self, "DeadLetterQueue", dead_letter_of="the rules' target and of the function's failed runs", senders="EventBridge and Lambda",
            queue_name=dead_letter_queue_name)
        self.function = self._function(name, listener_rule, service_target_groups, log_group, function_name)
        # A stack update that touches the rule writes the template's (initial) weights back over the flag's; so
        # does the rollback of a failed one (back to the previous template's weights).
        target, self.stack_rule, self.listener_rule_rule, self.deployment_rule = reconcile_triggers(
            self, self.function, self.dead_letter_queue, listener_rules=[listener_rule], service_arns=deployment_service_arns,
            stack_description=f"{name}: the stack with the load balancer rule was updated; apply the migration flag again",
            rule_description=f"{name}: CloudFormation updated the load balancer rule; apply the migration flag again",
            deployment_description=f"{name}: an ECS deployment ended; apply the migration flag again")
        self.flag_rule = events.Rule(
            self, "FlagChanged", description=f"{name}: the migration flag changed; apply it to the load balancer rule",
            event_pattern=events.EventPattern(
                source=["aws.ssm"], detail_type=["Parameter Store Change"],
                detail={"name": [parameter_name], "operation": ["Create", "Update"]}),
            targets=[target],
        )
        self._acknowledge()

    def _legacy_target_group(self, stack: cdk.Stack, function_arn: str, target_group_name: str) -> elbv2.ApplicationTargetGroup:
        # The load balancer may invoke the function only for this target group. Its ARN would make a
        # cycle (the group registers the function only once it may invoke it), so the permission names
        # the group by its fixed name.
        self.invoke_permission = lambda_.CfnPermission(
            self, "LoadBalancerMayInvoke", action="lambda:InvokeFunction", function_name=function_arn,
            principal="elasticloadbalancing.amazonaws.com", source_account=stack.account,
            source_arn=stack.format_arn(service="elasticloadbalancing", resource="targetgroup",
                                        resource_name=f"{target_group_name}/*"),
        )
        group = elbv2.ApplicationTargetGroup(
            self, "LegacyTargets", target_group_name=target_group_name, target_type=elbv2.TargetType.LAMBDA)
        # The function as the group's one target. Not CDK's LambdaTarget: it grants the invoke without a
        # source ARN (and cannot for an imported function, whose permission comes from above).
        group.node.default_child.add_property_override("Targets", [{"Id": function_arn}])
        group.node.add_dependency(self.invoke_permission)
        return group

    def _weigh(self, rule: elbv2.ApplicationListenerRule, service_groups: Sequence[elbv2.IApplicationTargetGroup],
               percent: int) -> None:
        """The rule's forward action, written into the template: the live group gets ``percent``, any
        alternate 0, the legacy function the rest. Set at the resource so the route's own action (the
        service's groups, which ECS registers with) stays as RegionalIngress built it."""
        groups = [(group, percent if i == 0 else 0) for i, group in enumerate(service_groups)]
        groups.append((self.target_group, 100 - percent))
        rule.node.default_child.add_property_override("Actions", [{
            "Type": "forward",
            "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": g.target_group_arn, "Weight": w} for g, w in groups]},
        }])

    def _function(self, name: str, rule: elbv2.ApplicationListenerRule,
                  service_groups: Sequence[elbv2.IApplicationTargetGroup], log_group: logs.ILogGroup,
                  function_name: str | None) -> lambda_.Function:
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"Applies {name}'s migration flag to its load balancer rule")
        function = lambda_.Function(
            self, "Function", function_name=function_name, runtime=RUNTIME, architecture=ARCHITECTURE, role=self.role,
            code=lambda_.Code.from_asset(str(FUNCTION_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler", timeout=cdk.Duration.seconds(30), memory_size=128, log_group=log_group,
            # Failed runs (the rule could not be written) retry twice, then land in the same queue as
            # undeliverable events, whose alarm an operator answers.
            dead_letter_queue=self.dead_letter_queue, retry_attempts=2,
            environment={
                "PARAMETER_NAME": self.parameter.parameter_name,
                "RULE_ARN": rule.listener_rule_arn,
                "LEGACY_TARGET_GROUP_ARN": self.target_group.target_group_arn,
                "SERVICE_TARGET_GROUP_ARNS": cdk.Fn.join(",", [group.target_group_arn for group in service_groups]),
            },
            description=f"Sets {name}'s load balancer weights between the service and the legacy function",
        )
        log_group.grant_write(self.role)
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[self.parameter.parameter_arn]))
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=["elasticloadbalancing:ModifyRule"], resources=[rule.listener_rule_arn]))
        # Describe calls take no resource-level permissions in Elastic Load Balancing.
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetHealth"], resources=["*"]))
        return function

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "Elastic Load Balancing's DescribeRules and DescribeTargetHealth support no resource-level permissions; the "
            "role's only write, ModifyRule, is scoped to the one listener rule",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            self.role,
            "CDK writes the function's grants (its parameter, rule, log group and dead-letter queue) into the role's own "
            "inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_nag(
            self.function,
            "the function runs once per flag change or deployment end; reserving concurrency would only take capacity "
            "from the account's unreserved pool and protect nothing",
            "NIST.800.53.R5-LambdaConcurrency",
        )
        acknowledge_nag(
            self.function,
            "the function only calls the SSM and Elastic Load Balancing APIs and reaches nothing inside a VPC; attaching "
            "it to one would add ENIs and a NAT dependency for no isolation gained",
            "NIST.800.53.R5-LambdaInsideVPC",
        )
        skip_checkov(self.function.node.default_child, {
            "CKV_AWS_115": "The function runs once per flag change or deployment end; reserved concurrency would protect nothing",
            "CKV_AWS_117": "The function only calls the SSM and Elastic Load Balancing APIs and needs no network path into the VPC",
            "CKV_AWS_173": "The environment holds a parameter name and ARNs, nothing secret; a customer key for it would protect nothing",
        })
        skip_cfn_lint(self.function.node.default_child, {
            "W3005": "CDK writes a DependsOn on the function's role beside the one on the role's policy, which the function needs first"})
