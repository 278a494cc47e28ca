"""Every AWS call the services' code makes is granted to the role that runs it, and the role grants nothing the code
does not call (issue 5: least-privilege task roles). moto enforces no IAM, so a missing grant would first show as
an AccessDenied in production; this ties the task roles to the code, found statically (tests/aws_calls.py)."""

from __future__ import annotations

import ast
import fnmatch
import re
import textwrap
from pathlib import Path

import pytest

from tests.aws_calls import TRANSACT_ITEM_ACTIONS, TRANSACTIONS, find_calls, iam_prefix, parse, referenced_names
from tests.test_least_privilege import _as_list, _decision
from tests.test_service_resources import _text

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
PACKAGES = {"auth": "auth/auth_service", "persona": "persona/persona_service", "vc-start": "vc-start/vc_start"}
SERVICEKIT = "common/servicekit"
REGIONS = ("eu-central-1", "eu-west-1")
EXAMPLE_ACCOUNT = "111122223333"
# The IAM prefix of each botocore service the code uses, checked against the Service Authorization Reference;
# a new service fails the test until its prefix is checked here.
IAM_PREFIXES = {"dynamodb": "dynamodb", "events": "events", "sqs": "sqs", "secretsmanager": "secretsmanager"}
# Methods named like an operation on something that is not a client (none today).
NOT_CLIENTS: dict[str, str] = {}

# Granted to a task role although no code in services/ calls it: action -> (the container that uses it, or None for
# every task; the reason).
_KMS_VIA_DYNAMODB = "DynamoDB calls the table's customer managed key on the caller's behalf (kms:ViaService)"
_EMF = "the ADOT collector's EMF exporter writes the RED metrics to the service's metrics log group"
_SSM_AGENT = "the fault-injection SSM agent sidecar's script registers the task as a managed instance (meshed_service/fault_injection.py)"
ALLOWED_UNUSED = {
    "kms:Decrypt": (None, f"{_KMS_VIA_DYNAMODB}; Secrets Manager decrypts the signing key the same way"),
    "kms:Encrypt": (None, _KMS_VIA_DYNAMODB),
    "kms:GenerateDataKey": (None, _KMS_VIA_DYNAMODB),
    "kms:DescribeKey": (None, _KMS_VIA_DYNAMODB),
    "xray:*": ("adot-collector", "the ADOT collector sidecar exports the traces and reads the sampling rules"),
    "logs:CreateLogStream": ("adot-collector", _EMF),
    "logs:PutLogEvents": ("adot-collector", _EMF),
    "ssm:AddTagsToResource": ("amazon-ssm-agent", _SSM_AGENT),
    "ssm:CreateActivation": ("amazon-ssm-agent", _SSM_AGENT),
    "iam:PassRole": ("amazon-ssm-agent", f"{_SSM_AGENT}, passing the managed-instance role to SSM"),
}


# --- What the code calls -------------------------------------------------------------------------


def _sources(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if not {"tests", "bench", "local"} & set(p.relative_to(SERVICES_DIR).parts))


def _reachable(servicekit_trees: dict[str, ast.Module], names: set[str]) -> set[str]:
    """servicekit's top-level definitions ('path::Name') the names reach, following servicekit's own references."""
    definitions = {f"{path}::{node.name}": node for path, tree in servicekit_trees.items()
                   for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    reached, frontier = set(), set(names)
    while frontier:
        new = {key for key in definitions if key.split("::")[1] in frontier} - reached
        reached |= new
        frontier = set().union(*(referenced_names(definitions[key]) for key in new)) if new else set()
    return reached


def _operations(service: str) -> dict[str, set]:
    """operation -> set of Calls, for the service's package and the servicekit code it reaches."""
    own = parse(_sources(SERVICES_DIR / PACKAGES[service]), SERVICES_DIR)
    kit = parse(_sources(SERVICES_DIR / SERVICEKIT), SERVICES_DIR)
    found = find_calls({**own, **kit})
    used = _reachable(kit, set().union(*(referenced_names(tree) for tree in own.values())))
    by_operation: dict[str, set] = {}
    for definition, entry in found.items():
        if definition.split("::")[0] in own or definition in used:
            unresolved = entry.unresolved - set(NOT_CLIENTS)
            assert not unresolved, f"named like an AWS operation but not on a recognised client (tests/aws_calls.py): {unresolved}"
            for call in entry.calls:
                by_operation.setdefault((call.service, call.operation), set()).add(call)
    return by_operation


def _iam_actions(calls: dict) -> dict[str, set[str]]:
    """IAM action -> where the code needs it. A transaction needs each item kind's own action."""
    actions: dict[str, set[str]] = {}
    for (service, operation), sites in calls.items():
        assert service in IAM_PREFIXES, f"check the IAM prefix of {service} and add it to IAM_PREFIXES"
        assert iam_prefix(service) == IAM_PREFIXES[service], service
        names = [operation]
        if operation in TRANSACTIONS:
            kinds = {kind for call in sites for kind in call.items}
            assert kinds, f"{operation} without item kinds found next to it: {sites}"
            names = [TRANSACT_ITEM_ACTIONS[kind] for kind in kinds]
        for name in names:
            actions.setdefault(f"{IAM_PREFIXES[service]}:{name}", set()).update(call.where for call in sites)
    return actions


CALLED = {service: _iam_actions(_operations(service)) for service in PACKAGES}


def test_the_finder_sees_what_each_service_calls():
    """The table of the report: a finder that silently found less would make the role checks below vacuous."""
    assert {service: sorted(actions) for service, actions in CALLED.items()} == {
        "auth": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"],
        "persona": ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
                    "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "events:PutEvents",
                    "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"],
        "vc-start": ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "events:PutEvents",
                     "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"],
    }


