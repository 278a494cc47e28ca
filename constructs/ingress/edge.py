"""The global entry point: one CloudFront distribution in front of every region's internal load balancer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs.fingerprint import fingerprint

from constructs.compliance import acknowledge_nag, skip_checkov

from .log_bucket import log_destination_bucket

# W3C trace context and baggage: the edge does not pass a viewer's on (see the origin request policy).
VIEWER_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
_SELECT_API_ORIGIN = Path(__file__).parent / "functions" / "select_api_origin.js"
API_PATH_PATTERN = "/api/*"


@dataclass(frozen=True)
class RegionalOrigin:
    """One region's load balancer as the distribution reaches it, through a CloudFront VPC origin."""

    region: str
    load_balancer_arn: str
    # The name CloudFront connects to and sends as Host: the load balancer's DNS name, or with a
    # domain the regional name its certificate covers.
    domain_name: str
    https: bool  # True when the load balancer listens on HTTPS (domain mode)
    # Which load balancer load_balancer_arn names: raise it when that one is replaced. The ARN is a token the
    # construct cannot compare, and CloudFront cannot point a VPC origin in use at another one (see _vpc_origin_key).
    generation: int = 1


def _vpc_origin_key(origin: RegionalOrigin, endpoint: dict, tags: dict[str, str]) -> str:
    """8 hex digits that change with everything a VPC origin holds. CloudFront refuses UpdateVpcOrigin, tags
    included, while a distribution uses the origin (409, "currently associated with one or more distributions"), and
    the resource has no create-only properties, so CloudFormation would update it in place and fail. Under a new
    construct ID (and name) CloudFormation creates the new origin, repoints the distribution, then deletes the old one."""
    arn = None if cdk.Token.is_unresolved(origin.load_balancer_arn) else origin.load_balancer_arn
    held = {"arn": arn, "generation": origin.generation, "endpoint": endpoint, "tags": tags}
    return fingerprint(held, 8)


