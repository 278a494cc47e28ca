"""Cost controls: the monthly budget and its alerts, and the tags that make costs attributable."""

from __future__ import annotations

import re

import aws_cdk as cdk
import pytest

from constructs.cost_budget import MonthlyCostBudget

from tests.test_cross_cutting import UNTAGGABLE_TYPES

STAGE_TAG_KEYS = {"project", "environment", "region", "managed-by"}
# CloudFormation types of the prod and App Mesh variants that take no tags either; they cost nothing of their own
# (the CA they belong to, or the web ACL, carries the tags).
UNTAGGABLE_IN_VARIANTS = {"AWS::ACMPCA::Certificate", "AWS::ACMPCA::CertificateAuthorityActivation", "AWS::ACMPCA::Permission",
                          "AWS::WAFv2::LoggingConfiguration"}


def _one(assembly, stack, resource_type):
    ((logical_id, resource),) = assembly.resources(stack, resource_type).items()
    return logical_id, resource["Properties"]


def _budgets(assembly):
    return {stack: r for stack, _, r in assembly.all_resources() if r["Type"] == "AWS::Budgets::Budget"}


@pytest.mark.parametrize("profile, limit", [("dev", 600), ("prod", 2500)])
def test_one_monthly_cost_budget_per_deployment_with_the_profiles_limit(dev, prod, profile, limit):
    assembly = {"dev": dev, "prod": prod}[profile]
    budgets = _budgets(assembly)
    assert list(budgets) == ["mf-eu-central-1/global"]  # Budgets is global: once, with the primary region
    budget = budgets["mf-eu-central-1/global"]["Properties"]["Budget"]
    # A readable name and a hash of the alerts (test_budget_name_changes_with_its_alerts_only).
    assert re.fullmatch(f"mf-{profile}-monthly-cost-[0-9a-f]{{8}}", budget["BudgetName"])
    assert assembly.template("mf-eu-central-1/global")["Outputs"]["BudgetName"]["Value"] == budget["BudgetName"]
    assert (budget["BudgetType"], budget["TimeUnit"]) == ("COST", "MONTHLY")
    assert budget["BudgetLimit"] == {"Amount": limit, "Unit": "USD"}
    # This deployment's costs: what the stage tagged project=mf (a cost allocation tag once activated).
    assert budget["CostFilters"] == {"TagKeyValue": ["user:project$mf"]}


def _budget_and_topic_names(**changes):
    stack = cdk.Stack(cdk.App(), "global", env=cdk.Environment(region="eu-central-1"))
    props = {"budget_name": "mf-dev-monthly-cost", "limit_usd": 600, "thresholds_percent": [50, 80, 100],
             "emails": ["oncall@example.com"], "cost_filter_tag": ("project", "mf"), **changes}
    budget = MonthlyCostBudget(stack, "Budget", **props)
    template = cdk.assertions.Template.from_stack(stack).to_json()["Resources"]
    (name,) = [r["Properties"]["Budget"]["BudgetName"] for r in template.values() if r["Type"] == "AWS::Budgets::Budget"]
    (topic,) = [r["Properties"]["TopicName"] for r in template.values() if r["Type"] == "AWS::SNS::Topic"]
    assert name == budget.budget_name
    return name, topic


def test_budget_name_changes_with_its_alerts_only():
    """CloudFormation replaces a budget whose notifications change, creating the new one before deleting the old:
    the new one needs a name of its own (AWS Budgets refuses a second budget under one name). The limit and the
    filter update in place and keep the name; the topic, which on-call tooling subscribes to, keeps its name."""
    name, topic = _budget_and_topic_names()
    assert name.startswith("mf-dev-monthly-cost-") and topic == "mf-dev-monthly-cost"
    for change in ({"thresholds_percent": [50, 80, 90]}, {"thresholds_percent": [80, 100]},
                   {"emails": ["oncall@example.com", "finance@example.com"]}, {"emails": []}):
        renamed, same_topic = _budget_and_topic_names(**change)
        assert renamed != name and same_topic == topic, change
    for change in ({"limit_usd": 900}, {"cost_filter_tag": None}, {"thresholds_percent": [100, 50, 80]}):
        assert _budget_and_topic_names(**change) == (name, topic), change
    with pytest.raises(ValueError, match="budget_name='x{92}' is invalid: expected 1 to 91 characters"):
        _budget_and_topic_names(budget_name="x" * 92)


def test_every_threshold_alerts_on_actual_and_forecasted_cost_to_the_budget_topic(dev):
    stack = "mf-eu-central-1/global"
    topic_id, _ = _one(dev, stack, "AWS::SNS::Topic")
    _, budget = _one(dev, stack, "AWS::Budgets::Budget")
    alerts = sorted((n["Notification"]["Threshold"], n["Notification"]["NotificationType"]) for n in budget["NotificationsWithSubscribers"])
    assert alerts == [(t, kind) for t in (50, 80, 100) for kind in ("ACTUAL", "FORECASTED")]
    for notification in budget["NotificationsWithSubscribers"]:
        assert notification["Notification"]["ComparisonOperator"] == "GREATER_THAN"
        assert notification["Notification"]["ThresholdType"] == "PERCENTAGE"
        assert notification["Subscribers"] == [{"SubscriptionType": "SNS", "Address": {"Ref": topic_id}}]