# --- The finder on a sample ----------------------------------------------------------------------

SAMPLE = textwrap.dedent('''
    from servicekit import aws
    from servicekit.aws import run_sync

    class Keys:
        def __init__(self, secrets_client):
            self._client = secrets_client

        def read(self):
            return self._client.get_secret_value(SecretId="s")

    class Store:
        def __init__(self, dynamodb, table):
            self._db = dynamodb
            self._table = table

        async def get(self, key):
            return await run_sync(self._db.get_item, TableName=self._table, Key=key)

        def save(self, item):
            self._db.transact_write_items(TransactItems=[{"Put": {"Item": item}}, {"ConditionCheck": {"Key": item}}])

        def rows(self, sql):
            return self._table.query(sql)  # not a client: a table name

    def build(settings, cache):
        ddb = cache.get("ddb") or aws.client("dynamodb", settings)
        Keys(aws.client("secretsmanager", settings))
        queue = aws.client("sqs", settings)
        queue.receive_message(QueueUrl="u")
        return Store(ddb, "t")
''')


def test_the_finder_sees_direct_calls_callables_passed_on_and_transaction_items_and_nothing_else():
    found = find_calls({"sample.py": ast.parse(SAMPLE)})
    calls = {(c.service, c.operation, c.items) for entry in found.values() for c in entry.calls}
    assert calls == {
        ("secretsmanager", "GetSecretValue", ()),  # a client passed to a constructor, kept on self
        ("dynamodb", "GetItem", ()),  # passed on to run_sync, not called here
        ("dynamodb", "TransactWriteItems", ("ConditionCheck", "Put")),
        ("sqs", "ReceiveMessage", ()),
    }
    # self._table is a string: its .query is reported for a decision, not taken for DynamoDB's Query; dict.get is no operation.
    assert {u.split(" ", 1)[1] for entry in found.values() for u in entry.unresolved} == {"self._table.query"}


# --- What the roles grant ------------------------------------------------------------------------


def _task_role_statements(assembly, region, service):
    """The names of the task's containers and the Allow statements of the task role that runs the service's app and
    worker containers."""
    resources = assembly.template(f"mf-{region}/services")["Resources"]
    prefix = service.replace("-", "")
    (task,) = [r["Properties"] for lid, r in resources.items()
               if r["Type"] == "AWS::ECS::TaskDefinition" and lid.startswith(prefix) and "canary" not in lid]
    containers = {c["Name"] for c in task["ContainerDefinitions"]}
    # The worker runs in the app's task, so under the same task role (tests/test_service_resources.py).
    assert "app" in containers and ("worker" in containers) is (service != "auth")
    role = task["TaskRoleArn"]["Fn::GetAtt"][0]
    properties = resources[role]["Properties"]
    assert not properties.get("ManagedPolicyArns") and not properties.get("Policies")
    statements = [s for r in resources.values() if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
                  for s in r["Properties"]["PolicyDocument"]["Statement"]]
    assert all(s["Effect"] == "Allow" for s in statements)
    return containers, statements


def _own_resource(service, action, resource):
    """The service's own table (or one of its indexes), secret, queue or the region's bus, as the template names it."""
    text = _text(resource)
    return {
        "dynamodb": re.fullmatch(rf"arn:aws:dynamodb:[a-z0-9-]+:\S+:table/mf-{service}(/index/[A-Za-z0-9_.-]+)?", text),
        "secretsmanager": re.fullmatch(rf"arn:aws:secretsmanager:[a-z0-9-]+:\S+:secret:mf/{service}/jwt-signing-key-\?{{6}}", text),
        "sqs": re.fullmatch(rf"<{service.replace('-', '')}resourcesQueue[0-9A-F]{{8}}\.Arn>", text),
        "events": "EventBus" in text and "platform" in text,
    }[action.split(":")[0]]


@pytest.mark.parametrize("profile", ["dev", "prod"])
@pytest.mark.parametrize("service", list(PACKAGES))
def test_every_call_is_granted_on_the_services_own_resources_and_nothing_unused_is_granted(dev, prod, profile, service):
    assembly = {"dev": dev, "prod": prod}[profile]
    for region in REGIONS:
        containers, statements = _task_role_statements(assembly, region, service)
        allowed_unused = [action for action, (container, _) in ALLOWED_UNUSED.items() if container in (None, *containers)]
        for action, sites in CALLED[service].items():
            granting = [s for s in statements if any(fnmatch.fnmatchcase(action, a) for a in _as_list(s["Action"]))]
            assert granting, f"{region}: {service}'s task role lacks {action}, called at {sorted(sites)}"
            assert all(_own_resource(service, action, s["Resource"]) for s in granting), (region, action, granting)
        granted = {a for s in statements for a in _as_list(s["Action"])}
        unused = {a for a in granted if a not in CALLED[service] and not any(fnmatch.fnmatchcase(a, u) for u in allowed_unused)}
        assert not unused, f"{region}: {service}'s task role grants what its code never calls: {sorted(unused)}"


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_the_stages_permissions_boundary_admits_every_call(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    for region in REGIONS:
        (boundary,) = assembly.resources(f"mf-{region}/baseline", "AWS::IAM::ManagedPolicy").values()
        statements = boundary["Properties"]["PolicyDocument"]["Statement"]
        for service, actions in CALLED.items():
            for action in actions:
                prefix = action.split(":")[0]
                resource = f"arn:aws:{prefix}:{region}:{EXAMPLE_ACCOUNT}:mf-{service}"
                assert _decision(statements, action, resource, {"aws:RequestedRegion": region}) == "allowed", (region, service, action)
