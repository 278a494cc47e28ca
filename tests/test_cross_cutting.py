"""What the stage applies to everything in it: permissions boundary, tags, stack protection."""

from __future__ import annotations

import json
import re

import pytest

from tests.assembly import admitting, listed, template_text

STAGE_TAGS = {
    "mf-eu-central-1": {"project": "mf", "environment": "dev", "region": "eu-central-1", "managed-by": "cdk"},
    "mf-eu-west-1": {"project": "mf", "environment": "dev", "region": "eu-west-1", "managed-by": "cdk"},
    "mf-edge": {"project": "mf", "environment": "dev", "region": "global", "managed-by": "cdk"},
}
# CloudFormation types that take no Tags property.
UNTAGGABLE_TYPES = {
    "AWS::CDK::Metadata", "AWS::EC2::Route", "AWS::EC2::SubnetRouteTableAssociation", "AWS::EC2::VPCGatewayAttachment",
    "AWS::ECR::ReplicationConfiguration", "AWS::ECS::ClusterCapacityProviderAssociations", "AWS::IAM::ManagedPolicy",
    "AWS::IAM::Policy", "AWS::KMS::Alias", "AWS::ApplicationAutoScaling::ScalingPolicy", "AWS::EC2::SecurityGroupIngress",
    "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy", "AWS::EC2::SecurityGroupEgress", "AWS::CloudFront::ResponseHeadersPolicy",
    "AWS::CloudFront::OriginRequestPolicy",
    "AWS::Logs::ResourcePolicy", "AWS::Logs::MetricFilter", "AWS::Events::Archive", "AWS::Events::EventBusPolicy",
    "AWS::Lambda::LayerVersion", "AWS::Lambda::Permission", "AWS::SecretsManager::RotationSchedule",
    "AWS::Lambda::EventInvokeConfig",
}


def _boundary_arn(region: str) -> dict:
    return {"Fn::Join": ["", ["arn:aws:iam::", {"Ref": "AWS::AccountId"}, f":policy/mf-{region}-permissions-boundary"]]}


def _boundary_statements(dev, region):
    (policy,) = dev.resources(f"mf-{region}/baseline", "AWS::IAM::ManagedPolicy").values()
    assert policy["Properties"]["ManagedPolicyName"] == f"mf-{region}-permissions-boundary"
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


@pytest.mark.parametrize("region", ["eu-central-1", "eu-west-1"])
def test_boundary_allows_only_platform_services_in_the_apps_regions(dev, region):
    statements = _boundary_statements(dev, region)
    allows = {sid: s for sid, s in statements.items() if s["Effect"] == "Allow"}
    platform = allows.pop("AllowOnlyThePlatformsServicesInTheAppsRegions")
    actions = platform["Action"]
    # No IAM and no STS: a bounded role can neither change roles nor assume another one.
    assert "*" not in actions and not any(a.startswith(("iam:", "sts:", "organizations:", "account:")) for a in actions)
    assert {"ecr:*", "logs:*", "xray:*", "secretsmanager:*"} <= set(actions)
    assert platform["Condition"] == {"StringEquals": {"aws:RequestedRegion": ["eu-central-1", "eu-west-1"]}}
    # The only other allows: the FIS network faults' two named roles (config chaos), and in the primary region the data
    # stack's custom resource provider invoking its handler; nothing for anyone else.
    instance_role, experiment_role = (f"role/mf-{region}-persona-fis-instance", f"role/mf-{region}-persona-fis-network-faults")
    assert set(allows) == {"AllowPassingOnlyTheManagedInstanceRolesToSsm", "AllowTheSsmAgentChannelsToTheManagedInstanceRolesOnly",
                           "AllowReadingTagsToTheNamedRolesOnly",
                           *(["AllowInvokingOnlyTheFunctionsNamedWithThePrefix"] if region == "eu-central-1" else [])}
    pass_role = allows["AllowPassingOnlyTheManagedInstanceRolesToSsm"]
    assert pass_role["Action"] == "iam:PassRole" and pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}}
    assert [json.dumps(r).endswith(f'{instance_role}"]]}}') for r in listed(pass_role["Resource"])] == [True]
    channels = allows["AllowTheSsmAgentChannelsToTheManagedInstanceRolesOnly"]
    # Exactly the channels the managed-instance role is granted: Run Command (all of ec2messages) and the
    # ssmmessages control channel, no data channels (Session Manager, ECS Exec) even for that role.
    assert channels["Action"] == ["ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
                                  "ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
                                  "ssmmessages:CreateControlChannel", "ssmmessages:OpenControlChannel"]
    (role_id,) = [i for i, r in dev.resources(f"mf-{region}/services", "AWS::IAM::Role").items()
                  if r["Properties"].get("RoleName") == f"mf-{region}-persona-fis-instance"]
    granted = {a for r in dev.resources(f"mf-{region}/services", "AWS::IAM::Policy").values() if {"Ref": role_id} in r["Properties"]["Roles"]
               for s in r["Properties"]["PolicyDocument"]["Statement"] for a in listed(s["Action"])}
    assert {a for a in granted if a.startswith(("ec2messages:", "ssmmessages:"))} == set(channels["Action"])
    assert [json.dumps(r).endswith(f'{instance_role}"]]}}') for r in listed(channels["Condition"]["ArnEquals"]["aws:PrincipalArn"])] == [True]
    tags = allows["AllowReadingTagsToTheNamedRolesOnly"]
    assert tags["Action"] == "tag:GetResources"
    assert [json.dumps(r).endswith(f'{experiment_role}"]]}}') for r in listed(tags["Condition"]["ArnEquals"]["aws:PrincipalArn"])] == [True]


