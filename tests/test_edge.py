"""The edge stage: CloudFront in front of both regions' internal load balancers, WAF, and domain mode."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

REGIONS = ("eu-central-1", "eu-west-1")
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # AWS managed cache policy


def _edge(assembly):
    return assembly.template("mf-edge/edge")["Resources"]


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


def _distribution(assembly):
    (distribution,) = _of_type(_edge(assembly), "AWS::CloudFront::Distribution").values()
    return distribution["Properties"]["DistributionConfig"]


def test_edge_is_a_stage_of_its_own_in_us_east_1_after_its_boundary(dev):
    artifacts = {path: artifact for path, artifact in dev.stack_artifacts.items() if path.startswith("mf-edge/")}
    assert sorted(artifacts) == ["mf-edge/baseline", "mf-edge/edge"]
    assert {a["environment"].split("/")[-1] for a in artifacts.values()} == {"us-east-1"}
    assert any("baseline" in dependency for dependency in artifacts["mf-edge/edge"]["dependencies"])
    (boundary,) = _of_type(dev.template("mf-edge/baseline")["Resources"], "AWS::IAM::ManagedPolicy").values()
    allow = next(s for s in boundary["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow")
    assert allow["Condition"] == {"StringEquals": {"aws:RequestedRegion": ["eu-central-1", "eu-west-1", "us-east-1"]}}
    for role in _of_type(_edge(dev), "AWS::IAM::Role").values():
        assert "mf-edge-permissions-boundary" in json.dumps(role["Properties"]["PermissionsBoundary"])


def test_each_region_load_balancer_is_read_from_its_own_region_with_a_grant_for_that_parameter_only(dev):
    readers = _of_type(_edge(dev), "Custom::AWS")
    calls = {}
    for logical_id, reader in readers.items():
        call = json.loads(reader["Properties"]["Create"])
        assert reader["Properties"]["Update"] == reader["Properties"]["Create"]  # read again on every change
        calls[(call["region"], call["parameters"]["Name"])] = logical_id
    assert set(calls) == {(region, f"/mf/ingress/load-balancer-{name}") for region in REGIONS for name in ("arn", "dns-name")}
    # Besides the readers' grants, the edge has one role policy: the region-failover function's (tests/test_region_failover.py).
    failover_roles = [{"Ref": k} for k, r in _of_type(_edge(dev), "AWS::IAM::Role").items() if r["Properties"].get("RoleName") == "mf-region-failover"]
    policies = [p["Properties"] for p in _of_type(_edge(dev), "AWS::IAM::Policy").values()]
    grants = [p["PolicyDocument"]["Statement"] for p in policies if p["Roles"] != failover_roles]
    assert len(failover_roles) == 1 and len(grants) == len(policies) - 1 == 4
    for statements in grants:
        (statement,) = statements
        assert statement["Action"] == "ssm:GetParameter"
        resource = json.dumps(statement["Resource"])
        assert ":parameter/mf/ingress/load-balancer-" in resource and "*" not in resource


@pytest.mark.parametrize("variant, protocol", [("dev", "http-only"), ("domain", "https-only")])
def test_one_vpc_origin_per_region_load_balancer(dev, domain, variant, protocol):
    resources = _edge({"dev": dev, "domain": domain}[variant])
    vpc_origins = _of_type(resources, "AWS::CloudFront::VpcOrigin")
    assert len(vpc_origins) == 2
    for vpc_origin in vpc_origins.values():
        config = vpc_origin["Properties"]["VpcOriginEndpointConfig"]
        assert config["OriginProtocolPolicy"] == protocol and config["OriginSSLProtocols"] == ["TLSv1.2"]
        reader = resources[config["Arn"]["Fn::GetAtt"][0]]
        assert reader["Type"] == "Custom::AWS" and "load-balancer-arn" in json.dumps(reader["Properties"])


def test_default_behavior_fails_over_from_the_primary_region_on_5xx(dev):
    config = _distribution(dev)
    (group,) = config["OriginGroups"]["Items"]
    assert [m["OriginId"] for m in group["Members"]["Items"]] == ["eu-central-1", "eu-west-1"]
    assert group["FailoverCriteria"]["StatusCodes"]["Items"] == [500, 502, 503, 504]
    default = config["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == group["Id"]
    # CloudFront fails over only GET, HEAD and OPTIONS, and rejects other methods on an origin group.
    assert default["AllowedMethods"] == ["GET", "HEAD", "OPTIONS"]
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"


def test_api_takes_every_method_uncached_with_viewer_headers_and_a_region_switch(dev):
    config = _distribution(dev)
    (api,) = config["CacheBehaviors"]
    assert api["PathPattern"] == "/api/*"
    assert set(api["AllowedMethods"]) == {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
    assert api["CachePolicyId"] == CACHING_DISABLED
    assert api["OriginRequestPolicyId"] == _viewer_requests_policy_ref(dev)
    # Refused, not redirected: a POST to http:// has sent its credentials in cleartext before any 301.
    assert api["ViewerProtocolPolicy"] == "https-only"
    assert api["TargetOriginId"] == "api-eu-central-1"
    assert {o["Id"] for o in config["Origins"]} == {"eu-central-1", "eu-west-1", "api-eu-central-1"}
    (association,) = api["FunctionAssociations"]
    assert association["EventType"] == "viewer-request"
    function = _edge(dev)[association["FunctionARN"]["Fn::GetAtt"][0]]["Properties"]
    assert function["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    (store,) = function["FunctionConfig"]["KeyValueStoreAssociations"]
    assert store["KeyValueStoreARN"]["Fn::GetAtt"][0].startswith("EdgeSwitches")


def _run_api_function(dev, active_region, *, get_fails=False, exists_fails=False):
    """Run the synthesized CloudFront Function in Node with a stand-in for the 'cloudfront' module: a store that holds
    ``active_region`` (None: no key) and whose get() or exists() may fail. As documented
    (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/functions-custom-methods.html), get() rejects
    a missing key and exists() resolves to a boolean."""
    resources = _edge(dev)
    (function,) = _of_type(resources, "AWS::CloudFront::Function").values()
    code = function["Properties"]["FunctionCode"]
    assert "import cf from 'cloudfront';" in code
    stub = f"""