def test_only_aws_budgets_of_this_account_may_publish_to_the_encrypted_topic(dev):
    stack = "mf-eu-central-1/global"
    key_id, key = _one(dev, stack, "AWS::KMS::Key")
    topic_id, topic = _one(dev, stack, "AWS::SNS::Topic")
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]} and key["EnableKeyRotation"] is True
    from_this_accounts_budgets = {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", ["arn:aws:budgets::", {"Ref": "AWS::AccountId"}, ":*"]]}},
    }
    (budgets_on_key,) = [s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "budgets.amazonaws.com"}]
    assert sorted(budgets_on_key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert budgets_on_key["Condition"] == from_this_accounts_budgets
    _, policy = _one(dev, stack, "AWS::SNS::TopicPolicy")
    assert policy["Topics"] == [{"Ref": topic_id}]
    statements = policy["PolicyDocument"]["Statement"]
    (publish,) = [s for s in statements if s["Effect"] == "Allow"]
    assert publish["Principal"] == {"Service": "budgets.amazonaws.com"} and publish["Action"] == "sns:Publish"
    assert publish["Resource"] == {"Ref": topic_id} and publish["Condition"] == from_this_accounts_budgets
    # enforce_ssl: the topic refuses plain HTTP.
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements)
    # Budgets checks its access to the topic when the budget is created.
    budget = next(iter(dev.resources(stack, "AWS::Budgets::Budget").values()))
    assert budget["DependsOn"] == [next(iter(dev.resources(stack, "AWS::SNS::TopicPolicy")))]


def test_a_single_region_app_still_gets_its_budget_with_the_configured_alerts(one_region):
    """The global stack exists in the primary stage even without a region to replicate images to.
    one_region (tests/conftest.py): eu-west-1 alone, budget monthly_limit_usd 120, alert_thresholds_percent [90, 110],
    filter_by_project_tag false, notify_emails oncall@ and finance@example.com."""
    assembly = one_region
    stack = "mf-eu-west-1/global"
    assert assembly.resources(stack, "AWS::ECR::ReplicationConfiguration") == {}
    topic_id, _ = _one(assembly, stack, "AWS::SNS::Topic")
    _, budget = _one(assembly, stack, "AWS::Budgets::Budget")
    assert budget["Budget"]["BudgetLimit"] == {"Amount": 120, "Unit": "USD"}
    assert "CostFilters" not in budget["Budget"]  # the whole account
    assert sorted({n["Notification"]["Threshold"] for n in budget["NotificationsWithSubscribers"]}) == [90, 110]
    for notification in budget["NotificationsWithSubscribers"]:
        assert notification["Subscribers"] == [
            {"SubscriptionType": "SNS", "Address": {"Ref": topic_id}},
            {"SubscriptionType": "EMAIL", "Address": "oncall@example.com"},
            {"SubscriptionType": "EMAIL", "Address": "finance@example.com"},
        ]


def _tags(resource):
    properties = resource.get("Properties", {})
    tags = properties.get("Tags", properties.get("ResourceTags", []))
    return tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}


@pytest.mark.parametrize("profile", ["prod", "appmesh"])
def test_every_taggable_resource_carries_the_cost_allocation_tags(prod, appmesh, profile):
    """tests/test_cross_cutting.py checks dev; the other variants add resources (App Mesh, WAF, Private CA)."""
    assembly = {"prod": prod, "appmesh": appmesh}[profile]
    checked = set()
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] in UNTAGGABLE_TYPES | UNTAGGABLE_IN_VARIANTS or resource["Type"].startswith("Custom::"):
            continue
        # A global table carries its tags per replica.
        replicas = resource["Properties"]["Replicas"] if resource["Type"] == "AWS::DynamoDB::GlobalTable" else [resource]
        for tagged in replicas:
            tags = _tags(tagged if tagged is resource else {"Properties": tagged})
            assert STAGE_TAG_KEYS <= set(tags), f"{stack} {logical_id} ({resource['Type']}) has tags {tags}"
            assert tags["project"] == "mf" and tags["environment"] == ("prod" if profile == "prod" else "dev")
        checked.add(resource["Type"])
    assert {"AWS::Budgets::Budget", "AWS::AccessAnalyzer::Analyzer", "AWS::SSM::Parameter", "AWS::ECS::Service"} <= checked


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_each_services_resources_and_tasks_carry_its_service_tag(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    for region in ("eu-central-1", "eu-west-1"):
        resources = assembly.template(f"mf-{region}/services")["Resources"]
        for logical_id, resource in resources.items():
            if resource["Type"] in ("AWS::ECS::Service", "AWS::ECS::TaskDefinition", "AWS::Logs::LogGroup", "AWS::SSM::Parameter"):
                name = _tags(resource).get("service")
                if resource["Type"] == "AWS::SSM::Parameter" and "/config/" not in resource["Properties"]["Name"]:
                    continue  # the ingress's parameters belong to no service
                if resource["Type"] == "AWS::Logs::LogGroup" and logical_id.startswith(("CustomResourceLogs", "ListenerRuleGuardLogs")):
                    continue  # the stack's custom-resource logs and the listener rule guard's belong to no service
                assert name and logical_id.startswith(name.replace("-", "")), f"{logical_id}: service={name}"
            if resource["Type"] == "AWS::ECS::Service":
                # Tasks inherit the service's tags (cost per service includes its tasks' Fargate hours).
                assert resource["Properties"]["PropagateTags"] == "SERVICE"
                assert resource["Properties"]["EnableECSManagedTags"] is True
