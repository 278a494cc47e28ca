"""Scaling: bounds per profile, CPU and memory, requests per target, queue backlog per task, Spot with an on-demand base."""

from __future__ import annotations

import pytest

from stacks.defaults import profile_defaults
from tests.test_services import _service_name as _owner  # the service (or <name>-canary) a logical ID belongs to

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
WORKERS = {"persona", "vc-start"}  # the services with an event queue and a worker container


def _resources(assembly, region, resource_type):
    return assembly.resources(f"mf-{region}/services", resource_type)


def _policies(assembly, region):
    """service -> {policy kind -> policy properties}; kinds: Cpu, Memory, requests-per-target, backlog-per-task."""
    found = {}
    for logical_id, policy in _resources(assembly, region, "AWS::ApplicationAutoScaling::ScalingPolicy").items():
        properties = policy["Properties"]
        configuration = properties["TargetTrackingScalingPolicyConfiguration"]
        predefined = configuration.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType")
        kind = {"ECSServiceAverageCPUUtilization": "Cpu", "ECSServiceAverageMemoryUtilization": "Memory"}.get(
            predefined, properties["PolicyName"].removeprefix(_owner(logical_id) + "-"))
        found.setdefault(_owner(logical_id), {})[kind] = properties
    return found


def _metrics(policy):
    return {m["Id"]: m for m in policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]}


@pytest.mark.parametrize("profile, bounds", [("dev", (1, 3)), ("prod", (3, 12))])
def test_every_service_scales_within_its_profiles_bounds(dev, prod, profile, bounds):
    """Dev stays small; prod keeps a task per AZ at least (3 AZs) and may grow to four per AZ."""
    assembly = {"dev": dev, "prod": prod}[profile]
    for region in REGIONS:
        targets = _resources(assembly, region, "AWS::ApplicationAutoScaling::ScalableTarget")
        assert sorted(map(_owner, targets)) == sorted(SERVICES)
        for target in targets.values():
            properties = target["Properties"]
            assert (properties["MinCapacity"], properties["MaxCapacity"]) == bounds
            assert properties["ScalableDimension"] == "ecs:service:DesiredCount"
        # No DesiredCount: CloudFormation would send it with every update, putting a scaled-out service back
        # to it on each deployment. A new service starts at one task and the scalable target raises it to min.
        for service in _resources(assembly, region, "AWS::ECS::Service").values():
            assert "DesiredCount" not in service["Properties"]


