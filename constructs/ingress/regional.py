"""One region's entry point: an internal Application Load Balancer that routes URL paths to services."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov

from .log_bucket import log_destination_bucket

NOT_FOUND_BODY = json.dumps({"error": "not_found", "message": "no service at this path"})


@dataclass(frozen=True)
class IngressRoute:
    """One service behind the load balancer: requests to ``path`` and ``path/*`` go to it."""

    name: str
    path: str  # e.g. /api/auth
    port: int  # the service's container port
    health_check_path: str  # readiness: the load balancer sends traffic only to ready tasks
    # How long a leaving task keeps serving in-flight requests. ECS deregisters a task from the
    # target group, waits this long, then sends SIGTERM; keep it within the app's stop timeout.
    deregistration_delay_seconds: int
    # The route's listener rule priority (1-50000), unique. Keep it when other routes come and go: ELBv2 refuses a
    # priority that another rule still holds, and CloudFormation deletes the old rules only after the update.
    priority: int
    # How the load balancer talks to the tasks: HTTPS when a sidecar takes only TLS on the app port
    # (App Mesh's Envoy); the load balancer does not verify the certificate.
    protocol: str = "HTTP"

    def __post_init__(self) -> None:
        if self.protocol not in ("HTTP", "HTTPS"):
            raise ValueError(f"protocol={self.protocol!r} is invalid: use HTTP or HTTPS")
        if not self.path.startswith("/") or self.path.endswith("/"):
            raise ValueError(f"path={self.path!r} is invalid: start with / and do not end with /")
        if not 1 <= self.priority <= 50000:
            raise ValueError(f"priority={self.priority} is invalid: expected 1 to 50000")
        if not 0 <= self.deregistration_delay_seconds <= 3600:
            raise ValueError(f"deregistration_delay_seconds={self.deregistration_delay_seconds} is invalid: expected 0 to 3600")


@dataclass(frozen=True)
class RoutedTargets:
    """What a route created: where ECS registers the service's tasks, and the rule that sends them traffic."""

    target_group: elbv2.ApplicationTargetGroup
    listener_rule: elbv2.ApplicationListenerRule
    # Empty until an ECS canary or linear deployment registers the new revision's tasks in it and
    # shifts the rule's weights; None unless alternate_target_groups.
    alternate_target_group: elbv2.ApplicationTargetGroup | None


class RegionalIngress(Construct):
    """An internal ALB in the VPC's private subnets with one rule and target group per route.

    Without ``certificate`` it listens on HTTP:80 (the edge reaches it through a CloudFront VPC
    origin, inside AWS's network); with one, on HTTPS:443 with a TLS 1.2 and 1.3 policy, and HTTP:80
    redirects to HTTPS. Requests that match no route get 404 with a small JSON body. Its security
    group admits ``origin_peer`` and ``direct_access_peers`` on the listener port only.

    With ``alternate_target_groups`` each route gets a second, empty target group and its rule
    forwards with weights 100/0: what ECS's own canary and linear deployments shift traffic between.

    Attributes: ``load_balancer``, ``security_group``, ``listener`` (the one carrying the routes),
    ``routes`` (route name -> RoutedTargets), ``access_logs_bucket``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        routes: Sequence[IngressRoute],
        origin_peer: ec2.IPeer,
        access_log_days: int,
        deletion_protection: bool,
        certificate: acm.ICertificate | None = None,
        direct_access_peers: Sequence[ec2.IPeer] = (),
        alternate_target_groups: bool = False,
        load_balancer_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not routes:
            raise ValueError("routes=[] is invalid: an ingress needs at least one route")
        paths = [route.path for route in routes]
        if len(set(paths)) != len(paths) or len({r.name for r in routes}) != len(routes) or len({r.priority for r in routes}) != len(routes):
            raise ValueError(f"routes are invalid: names, paths and priorities must be unique, got {[(r.name, r.path, r.priority) for r in routes]}")

        self.access_logs_bucket = log_destination_bucket(
            self, "AccessLogs", days=access_log_days, writer="Elastic Load Balancing",
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            kms_reason="Elastic Load Balancing writes access logs only to buckets encrypted with S3-managed keys "
                       "(SSE-S3); a customer KMS key is not supported for access logs.")
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
            description="Load balancer: admits the edge and named direct callers and reaches only the service targets",
        )
        port = 443 if certificate else 80
        self.security_group.add_ingress_rule(origin_peer, ec2.Port.tcp(port), "from the CloudFront VPC origin")
        for peer in direct_access_peers:
            self.security_group.add_ingress_rule(peer, ec2.Port.tcp(port), "direct regional access")
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self, "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_group=self.security_group,
            load_balancer_name=load_balancer_name,
            drop_invalid_header_fields=True,
            desync_mitigation_mode=elbv2.DesyncMitigationMode.DEFENSIVE,
            # The default, pinned: the services read the caller's address from the entries the proxies append
            # (TRUSTED_PROXY_HOPS, servicekit.forwarded); "preserve" would leave only what the caller wrote.
            xff_header_processing_mode=elbv2.XffHeaderProcessingMode.APPEND,
            deletion_protection=deletion_protection,
        )
        self.load_balancer.log_access_logs(self.access_logs_bucket, prefix="alb")
        acknowledge_nag(
            self.load_balancer,
            "Web requests are filtered where they enter: by the WAF web ACL on the CloudFront distribution when config "
            "ingress.waf is on (prod by default). This internal load balancer admits only CloudFront's origin-facing "
            "addresses and the callers named in direct_access_peers.",
            "NIST.800.53.R5-ALBWAFEnabled",
        )
        if not deletion_protection:
            acknowledge_nag(
                self.load_balancer,
                "Deletion protection is off by the caller's choice (the dev profile, so dev stages can be torn "
                "down); the prod profile turns it on.",
                "NIST.800.53.R5-ELBDeletionProtectionEnabled",
            )

        not_found = elbv2.ListenerAction.fixed_response(404, content_type="application/json", message_body=NOT_FOUND_BODY)
        # Port 80 keeps one construct ID in both modes, so setting or removing a certificate updates that listener
        # in place. Under two IDs CloudFormation would create the new one while the old one still held port 80
        # (DuplicateListener). "Http" is the ID the default mode has always had.
        http = self.load_balancer.add_listener(
            "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=False,
            default_action=elbv2.ListenerAction.redirect(port="443", protocol="HTTPS", permanent=True) if certificate else not_found,
        )
        if certificate:
            self.listener = self.load_balancer.add_listener(
                "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, certificates=[certificate],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS, default_action=not_found, open=False,
            )
            acknowledge_nag(
                http,
                "Redirect-only listener: it answers every request with a redirect to HTTPS:443 and carries no data.",
                "NIST.800.53.R5-ELBv2ACMCertificateRequired",
            )
        else:
            self.listener = http
            acknowledge_nag(
                self.listener,
                "Internal load balancer without a domain, so without a certificate: only the CloudFront VPC origin "
                "reaches it, over AWS's network inside the VPC; viewers use HTTPS to CloudFront. Set config domain "
                "for HTTPS on this leg too.",
                "NIST.800.53.R5-ALBHttpToHttpsRedirection", "NIST.800.53.R5-ELBv2ACMCertificateRequired",
            )
            skip_checkov(self.listener.node.default_child, {
                "CKV_AWS_2": "internal listener without a domain: only the CloudFront VPC origin reaches it; set config domain for HTTPS",
                "CKV_AWS_103": "plain HTTP listener (no TLS to configure) without a domain; set config domain for HTTPS with TLS 1.2 and 1.3",
            })

        self.routes: dict[str, RoutedTargets] = {}
        for route in routes:
            target_group = self._target_group(f"{route.name}-targets", vpc, route)
            alternate = self._target_group(f"{route.name}-alternate-targets", vpc, route) if alternate_target_groups else None
            action = (elbv2.ListenerAction.weighted_forward([
                elbv2.WeightedTargetGroup(target_group=target_group, weight=100),
                elbv2.WeightedTargetGroup(target_group=alternate, weight=0),
            ]) if alternate else elbv2.ListenerAction.forward([target_group]))
            rule = elbv2.ApplicationListenerRule(
                self, f"{route.name}-route",
                listener=self.listener,
                priority=route.priority,
                conditions=[elbv2.ListenerCondition.path_patterns([route.path, f"{route.path}/*"])],
                action=action,
            )
            # A route's groups and rule are its service's; the load balancer and listener are every route's.
            for owned in (target_group, alternate, rule):
                if owned is not None:
                    cdk.Tags.of(owned).add("service", route.name)
            self.routes[route.name] = RoutedTargets(target_group=target_group, listener_rule=rule, alternate_target_group=alternate)

    def _target_group(self, construct_id: str, vpc: ec2.IVpc, route: IngressRoute) -> elbv2.ApplicationTargetGroup:
        return elbv2.ApplicationTargetGroup(
            self, construct_id,
            vpc=vpc,
            port=route.port,
            protocol=elbv2.ApplicationProtocol[route.protocol],
            target_type=elbv2.TargetType.IP,
            deregistration_delay=cdk.Duration.seconds(route.deregistration_delay_seconds),
            health_check=elbv2.HealthCheck(
                path=route.health_check_path, healthy_http_codes="200", protocol=elbv2.Protocol[route.protocol],
                interval=cdk.Duration.seconds(10), timeout=cdk.Duration.seconds(5),
                healthy_threshold_count=2, unhealthy_threshold_count=3,
            ),
        )
