"""The services' state survives a region (issue 6, Data and Security): a global table per service and the
signer's replicated, rotated secret, all in the primary region's data stack, each encrypted with a
multi-Region key and its replica; every region's services reach their own replica by name."""

from __future__ import annotations

import json
import re

import pytest

from constructs.service_data.signing_key_rotation import REPLICA_KEY_ACTIONS, ROTATION_KEY_ACTIONS, ROTATION_SECRET_ACTIONS
from stacks.config import PLATFORM_KEY_ALIASES
from tests.assembly import REPO_ROOT, source_value
from tests.conftest import VARIANTS
from constructs.lambda_layer import LAYER_TARGET

PRIMARY, OTHER = "eu-central-1", "eu-west-1"
SERVICES = ("auth", "persona", "vc-start")
DATA = f"mf-{PRIMARY}/data"


def _of_type(assembly, stack, resource_type):
    return assembly.resources(stack, resource_type)


def _owned(assembly, resource_type, stack=DATA):
    """service name -> (logical ID, resource) of the one resource of that type the service's ServiceData holds."""
    owned = {}
    for logical_id, resource in _of_type(assembly, stack, resource_type).items():
        service = next(name for name in sorted(SERVICES, key=len, reverse=True) if logical_id.startswith(name.replace("-", "") + "data"))
        assert service not in owned, logical_id
        owned[service] = (logical_id, resource)
    return owned


