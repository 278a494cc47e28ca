"""What each CloudFormation resource costs a month: one function per priced resource type.

Each rule reads a resource's properties from the template and returns line items whose `detail` shows
the arithmetic, so every figure in the report can be checked by hand. Traffic-dependent parts use the
profile's assumptions from prices.json.
"""

from __future__ import annotations

import json
import re

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from tools.cost.assembly import Stack
from tools.cost.pricing import Assumption, PriceTable


class TemplateError(ValueError):
    """A template value the estimate needs is missing or not a literal."""


@dataclass(frozen=True)
class LineItem:
    stack: str  # where the resource is defined, e.g. mf-eu-central-1/network
    region: str  # where it is billed ("global" for CloudFront and WAF)
    item: str  # what is billed, e.g. "NAT gateway"
    resource: str  # the logical ID, or "" for a line that sums several resources
    detail: str  # the arithmetic behind usd
    usd: float


@dataclass(frozen=True)
class CapacityShare:
    provider: str  # FARGATE or FARGATE_SPOT
    base: int
    weight: int


@dataclass
class Context:
    """Prices, the profile's assumptions and what the rules need to know about the whole assembly."""

    prices: PriceTable
    assumptions: dict[str, Assumption]
    task_count: str  # "desired" or "max"
    default_strategies: dict[str, list[CapacityShare]] = field(default_factory=dict)  # region -> cluster default
    ca_modes: dict[str, set[str]] = field(default_factory=dict)  # region -> UsageMode of its Private CAs
    prices_used: set[tuple[str, str]] = field(default_factory=set)  # (region or "global", key), for the report

    @property
    def hours(self) -> float:
        return self.prices.hours_per_month

    def price(self, region: str | None, key: str) -> float:
        self.prices_used.add((region or "global", key))
        return self.prices.price(region, key)

    def assume(self, key: str) -> Any:
        return self.assumptions[key].value


# Resource types that cost nothing by themselves (their usage is priced elsewhere or is free).
FREE_TYPES = frozenset({
    "AWS::CDK::Metadata", "AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::InstanceProfile",
    "AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::RouteTable", "AWS::EC2::Route", "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::InternetGateway", "AWS::EC2::VPCGatewayAttachment", "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress",
    "AWS::EC2::FlowLog",  # its log group is priced
    "AWS::KMS::Alias", "AWS::ECS::Cluster", "AWS::ECS::ClusterCapacityProviderAssociations", "AWS::ECS::TaskDefinition",
    "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::ListenerRule",
    "AWS::ElasticLoadBalancingV2::TargetGroup", "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy", "AWS::SSM::Parameter", "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy", "AWS::Events::Rule", "AWS::Events::EventBus",
    "AWS::ECR::ReplicationConfiguration",
    "AWS::ACMPCA::Certificate", "AWS::ACMPCA::CertificateAuthorityActivation", "AWS::ACMPCA::Permission",
    "AWS::CloudFront::ResponseHeadersPolicy", "AWS::CloudFront::VpcOrigin", "AWS::CloudFront::KeyValueStore",
    "AWS::CloudFront::Function",  # invocations and store reads are priced with the distribution
    "AWS::WAFv2::LoggingConfiguration",  # its log group is priced
    "AWS::AppMesh::Mesh", "AWS::AppMesh::VirtualNode", "AWS::AppMesh::VirtualRouter", "AWS::AppMesh::Route",
    "AWS::AppMesh::VirtualService",  # App Mesh has no charge of its own
    "AWS::Route53::RecordSet", "AWS::CertificateManager::Certificate",  # public certificates; private ones are priced below
    "AWS::Lambda::Permission",
    "AWS::CloudWatch::Alarm",  # summed per stack by _alarms
})