# Actions CDK grants that no role of the app ever calls, which the boundary therefore leaves out: every codebuild.Project's
# role may publish test reports to its own report groups, and the pipeline's smoke test (pipelines/) publishes none.
GRANTED_NEVER_CALLED = {"codebuild:BatchPutCodeCoverages", "codebuild:BatchPutTestCases", "codebuild:CreateReport",
                        "codebuild:CreateReportGroup", "codebuild:UpdateReport"}


def _granted(assembly, stage):
    """(stack path, statement) for every Allow statement of an identity policy in the stage, the boundary's aside."""
    for stack, _, resource in assembly.all_resources():
        if not stack.startswith(f"{stage}/"):
            continue
        documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])] if resource["Type"] == "AWS::IAM::Role" else []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and stack != f"{stage}/baseline":
            documents.append(resource["Properties"]["PolicyDocument"])
        for document in documents:
            yield from ((stack, s) for s in document["Statement"] if s["Effect"] == "Allow")


@pytest.mark.parametrize("variant", ["dev", "appmesh", "domain", "github", "dev_pipeline", "prod_pipeline"])
def test_boundary_allows_every_action_the_stages_roles_are_granted(request, variant):
    """A role can do only what both its policies and the boundary allow: a grant outside the boundary fails at run time
    (a custom resource's provider that cannot invoke its handler fails the deployment), so none may exist."""
    assembly = request.getfixturevalue(variant)
    stages = sorted({stack.split("/")[0] for stack in assembly.templates if "/" in stack})
    assert "mf-edge" in stages and len(stages) == 3
    invoking_stages = set()
    for stage in stages:
        (boundary,) = assembly.resources(f"{stage}/baseline", "AWS::IAM::ManagedPolicy").values()
        allows = [s for s in boundary["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        for stack, statement in _granted(assembly, stage):
            for action in listed(statement["Action"]):
                if action not in GRANTED_NEVER_CALLED:
                    assert admitting(allows, action), f"{stack}: {action} is outside the boundary"
                if action.startswith("lambda:"):
                    invoking_stages.add(stage)
                    # Only the functions the boundary names: each one invoked is named with the stage's prefix.
                    template = assembly.template(stack)
                    for function in re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)", "Arn"\]', json.dumps(statement["Resource"])):
                        assert template["Resources"][function]["Properties"]["FunctionName"].startswith(f"{stage}-")
        functions = [s for s in allows if s.get("Sid") == "AllowInvokingOnlyTheFunctionsNamedWithThePrefix"]
        # Only the stage whose custom resource provider invokes a function may (the primary region's data stack).
        assert bool(functions) == (stage in invoking_stages), stage
        for allow in functions:
            assert template_text(allow["Resource"]).endswith(f":function:{stage}-*")
    primary = "mf-eu-west-1" if variant == "prod_pipeline" else "mf-eu-central-1"
    assert invoking_stages == {primary}
    # The task roles' own table, queue, bus, secret and key.
    used = {action.split(":")[0] for stage in stages for _, s in _granted(assembly, stage) for action in listed(s["Action"])}
    assert {"dynamodb", "sqs", "events", "secretsmanager", "kms"} <= used
    # No ECS Exec: the SSM agent's channels are open to the FIS sidecar's managed-instance role only.
    for region in ("eu-central-1", "eu-west-1"):
        platform = _boundary_statements(assembly, region)["AllowOnlyThePlatformsServicesInTheAppsRegions"]
        assert not any(a.startswith("ssmmessages:") for a in platform["Action"])


@pytest.mark.parametrize("region", ["eu-central-1", "eu-west-1"])
def test_boundary_denies_every_way_out_of_itself(dev, region):
    statements = _boundary_statements(dev, region)
    unless_bounded = {"StringNotEquals": {"iam:PermissionsBoundary": _boundary_arn(region)}}

    create = statements["DenyCreatingPrincipalsWithoutThisBoundary"]
    assert create["Effect"] == "Deny" and create["Condition"] == unless_bounded
    assert {"iam:CreateRole", "iam:CreateUser", "iam:PutRolePermissionsBoundary"} <= set(create["Action"])

    change = statements["DenyChangingPermissionsOfPrincipalsWithoutThisBoundary"]
    assert change["Effect"] == "Deny" and change["Condition"] == unless_bounded
    assert {"iam:AttachRolePolicy", "iam:PutRolePolicy"} <= set(change["Action"])

    remove = statements["DenyRemovingTheBoundary"]
    assert remove["Effect"] == "Deny" and "Condition" not in remove
    assert set(remove["Action"]) == {"iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"}

    edit = statements["DenyEditingTheBoundary"]
    assert edit["Effect"] == "Deny" and edit["Resource"] == _boundary_arn(region)
    assert {"iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy"} <= set(edit["Action"])


def test_every_taggable_resource_carries_the_stage_tags(dev):
    checked = 0
    for stack, logical_id, resource in dev.all_resources():
        if resource["Type"] in UNTAGGABLE_TYPES or resource["Type"].startswith("Custom::"):
            continue
        expected = STAGE_TAGS[stack.split("/")[0]]
        # A global table carries its tags per replica, each replica's region tag naming its own region.
        for properties in resource["Properties"]["Replicas"] if resource["Type"] == "AWS::DynamoDB::GlobalTable" else [resource.get("Properties", {})]:
            tags = properties.get("Tags", properties.get("ResourceTags", []))  # ResourceTags: AWS::Budgets::Budget
            tags = tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}  # a map for SSM parameters
            want = {**expected, "region": properties["Region"]} if "Region" in properties and "region" in expected else expected
            assert want.items() <= tags.items(), f"{stack} {logical_id} ({resource['Type']}) has tags {tags}"
        checked += 1
    assert checked > 60