def _text(value):
    """A CloudFormation string expression as readable text: Refs and GetAtts as <...>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_text(part) for part in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    raise AssertionError(value)


def _replica_arn(key_id, region=OTHER):
    """The replica's ARN as the templates write it: the primary's key ID in the other region."""
    return f"arn:aws:kms:{region}:<AWS::AccountId>:key/<{key_id}>"


# --- Where the data lives ----------------------------------------------------------------------


def test_only_the_primary_region_has_a_data_stack_and_its_services_deploy_after_it(dev):
    assert DATA in dev.templates and f"mf-{OTHER}/data" not in dev.templates
    artifacts = dev.stack_artifacts
    assert artifacts[DATA]["id"] in artifacts[f"mf-{PRIMARY}/services"]["dependencies"]
    assert {artifacts[f"mf-{PRIMARY}/{stack}"]["id"] for stack in ("baseline", "network")} <= set(artifacts[DATA]["dependencies"])
    # No region's services stack holds a table, a table key or a secret of its own any more.
    for region in (PRIMARY, OTHER):
        for resource_type in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::SecretsManager::Secret", "AWS::KMS::Key"):
            assert not _of_type(dev, f"mf-{region}/services", resource_type), (region, resource_type)


def test_each_service_has_a_global_table_replicated_to_the_other_region_each_replica_with_its_regions_key(dev):
    tables, keys = _owned(dev, "AWS::DynamoDB::GlobalTable"), _owned(dev, "AWS::KMS::Key")
    assert set(tables) == set(keys) == set(SERVICES)
    for name, (_, table) in tables.items():
        properties = table["Properties"]
        assert properties["TableName"] == f"mf-{name}"
        assert properties["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
        # The index keys' definitions follow (test below).
        assert properties["AttributeDefinitions"][:2] == [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
        assert properties["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
        key_id = keys[name][0]
        replicas = {replica["Region"]: replica for replica in properties["Replicas"]}
        assert set(replicas) == {PRIMARY, OTHER}
        for region, replica in replicas.items():
            assert replica["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
            expected_key = f"<{key_id}.Arn>" if region == PRIMARY else _replica_arn(key_id)
            assert _text(replica["SSESpecification"]["KMSMasterKeyId"]) == expected_key, (name, region)


# The sparse indexes: vc-start's sweeper finds sessions stuck in PENDING (or CANCELLED, compensation unpublished)
# through `sweep` (only such items carry sweep_shard and sweep_at); persona finds its expired holds through `holds`
# (only a HELD reservation has hold_expires_at, a number). Each reader reads the items themselves: keys only.
INDEXES = {
    "vc-start": ("sweep", ("sweep_shard", "S"), ("sweep_at", "S")),
    "persona": ("holds", ("persona_id", "S"), ("hold_expires_at", "N")),
}


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_vc_start_and_persona_tables_have_one_sparse_index_each_projecting_keys_only(dev, prod, profile):
    tables = _owned({"dev": dev, "prod": prod}[profile], "AWS::DynamoDB::GlobalTable")
    for name, (_, table) in tables.items():
        properties = table["Properties"]
        if name not in INDEXES:
            assert "GlobalSecondaryIndexes" not in properties, name
            assert [a["AttributeName"] for a in properties["AttributeDefinitions"]] == ["pk", "sk"], name
            continue
        index_name, (partition_key, partition_type), (sort_key, sort_type) = INDEXES[name]
        assert properties["GlobalSecondaryIndexes"] == [{
            "IndexName": index_name,
            "KeySchema": [{"AttributeName": partition_key, "KeyType": "HASH"}, {"AttributeName": sort_key, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }]
        assert properties["AttributeDefinitions"] == [{"AttributeName": attribute, "AttributeType": kind} for attribute, kind
                                                      in (("pk", "S"), ("sk", "S"), (partition_key, partition_type), (sort_key, sort_type))]
        # Every replica has it (CDK names it per replica, where provisioned read capacity would go).
        assert {replica["Region"]: replica["GlobalSecondaryIndexes"] for replica in properties["Replicas"]} == {
            region: [{"IndexName": index_name}] for region in (PRIMARY, OTHER)}
        # Still on demand: the index takes its capacity from the table's mode, with nothing to provision.
        assert properties["BillingMode"] == "PAY_PER_REQUEST" and "WriteProvisionedThroughputSettings" not in properties


def test_each_service_key_is_a_rotating_multi_region_key_replicated_to_the_other_region_before_use(dev):
    keys = _owned(dev, "AWS::KMS::Key")
    replicas = _owned(dev, "Custom::KmsReplicaKey")
    tables = _owned(dev, "AWS::DynamoDB::GlobalTable")
    for name, (key_id, key) in keys.items():
        assert key["Properties"]["MultiRegion"] is True and key["Properties"]["EnableKeyRotation"] is True
        replica_id, replica = replicas[name]
        create = json.loads(_text(replica["Properties"]["Create"]))
        assert (create["service"], create["action"]) == ("KMS", "replicateKey")
        assert create["parameters"]["KeyId"] == f"<{key_id}.Arn>" and create["parameters"]["ReplicaRegion"] == OTHER
        assert create["physicalResourceId"] == {"id": _replica_arn(key_id)}
        # The table (and auth's secret) must not be created before the replica key they use is Enabled: they depend
        # on its Ready resource, which depends on the replicate resource.
        ready_id, ready = _owned(dev, "Custom::KmsReplicaKeyReady")[name]
        assert replica_id in ready["DependsOn"]
        assert ready_id in tables[name][1]["DependsOn"] and replica_id not in tables[name][1]["DependsOn"]
    aliases = {r["Properties"]["AliasName"] for r in _of_type(dev, DATA, "AWS::KMS::Alias").values()}
    assert aliases == {f"alias/mf/{name}" for name in SERVICES}


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_two_kms_keys_claim_one_alias_in_an_account_and_region(request, variant):
    """KMS refuses a second alias of one name in an account and region (AlreadyExists): the stack that creates it
    fails. The services' keys are alias/<prefix>/<service> (data stack); every other alias/<prefix>/... is a platform
    key's, named in PLATFORM_KEY_ALIASES, which config refuses as service names."""
    assembly = request.getfixturevalue(variant)
    holders = {}
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] == "AWS::KMS::Alias":
            name = resource["Properties"]["AliasName"]
            holders.setdefault((assembly.stack_artifacts[stack]["environment"], name), []).append(f"{stack} {logical_id}")
            if name.startswith("alias/mf/") and not stack.endswith("/data"):
                assert name.removeprefix("alias/mf/") in PLATFORM_KEY_ALIASES, f"{stack} {logical_id}: {name}"
    assert {key: ids for key, ids in holders.items() if len(ids) > 1} == {}
    assert {"alias/mf/logs", "alias/mf/ecr", *(f"alias/mf/{name}" for name in SERVICES)} <= {name for _, name in holders}


