"""Update safety: a second `cdk deploy` after a config change, judged from two variants the session synthesizes.

CloudFormation creates every new or replacing resource before it deletes anything (the old ones go in the
cleanup phase, after every create and update). A create that needs what the old template still holds fails,
and the update rolls back:

- a resource replaced (a create-only property changed, per the resource schemas cfn-lint ships) that keeps its
  custom name: "a resource with that name already exists";
- a custom name that moves to another logical ID or stack (within its region, or the account for IAM and
  budgets): the new one is created while the old one still holds the name;
- a listener's (load balancer, port) under another logical ID: ELBv2 `DuplicateListener`;
- a listener rule's (listener, priority) under another logical ID: ELBv2 `PriorityInUse`.

And an update that the service refuses: CloudFront updates no VPC origin, not even its tags, while a distribution
uses it (409 "currently associated with one or more distributions"), so a changed one must come under a new logical ID.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cfnlint
import pytest
from aws_cdk import aws_ec2 as ec2

from constructs.ingress import RegionalIngress
from stacks.config import load_config
from stacks.services_stack import ingress_routes
from tests.assembly import Assembly, cdk_json_context

SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas"

# Both directions of each config change whose variants the session already synthesizes. prod -> domain also subscribes
# an e-mail address to the budget's alerts (a create-only property of AWS::Budgets::Budget: the budget is replaced).
CHANGES = [("dev", "appmesh"), ("prod", "domain"), ("dev", "github"), ("dev", "strangler")]
PAIRS = [*CHANGES, *[(new, old) for old, new in CHANGES]]
# And for the edge's VPC origins, a new ingress.origin_generation (a load balancer replaced; tests/conftest.py).
EDGE_PAIRS = [*PAIRS, ("dev", "settings_changes"), ("settings_changes", "dev")]

# Names in one namespace per account, not per region.
ACCOUNT_WIDE = ("AWS::IAM::", "AWS::Budgets::", "AWS::CloudFront::")

# Names that move on purpose, each with the procedure that frees them first.
MOVES_BY_PROCEDURE = [
    # With App Mesh the load balancer and gRPC alarms live in the observability stack, with Service Connect in
    # the services stack (as ECS deployment alarms). runbooks/appmesh-to-service-connect.md (Action step 1,
    # Rollback) deletes the observability stack before deploying the other backend.
    ("AWS::CloudWatch::Alarm", re.compile(r"^mf-[a-z0-9-]+-(lb-group\d+|grpc-server)-"), {"services", "observability"}),
]


@functools.cache
def _schema(resource_type: str) -> dict[str, Any]:
    handler = _provider().get(resource_type)
    return json.loads((SCHEMAS / "resources" / f"{handler}.json").read_text()) if handler else {}


@functools.cache
def _provider() -> dict[str, str]:
    return json.loads((SCHEMAS / "providers" / "eu-central-1.json").read_text())


def _create_only(resource_type: str) -> list[list[str]]:
    """The schema's create-only properties as paths below Properties, up to the first list (`*`)."""
    paths = [p.removeprefix("/properties/").split("/") for p in _schema(resource_type).get("createOnlyProperties", [])]
    return [path[:path.index("*")] if "*" in path else path for path in paths]


def _at(properties: dict[str, Any], path: list[str]) -> Any:
    for key in path:
        properties = properties.get(key) if isinstance(properties, dict) else None
    return properties


