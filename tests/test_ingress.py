"""The regional ingress: an internal load balancer per region routing /api paths to the services."""

from __future__ import annotations

import json

import pytest

REGIONS = ("eu-central-1", "eu-west-1")
ROUTES = {"auth": "/api/auth", "persona": "/api/persona", "vc-start": "/api/vc"}
ORIGIN_FACING = "com.amazonaws.global.cloudfront.origin-facing"


def _services(assembly, region):
    return assembly.template(f"mf-{region}/services")["Resources"]


def _one(resources, resource_type):
    (found,) = [(logical_id, r) for logical_id, r in resources.items() if r["Type"] == resource_type]
    return found


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


def _attributes(load_balancer):
    return {a["Key"]: a["Value"] for a in load_balancer["Properties"]["LoadBalancerAttributes"]}


@pytest.mark.parametrize("region", REGIONS)
def test_each_region_has_one_internal_load_balancer_in_private_subnets(dev, region):
    _, load_balancer = _one(_services(dev, region), "AWS::ElasticLoadBalancingV2::LoadBalancer")
    properties = load_balancer["Properties"]
    assert properties["Scheme"] == "internal" and properties["Type"] == "application"
    assert len(properties["Subnets"]) == 3
    assert all("privateSubnet" in subnet["Fn::GetStackOutput"]["OutputName"] for subnet in properties["Subnets"])


