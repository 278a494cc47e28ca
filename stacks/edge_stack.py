"""Edge stack (us-east-1): the CloudFront distribution, its web ACL and, with a domain, its certificate and records."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import custom_resources as cr
from constructs import Construct

from constructs.alarm_notifications import AlarmTopic
from constructs.compliance import acknowledge_nag
from constructs.encryption import LogsEncryptionKey
from constructs.ingress import EdgeDistribution, EdgeWebAcl, RegionalOrigin
from constructs.operations import RegionFailoverAutomation

from .config import EDGE_5XX_ALARM_WINDOW_MINUTES, FoundationConfig
from .defaults import profile_defaults
from .services_stack import ingress_parameter_name

EDGE_REGION = "us-east-1"  # CloudFront certificates and web ACLs live here


class EdgeStack(cdk.Stack):
    """CloudFront in front of every region's internal load balancer.

    The regions' stacks publish their load balancer's ARN and DNS name as SSM parameters
    (``/<prefix>/ingress/...``) in their own region; this stack reads them at deploy time with a
    custom resource per value. That is the only cross-region wiring, and it is why the edge is a
    stage of its own, deployed after the regions: ``cdk deploy '<prefix>-edge/*'``. ``failover`` is the
    Automation document `<prefix>-region-failover`, and the function of that name it invokes, that flip the API
    region switch (runbooks/region-failover.md). ``edge_5xx_alarm`` (`<prefix>-cloudfront-5xx-rate`) watches what viewers
    get and notifies ``alarm_topic`` (`<prefix>-edge-alarms`, this stack's own: alarms notify a topic of their
    region, and no regional stage need be in us-east-1) on ALARM and OK.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        defaults = profile_defaults(config.profile)
        domain = config.domain
        self.logs_key = LogsEncryptionKey(self, "LogsKey", alias=config.platform_key_alias("edge-logs")).key
        # The log group of CDK's custom resource handler that reads the regions (one per stack).
        self.reader_logs = logs.LogGroup(self, "ReaderLogs", encryption_key=self.logs_key,
                                         retention=logs.RetentionDays[defaults.log_retention],
                                         removal_policy=cdk.RemovalPolicy.DESTROY)
        ordered = [config.primary_region, *config.other_regions(config.primary_region)]
        origins = [
            RegionalOrigin(
                region=region,
                load_balancer_arn=self._read(region, "load-balancer-arn"),
                domain_name=domain.regional_name(region) if domain else self._read(region, "load-balancer-dns-name"),
                https=domain is not None,
                # Raised when a load balancer was replaced: the readers read again, the VPC origins are replaced.
                generation=config.ingress.origin_generation,
            )
            for region in ordered
        ]

        self.web_acl = None
        if config.waf_enabled:
            self.web_acl = EdgeWebAcl(
                self, "WebAcl", name=f"{config.prefix}-edge", rate_limit_per_5_minutes=config.ingress.waf_rate_limit_per_5_minutes,
                log_encryption_key=self.logs_key, log_retention=logs.RetentionDays[defaults.log_retention],
                retain_logs=config.is_prod,
            )

        certificate, zone = None, None
        if domain:
            zone = route53.HostedZone.from_hosted_zone_attributes(
                self, "Zone", hosted_zone_id=domain.hosted_zone_id, zone_name=domain.zone_name)
            certificate = acm.Certificate(self, "Certificate", domain_name=domain.edge_name,
                                          validation=acm.CertificateValidation.from_dns(zone))

        self.edge = EdgeDistribution(
            self, "Edge",
            origins_by_priority=origins,
            failover_status_codes=config.ingress.failover_status_codes,
            price_class=cloudfront.PriceClass[config.ingress.price_class.upper().replace("PRICECLASS", "PRICE_CLASS")],
            log_days=config.ingress.access_log_days,
            web_acl_arn=self.web_acl.web_acl.attr_arn if self.web_acl else None,
            certificate=certificate,
            domain_names=[domain.edge_name] if domain else (),
            comment=f"{config.prefix}: {', '.join(ordered)}",
        )
        if zone:
            target = route53.RecordTarget.from_alias(targets.CloudFrontTarget(self.edge.distribution))
            route53.ARecord(self, "AliasV4", zone=zone, record_name=domain.edge_name, target=target)
            route53.AaaaRecord(self, "AliasV6", zone=zone, record_name=domain.edge_name, target=target)

        # CloudFront writes the viewer-request function's console.log lines (a store it cannot read, a value that names
        # no region) here, in us-east-1; made first, the group is encrypted and expires like the stack's others.
        self.function_logs = logs.LogGroup(
            self, "ApiOriginFunctionLogs", log_group_name=f"/aws/cloudfront/function/{self.edge.select_api_origin.function_name}",
            encryption_key=self.logs_key, retention=logs.RetentionDays[defaults.log_retention],
            removal_policy=cdk.RemovalPolicy.DESTROY)

        distribution = self.edge.distribution
        cdk.CfnOutput(self, "DistributionId", value=distribution.distribution_id, description="CloudFront distribution ID")
        cdk.CfnOutput(self, "DistributionDomainName", value=distribution.distribution_domain_name,
                      description="Where viewers reach the app: https://<this>/api/...")
        cdk.CfnOutput(self, "KeyValueStoreArn", value=self.edge.key_value_store.key_value_store_arn,
                      description="The key active_region here picks the region /api/* goes to (runbooks/region-failover.md)")
        self.failover = RegionFailoverAutomation(
            self, "FailoverAutomation", document_name=f"{config.prefix}-region-failover",
            key_value_store_arn=self.edge.key_value_store.key_value_store_arn, regions=ordered,
            function_name=f"{config.prefix}-region-failover", role_name=config.region_failover_role_name,
            log_encryption_key=self.logs_key, log_retention=logs.RetentionDays[defaults.log_retention],
            retain_logs=config.is_prod)

        # Every alarm of the edge notifies this topic (the regions' alarms notify their own <prefix>-alarms).
        self.alarm_topic = AlarmTopic(self, "Alarms", topic_name=f"{config.prefix}-edge-alarms",
                                      emails=config.observability.notify_emails).topic
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn,
                      description="SNS topic of the edge's alarms: subscribe on-call tooling here")
        self.edge_5xx_alarm = self._edge_5xx_alarm()

    def _edge_5xx_alarm(self) -> cloudwatch.Alarm:
        """Viewers get 5xx answers: with a region down, /api/* fails until someone flips the switch, and no regional
        alarm need fire (default mode has no -no-healthy-targets alarms). CloudFront publishes its metrics in us-east-1,
        namespace AWS/CloudFront, dimensions DistributionId and Region=Global, 5xxErrorRate in percent with the Average
        statistic: https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/programming-cloudwatch-metrics.html"""
        observability = self.config.observability
        name = f"{self.config.prefix}-cloudfront-5xx-rate"
        alarm = cloudwatch.Alarm(
            self, "Edge5xxRate", alarm_name=name,
            metric=cloudwatch.Metric(
                namespace="AWS/CloudFront", metric_name="5xxErrorRate",
                dimensions_map={"DistributionId": self.edge.distribution.distribution_id, "Region": "Global"},
                statistic="Average", unit=cloudwatch.Unit.PERCENT, period=cdk.Duration.minutes(1)),
            threshold=observability.edge_5xx_alarm_percent,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=EDGE_5XX_ALARM_WINDOW_MINUTES, datapoints_to_alarm=observability.edge_5xx_alarm_minutes,
            # CloudFront publishes no datapoint in a minute without requests: no traffic is not an outage.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"More than {observability.edge_5xx_alarm_percent:g} % of the CloudFront distribution's answers to "
                              f"viewers were 5xx in {observability.edge_5xx_alarm_minutes} of the last "
                              f"{EDGE_5XX_ALARM_WINDOW_MINUTES} minutes (a region's API down? /api/* does not fail over "
                              "by itself). Runbook: runbooks/region-failover.md",
        )
        action = cloudwatch_actions.SnsAction(self.alarm_topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        return alarm

    def _read(self, region: str, name: str) -> str:
        """One SSM parameter of another region, read when CloudFormation deploys this stack."""
        parameter = ingress_parameter_name(self.config.prefix, name)
        reader = cr.AwsCustomResource(
            self, f"Read-{region}-{name}",
            on_update=cr.AwsSdkCall(
                service="SSM", action="getParameter", parameters={"Name": parameter}, region=region,
                # A new generation changes this call, so CloudFormation runs it again (runbooks/region-failover.md).
                physical_resource_id=cr.PhysicalResourceId.of(f"{region}:{parameter}:{self.config.ingress.origin_generation}"),
                output_paths=["Parameter.Value"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements([iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[self.format_arn(service="ssm", region=region, resource="parameter", resource_name=parameter.lstrip("/"))],
            )]),
            install_latest_aws_sdk=False,
            log_group=self.reader_logs,
        )
        acknowledge_nag(
            reader,
            "CDK writes the custom resource's single ssm:GetParameter grant, on one named parameter, as an inline "
            "policy that lives and dies with the custom resource.",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        return reader.get_response_field("Parameter.Value")
