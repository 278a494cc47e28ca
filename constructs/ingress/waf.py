"""The web ACL in front of the distribution: AWS managed rules and a per-IP rate limit, with logs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

# AWS managed rule groups: OWASP-style common attacks, and request patterns known to be malicious.
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet")
# The per-IP rate limit: the web ACL's first rule.
RATE_LIMIT_RULE = "RateLimitPerIp"
# Request headers whose values WAF writes to its logs as REDACTED: the callers' credentials.
REDACTED_HEADERS = ("authorization", "cookie")
# Rules that only count: the common set blocks request bodies over 8 KB, which API calls may send;
# the services limit their own body sizes.
_COUNT_ONLY = {
    "AWSManagedRulesCommonRuleSet": [wafv2.CfnWebACL.RuleActionOverrideProperty(
        name="SizeRestrictions_BODY", action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}))],
}


class EdgeWebAcl(Construct):
    """A CLOUDFRONT-scope web ACL (create it in us-east-1): allow by default; first block any IP above
    ``rate_limit_per_5_minutes`` requests, then what ``MANAGED_RULE_GROUPS`` match.

    Every request is logged to a KMS-encrypted CloudWatch log group named ``aws-waf-logs-<name>``
    (WAF requires the prefix). Attributes: ``web_acl``, ``log_group``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name: str, rate_limit_per_5_minutes: int,
                 log_encryption_key: kms.IKey, log_retention: logs.RetentionDays, retain_logs: bool = True) -> None:
        super().__init__(scope, construct_id)
        if not 10 <= rate_limit_per_5_minutes <= 2_000_000_000:
            raise ValueError(f"rate_limit_per_5_minutes={rate_limit_per_5_minutes} is invalid: WAF allows 10 to 2000000000")
        stack = cdk.Stack.of(self)
        if not cdk.Token.is_unresolved(stack.region) and stack.region != "us-east-1":
            raise ValueError(f"EdgeWebAcl is in {stack.region}: CloudFront web ACLs must be created in us-east-1")

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True)

        # The rate rule first: it counts every request of an IP, those the managed groups would block too, and a
        # flood over the limit is blocked before the managed groups inspect it. Under the limit it does not match,
        # so the request goes on to the next rule (only a matching Allow or Block ends the evaluation):
        # https://docs.aws.amazon.com/waf/latest/developerguide/web-acl-rule-actions.html and
        # https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-type-rate-based-request-limiting.html
        rules = [wafv2.CfnWebACL.RuleProperty(
            name=RATE_LIMIT_RULE, priority=0,
            statement=wafv2.CfnWebACL.StatementProperty(rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=rate_limit_per_5_minutes, aggregate_key_type="IP", evaluation_window_sec=300)),
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            visibility_config=visibility(RATE_LIMIT_RULE),
        )]
        rules.extend(
            wafv2.CfnWebACL.RuleProperty(
                name=group, priority=priority,
                statement=wafv2.CfnWebACL.StatementProperty(managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=group, rule_action_overrides=_COUNT_ONLY.get(group))),
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                visibility_config=visibility(group),
            )
            for priority, group in enumerate(MANAGED_RULE_GROUPS, start=len(rules))
        )
        self.web_acl = wafv2.CfnWebACL(
            self, "WebAcl",
            name=name, scope="CLOUDFRONT",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            visibility_config=visibility(name),
        )
        self.log_group = logs.LogGroup(
            self, "Logs", log_group_name=f"aws-waf-logs-{name}", encryption_key=log_encryption_key,
            # The name is fixed (WAF wants the prefix), so a kept log group blocks recreating the stack. The edge stack's
            # region-failover function keeps one too (/aws/lambda/<prefix>-region-failover, constructs/operations/
            # region_failover.py): in prod a re-created edge stack fails on either existing name until it is deleted.
            retention=log_retention, removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        wafv2.CfnLoggingConfiguration(
            self, "Logging",
            resource_arn=self.web_acl.attr_arn,
            # WAF wants the log group's ARN without the ":*" that CloudFormation's Arn attribute ends in.
            log_destination_configs=[stack.format_arn(service="logs", resource="log-group", resource_name=self.log_group.log_group_name,
                                                      arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)],
            # WAF logs every request's headers: keep the callers' credentials (bearer tokens, cookies) out of
            # them, or anyone who can read the log group could replay a live token. Header names in lower case.
            redacted_fields=[wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                             for header in REDACTED_HEADERS],
        )