# Service resources whose construct ID does not name the service: the log group of the signer's rotation function.
OWNED_OUTSIDE_A_SERVICE_CONSTRUCT = {"data/RotationLogs": "auth"}


def _service_owning(construct_path: str, resource: dict, services: list[str]) -> str | None:
    """The service a resource belongs to: the first construct ID below the stack that is a service's name or starts
    with it and a hyphen (auth, auth-data, persona-resources, Ingress/vc-start-targets, TraceSampling/auth), or, for an
    alarm outside such a construct (the platform dashboard's queue alarms), the service its name starts with."""
    stack_and_ids = construct_path.split("/", 1)[1]
    for path, owner in OWNED_OUTSIDE_A_SERVICE_CONSTRUCT.items():
        if stack_and_ids.startswith(f"{path}/"):
            return owner
    for construct_id in construct_path.split("/")[2:]:
        owners = [name for name in services if construct_id == name or construct_id.startswith(f"{name}-")]
        if owners:
            return max(owners, key=len)
    alarm_name = resource.get("Properties", {}).get("AlarmName") if resource["Type"] == "AWS::CloudWatch::Alarm" else None
    owners = [name for name in services if isinstance(alarm_name, str) and alarm_name.startswith(f"mf-{name}-")]
    return max(owners, key=len) if owners else None


def _tag_sets(resource: dict) -> list[dict]:
    """Each set of tags a resource carries: a global table's per replica, anything else's one."""
    properties = resource.get("Properties", {})
    holders = properties["Replicas"] if resource["Type"] == "AWS::DynamoDB::GlobalTable" else [properties]
    tag_sets = []
    for holder in holders:
        tags = holder.get("Tags", holder.get("ResourceTags", holder.get("HealthCheckTags", [])))
        tag_sets.append(tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags})  # a map: SSM, FIS
    return tag_sets