const selected = [];
const logged = [];
const console = {{ log: (message) => logged.push(String(message)) }};
const value = {json.dumps(active_region)};
const cf = {{
  kvs: () => ({{
    get: async (key) => {{
      if ({json.dumps(get_fails)}) throw new Error('read timed out');
      if (key !== 'active_region' || value === null) throw new Error('Key not found');
      return value;
    }},
    exists: async (key) => {{
      if ({json.dumps(exists_fails)}) throw new Error('store unavailable');
      return key === 'active_region' && value !== null;
    }},
  }}),
  selectRequestOriginById: (id) => selected.push(id),
}};
"""
    program = stub + code.replace("import cf from 'cloudfront';", "") + """
handler({ request: { uri: '/api/auth/login', method: 'POST' } }).then((request) => {
  globalThis.console.log(JSON.stringify({ selected, uri: request.uri, logged }));
});
"""
    node = shutil.which("node")
    assert node, "node is missing from PATH: run `make test`, which puts the virtualenv's Node 24 first"
    result = subprocess.run([node, "--input-type=module", "-e", program], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("active_region, selected, logged", [
    (None, [], []),  # no key: the behavior's own origin, the primary region, and nothing to log
    ("eu-central-1", [], []),
    ("eu-west-1", ["eu-west-1"], []),
    ("eu-moon-1", [], ["active_region: unknown region eu-moon-1, keeping eu-central-1"]),  # a typo sends traffic nowhere else
])
def test_api_region_switch_selects_the_region_the_store_names(dev, active_region, selected, logged):
    assert _run_api_function(dev, active_region) == {"selected": selected, "uri": "/api/auth/login", "logged": logged}


def _viewer_requests_policy_ref(assembly):
    (policy_id,) = _of_type(_edge(assembly), "AWS::CloudFront::OriginRequestPolicy")
    return {"Ref": policy_id}


def test_every_viewer_header_reaches_the_services_but_host_and_the_trace_context(dev):
    """Authorization, Idempotency-Key, X-Correlation-Id ... go on (caching is off); Host stays the origin's name (its
    certificate's, with a domain); a viewer's traceparent would decide the services' sampling (they sample by parent),
    so anyone could make X-Ray record all its requests."""
    (policy,) = _of_type(_edge(dev), "AWS::CloudFront::OriginRequestPolicy").values()
    config = policy["Properties"]["OriginRequestPolicyConfig"]
    assert config["HeadersConfig"] == {"HeaderBehavior": "allExcept", "Headers": ["host", "traceparent", "tracestate", "baggage"]}
    assert (config["QueryStringsConfig"]["QueryStringBehavior"], config["CookiesConfig"]["CookieBehavior"]) == ("all", "all")
    distribution = _distribution(dev)
    behaviors = [distribution["DefaultCacheBehavior"], *distribution["CacheBehaviors"]]
    assert [b["OriginRequestPolicyId"] for b in behaviors] == [_viewer_requests_policy_ref(dev)] * 2


@pytest.mark.parametrize("active_region", ["eu-west-1", None])
@pytest.mark.parametrize("exists_fails", [False, True])
def test_a_failed_store_read_is_logged_and_keeps_the_primary(dev, active_region, exists_fails):
    """A read error is not a missing key: it is logged. It keeps the behavior's own origin (the primary) rather than
    failing the request: the function cannot know where the key points (constructs/ingress README, API function)."""
    result = _run_api_function(dev, active_region, get_fails=True, exists_fails=exists_fails)
    assert result["selected"] == [] and result["uri"] == "/api/auth/login"
    if active_region is None and not exists_fails:
        assert result["logged"] == []  # get() failed because there is no key: the normal state
    else:
        (line,) = result["logged"]
        assert line.startswith("active_region: ") and "keeping eu-central-1" in line and "read timed out" in line


def test_viewers_get_security_headers_and_logs_expire(dev):
    resources = _edge(dev)
    (policy,) = _of_type(resources, "AWS::CloudFront::ResponseHeadersPolicy").values()
    headers = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] == 31536000
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["ContentTypeOptions"]["Override"] is True
    assert "default-src 'none'" in headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]
    config = _distribution(dev)
    bucket_id = config["Logging"]["Bucket"]["Fn::GetAtt"][0]
    bucket = resources[bucket_id]["Properties"]
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 90
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert config["PriceClass"] == "PriceClass_100" and config["HttpVersion"] == "http2and3"


def test_waf_is_off_in_dev_and_on_in_prod_with_managed_rules_a_rate_limit_and_logs(dev, prod):
    assert not _of_type(_edge(dev), "AWS::WAFv2::WebACL") and "WebACLId" not in _distribution(dev)
    resources = _edge(prod)
    ((acl_id, acl),) = _of_type(resources, "AWS::WAFv2::WebACL").items()
    properties = acl["Properties"]
    assert properties["Scope"] == "CLOUDFRONT" and properties["DefaultAction"] == {"Allow": {}}
    rules = {r["Name"]: r for r in properties["Rules"]}
    # The rate limit first: it counts (and, over the limit, blocks) every request before the managed groups see it.
    assert [r["Name"] for r in sorted(properties["Rules"], key=lambda r: r["Priority"])] == [
        "RateLimitPerIp", "AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"]
    assert [r["Priority"] for r in properties["Rules"]] == [0, 1, 2]
    rate = rules["RateLimitPerIp"]
    assert rate["Statement"]["RateBasedStatement"] == {"AggregateKeyType": "IP", "EvaluationWindowSec": 300, "Limit": 1000}
    assert rate["Action"] == {"Block": {}}
    assert _distribution(prod)["WebACLId"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    # API bodies may exceed the common set's 8 KB limit: that rule only counts.
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    (logging,) = _of_type(resources, "AWS::WAFv2::LoggingConfiguration").values()
    assert logging["Properties"]["ResourceArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    # The log records every request's headers: bearer tokens and cookies go in as REDACTED, not replayable.
    assert logging["Properties"]["RedactedFields"] == [{"SingleHeader": {"Name": "authorization"}}, {"SingleHeader": {"Name": "cookie"}}]
    (destination,) = logging["Properties"]["LogDestinationConfigs"]
    (log_group_id, log_group), = [(i, g) for i, g in _of_type(resources, "AWS::Logs::LogGroup").items()
                                  if g["Properties"].get("LogGroupName") == "aws-waf-logs-mf-edge"]
    # The log group's ARN without the ":*" of CloudFormation's Arn attribute, as WAF wants it.
    assert destination == {"Fn::Join": ["", ["arn:aws:logs:us-east-1:111122223333:log-group:", {"Ref": log_group_id}]]}
    assert "KmsKeyId" in log_group["Properties"] and log_group["DeletionPolicy"] == "Retain"


def test_the_api_origin_functions_log_group_is_made_encrypted_and_expiring(dev):
    """CloudFront would create /aws/cloudfront/function/<name> itself (us-east-1), unencrypted and kept for ever."""
    resources = _edge(dev)
    (function,) = _of_type(resources, "AWS::CloudFront::Function").values()
    (group,) = [g for g in _of_type(resources, "AWS::Logs::LogGroup").values()
                if "/aws/cloudfront/function/" in json.dumps(g["Properties"].get("LogGroupName"))]
    assert group["Properties"]["LogGroupName"] == f"/aws/cloudfront/function/{function['Properties']['Name']}"
    assert "KmsKeyId" in group["Properties"] and group["Properties"]["RetentionInDays"] > 0


def _edge_5xx_alarm(resources):
    (alarm,) = [a["Properties"] for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
                if a["Properties"]["AlarmName"] == "mf-cloudfront-5xx-rate"]
    return alarm


@pytest.mark.parametrize("variant", ["dev", "prod", "domain"])
def test_the_edge_alarms_when_viewers_get_5xx_and_notifies_its_topic(request, variant):
    """Default mode has no regional -no-healthy-targets alarm: this is what pages when a region's API is down.
    CloudFront's metrics: us-east-1, AWS/CloudFront, DistributionId and Region=Global, 5xxErrorRate as an Average
    percentage (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/programming-cloudwatch-metrics.html)."""
    assembly = request.getfixturevalue(variant)
    assert assembly.stack_artifacts["mf-edge/edge"]["environment"].endswith("/us-east-1")
    resources = _edge(assembly)
    alarm = _edge_5xx_alarm(resources)
    (distribution_id,) = _of_type(resources, "AWS::CloudFront::Distribution")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/CloudFront", "5xxErrorRate")
    assert sorted(alarm["Dimensions"], key=lambda d: d["Name"]) == [
        {"Name": "DistributionId", "Value": {"Ref": distribution_id}}, {"Name": "Region", "Value": "Global"}]
    assert (alarm["Statistic"], alarm["Unit"], alarm["Period"]) == ("Average", "Percent", 60)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 5)
    assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (3, 5)
    assert alarm["TreatMissingData"] == "notBreaching"  # no requests, no datapoint: not an outage
    (topic_id,) = [i for i, t in _of_type(resources, "AWS::SNS::Topic").items() if t["Properties"]["TopicName"] == "mf-edge-alarms"]
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
    assert alarm["AlarmDescription"].endswith("Runbook: runbooks/region-failover.md")
    outputs = assembly.template("mf-edge/edge")["Outputs"]
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": topic_id}


def test_the_edge_alarm_takes_its_threshold_from_config():
    import aws_cdk as cdk

    from stacks.config import load_config
    from stacks.edge_stack import EdgeStack
    from tests.assembly import cdk_json_context

    config = load_config({**cdk_json_context(), "observability": {"edge_5xx_alarm_percent": 2.5, "edge_5xx_alarm_minutes": 5}})
    app = cdk.App()
    stack = EdgeStack(app, "edge", config=config, env=cdk.Environment(account="111122223333", region="us-east-1"))
    alarm = _edge_5xx_alarm(app.synth().get_stack_by_name(stack.stack_name).template["Resources"])
    assert (alarm["Threshold"], alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (2.5, 5, 5)
    assert "More than 2.5 % " in alarm["AlarmDescription"]


def test_waf_follows_its_setting_not_the_profile(settings_changes):
    """settings_changes (tests/conftest.py): dev with ingress.waf on (and the next origin generation)."""
    (acl,) = _of_type(_edge(settings_changes), "AWS::WAFv2::WebACL").values()
    assert acl["Properties"]["Scope"] == "CLOUDFRONT"
    (log_group,) = [g for g in _of_type(_edge(settings_changes), "AWS::Logs::LogGroup").values()
                    if g["Properties"].get("LogGroupName") == "aws-waf-logs-mf-edge"]
    assert log_group["DeletionPolicy"] == "Delete"  # dev: a kept, fixed-name log group would block a rebuild


def test_domain_mode_serves_viewers_on_the_domain_with_a_us_east_1_certificate_and_alias_records(domain):
    resources = _edge(domain)
    ((certificate_id, certificate),) = _of_type(resources, "AWS::CertificateManager::Certificate").items()
    assert certificate["Properties"]["DomainName"] == "api.example.com"
    assert certificate["Properties"]["ValidationMethod"] == "DNS"
    config = _distribution(domain)
    assert config["Aliases"] == ["api.example.com"]
    assert config["ViewerCertificate"] == {
        "AcmCertificateArn": {"Ref": certificate_id}, "MinimumProtocolVersion": "TLSv1.2_2021", "SslSupportMethod": "sni-only"}
    records = _of_type(resources, "AWS::Route53::RecordSet")
    assert sorted(r["Properties"]["Type"] for r in records.values()) == ["A", "AAAA"]
    for record in records.values():
        assert record["Properties"]["Name"] == "api.example.com."
        assert record["Properties"]["HostedZoneId"] == "Z0123456789ABCDEFGHIJ"
    # CloudFront connects to each region by the name the regional certificate covers.
    assert {o["DomainName"] for o in config["Origins"]} == {f"{region}.api.example.com" for region in REGIONS}


def test_a_new_origin_generation_makes_the_edge_read_the_regions_again(dev, settings_changes):
    """settings_changes (tests/conftest.py): dev with ingress.origin_generation 2 (and the web ACL on, which reads no region)."""
    def reader_calls(assembly):
        return sorted(r["Properties"]["Update"] for r in _of_type(_edge(assembly), "Custom::AWS").values())

    before, after = reader_calls(dev), reader_calls(settings_changes)
    assert len(before) == len(after) == 4 and not set(before) & set(after)  # CloudFormation updates, so reads, all four


def test_a_new_origin_generation_replaces_the_vpc_origins_under_new_names(dev, settings_changes):
    """CloudFront refuses to update a VPC origin a distribution uses, so the origins of a replaced load balancer must be
    new ones (new logical IDs and names) that the distribution is repointed to, not the old ones updated."""
    def vpc_origins(assembly):
        origins = _of_type(_edge(assembly), "AWS::CloudFront::VpcOrigin")
        used = {o["VpcOriginConfig"]["VpcOriginId"]["Fn::GetAtt"][0] for o in _distribution(assembly)["Origins"]}
        assert used == set(origins)
        return set(origins), {o["Properties"]["VpcOriginEndpointConfig"]["Name"] for o in origins.values()}

    (before, before_names), (after, after_names) = vpc_origins(dev), vpc_origins(settings_changes)
    assert len(before) == len(after) == 2 and not before & after and not before_names & after_names


def test_no_edge_without_two_regions(one_region):
    """one_region (tests/conftest.py): eu-west-1 alone."""
    assert not any(path.startswith("mf-edge/") for path in one_region.templates)