def estimate_stack(stack: Stack, ctx: Context) -> tuple[list[LineItem], Counter[str]]:
    """The stack's line items, and how many resources of each type were left unpriced."""
    lines: list[LineItem] = []
    unpriced: Counter[str] = Counter()
    for logical_id, resource in stack.resources():
        rule = RULES.get(resource["Type"])
        if rule is not None:
            priced = rule(stack, logical_id, resource.get("Properties", {}), ctx)
            if priced is None:
                unpriced[resource["Type"]] += 1
            else:
                lines.extend(priced)
        elif resource["Type"] not in FREE_TYPES and not resource["Type"].startswith("Custom::"):
            unpriced[resource["Type"]] += 1
    lines.extend(_stack_traffic(stack, ctx))
    lines.extend(_alarms(stack, ctx))
    return lines, unpriced


# --- network -----------------------------------------------------------------------------------


def _nat_gateway(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    price = ctx.price(stack.region, "nat_gateway_hour")
    return [_line(stack, "NAT gateway", logical_id, f"{ctx.hours:g} h x {_usd(price)}", ctx.hours * price)]


def _elastic_ip(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    price = ctx.price(stack.region, "public_ipv4_hour")
    return [_line(stack, "Public IPv4 address", logical_id, f"{ctx.hours:g} h x {_usd(price)}", ctx.hours * price)]


def _vpc_endpoint(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    service = _endpoint_service(props.get("ServiceName"))
    if props.get("VpcEndpointType", "Gateway") != "Interface":
        return [_line(stack, f"Gateway endpoint {service}", logical_id, "no charge", 0.0)]
    subnets = props.get("SubnetIds")
    if not isinstance(subnets, list):
        raise TemplateError(f"{stack.path}/{logical_id}: SubnetIds is not a list, cannot count its AZs")
    price = ctx.price(stack.region, "interface_endpoint_az_hour")
    return [_line(stack, f"Interface endpoint {service}", logical_id,
                  f"{len(subnets)} AZ x {ctx.hours:g} h x {_usd(price)}", len(subnets) * ctx.hours * price)]


def _endpoint_service(name: Any) -> str:
    """The service part of com.amazonaws.<region>.<service>, also when CDK wrote it as an Fn::Join."""
    if isinstance(name, dict) and "Fn::Join" in name:
        literals = [part for part in name["Fn::Join"][1] if isinstance(part, str)]
        return literals[-1].lstrip(".") if literals else "?"
    if isinstance(name, str):
        return name.split(".", 3)[-1]
    return "?"


def _stack_traffic(stack: Stack, ctx: Context) -> list[LineItem]:
    """Data processed by the stack's NAT gateways and interface endpoints: one assumed total per region."""
    lines = []
    if any(True for _ in stack.resources("AWS::EC2::NatGateway")):
        gb, price = ctx.assume("nat_gb_per_region"), ctx.price(stack.region, "nat_gateway_gb")
        lines.append(_line(stack, "NAT data processed", "", f"{gb:g} GB x {_usd(price)}", gb * price))
    interface = [r for _, r in stack.resources("AWS::EC2::VPCEndpoint") if r["Properties"].get("VpcEndpointType") == "Interface"]
    if interface:
        gb, price = ctx.assume("endpoint_gb_per_region"), ctx.price(stack.region, "interface_endpoint_gb")
        lines.append(_line(stack, "Interface endpoint data processed", "", f"{gb:g} GB x {_usd(price)}", gb * price))
    return lines


def _load_balancer(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem] | None:
    if props.get("Type", "application") != "application":
        return None  # NLB and GWLB: not modelled
    hour, lcu_price = ctx.price(stack.region, "alb_hour"), ctx.price(stack.region, "alb_lcu_hour")
    lcu = ctx.assume("alb_average_lcu")
    return [
        _line(stack, "Application load balancer", logical_id, f"{ctx.hours:g} h x {_usd(hour)}", ctx.hours * hour),
        _line(stack, "ALB capacity units", logical_id, f"{lcu:g} LCU x {ctx.hours:g} h x {_usd(lcu_price)}", lcu * ctx.hours * lcu_price),
    ]


# --- compute -----------------------------------------------------------------------------------


def capacity_split(tasks: float, strategy: list[CapacityShare]) -> dict[str, float]:
    """Tasks per capacity provider: each provider's base first, the rest shared by weight.

    This is ECS's placement rule for a capacity provider strategy, as an expected value: with base 1
    on FARGATE (weight 1) and FARGATE_SPOT weight 3, 5 tasks are 1 + 4 x 1/4 = 2 on-demand and 3 Spot.
    """
    split = {share.provider: 0.0 for share in strategy}
    remaining = float(tasks)
    for share in strategy:
        placed = min(float(share.base), remaining)
        split[share.provider] += placed
        remaining -= placed
    total_weight = sum(share.weight for share in strategy)
    if remaining > 0:
        if total_weight <= 0:
            raise TemplateError(f"capacity provider strategy {strategy} has no weight for the tasks above its bases")
        for share in strategy:
            split[share.provider] += remaining * share.weight / total_weight
    return split


def parse_strategy(entries: list[dict[str, Any]]) -> list[CapacityShare]:
    return [CapacityShare(e["CapacityProvider"], int(e.get("Base", 0)), int(e.get("Weight", 0))) for e in entries]


def _ecs_service(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem] | None:
    if props.get("LaunchType") == "EC2" or props.get("LaunchType") == "EXTERNAL":
        return None
    vcpu, gb = _task_size(stack, logical_id, props)
    tasks = _task_count(stack, logical_id, props, ctx)
    if props.get("CapacityProviderStrategy"):
        strategy = parse_strategy(props["CapacityProviderStrategy"])
    elif props.get("LaunchType") == "FARGATE":
        strategy = [CapacityShare("FARGATE", 0, 1)]
    else:  # the cluster's default strategy applies
        strategy = ctx.default_strategies.get(stack.region, [CapacityShare("FARGATE", 0, 1)])
    split = capacity_split(tasks, strategy)
    lines = []
    for provider, label, cpu_key, gb_key in (
        ("FARGATE", "Fargate on-demand", "fargate_vcpu_hour", "fargate_gb_hour"),
        ("FARGATE_SPOT", "Fargate Spot", "fargate_spot_vcpu_hour", "fargate_spot_gb_hour"),
    ):
        if provider not in split:
            continue
        count, cpu_price, gb_price = split[provider], ctx.price(stack.region, cpu_key), ctx.price(stack.region, gb_key)
        usd = count * ctx.hours * (vcpu * cpu_price + gb * gb_price)
        detail = f"{count:g} of {tasks:g} tasks x {ctx.hours:g} h x ({vcpu:g} vCPU x {_usd(cpu_price)} + {gb:g} GB x {_usd(gb_price)})"
        lines.append(_line(stack, label, logical_id, detail, usd))
    lines.extend(_service_connect_certificates(stack, logical_id, props, ctx))
    return lines


def _task_size(stack: Stack, service_id: str, props: dict[str, Any]) -> tuple[float, float]:
    """(vCPU, GB) of the service's task: the task-level size, which on Fargate holds every container
    (app, sidecars, worker); without one, the sum of the containers' sizes."""
    task_id = _ref(props.get("TaskDefinition"))
    task = stack.template["Resources"].get(task_id or "", {})
    if task.get("Type") != "AWS::ECS::TaskDefinition":
        raise TemplateError(f"{stack.path}/{service_id}: TaskDefinition is not a task definition of this stack")
    task_props = task["Properties"]
    containers = task_props.get("ContainerDefinitions", [])
    cpu = task_props.get("Cpu") or sum(int(c.get("Cpu", 0)) for c in containers)
    memory = task_props.get("Memory") or sum(int(c.get("Memory") or c.get("MemoryReservation") or 0) for c in containers)
    try:
        return int(cpu) / 1024, int(memory) / 1024
    except (TypeError, ValueError) as error:
        raise TemplateError(f"{stack.path}/{task_id}: Cpu={cpu!r} / Memory={memory!r} are not literal numbers") from error


def _task_count(stack: Stack, service_id: str, props: dict[str, Any], ctx: Context) -> float:
    target = _scalable_target(stack, service_id)
    if ctx.task_count == "max" and target is not None:
        return float(target["MaxCapacity"])
    desired = props.get("DesiredCount")
    if desired is None:  # ECS starts an auto-scaled service without DesiredCount at its minimum
        desired = target["MinCapacity"] if target is not None else 1
    if not isinstance(desired, (int, float)):
        raise TemplateError(f"{stack.path}/{service_id}: DesiredCount={desired!r} is not a literal number")
    return float(desired)


def _scalable_target(stack: Stack, service_id: str) -> dict[str, Any] | None:
    for _, target in stack.resources("AWS::ApplicationAutoScaling::ScalableTarget"):
        if service_id in _getatt_ids(target["Properties"].get("ResourceId")):
            return target["Properties"]
    return None


def _service_connect_certificates(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    services = (props.get("ServiceConnectConfiguration") or {}).get("Services") or []
    if not any(service.get("Tls") for service in services):
        return []
    # The CA is another stack's output; price by the mode of the region's CA (short-lived unless it is general-purpose).
    general = ctx.ca_modes.get(stack.region) == {"GENERAL_PURPOSE"}
    price = ctx.price(stack.region, "private_cert_general_purpose" if general else "private_cert_short_lived")
    per_month = ctx.hours / 24 / ctx.assume("service_connect_cert_rotation_days")
    return [_line(stack, "Service Connect TLS certificates", logical_id,
                  f"{per_month:.2f} issued x {_usd(price)}", per_month * price)]


# --- certificates ------------------------------------------------------------------------------


def _private_ca(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    mode = props.get("UsageMode", "GENERAL_PURPOSE")
    key, label = {
        "SHORT_LIVED_CERTIFICATE": ("private_ca_short_lived_month", "Private CA, short-lived certificate mode"),
        "GENERAL_PURPOSE": ("private_ca_general_purpose_month", "Private CA, general-purpose mode"),
    }[mode]
    price = ctx.price(stack.region, key)
    return [_line(stack, label, logical_id, f"1 CA-month x {_usd(price)}", price)]


def _acm_certificate(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    if not props.get("CertificateAuthorityArn"):
        return [_line(stack, "ACM public certificate", logical_id, "no charge", 0.0)]
    price, per_year = ctx.price(stack.region, "private_cert_general_purpose"), ctx.assume("acm_private_cert_issues_per_year")
    return [_line(stack, "ACM private certificate", logical_id, f"{per_year:g}/12 issued x {_usd(price)}", per_year / 12 * price)]


# --- edge --------------------------------------------------------------------------------------


def _distribution(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    config = props.get("DistributionConfig", {})
    requests_m, gb = ctx.assume("cloudfront_million_requests"), ctx.assume("cloudfront_gb")
    https, gb_price = ctx.price(None, "cloudfront_https_10k"), ctx.price(None, "cloudfront_gb")
    lines = [
        _line(stack, "CloudFront requests", logical_id, f"{requests_m:g}M requests x 100 x {_usd(https)} per 10k",
              requests_m * 100 * https, region="global"),
        _line(stack, "CloudFront data out", logical_id, f"{gb:g} GB x {_usd(gb_price)}", gb * gb_price, region="global"),
    ]
    behaviors = [config.get("DefaultCacheBehavior", {}), *config.get("CacheBehaviors", [])]
    if any(b.get("FunctionAssociations") for b in behaviors):
        invocations = requests_m * ctx.assume("cloudfront_share_through_function")
        fn_price = ctx.price(None, "cloudfront_function_million")
        lines.append(_line(stack, "CloudFront Function invocations", logical_id, f"{invocations:g}M x {_usd(fn_price)}",
                           invocations * fn_price, region="global"))
        if any(True for _ in stack.resources("AWS::CloudFront::KeyValueStore")):
            kvs_price = ctx.price(None, "cloudfront_kvs_read_million")
            lines.append(_line(stack, "CloudFront KeyValueStore reads", logical_id, f"{invocations:g}M x {_usd(kvs_price)}",
                               invocations * kvs_price, region="global"))
    return lines


def _web_acl(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    # A managed rule group counts as one rule; the requests are the distribution's (every request is inspected).
    rules = len(props.get("Rules", []))
    acl, rule, per_m = (ctx.price(None, k) for k in ("waf_web_acl_month", "waf_rule_month", "waf_million_requests"))
    requests_m = ctx.assume("cloudfront_million_requests")
    return [
        _line(stack, "WAF web ACL", logical_id, f"1 x {_usd(acl)}", acl, region="global"),
        _line(stack, "WAF rules", logical_id, f"{rules} rules x {_usd(rule)}", rules * rule, region="global"),
        _line(stack, "WAF requests", logical_id, f"{requests_m:g}M x {_usd(per_m)}", requests_m * per_m, region="global"),
    ]


# --- observability, keys, secrets, data ----------------------------------------------------------


def _log_group(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    flow_log_groups = {_ref(r["Properties"].get("LogGroupName")) for _, r in stack.resources("AWS::EC2::FlowLog")}
    gb = ctx.assume("flow_log_gb" if logical_id in flow_log_groups else "log_gb_per_group")
    retention_days = props.get("RetentionInDays")
    months = retention_days / (365 / 12) if retention_days else ctx.assume("log_storage_months_if_never_expire")
    ingest, store = ctx.price(stack.region, "logs_ingest_gb"), ctx.price(stack.region, "logs_storage_gb_month")
    stored = gb * months  # steady state: a month's ingestion kept for the retention period
    label = "VPC flow log group" if logical_id in flow_log_groups else "Log group"
    detail = f"{gb:g} GB x {_usd(ingest)} + {stored:.1f} GB stored ({retention_days or 'no'} days) x {_usd(store)}"
    return [_line(stack, label, logical_id, detail, gb * ingest + stored * store)]


def _alarms(stack: Stack, ctx: Context) -> list[LineItem]:
    alarms = [r["Properties"] for _, r in stack.resources("AWS::CloudWatch::Alarm")]
    if not alarms:
        return []
    # A metric-math alarm is billed per metric it reads; a plain alarm reads one.
    metrics = sum(max(1, sum(1 for m in a.get("Metrics", []) if "MetricStat" in m)) for a in alarms)
    price = ctx.price(stack.region, "cloudwatch_alarm_metric_month")
    return [_line(stack, "CloudWatch alarms", "", f"{len(alarms)} alarms, {metrics} metrics x {_usd(price)}", metrics * price)]


def _kms_key(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    price = ctx.price(stack.region, "kms_key_month")
    return [_line(stack, "KMS key", logical_id, f"1 key-month x {_usd(price)}", price)]


def _replica_key(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    """constructs/service_data's replica of a multi-Region key, made by a custom resource (KMS.replicateKey)."""
    match = re.search(r'"ReplicaRegion":"([a-z0-9-]+)"', json.dumps(props).replace('\\"', '"'))
    region = match.group(1) if match else stack.region
    price = ctx.price(region, "kms_key_month")
    return [_line(stack, f"KMS replica key in {region}", logical_id, f"1 key-month x {_usd(price)}", price, region=region)]


def _dashboard(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    # The account's first 3 dashboards are free; like every free tier, not counted here.
    price = ctx.price(stack.region, "cloudwatch_dashboard_month")
    return [_line(stack, "CloudWatch dashboard", logical_id, f"1 dashboard-month x {_usd(price)}", price)]


def _secret(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    replicas = props.get("ReplicaRegions") or []
    lines = [_line(stack, "Secrets Manager secret", logical_id, f"1 x {_usd(ctx.price(stack.region, 'secret_month'))}",
                   ctx.price(stack.region, "secret_month"))]
    for replica in replicas:
        region = replica.get("Region")
        price = ctx.price(region, "secret_month")
        lines.append(_line(stack, f"Secrets Manager replica in {region}", logical_id, f"1 x {_usd(price)}", price, region=region))
    return lines


def _table(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem] | None:
    if props.get("BillingMode") != "PAY_PER_REQUEST":
        return None  # provisioned capacity: not modelled
    pitr = (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled", False)
    return [_table_line(stack, "DynamoDB table (on-demand)", logical_id, stack.region, pitr, ctx)]


def _global_table(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem] | None:
    if props.get("BillingMode") != "PAY_PER_REQUEST":
        return None
    lines = []
    for replica in props.get("Replicas", []):
        region = replica["Region"]
        pitr = (replica.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled", False)
        # Every replica stores the data and applies every write (replicated writes cost as writes).
        lines.append(_table_line(stack, f"DynamoDB global table replica in {region}", logical_id, region, pitr, ctx))
    return lines


def _table_line(stack: Stack, label: str, logical_id: str, region: str, pitr: bool, ctx: Context) -> LineItem:
    gb, writes, reads = (ctx.assume(k) for k in ("dynamodb_gb_per_table", "dynamodb_million_writes_per_table",
                                                 "dynamodb_million_reads_per_table"))
    storage, backup = ctx.price(region, "dynamodb_storage_gb_month"), ctx.price(region, "dynamodb_pitr_gb_month")
    write, read = ctx.price(region, "dynamodb_write_million"), ctx.price(region, "dynamodb_read_million")
    usd = gb * storage + (gb * backup if pitr else 0) + writes * write + reads * read
    detail = (f"{gb:g} GB x {_usd(storage)}" + (f" + PITR {gb:g} GB x {_usd(backup)}" if pitr else "")
              + f" + {writes:g}M writes x {_usd(write)} + {reads:g}M reads x {_usd(read)}")
    return _line(stack, label, logical_id, detail, usd, region=region)


def _hosted_zone(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    price = ctx.price(stack.region, "route53_hosted_zone_month")
    return [_line(stack, "Route 53 hosted zone", logical_id, f"1 zone-month x {_usd(price)}", price)]


def _namespace(stack: Stack, logical_id: str, props: dict[str, Any], ctx: Context) -> list[LineItem]:
    price = ctx.price(stack.region, "route53_hosted_zone_month")
    return [_line(stack, "Cloud Map namespace (hosted zone)", logical_id, f"1 zone-month x {_usd(price)}", price)]


Rule = Callable[[Stack, str, dict[str, Any], Context], "list[LineItem] | None"]

RULES: dict[str, Rule] = {
    "AWS::EC2::NatGateway": _nat_gateway,
    "AWS::EC2::EIP": _elastic_ip,
    "AWS::EC2::VPCEndpoint": _vpc_endpoint,
    "AWS::ElasticLoadBalancingV2::LoadBalancer": _load_balancer,
    "AWS::ECS::Service": _ecs_service,
    "AWS::ACMPCA::CertificateAuthority": _private_ca,
    "AWS::CertificateManager::Certificate": _acm_certificate,
    "AWS::CloudFront::Distribution": _distribution,
    "AWS::WAFv2::WebACL": _web_acl,
    "AWS::Logs::LogGroup": _log_group,
    "AWS::KMS::Key": _kms_key,
    "AWS::KMS::ReplicaKey": _kms_key,
    "Custom::KmsReplicaKey": _replica_key,
    "AWS::CloudWatch::Dashboard": _dashboard,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::DynamoDB::Table": _table,
    "AWS::DynamoDB::GlobalTable": _global_table,
    "AWS::Route53::HostedZone": _hosted_zone,
    "AWS::ServiceDiscovery::PrivateDnsNamespace": _namespace,
}


# --- helpers -----------------------------------------------------------------------------------


def _line(stack: Stack, item: str, resource: str, detail: str, usd: float, region: str | None = None) -> LineItem:
    return LineItem(stack=stack.path, region=region or stack.region, item=item, resource=resource, detail=detail, usd=usd)


def _usd(value: float) -> str:
    return f"${value:g}"


def _ref(value: Any) -> str | None:
    return value.get("Ref") if isinstance(value, dict) else None


def _getatt_ids(value: Any) -> Iterator[str]:
    """Logical IDs named by Fn::GetAtt anywhere inside a template value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Fn::GetAtt" and isinstance(inner, list) and inner:
                yield inner[0]
            else:
                yield from _getatt_ids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _getatt_ids(inner)