def test_the_replica_key_custom_resource_may_replicate_only_its_key_into_the_other_region(dev):
    for name, (replica_id, _) in _owned(dev, "Custom::KmsReplicaKey").items():
        (policy,) = [p for i, p in _of_type(dev, DATA, "AWS::IAM::Policy").items() if i.startswith(replica_id.removesuffix(replica_id[-8:]))]
        statements = {tuple(s["Action"]) if isinstance(s["Action"], list) else (s["Action"],): s
                      for s in policy["Properties"]["PolicyDocument"]["Statement"]}
        key_id = _owned(dev, "AWS::KMS::Key")[name][0]
        replicate = statements[("kms:ReplicateKey",)]
        assert replicate["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
        assert replicate["Condition"] == {"StringEquals": {"kms:ReplicaRegion": OTHER}}
        create = statements[("kms:CreateKey", "kms:TagResource")]
        assert create["Condition"] == {"StringEquals": {"aws:RequestedRegion": [PRIMARY, OTHER]}}
        assert _text(statements[("kms:ScheduleKeyDeletion",)]["Resource"]) == _replica_arn(key_id)


# main's AwsCustomResource replicate resources, as deployed: CloudFormation cannot change a custom resource's
# ServiceToken, and a new logical ID would delete the old resource, whose delete schedules the replica's deletion in dev.
REPLICATE_IDS = {"auth": "authdataKeyeuwest1365889EF", "persona": "personadataKeyeuwest1F8EF4398",
                 "vc-start": "vcstartdataKeyeuwest14B291790"}
AWS_CUSTOM_RESOURCE_FUNCTION = "AWS679f53fac002430cb0da5b7982bd22872D164C4C"


@pytest.mark.parametrize("profile, retained", [("dev", False), ("prod", True)])
def test_the_replicate_resources_are_the_deployed_aws_custom_resources_unchanged(dev, prod, profile, retained):
    assembly = {"dev": dev, "prod": prod}[profile]
    replicas = _owned(assembly, "Custom::KmsReplicaKey")
    assert {name: replica_id for name, (replica_id, _) in replicas.items()} == REPLICATE_IDS
    for replica_id, replica in replicas.values():
        assert replica["Properties"]["ServiceToken"] == {"Fn::GetAtt": [AWS_CUSTOM_RESOURCE_FUNCTION, "Arn"]}
        assert set(replica["Properties"]) == {"ServiceToken", "Create", "InstallLatestAwsSdk", *(() if retained else ("Delete",))}
        # Its own policy only: the Ready resource comes after it, never before.
        assert replica["DependsOn"] == [replica_id[:-8] + "CustomResourcePolicy" + replica["DependsOn"][0][-8:]]


def _ready_provider_functions(assembly, stack=DATA):
    """The logical IDs of the provider framework functions the Ready resources' ServiceToken names."""
    return {ready["Properties"]["ServiceToken"]["Fn::GetAtt"][0] for ready in _of_type(assembly, stack, "Custom::KmsReplicaKeyReady").values()}


def _ready_handler(assembly, stack=DATA):
    """The Ready resources' handler function: the one the provider framework invokes (its USER_ON_EVENT_FUNCTION_ARN)."""
    resources = assembly.template(stack)["Resources"]
    (framework_id,) = _ready_provider_functions(assembly, stack)
    handler_id = resources[framework_id]["Properties"]["Environment"]["Variables"]["USER_ON_EVENT_FUNCTION_ARN"]["Fn::GetAtt"][0]
    return handler_id, resources[handler_id]


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_one_ready_provider_per_stack_a_python_handler_that_may_wait_out_lambdas_limit(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    readies = _owned(assembly, "Custom::KmsReplicaKeyReady")
    assert set(readies) == set(SERVICES)
    for name, (_, ready) in readies.items():
        key_id = _owned(assembly, "AWS::KMS::Key")[name][0]
        assert ready["Properties"]["ReplicaRegion"] == OTHER
        assert re.sub(r":[0-9]{12}:", ":<AWS::AccountId>:", _text(ready["Properties"]["ReplicaKeyArn"])) == _replica_arn(key_id)
    assert len(_ready_provider_functions(assembly)) == 1
    _, function = _ready_handler(assembly)
    assert function["Properties"]["Runtime"] == "python3.14" and function["Properties"]["Architectures"] == ["arm64"]
    assert function["Properties"]["Handler"] == "handler.handler" and function["Properties"]["Timeout"] == 900


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_the_ready_handler_may_only_describe_the_replica_keys(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    _, function = _ready_handler(assembly)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy,) = [p for p in _of_type(assembly, DATA, "AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]]
    grants = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants |= {(action, re.sub(r":[0-9]{12}:", ":<AWS::AccountId>:", _text(resource))) for action in actions for resource in resources}
    keys = [key_id for key_id, _ in _owned(assembly, "AWS::KMS::Key").values()]
    assert {action for action, _ in grants if not action.startswith("logs:")} == {"kms:DescribeKey"}
    assert {grant for grant in grants if grant[0].startswith("kms:")} == {("kms:DescribeKey", _replica_arn(key_id)) for key_id in keys}
    assert {action for action, _ in grants if action.startswith("logs:")} == {"logs:CreateLogStream", "logs:PutLogEvents"}
    # Nothing else in the role: no managed policy.
    assert not assembly.template(DATA)["Resources"][role_id]["Properties"].get("ManagedPolicyArns")


def test_every_replica_key_is_tagged_with_the_region_it_lives_in(dev):
    """Cost allocation and inventory by the `region` tag: a eu-west-1 replica must not count as eu-central-1.
    (Global-table replicas: tests/test_cross_cutting.py checks every replica's tags.)"""
    for replica_key in _of_type(dev, DATA, "Custom::KmsReplicaKey").values():
        tags = json.loads(_text(replica_key["Properties"]["Create"]))["parameters"]["Tags"]
        assert {"TagKey": "region", "TagValue": OTHER} in tags and {"TagKey": "project", "TagValue": "mf"} in tags


# --- Profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile, retained", [("dev", False), ("prod", True)])
def test_prod_retains_tables_keys_replicas_and_the_secret_and_protects_tables_and_dev_deletes_them(dev, prod, profile, retained):
    assembly = {"dev": dev, "prod": prod}[profile]
    policy = "Retain" if retained else "Delete"
    for resource_type in ("AWS::DynamoDB::GlobalTable", "AWS::KMS::Key", "AWS::SecretsManager::Secret"):
        owned = _owned(assembly, resource_type)
        assert owned
        for logical_id, resource in owned.values():
            assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (policy, policy), logical_id
    for _, table in _owned(assembly, "AWS::DynamoDB::GlobalTable").values():
        assert {replica["DeletionProtectionEnabled"] for replica in table["Properties"]["Replicas"]} == {retained}
    # The replica keys: in dev, deleting the stack schedules their deletion too; in prod they stay.
    for _, replica in _owned(assembly, "Custom::KmsReplicaKey").values():
        if retained:
            assert "Delete" not in replica["Properties"]
        else:
            delete = json.loads(_text(replica["Properties"]["Delete"]))
            assert (delete["action"], delete["region"]) == ("scheduleKeyDeletion", OTHER)
            assert delete["parameters"]["PendingWindowInDays"] == 7


# --- The signing-key secret and its rotation -----------------------------------------------------


def test_the_signing_key_secret_is_replicated_to_the_other_region_encrypted_with_each_regions_key(dev):
    ((secret_id, secret),) = _of_type(dev, DATA, "AWS::SecretsManager::Secret").items()
    assert secret_id.startswith("authdata")
    key_id = _owned(dev, "AWS::KMS::Key")["auth"][0]
    properties = secret["Properties"]
    assert properties["Name"] == "mf/auth/jwt-signing-key"
    assert properties["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    ((replica),) = properties["ReplicaRegions"]
    assert replica["Region"] == OTHER and _text(replica["KmsKeyId"]) == _replica_arn(key_id)
    assert _owned(dev, "Custom::KmsReplicaKeyReady")["auth"][0] in secret["DependsOn"]


def _rotation(assembly):
    (schedule,) = _of_type(assembly, DATA, "AWS::SecretsManager::RotationSchedule").values()
    function_id = schedule["Properties"]["RotationLambdaARN"]["Fn::GetAtt"][0]
    return schedule, function_id, assembly.template(DATA)["Resources"][function_id]


def test_the_signing_key_rotates_every_30_days_and_at_once_on_the_first_deploy(dev):
    schedule, function_id, _ = _rotation(dev)
    (secret_id,) = _of_type(dev, DATA, "AWS::SecretsManager::Secret")
    assert schedule["Properties"]["SecretId"] == {"Ref": secret_id}
    assert schedule["Properties"]["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    # The placeholder Secrets Manager generates is replaced by a real key as soon as the schedule exists.
    assert schedule["Properties"]["RotateImmediatelyOnUpdate"] is True
    # Secrets Manager may invoke the function (for this secret only) before the schedule is created.
    (permission_id, permission), = _of_type(dev, DATA, "AWS::Lambda::Permission").items()
    assert permission["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == {"Ref": secret_id}
    assert permission["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # ...and the function must hold its permissions (its role's policy) by then.
    role_id = dev.template(DATA)["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy_id,) = [i for i, p in _of_type(dev, DATA, "AWS::IAM::Policy").items() if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    assert {permission_id, policy_id} <= set(schedule["DependsOn"])


def test_the_rotation_function_runs_the_handler_with_its_dependencies_and_keeps_retired_keys_long_enough(dev):
    _, _, function = _rotation(dev)
    properties = function["Properties"]
    assert (properties["Runtime"], properties["Architectures"], properties["Handler"]) == ("python3.14", ["arm64"], "handler.handler")
    (layer_ref,) = properties["Layers"]
    layer = dev.template(DATA)["Resources"][layer_ref["Ref"]]["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.14"] and layer["CompatibleArchitectures"] == ["arm64"]
    # A token signed just before a rotation, by a task that has not re-read the secret yet, must still
    # verify wherever a verifier's cached JWKS is about to be refreshed.
    retention = int(properties["Environment"]["Variables"]["PREVIOUS_KEY_RETENTION_SECONDS"])
    # How long auth may sign with a retired key, plus how long a token it signed lives, plus the verifiers'
    # JWKS cache: read from the services' source, so a longer token or cache there fails here.
    auth_secret_cache = source_value("services/auth/auth_service/keys.py", r"^SECRET_CACHE_SECONDS = ([\d.]+)$")
    access_token_ttl = source_value("services/auth/auth_service/settings.py",
                                    r"^    access_token_ttl_seconds: int = Field\(default=(\d+)\b")
    jwks_cache = source_value("services/common/servicekit/auth.py", r"^        cache_seconds: float = ([\d.]+),$")
    assert retention >= auth_secret_cache + access_token_ttl + jwks_cache
    log_group = dev.template(DATA)["Resources"][properties["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
    assert log_group["RetentionInDays"] == 30 and "KmsKeyId" in log_group


def test_the_layer_is_built_for_the_functions_runtime_and_architecture():
    """make install chooses the layer's wheels; they must match what the function runs on."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    python = re.search(r"^LAYER_PYTHON := (\S+)$", makefile, re.MULTILINE).group(1)
    arch = re.search(r"^LAYER_ARCH := (\S+)$", makefile, re.MULTILINE).group(1)
    from constructs.service_data import signing_key_rotation as rotation

    assert str(rotation.LAYER_DIR.parent.relative_to(REPO_ROOT)) in re.search(r"^LAYERS := (.+)$", makefile, re.MULTILINE).group(1).split()
    assert rotation.RUNTIME.name == f"python{python}"
    assert {"aarch64": "arm64", "x86_64": "x86_64"}[arch] == rotation.ARCHITECTURE.name
    assert LAYER_TARGET == f"python{python} {arch}"
    assert (rotation.LAYER_DIR / ".installed").read_text().strip() == LAYER_TARGET
    assert list((rotation.LAYER_DIR / "python").glob(f"_cffi_backend.cpython-{python.replace('.', '')}-{arch}-linux-gnu.so"))


def test_the_rotation_function_may_use_only_its_secret_and_that_secrets_keys_through_secrets_manager(dev):
    _, _, function = _rotation(dev)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy,) = [p for p in _of_type(dev, DATA, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    (secret_id,) = _of_type(dev, DATA, "AWS::SecretsManager::Secret")
    key_id = _owned(dev, "AWS::KMS::Key")["auth"][0]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_actions = {tuple(s["Action"]): s for s in statements}
    assert by_actions[tuple(ROTATION_SECRET_ACTIONS)]["Resource"] == {"Ref": secret_id}
    primary = by_actions[tuple(ROTATION_KEY_ACTIONS)]
    assert primary["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert primary["Condition"] == {"StringEquals": {"kms:ViaService": f"secretsmanager.{PRIMARY}.amazonaws.com",
                                                     "kms:EncryptionContext:SecretARN": {"Ref": secret_id}}}
    # Secrets Manager encrypts the new version for the replica with the replica's key, as the caller.
    replica = by_actions[tuple(REPLICA_KEY_ACTIONS)]
    assert _text(replica["Resource"]) == _replica_arn(key_id)
    assert replica["Condition"] == {"StringEquals": {"kms:ViaService": f"secretsmanager.{OTHER}.amazonaws.com"}}
    logs = by_actions[("logs:CreateLogStream", "logs:PutLogEvents")]
    assert logs["Resource"]["Fn::GetAtt"][0] == function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert len(statements) == 4 and "*" not in json.dumps([s["Resource"] for s in statements])
    # No managed policy (AWSLambdaBasicExecutionRole would allow writing to any log group).
    assert "ManagedPolicyArns" not in dev.template(DATA)["Resources"][role_id]["Properties"]


def test_rotation_no_longer_needs_acknowledging(dev):
    report = json.dumps(dev.validation_report())
    for rule in ("AwsSolutions-SMG4", "NIST.800.53.R5-SecretsManagerRotationEnabled"):
        assert rule not in report, rule


# --- Every region's services reach their replica by name -----------------------------------------


def _task_role_statements(assembly, region, service):
    prefix = service.replace("-", "")
    for logical_id, policy in _of_type(assembly, f"mf-{region}/services", "AWS::IAM::Policy").items():
        if logical_id.startswith(prefix) and "TaskRole" in logical_id and "canary" not in logical_id:
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


@pytest.mark.parametrize("region", [PRIMARY, OTHER])
def test_each_regions_task_roles_use_their_own_regions_table_and_secret_through_their_own_regions_services(dev, region):
    any_key = f"arn:aws:kms:{region}:<AWS::AccountId>:key/*"
    for service in SERVICES:
        statements = list(_task_role_statements(dev, region, service))
        tables = [_text(s["Resource"]) for s in statements if "dynamodb:" in json.dumps(s["Action"])]
        table = f"arn:aws:dynamodb:{region}:<AWS::AccountId>:table/mf-{service}"
        # vc-start also queries its sweep index, persona its holds index, each by its own ARN (tests/test_service_resources.py).
        assert tables == [table, *([f"{table}/index/{INDEXES[service][0]}"] if service in INDEXES else [])]
        kms = [s for s in statements if "kms:" in json.dumps(s["Action"])]
        assert kms and all(_text(s["Resource"]) == any_key for s in kms)
        crypto = [s for s in kms if "kms:Decrypt" in s["Action"] and s["Condition"]["StringEquals"]["kms:ViaService"].startswith("dynamodb.")]
        # The replica's key ID is unknown here: the table's name in DynamoDB's encryption context pins the grant.
        assert [s["Condition"] for s in crypto] == [{"StringEquals": {
            "kms:ViaService": f"dynamodb.{region}.amazonaws.com", "kms:EncryptionContext:aws:dynamodb:tableName": f"mf-{service}"}}]
        secret_pattern = f"arn:aws:secretsmanager:{region}:<AWS::AccountId>:secret:mf/auth/jwt-signing-key-??????"
        # One action renders as a string, more as a list.
        secrets = [s for s in statements if "secretsmanager:" in json.dumps(s["Action"])]
        via_secrets = [s for s in kms if s["Condition"]["StringEquals"]["kms:ViaService"].startswith("secretsmanager.")]
        if service == "auth":
            (secret,) = secrets
            assert _text(secret["Resource"]) == secret_pattern
            (decrypt,) = via_secrets
            assert decrypt["Action"] == "kms:Decrypt"
            assert decrypt["Condition"]["StringEquals"] == {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
            assert _text(decrypt["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]) == secret_pattern
        else:
            assert not secrets and not via_secrets



def test_only_the_key_wildcard_of_the_task_roles_is_acknowledged_and_it_says_what_pins_it(dev):
    """The wildcard over this region's keys is acknowledged on the task roles alone, with its reason."""
    acknowledged = {}
    for report in dev.validation_report()["pluginReports"]:
        assert not [v for v in report["violations"] if "key/*" in v["ruleName"]]
        for violation in report["suppressedViolations"]:
            if re.fullmatch(r"AwsSolutions-IAM5\[Resource::arn:aws:kms:[a-z0-9-]+:<AWS::AccountId>:key/\*\]", violation["ruleName"]):
                assert "encryption context" in violation["reason"] and "kms:ViaService" in violation["reason"]
                for construct in violation["violatingConstructs"]:
                    acknowledged[construct["constructPath"]] = violation["acknowledgedAt"]
    expected = {f"mf-{region}/services/{service}/TaskRole/DefaultPolicy/Resource": f"mf-{region}/services/{service}/TaskRole"
                for region in (PRIMARY, OTHER) for service in SERVICES}
    assert acknowledged == expected


def test_with_one_region_the_data_stack_replicates_nothing_and_rotation_days_come_from_config(one_region):
    """one_region (tests/conftest.py): eu-west-1 (OTHER) alone, data signing_key_rotation_days 7."""
    assembly = one_region
    stack = f"mf-{OTHER}/data"
    assert not _of_type(assembly, stack, "Custom::KmsReplicaKey")
    assert not _of_type(assembly, stack, "Custom::KmsReplicaKeyReady")
    for table in _of_type(assembly, stack, "AWS::DynamoDB::GlobalTable").values():
        assert [replica["Region"] for replica in table["Properties"]["Replicas"]] == [OTHER]
    (secret,) = _of_type(assembly, stack, "AWS::SecretsManager::Secret").values()
    assert "ReplicaRegions" not in secret["Properties"]
    (schedule,) = _of_type(assembly, stack, "AWS::SecretsManager::RotationSchedule").values()
    assert schedule["Properties"]["RotationRules"] == {"ScheduleExpression": "rate(7 days)"}


def test_the_service_keys_description_claims_no_access_control_the_key_policy_does_not_make(dev):
    for logical_id, key in _owned(dev, "AWS::KMS::Key").values():
        assert "only its task roles" not in key["Properties"]["Description"], logical_id
        assert "IAM policies decide" in key["Properties"]["Description"], logical_id