def _refs(value: Any) -> set[str]:
    """Logical IDs that ``value`` refers to through Ref or Fn::GetAtt."""
    if isinstance(value, list):
        return set().union(*map(_refs, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found = {value["Ref"]} if isinstance(value.get("Ref"), str) else set()
    if "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        found.add(target[0] if isinstance(target, list) else target.split(".")[0])
    return found.union(*map(_refs, value.values()))


def _text(value: Any) -> str:
    if isinstance(value, dict) and "Fn::Join" in value:
        return value["Fn::Join"][0].join(_text(part) for part in value["Fn::Join"][1])
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _custom_name(resource: dict[str, Any]) -> str | None:
    """The name the template gives the resource: a create-only `...Name` property that names it, not another one."""
    properties = resource.get("Properties", {})
    if resource["Type"] == "AWS::Budgets::Budget":
        name = _at(properties, ["Budget", "BudgetName"])
        return _text(name) if name else None
    for path in _create_only(resource["Type"]):
        value = _at(properties, path)
        if path[-1].endswith("Name") and value is not None and not (isinstance(value, dict) and set(value) <= {"Ref", "Fn::GetAtt"}):
            return _text(value)
    return None


def _replaced(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Logical IDs in both templates that CloudFormation replaces: a create-only property changed, or refers to a
    resource that is replaced (its Ref or GetAtt then changes at deploy time)."""
    common = [lid for lid in old if lid in new]
    replaced = {lid for lid in common if old[lid]["Type"] != new[lid]["Type"] or any(
        _at(old[lid].get("Properties", {}), path) != _at(new[lid].get("Properties", {}), path)
        for path in _create_only(new[lid]["Type"]))}
    while True:
        more = {lid for lid in common if lid not in replaced and any(
            _refs(_at(new[lid].get("Properties", {}), path)) & replaced for path in _create_only(new[lid]["Type"]))}
        if not more:
            return replaced
        replaced |= more


def _names(assembly: Assembly) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(scope, type, custom name) -> (stack, logical ID): the scope is the region, or the account for account-wide names.
    A global table's and a replicated secret's names also exist in their replicas' regions."""
    names = {}
    for stack, logical_id, resource in assembly.all_resources():
        name = _custom_name(resource)
        if name is None:
            continue
        region = assembly.stack_artifacts[stack]["environment"].rsplit("/", 1)[1]
        properties = resource.get("Properties", {})
        replicas = {"AWS::DynamoDB::GlobalTable": "Replicas", "AWS::SecretsManager::Secret": "ReplicaRegions"}.get(resource["Type"])
        regions = {region, *(r["Region"] for r in properties.get(replicas, []))} if replicas else {region}
        for scope in {"account"} if resource["Type"].startswith(ACCOUNT_WIDE) else regions:
            names[(scope, resource["Type"], name)] = (stack, logical_id)
    return names


def _moves_by_procedure(resource_type: str, name: str, old_stack: str, new_stack: str) -> bool:
    stacks = {old_stack.rsplit("/", 1)[1], new_stack.rsplit("/", 1)[1]}
    return any(resource_type == t and pattern.match(name) and stacks == s for t, pattern, s in MOVES_BY_PROCEDURE)


def _holders(template: dict[str, Any], resource_type: str, keys: tuple[str, ...]) -> dict[str, str]:
    """For resources of one type: their values of ``keys`` (as text) -> logical ID."""
    return {json.dumps([resource["Properties"].get(k) for k in keys], sort_keys=True): logical_id
            for logical_id, resource in template["Resources"].items() if resource["Type"] == resource_type}


def _taken_over(old: dict[str, Any], new: dict[str, Any], resource_type: str, keys: tuple[str, ...]) -> list[str]:
    """Values of ``keys``, unique per resource in AWS, that another logical ID holds after the change."""
    before, after = _holders(old, resource_type, keys), _holders(new, resource_type, keys)
    return [f"{resource_type} {'/'.join(keys)}={value}: {before[value]} -> {after[value]}"
            for value in sorted(before.keys() & after.keys()) if before[value] != after[value]]


def _stacks_in_both(request: pytest.FixtureRequest, old: str, new: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    before, after = request.getfixturevalue(old), request.getfixturevalue(new)
    return [(stack, before.templates[stack], after.templates[stack]) for stack in sorted(before.templates.keys() & after.templates.keys())]


@pytest.mark.parametrize("old, new", PAIRS)
def test_no_replaced_resource_keeps_its_custom_name(request, old, new):
    clashes, replaced_types = [], set()
    for stack, before, after in _stacks_in_both(request, old, new):
        for logical_id in sorted(_replaced(before["Resources"], after["Resources"])):
            replaced_types.add(after["Resources"][logical_id]["Type"])
            name = _custom_name(after["Resources"][logical_id])
            if name is not None and name == _custom_name(before["Resources"][logical_id]):
                clashes.append(f"{stack} {logical_id} ({after['Resources'][logical_id]['Type']}) {name}")
    assert clashes == []
    # domain subscribes an e-mail address to the budget's alerts, which replaces the budget (its
    # NotificationsWithSubscribers are create-only): AWS Budgets takes the replacement only under a new name.
    assert ("AWS::Budgets::Budget" in replaced_types) == ({old, new} == {"prod", "domain"})


@pytest.mark.parametrize("old, new", PAIRS)
def test_no_custom_name_moves_to_another_resource(request, old, new):
    before, after = _names(request.getfixturevalue(old)), _names(request.getfixturevalue(new))
    moves = [f"{resource_type} {name} ({scope}): {before[key]} -> {after[key]}"
             for key in sorted(before.keys() & after.keys()) if before[key] != after[key]
             for scope, resource_type, name in [key]
             if not _moves_by_procedure(resource_type, name, before[key][0], after[key][0])]
    assert moves == []


@pytest.mark.parametrize("old, new", PAIRS)
def test_no_listener_port_moves_to_another_listener(request, old, new):
    moves = [f"{stack}: {move}" for stack, before, after in _stacks_in_both(request, old, new)
             for move in _taken_over(before, after, "AWS::ElasticLoadBalancingV2::Listener", ("LoadBalancerArn", "Port"))]
    assert moves == []


@pytest.mark.parametrize("old, new", PAIRS)
def test_no_listener_rule_priority_moves_to_another_rule(request, old, new):
    moves = [f"{stack}: {move}" for stack, before, after in _stacks_in_both(request, old, new)
             for move in _taken_over(before, after, "AWS::ElasticLoadBalancingV2::ListenerRule", ("ListenerArn", "Priority"))]
    assert moves == []


@pytest.mark.parametrize("old, new", EDGE_PAIRS)
def test_no_vpc_origin_changes_under_its_logical_id(request, old, new):
    """CloudFormation updates an AWS::CloudFront::VpcOrigin in place (its schema has no create-only property), which
    CloudFront refuses while the distribution uses it: any change must be a new origin (constructs/ingress/edge.py)."""
    changed = [f"{stack} {logical_id}" for stack, before, after in _stacks_in_both(request, old, new)
               for logical_id, resource in after["Resources"].items()
               if resource["Type"] == "AWS::CloudFront::VpcOrigin" and logical_id in before["Resources"]
               and before["Resources"][logical_id]["Properties"] != resource["Properties"]]
    assert changed == []


def _ingress_template(services: dict[str, Any]) -> dict[str, Any]:
    """The load balancer's listener and rules for these cdk.json services, as the services stack routes them."""
    stack = cdk.Stack(cdk.App(), env=cdk.Environment(region="eu-central-1"))
    RegionalIngress(stack, "Ingress", vpc=ec2.Vpc(stack, "Vpc"), routes=ingress_routes(load_config({"services": services}), "HTTP"),
                    origin_peer=ec2.Peer.ipv4("10.0.0.0/16"), access_log_days=1, deletion_protection=False)
    return cdk.assertions.Template.from_stack(stack).to_json()


def test_adding_removing_or_reordering_a_routed_service_moves_no_other_rule():
    # Only what routing reads: a service's path (and priority), so that any one may go without breaking another's calls.
    services = {name: {k: v for k, v in settings.items() if k in ("path", "priority")}
                for name, settings in cdk_json_context()["services"].items()}
    billing = {"path": "/api/billing", "image_tag": "1"}  # no Dockerfile to build: a pushed image
    variants = {
        "inserted": {"auth": services["auth"], "billing": billing, **{n: s for n, s in services.items() if n != "auth"}},
        "persona removed": {n: s for n, s in services.items() if n != "persona"},
        "reordered": dict(reversed(services.items())),
    }
    before = _ingress_template(services)
    for change, changed in variants.items():
        moves = _taken_over(before, _ingress_template(changed), "AWS::ElasticLoadBalancingV2::ListenerRule", ("ListenerArn", "Priority"))
        assert moves == [], change