# dev; App Mesh (routers, canaries, traffic shifts); domain mode (the region's health checks); auth's strangler fig.
@pytest.mark.parametrize("variant", ["dev", "appmesh", "domain", "strangler"])
def test_every_resource_a_service_owns_carries_its_service_tag_and_no_shared_one_does(request, variant):
    """Issue 2: a service tag wherever one service owns the resource (its table, key, secret, queues, bus rules, target
    groups and listener rule, alarms, dashboard, sampling rule...), none on what the services share (bus, load balancer,
    listener, platform dashboard, chaos experiments)."""
    from tests.assembly import cdk_json_context

    assembly = request.getfixturevalue(variant)
    services = list(cdk_json_context()["services"])
    paths = assembly.construct_paths()
    wrong, owned_types = [], {name: set() for name in services}
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] in UNTAGGABLE_TYPES or resource["Type"].startswith("Custom::"):
            continue
        path = paths[(stack, logical_id)]
        owner = _service_owning(path, resource, services)
        if owner:
            owned_types[owner].add(resource["Type"])
        found = [tags.get("service") for tags in _tag_sets(resource)]
        if any(service != owner for service in found):
            wrong.append(f"{path} ({resource['Type']}): service={found}, expected {owner}")
    assert wrong == [], "\n".join(wrong)
    # What the issue names, found where each service has it (so the check above did not pass on nothing).
    every_service = {"AWS::ECR::Repository", "AWS::ECS::Service", "AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::SSM::Parameter",
                     "AWS::ElasticLoadBalancingV2::TargetGroup", "AWS::ElasticLoadBalancingV2::ListenerRule",
                     "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::XRay::SamplingRule",
                     "AWS::DynamoDB::GlobalTable", "AWS::KMS::Key"}
    assert all(every_service <= types for types in owned_types.values()), owned_types
    assert {"AWS::SecretsManager::Secret", "AWS::Lambda::Function"} <= owned_types["auth"]
    assert {"AWS::SQS::Queue", "AWS::Events::Rule"} <= owned_types["persona"] & owned_types["vc-start"]


def test_prod_stacks_have_termination_protection_and_dev_stacks_do_not(dev, prod):
    assert {a["properties"].get("terminationProtection", False) for a in dev.stack_artifacts.values()} == {False}
    assert {a["properties"].get("terminationProtection", False) for a in prod.stack_artifacts.values()} == {True}


def test_stacks_carry_the_stage_tags(dev):
    for stack_path, artifact in dev.stack_artifacts.items():
        assert artifact["properties"]["tags"] == STAGE_TAGS[stack_path.split("/")[0]], stack_path


def test_every_stack_with_roles_deploys_after_the_boundary(dev):
    """CloudFormation creates a stack's resources in parallel; a role must not race its boundary."""
    for stack_path, artifact in dev.stack_artifacts.items():
        stage = stack_path.split("/")[0]
        if stack_path.endswith("/baseline"):
            assert dev.resources(stack_path, "AWS::IAM::Role") == {}
            continue
        baseline_id = dev.stack_artifacts[f"{stage}/baseline"]["id"]
        assert baseline_id in artifact["dependencies"], stack_path


def test_prod_deploys_to_the_configured_account(prod, dev):
    # us-east-1: the edge (CloudFront's certificate and web ACL must live there).
    assert {a["environment"] for a in prod.stack_artifacts.values()} == {
        "aws://111122223333/eu-central-1", "aws://111122223333/eu-west-1", "aws://111122223333/us-east-1"}
    assert {a["environment"] for a in dev.stack_artifacts.values()} == {
        "aws://unknown-account/eu-central-1", "aws://unknown-account/eu-west-1", "aws://unknown-account/us-east-1"}


def test_roles_in_later_stacks_get_the_boundary_without_a_cross_stack_export(tmp_path):
    """Services and other later stacks add roles; the boundary must reach them by name, not export."""
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from stacks.config import load_config
    from stacks.region_stage import RegionStage

    from tests.assembly import cdk_json_context

    context = {**cdk_json_context(), "regions": [{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], "primary_region": "eu-west-1"}
    app = cdk.App(outdir=str(tmp_path), context=context)
    config = load_config(app.node.get_all_context())
    stage = RegionStage(app, config=config, region=config.regions[0])
    iam.Role(stage.platform, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    assembly = app.synth().get_nested_assembly("assembly-mf-eu-west-1")

    (role,) = [r for r in assembly.get_stack_by_name("mf-eu-west-1-platform").template["Resources"].values()
               if r["Type"] == "AWS::IAM::Role"]
    assert role["Properties"]["PermissionsBoundary"] == _boundary_arn("eu-west-1")
    baseline_outputs = assembly.get_stack_by_name("mf-eu-west-1-baseline").template.get("Outputs", {})
    assert baseline_outputs == {}