@pytest.mark.parametrize("profile, scale_in_seconds", [("dev", 300), ("prod", 600)])
def test_every_policy_scales_out_fast_and_in_slowly(dev, prod, profile, scale_in_seconds):
    assembly = {"dev": dev, "prod": prod}[profile]
    for region in REGIONS:
        policies = _policies(assembly, region)
        assert sorted(policies) == sorted(SERVICES)
        for service, kinds in policies.items():
            expected = {"Cpu", "Memory", "requests-per-target", *(["backlog-per-task"] if service in WORKERS else [])}
            assert set(kinds) == expected, service
            for policy in kinds.values():
                assert policy["PolicyType"] == "TargetTrackingScaling"
                configuration = policy["TargetTrackingScalingPolicyConfiguration"]
                assert (configuration["ScaleOutCooldown"], configuration["ScaleInCooldown"]) == (60, scale_in_seconds)
                assert configuration.get("DisableScaleIn") in (None, False)
            assert kinds["Cpu"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 60
            assert kinds["Memory"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 75


def _target_group_ids(metric_queries, metric_name):
    return {
        next(d["Value"]["Fn::GetAtt"][0] for d in q["MetricStat"]["Metric"]["Dimensions"] if d["Name"] == "TargetGroup")
        for q in metric_queries.values() if q.get("MetricStat", {}).get("Metric", {}).get("MetricName") == metric_name
    }


@pytest.mark.parametrize("variant, groups_per_service", [("dev", 2), ("appmesh", 1)])
def test_request_scaling_covers_every_target_group_of_the_service(dev, appmesh, variant, groups_per_service):
    """ECS canaries (Service Connect) give a service two target groups whose roles swap at every
    deployment: the policy sums both. With App Mesh the load balancer has one group per service."""
    assembly = {"dev": dev, "appmesh": appmesh}[variant]
    for region in REGIONS:
        groups = _resources(assembly, region, "AWS::ElasticLoadBalancingV2::TargetGroup")
        for service, kinds in _policies(assembly, region).items():
            policy = kinds["requests-per-target"]
            configuration = policy["TargetTrackingScalingPolicyConfiguration"]
            assert configuration["TargetValue"] == profile_defaults("dev").requests_per_task_per_minute == 1000
            queries = _metrics(policy)
            own_groups = {g for g in groups if g.startswith(f"Ingress{service.replace('-', '')}")}
            assert len(own_groups) == groups_per_service
            assert _target_group_ids(queries, "RequestCount") == _target_group_ids(queries, "HealthyHostCount") == own_groups
            assert all(q["MetricStat"]["Stat"] == "Sum" for q in queries.values()
                       if q.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "RequestCount")
            (value,) = [q for q in queries.values() if q["ReturnData"]]
            # Requests over healthy targets, each filled with 0: no data must not block scale-in.
            assert value["Expression"].count("FILL(requests") == 2 * groups_per_service
            assert value["Expression"].count("FILL(hosts") == 2 * groups_per_service
            assert value["Expression"].startswith("IF(")


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_workers_scale_on_their_own_queues_backlog_per_running_task(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    defaults = profile_defaults(profile)
    # The acceptable wait over the time per message: 60 s / 0.2 s in dev, 30 s / 0.2 s in prod.
    assert defaults.backlog_per_task == {"dev": 300, "prod": 150}[profile]
    for region in REGIONS:
        services = _resources(assembly, region, "AWS::ECS::Service")
        for service, kinds in _policies(assembly, region).items():
            if service not in WORKERS:
                assert "backlog-per-task" not in kinds
                continue
            policy = kinds["backlog-per-task"]
            assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == defaults.backlog_per_task
            queries = _metrics(policy)
            messages = queries["messages"]["MetricStat"]["Metric"]
            assert (messages["Namespace"], messages["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
            (queue,) = [d["Value"]["Fn::GetAtt"][0] for d in messages["Dimensions"] if d["Name"] == "QueueName"]
            assert queue.startswith(f"{service.replace('-', '')}resourcesQueue")  # its own queue, not its dead-letter queue
            tasks = queries["tasks"]["MetricStat"]["Metric"]
            assert (tasks["Namespace"], tasks["MetricName"]) == ("ECS/ContainerInsights", "RunningTaskCount")
            (ecs_service,) = [d["Value"]["Fn::GetAtt"][0] for d in tasks["Dimensions"] if d["Name"] == "ServiceName"]
            assert ecs_service in services and _owner(ecs_service) == service
            assert queries["value"]["Expression"] == "IF(tasks > 0, FILL(messages, 0) / tasks, FILL(messages, 0))"


def test_app_mesh_canaries_run_one_task_without_scaling(appmesh):
    """The template names no count: ECS starts the canary at one task, the traffic shift's state machine sets
    it (tests/test_progressive_rollout.py), and a deployment of the stack mid-shift keeps it (a DesiredCount
    would drop the canary to one task while it holds its share of the calls). No scalable target: auto
    scaling would fight the state machine over the count."""
    for region in REGIONS:
        canaries = {i: s for i, s in _resources(appmesh, region, "AWS::ECS::Service").items() if "canary" in _owner(i)}
        assert len(canaries) == len(SERVICES)
        # One task at creation (ECS's start without a DesiredCount); later the traffic shift sets the count,
        # and a deployment of the stack keeps what it set.
        assert all("DesiredCount" not in s["Properties"] for s in canaries.values())
        scaled = {_owner(i) for i in _resources(appmesh, region, "AWS::ApplicationAutoScaling::ScalableTarget")}
        assert scaled == set(SERVICES)
        # The canary runs no worker, so nothing there could scale on the queue either.
        assert set(_policies(appmesh, region)) == set(SERVICES)


def _on_demand_tasks(strategy, tasks):
    """Tasks ECS places on FARGATE for a service of ``tasks`` tasks: every base first, the rest by weight."""
    base = {s["CapacityProvider"]: s.get("Base", 0) for s in strategy}
    weight = {s["CapacityProvider"]: s["Weight"] for s in strategy}
    rest = max(0, tasks - sum(base.values()))
    return base["FARGATE"] + rest * weight["FARGATE"] // sum(weight.values())


@pytest.mark.parametrize("profile, on_demand_at_minimum, spot_share_above_base", [("dev", 1, 0.75), ("prod", 2, 0.5)])
def test_services_run_spot_above_an_on_demand_base(dev, prod, profile, on_demand_at_minimum, spot_share_above_base):
    """At its minimum a service keeps on-demand tasks that a Spot reclaim cannot take: one in dev,
    two of three in prod. Above the base, dev puts three of four tasks on Spot, prod one in two."""
    assembly = {"dev": dev, "prod": prod}[profile]
    minimum = profile_defaults(profile).min_tasks
    for region in REGIONS:
        for service in _resources(assembly, region, "AWS::ECS::Service").values():
            strategy = service["Properties"]["CapacityProviderStrategy"]
            assert {s["CapacityProvider"] for s in strategy} == {"FARGATE", "FARGATE_SPOT"}
            assert _on_demand_tasks(strategy, minimum) == on_demand_at_minimum
            spot = next(s for s in strategy if s["CapacityProvider"] == "FARGATE_SPOT")
            assert spot.get("Base", 0) == 0
            assert spot["Weight"] / sum(s["Weight"] for s in strategy) == spot_share_above_base


def test_scaling_building_blocks_reject_what_cannot_work():
    from aws_cdk import aws_ecs as ecs

    from constructs.meshed_service import LoadBalancerTarget, MeshedServiceProps, WorkerContainer

    image = ecs.ContainerImage.from_registry("registry.example.com/team/app:1.0.0")
    with pytest.raises(ValueError, match="scale in more slowly than out"):
        MeshedServiceProps(name="a", image=image, container_port=8080, cpu=512, memory_limit_mib=1024, health_check_path="/ready",
                           min_tasks=1, max_tasks=2, scale_out_cooldown_seconds=300, scale_in_cooldown_seconds=60)
    # Without a DesiredCount ECS starts a service at one task: only a one-task service may leave its count to others.
    with pytest.raises(ValueError, match=r"external_task_count=True with min_tasks=2, max_tasks=2 is invalid"):
        MeshedServiceProps(name="a", image=image, container_port=8080, cpu=512, memory_limit_mib=1024, health_check_path="/ready",
                           min_tasks=2, max_tasks=2, external_task_count=True)
    with pytest.raises(ValueError, match="queue and backlog_per_task go together"):
        WorkerContainer(command=["python", "-m", "app.worker"], backlog_per_task=10)
    with pytest.raises(ValueError, match="requests_per_target_per_minute=0 is invalid"):
        LoadBalancerTarget(None, requests_per_target_per_minute=0)