@pytest.mark.parametrize("profile, protected", [("dev", "false"), ("prod", "true")])
def test_load_balancer_drops_invalid_headers_mitigates_desync_logs_access_and_is_protected_in_prod(dev, prod, profile, protected):
    resources = _services({"dev": dev, "prod": prod}[profile], "eu-central-1")
    _, load_balancer = _one(resources, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = _attributes(load_balancer)
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["routing.http.desync_mitigation_mode"] == "defensive"
    assert attributes["deletion_protection.enabled"] == protected
    assert attributes["access_logs.s3.enabled"] == "true" and attributes["access_logs.s3.prefix"] == "alb"
    bucket_id, _ = _one(resources, "AWS::S3::Bucket")
    assert attributes["access_logs.s3.bucket"] == {"Ref": bucket_id}


def test_load_balancer_appends_the_callers_address_to_x_forwarded_for(dev):
    """auth throttles logins by the caller's address, read from the entries CloudFront and the load balancer append
    (TRUSTED_PROXY_HOPS): a load balancer that kept the header as sent would hand the choice to the caller."""
    for region in REGIONS:
        _, load_balancer = _one(_services(dev, region), "AWS::ElasticLoadBalancingV2::LoadBalancer")
        attributes = _attributes(load_balancer)
        assert attributes["routing.http.xff_header_processing.mode"] == "append"


def test_access_log_bucket_is_encrypted_tls_only_private_and_expires_logs(dev):
    resources = _services(dev, "eu-central-1")
    bucket_id, bucket = _one(resources, "AWS::S3::Bucket")
    properties = bucket["Properties"]
    (encryption,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"  # ALB logs accept SSE-S3 only
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = properties["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90 and rule["Status"] == "Enabled"
    _, policy = _one(resources, "AWS::S3::BucketPolicy")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {"Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}, "Effect": "Deny",
            "Principal": {"AWS": "*"}}.items() <= statements[0].items()
    assert any(s["Effect"] == "Allow" and s["Action"] == "s3:PutObject" for s in statements)
    assert bucket["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("region", REGIONS)
def test_default_mode_listens_on_http_answers_unknown_paths_with_json_404_and_routes_each_service_path(dev, region):
    resources = _services(dev, region)
    listener_id, listener = _one(resources, "AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Properties"]["Port"], listener["Properties"]["Protocol"]) == (80, "HTTP")
    (default,) = listener["Properties"]["DefaultActions"]
    response = default["FixedResponseConfig"]
    assert (default["Type"], response["StatusCode"], response["ContentType"]) == ("fixed-response", "404", "application/json")
    assert json.loads(response["MessageBody"])["error"] == "not_found"

    target_groups = _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")
    routed = {}
    for rule in _of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        properties = rule["Properties"]
        assert properties["ListenerArn"] == {"Ref": listener_id}
        (condition,) = properties["Conditions"]
        (action,) = properties["Actions"]
        # ECS canary deployments (the default) shift the weights from the live group to the alternate one.
        weights = {g["TargetGroupArn"]["Ref"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}
        assert sorted(weights.values()) == [0, 100] and set(weights) <= set(target_groups)
        routed[tuple(condition["PathPatternConfig"]["Values"])] = weights
    assert set(routed) == {(path, f"{path}/*") for path in ROUTES.values()}
    assert len({group for weights in routed.values() for group in weights}) == len(target_groups) == 6


@pytest.mark.parametrize("variant, protocol", [("dev", "HTTP"), ("appmesh", "HTTPS")])
def test_target_groups_check_readiness_and_drain_within_the_stop_timeout(dev, appmesh, variant, protocol):
    resources = _services({"dev": dev, "appmesh": appmesh}[variant], "eu-central-1")
    stop_timeouts = {
        container["StopTimeout"]
        for task in _of_type(resources, "AWS::ECS::TaskDefinition").values()
        for container in task["Properties"]["ContainerDefinitions"] if container["Name"] == "app"
    }
    assert stop_timeouts == {30}
    for target_group in _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
        properties = target_group["Properties"]
        # App Mesh's Envoy takes only TLS on the app port; the load balancer does not verify its certificate.
        assert (properties["TargetType"], properties["Port"], properties["Protocol"]) == ("ip", 8080, protocol)
        assert properties["HealthCheckProtocol"] == protocol
        assert properties["HealthCheckPath"] == "/health/ready" and properties["Matcher"] == {"HttpCode": "200"}
        attributes = {a["Key"]: a["Value"] for a in properties["TargetGroupAttributes"]}
        # ECS drains a leaving task for this long before it sends SIGTERM; then the stop timeout applies.
        assert int(attributes["deregistration_delay.timeout_seconds"]) == 30


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_each_service_registers_its_app_container_in_its_target_group(dev, appmesh, variant):
    resources = _services({"dev": dev, "appmesh": appmesh}[variant], "eu-west-1")
    rules = _of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule")
    registered = {}
    for logical_id, service in _of_type(resources, "AWS::ECS::Service").items():
        load_balancers = service["Properties"].get("LoadBalancers", [])
        if not load_balancers:
            assert "canary" in logical_id  # App Mesh canaries take mesh traffic only
            continue
        (load_balancer,) = load_balancers
        assert (load_balancer["ContainerName"], load_balancer["ContainerPort"]) == ("app", 8080)
        assert service["Properties"]["HealthCheckGracePeriodSeconds"] == 60
        registered[logical_id] = load_balancer["TargetGroupArn"]["Ref"]
        advanced = load_balancer.get("AdvancedConfiguration")
        if variant == "appmesh":
            assert advanced is None  # rolling deployments; App Mesh canaries move router weights
            continue
        # The Service Connect backend deploys by canary: ECS registers the new revision in the alternate
        # group and shifts this rule's weights, through a role bounded like every other.
        rule = rules[advanced["ProductionListenerRule"]["Ref"]]
        forwarded = {g["TargetGroupArn"]["Ref"] for g in rule["Properties"]["Actions"][0]["ForwardConfig"]["TargetGroups"]}
        assert forwarded == {load_balancer["TargetGroupArn"]["Ref"], advanced["AlternateTargetGroupArn"]["Ref"]}
        role = resources[advanced["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs.amazonaws.com"}
        assert "PermissionsBoundary" in role
    assert len(registered) == 3 and len(set(registered.values())) == 3


def test_load_balancer_admits_only_cloudfront_and_reaches_only_the_services(dev):
    resources = _services(dev, "eu-central-1")
    (group_id,) = [i for i, r in _of_type(resources, "AWS::EC2::SecurityGroup").items() if i.startswith("Ingress")]
    assert "SecurityGroupIngress" not in resources[group_id]["Properties"]
    (ingress,) = [r["Properties"] for r in _of_type(resources, "AWS::EC2::SecurityGroupIngress").values()
                  if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == group_id]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["IpProtocol"]) == (80, 80, "tcp")
    lookup_id = ingress["SourcePrefixListId"]["Fn::GetAtt"][0]
    lookup = resources[lookup_id]
    assert lookup["Type"] == "Custom::AWS"
    assert ORIGIN_FACING in json.dumps(lookup["Properties"])
    egress = [r["Properties"] for r in _of_type(resources, "AWS::EC2::SecurityGroupEgress").values()
              if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == group_id]
    assert len(egress) == 3 and {(e["FromPort"], e["ToPort"]) for e in egress} == {(8080, 8080)}
    assert all("DestinationSecurityGroupId" in e for e in egress)


def test_edge_reads_each_region_load_balancer_from_ssm(dev):
    for region in REGIONS:
        parameters = {p["Properties"]["Name"] for p in _of_type(_services(dev, region), "AWS::SSM::Parameter").values()
                      if p["Properties"]["Name"].startswith("/mf/ingress/")}  # beside the services' /mf/<service>/config/
        assert parameters == {f"/mf/ingress/load-balancer-{name}" for name in ("arn", "dns-name")}


@pytest.mark.parametrize("region", REGIONS)
def test_domain_mode_serves_https_with_a_tls13_policy_and_a_dns_validated_regional_certificate(domain, region):
    resources = _services(domain, region)
    certificate_id, certificate = _one(resources, "AWS::CertificateManager::Certificate")
    assert certificate["Properties"]["DomainName"] == f"{region}.api.example.com"
    assert certificate["Properties"]["ValidationMethod"] == "DNS"
    assert certificate["Properties"]["DomainValidationOptions"] == [
        {"DomainName": f"{region}.api.example.com", "HostedZoneId": "Z0123456789ABCDEFGHIJ"}]
    listeners = {r["Properties"]["Port"]: r["Properties"] for r in _of_type(resources, "AWS::ElasticLoadBalancingV2::Listener").values()}
    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert https["Protocol"] == "HTTPS" and https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["Certificates"] == [{"CertificateArn": {"Ref": certificate_id}}]
    (redirect,) = listeners[80]["DefaultActions"]
    assert redirect["RedirectConfig"] == {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"}
    (group_id,) = [i for i in _of_type(resources, "AWS::EC2::SecurityGroup") if i.startswith("Ingress")]
    rules = [r["Properties"] for r in _of_type(resources, "AWS::EC2::SecurityGroupIngress").values()
             if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == group_id]
    rules += resources[group_id]["Properties"].get("SecurityGroupIngress", [])
    # The prefix list fills most of the rule quota: one port. The VPC's own range may use the regional name.
    assert {(r["FromPort"], r["ToPort"]) for r in rules} == {(443, 443)}
    sources = sorted(("prefix list" if "SourcePrefixListId" in r else r.get("CidrIp")) for r in rules)
    assert sources == sorted(["prefix list", {"eu-central-1": "10.10.0.0/16", "eu-west-1": "10.20.0.0/16"}[region]])


def test_a_service_without_a_path_stays_off_the_load_balancer(tmp_path):
    from tests.assembly import synth

    assembly = synth(tmp_path / "out", regions=[{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], primary_region="eu-west-1",
                     services={"auth": {"path": "/api/auth"}, "persona": {}})
    resources = assembly.template("mf-eu-west-1/services")["Resources"]
    assert len(_of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")) == 2  # live and alternate
    attached = {i for i, s in _of_type(resources, "AWS::ECS::Service").items() if s["Properties"].get("LoadBalancers")}
    assert len(attached) == 1 and next(iter(attached)).startswith("auth")


def test_no_service_with_a_path_means_no_load_balancer(one_region_auth):
    """one_region_auth (tests/conftest.py): auth alone, without a path."""
    resources = one_region_auth.template("mf-eu-west-1/services")["Resources"]
    assert not _of_type(resources, "AWS::ElasticLoadBalancingV2::LoadBalancer")


@pytest.mark.parametrize("region", REGIONS)
def test_domain_mode_names_each_region_and_checks_its_health_through_the_load_balancer(domain, region):
    resources = _services(domain, region)
    load_balancer_id, _ = _one(resources, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    _, record = _one(resources, "AWS::Route53::RecordSet")
    assert record["Properties"]["Name"] == f"{region}.api.example.com."
    assert record["Properties"]["AliasTarget"]["DNSName"]["Fn::Join"][1][1] == {"Fn::GetAtt": [load_balancer_id, "DNSName"]}
    checks = _of_type(resources, "AWS::Route53::HealthCheck")
    children = {i: c for i, c in checks.items() if c["Properties"]["HealthCheckConfig"]["Type"] == "CLOUDWATCH_METRIC"}
    (region_check,) = [c for c in checks.values() if c["Properties"]["HealthCheckConfig"]["Type"] == "CALCULATED"]
    config = region_check["Properties"]["HealthCheckConfig"]
    # Live and alternate group per service; ECS keeps one of them empty, so one healthy per service will do.
    assert len(children) == 6 and config["HealthThreshold"] == 3
    assert sorted(c["Fn::GetAtt"][0] for c in config["ChildHealthChecks"]) == sorted(children)
    alarms = _of_type(resources, "AWS::CloudWatch::Alarm")
    target_groups = _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")
    watched = set()
    for child in children.values():
        identifier = child["Properties"]["HealthCheckConfig"]["AlarmIdentifier"]
        assert identifier["Region"] == region
        alarm = alarms[identifier["Name"]["Ref"]]["Properties"]
        assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == ("HealthyHostCount", "Minimum", 1)
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["TreatMissingData"] == "breaching"
        assert "AlarmActions" not in alarm  # an input to Route 53, not a page
        watched.add(next(d for d in alarm["Dimensions"] if d["Name"] == "TargetGroup")["Value"]["Fn::GetAtt"][0])
    assert watched == set(target_groups)
    notifying = {a["Properties"]["AlarmName"]: a["Properties"] for a in alarms.values() if a["Properties"].get("AlarmActions")
                 and "no-healthy-targets" in a["Properties"].get("AlarmName", "")}
    assert set(notifying) == {f"mf-{region}-{name}-no-healthy-targets" for name in ROUTES}
    for alarm in notifying.values():
        (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
        assert expression["Expression"].count("FILL(") == 2  # both of the service's groups
        assert "runbooks/region-failover.md" in alarm["AlarmDescription"]


@pytest.mark.parametrize("region", REGIONS)
def test_a_target_group_check_without_data_reads_unhealthy_and_steady_state_still_reads_healthy(domain, region):
    """Missing data (an alarm just created, or a metric that stopped) must not count towards the region's health:
    LastKnownStatus would keep a group that stopped reporting healthy, and starts a new check healthy. The idle group of
    each service counts as unhealthy either way, so the threshold must need no more than one group per service."""
    checks = _of_type(_services(domain, region), "AWS::Route53::HealthCheck")
    children = [c["Properties"]["HealthCheckConfig"] for c in checks.values() if c["Properties"]["HealthCheckConfig"]["Type"] == "CLOUDWATCH_METRIC"]
    assert [c["InsufficientDataHealthStatus"] for c in children] == ["Unhealthy"] * len(children)
    (region_check,) = [c for c in checks.values() if c["Properties"]["HealthCheckConfig"]["Type"] == "CALCULATED"]
    assert region_check["Properties"]["HealthCheckConfig"]["HealthThreshold"] == len(ROUTES) == len(children) // 2


def test_with_mesh_tls_the_load_balancer_reaches_the_app_past_the_service_connect_proxy(prod, dev):
    """The proxy takes only TLS 1.3 on its port; load balancer health checks do not speak it."""
    for assembly, override in ((prod, 15443), (dev, None)):
        resources = _services(assembly, "eu-central-1")
        for service in _of_type(resources, "AWS::ECS::Service").values():
            connect, *grpc = service["Properties"]["ServiceConnectConfiguration"]["Services"]
            assert connect.get("IngressPortOverride") == override
            assert bool(connect.get("Tls")) == (assembly is prod)
            # No load balancer reaches a gRPC port: its proxy stays there, with TLS when the mesh has it.
            assert all("IngressPortOverride" not in g and bool(g.get("Tls")) == (assembly is prod) for g in grpc)
        # Mesh callers reach the proxy's port (and persona's gRPC port); the load balancer the app port.
        ports = {(r["Properties"]["FromPort"], r["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0].startswith("Ingress"))
                 for r in _of_type(resources, "AWS::EC2::SecurityGroupIngress").values() if "SourceSecurityGroupId" in r["Properties"]}
        assert ports == {(override or 8080, False), (50051, False), (8080, True)}


def test_each_target_group_has_deployment_alarms_that_judge_the_revision_it_carries(prod):
    """During a canary one group carries only the new revision: its alarms judge it alone."""
    resources = _services(prod, "eu-central-1")
    alarms = _of_type(resources, "AWS::CloudWatch::Alarm")
    target_groups = _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup")
    for service in _of_type(resources, "AWS::ECS::Service").values():
        name = service["Properties"]["ServiceName"]
        (load_balancer,) = service["Properties"]["LoadBalancers"]
        groups = {load_balancer["TargetGroupArn"]["Ref"], load_balancer["AdvancedConfiguration"]["AlternateTargetGroupArn"]["Ref"]}
        watched = {alarms[ref["Ref"]]["Properties"]["AlarmName"]: alarms[ref["Ref"]]["Properties"]
                   for ref in service["Properties"]["DeploymentConfiguration"]["Alarms"]["AlarmNames"]}
        by_group = {}
        for alarm_name, alarm in watched.items():
            if "-lb-" not in alarm_name:
                continue
            assert alarm["AlarmActions"] and "Runbook: runbooks/" in alarm["AlarmDescription"]
            assert alarm["TreatMissingData"] == "notBreaching"  # an idle group stays OK
            stats = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
            if alarm_name.endswith("p95-latency"):
                # Seconds: 1000 ms. Below the group's 20 requests a minute (a quiet canary) the alarm reads 0.
                assert alarm["Threshold"] == 1 and alarm["Metrics"][0]["Expression"] == "IF(requests >= 20, p95, 0)"
                assert {(s["Metric"]["MetricName"], s["Stat"]) for s in stats} == {("TargetResponseTime", "p95"), ("RequestCount", "Sum")}
            else:
                assert alarm["Threshold"] == 1 and alarm["Metrics"][0]["Expression"].startswith("IF(requests >= 20")
                # Failed answers and failed connections count as errors.
                assert {s["Metric"]["MetricName"] for s in stats} == {"HTTPCode_Target_5XX_Count", "TargetConnectionErrorCount", "RequestCount"}
            assert "EvaluateLowSampleCountPercentile" not in alarm
            assert {s["Period"] for s in stats} == {60}
            assert all({d["Name"] for d in s["Metric"]["Dimensions"]} == {"LoadBalancer", "TargetGroup"} for s in stats)
            (group,) = {next(d for d in s["Metric"]["Dimensions"] if d["Name"] == "TargetGroup")["Value"]["Fn::GetAtt"][0] for s in stats}
            assert group in target_groups
            by_group.setdefault(group, set()).add(alarm_name.rsplit("-", 2)[-2] + "-" + alarm_name.rsplit("-", 1)[-1])
        assert set(by_group) == groups and all(len(kinds) == 2 for kinds in by_group.values()), name


def test_rolling_deployments_also_roll_back_on_the_load_balancer_alarms(tmp_path):
    from tests.assembly import synth

    assembly = synth(tmp_path / "out", regions=[{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], primary_region="eu-west-1",
                     profile="prod", deployment={"strategy": "ROLLING"})
    resources = assembly.template("mf-eu-west-1/services")["Resources"]
    alarms = _of_type(resources, "AWS::CloudWatch::Alarm")
    for service in _of_type(resources, "AWS::ECS::Service").values():
        (load_balancer,) = service["Properties"]["LoadBalancers"]
        assert "AdvancedConfiguration" not in load_balancer  # one target group, no traffic shifting
        names = [alarms[ref["Ref"]]["Properties"]["AlarmName"] for ref in service["Properties"]["DeploymentConfiguration"]["Alarms"]["AlarmNames"]]
        name = service["Properties"]["ServiceName"]
        assert names[-2:] == [f"mf-{name}-lb-group0-5xx-rate", f"mf-{name}-lb-group0-p95-latency"]  # after the mesh's