class EdgeDistribution(Construct):
    """A CloudFront distribution whose origins are the regions' internal load balancers.

    * Default behavior: an origin group, primary region first, that fails over to the next
      region on ``failover_status_codes`` and on connection errors (GET, HEAD, OPTIONS).
    * ``/api/*``: every method, no caching, every viewer header but Host and the trace context
      (``VIEWER_TRACE_HEADERS``) forwarded (so ``Authorization`` and ``X-Correlation-Id`` reach the services). Origin
      groups cannot carry POST, so a CloudFront Function picks the region from the key
      ``active_region`` of the distribution's KeyValueStore (default: the primary).
    * Viewers: HTTPS only (``/api/*`` refuses HTTP with 403, other paths redirect it), security
      headers on every response, standard logs to an S3 bucket that expires them after ``log_days``.
    * VPC origins: one per region, under a construct ID and name that change with all they hold
      (``_vpc_origin_key``), so a change replaces the origin instead of updating it in use.

    Attributes: ``distribution``, ``key_value_store``, ``select_api_origin`` (the /api/* function), ``vpc_origins`` (region -> CfnVpcOrigin),
    ``log_bucket``, ``response_headers_policy``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        origins_by_priority: Sequence[RegionalOrigin],
        failover_status_codes: Sequence[int],
        price_class: cloudfront.PriceClass,
        log_days: int,
        web_acl_arn: str | None = None,
        certificate: acm.ICertificate | None = None,
        domain_names: Sequence[str] = (),
        comment: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if len(origins_by_priority) != 2:
            raise ValueError(f"origins_by_priority has {len(origins_by_priority)} origin(s): an origin group fails over "
                             "between exactly two (primary, then secondary)")
        if bool(certificate) != bool(domain_names):
            raise ValueError("certificate and domain_names go together: give both for a custom domain, or neither")
        if not failover_status_codes:
            raise ValueError("failover_status_codes=[] is invalid: name the origin answers that fail over")

        self.vpc_origins: dict[str, cloudfront.CfnVpcOrigin] = {}
        imported: dict[str, tuple[cloudfront.IVpcOrigin, str]] = {}
        # Fixed here, not by the stage's Tags aspects: CloudFront cannot retag a VPC origin in use either.
        tags = cdk.Stack.of(self).tags.tag_values()
        for origin in origins_by_priority:
            endpoint = {"http_port": 80, "https_port": 443, "origin_protocol_policy": "https-only" if origin.https else "http-only",
                        "origin_ssl_protocols": ["TLSv1.2"]}
            key = _vpc_origin_key(origin, endpoint, tags)
            vpc_origin = cloudfront.CfnVpcOrigin(
                self, f"VpcOrigin-{origin.region}-{key}",
                vpc_origin_endpoint_config=cloudfront.CfnVpcOrigin.VpcOriginEndpointConfigProperty(
                    arn=origin.load_balancer_arn,
                    name=f"{cdk.Names.unique_id(self)[-40:]}-{origin.region}-{key}"[-64:],
                    **endpoint,
                ),
            )
            if tags:
                vpc_origin.add_property_override("Tags", [{"Key": k, "Value": v} for k, v in sorted(tags.items())])
            else:
                vpc_origin.add_property_deletion_override("Tags")
            self.vpc_origins[origin.region] = vpc_origin
            imported[origin.region] = (cloudfront.VpcOrigin.from_vpc_origin_attributes(
                self, f"Imported-{origin.region}", vpc_origin_id=vpc_origin.attr_id, domain_name=origin.domain_name),
                origin.domain_name)

        def regional(region: str, origin_id: str) -> cloudfront.IOrigin:
            vpc_origin, domain_name = imported[region]
            return origins.VpcOrigin.with_vpc_origin(vpc_origin, domain_name=domain_name, origin_id=origin_id,
                                                     read_timeout=cdk.Duration.seconds(30))

        primary, *others = [o.region for o in origins_by_priority]

        self.response_headers_policy = cloudfront.ResponseHeadersPolicy(
            self, "SecurityHeaders",
            comment="Security headers on every response",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=cdk.Duration.days(365), include_subdomains=True, preload=False, override=True),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(frame_option=cloudfront.HeadersFrameOption.DENY, override=True),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True),
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy="default-src 'none'; frame-ancestors 'none'", override=True),
                xss_protection=cloudfront.ResponseHeadersXSSProtection(protection=True, mode_block=True, override=True),
            ),
        )
        self.key_value_store = cloudfront.KeyValueStore(self, "Switches", comment="active_region: where /api/* goes")
        self.select_api_origin = select_api_origin = cloudfront.Function(
            self, "SelectApiOrigin",
            comment="Sends /api/* to the region named by active_region",
            code=cloudfront.FunctionCode.from_inline(
                _SELECT_API_ORIGIN.read_text()
                .replace("'__PRIMARY_REGION__'", json.dumps(primary))
                .replace("__KNOWN_REGIONS__", json.dumps([o.region for o in origins_by_priority]))
            ),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            key_value_store=self.key_value_store,
        )

        # CloudFront standard logs are delivered through bucket ACLs, which need object writer ownership.
        self.log_bucket = log_destination_bucket(
            self, "Logs", days=log_days, writer="CloudFront", object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            kms_reason="Standard logs hold request metadata, no secrets, and are encrypted at rest with S3-managed keys; "
                       "a customer KMS key would have to admit CloudFront's log delivery to every object for no gain.")
        viewer_requests = cloudfront.OriginRequestPolicy(
            self, "ViewerRequests",
            comment="Every viewer header but Host and the trace context; all query strings and cookies",
            # Caching is off, so Authorization may go on. Host stays the origin's name: the load balancer's
            # certificate (domain mode) is for that name. A viewer's trace context would decide the services'
            # sampling for the whole call tree (they sample by parent), so anyone could make X-Ray record all
            # their requests: each trace starts at the services instead.
            header_behavior=cloudfront.OriginRequestHeaderBehavior.deny_list("host", *VIEWER_TRACE_HEADERS),
            query_string_behavior=cloudfront.OriginRequestQueryStringBehavior.all(),
            cookie_behavior=cloudfront.OriginRequestCookieBehavior.all(),
        )
        no_cache = {
            "cache_policy": cloudfront.CachePolicy.CACHING_DISABLED,
            "origin_request_policy": viewer_requests,
            "response_headers_policy": self.response_headers_policy,
            # CloudFront compresses only what a caching policy lets it; the services compress themselves.
            "compress": False,
        }
        self.distribution = cloudfront.Distribution(
            self, "Distribution",
            comment=comment,
            default_behavior=cloudfront.BehaviorOptions(
                # Origin IDs are the region names: what the API function selects by.
                origin=origins.OriginGroup(
                    primary_origin=regional(primary, primary), fallback_origin=regional(others[0], others[0]),
                    fallback_status_codes=list(failover_status_codes),
                ),
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD_OPTIONS,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                **no_cache,
            ),
            additional_behaviors={API_PATH_PATTERN: cloudfront.BehaviorOptions(
                origin=regional(primary, f"api-{primary}"),
                allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                # Refused (403), not redirected: a request to http:// has already sent its credentials and body in
                # cleartext, and many clients follow a 301 with a GET.
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                function_associations=[cloudfront.FunctionAssociation(
                    function=select_api_origin, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST)],
                **no_cache,
            )},
            price_class=price_class,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            # Only a custom certificate has a TLS floor of our choosing; the default one's is fixed.
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None,
            certificate=certificate,
            domain_names=list(domain_names) or None,
            web_acl_id=web_acl_arn,
            enable_logging=True,
            log_bucket=self.log_bucket,
            log_file_prefix="cloudfront/",
        )
        self._acknowledge(certificate is not None, web_acl_arn is not None)

    def _acknowledge(self, has_certificate: bool, has_web_acl: bool) -> None:
        acknowledge_nag(
            self.distribution,
            "A global API: viewers may come from any country, so the distribution has no geo restriction; WAF "
            "rules filter abuse instead.",
            "AwsSolutions-CFR1",
        )
        if not has_certificate:
            acknowledge_nag(
                self.distribution,
                "No domain configured, so viewers use CloudFront's default *.cloudfront.net certificate, whose "
                "security policy CloudFront fixes at TLSv1; set config domain to enforce TLSv1.2_2021.",
                "AwsSolutions-CFR4",
            )
            skip_checkov(self.distribution.node.default_child, {
                "CKV_AWS_174": "no domain configured: the default *.cloudfront.net certificate's TLS floor is set by CloudFront; config domain enforces TLSv1.2_2021",
            })
        if not has_web_acl:
            acknowledge_nag(
                self.distribution,
                "WAF is off by configuration (ingress.waf: auto keeps it off in dev to save its monthly cost); "
                "prod turns it on.",
                "AwsSolutions-CFR2",
            )
            skip_checkov(self.distribution.node.default_child, {
                "CKV_AWS_68": "WAF is off by configuration (ingress.waf auto keeps it off in dev); prod turns it on",
            })
