"""GitHub OIDC: with ``github`` configured, the primary region's global stack lets exactly one repository's
branch assume two roles (push images, cdk diff), each capped by the stage's permissions boundary."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from constructs.github_oidc import ECR_PUSH_ACTIONS, GitHubOidc
from tests.conftest import EXAMPLE_GITHUB

GLOBAL = "mf-eu-central-1/global"
SUBJECT = f"repo:{EXAMPLE_GITHUB['repository']}:ref:refs/heads/{EXAMPLE_GITHUB['branch']}"
TOKEN_CONDITIONS = {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                                     "token.actions.githubusercontent.com:sub": SUBJECT}}


def _role(assembly, name: str) -> tuple[str, dict]:
    roles = assembly.resources(GLOBAL, "AWS::IAM::Role")
    return next((logical_id, role) for logical_id, role in roles.items() if role["Properties"]["RoleName"] == name)


def _statements(assembly, role_logical_id: str) -> list[dict]:
    policies = [policy for policy in assembly.resources(GLOBAL, "AWS::IAM::Policy").values()
                if policy["Properties"]["Roles"] == [{"Ref": role_logical_id}]]
    return [statement for policy in policies for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def _boundary_statements(assembly, stack_path: str) -> list[dict]:
    (policy,) = assembly.resources(stack_path, "AWS::IAM::ManagedPolicy").values()
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_the_provider_is_githubs_with_the_sts_audience(github):
    (provider,) = github.resources(GLOBAL, "AWS::IAM::OIDCProvider").values()
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    # The native resource, not the custom-resource provider (no Lambda to trust or patch).
    assert not github.resources(GLOBAL, "Custom::AWSCDKOpenIdConnectProvider")


@pytest.mark.parametrize("role_name", ["mf-github-image-push", "mf-github-diff"])
def test_only_the_configured_repository_and_branch_can_assume_the_ci_roles(github, role_name):
    (provider_id,) = github.resources(GLOBAL, "AWS::IAM::OIDCProvider")
    _, role = _role(github, role_name)
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [{
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": TOKEN_CONDITIONS,  # StringEquals: no wildcard can widen the subject
        "Effect": "Allow",
        "Principal": {"Federated": {"Ref": provider_id}},
    }]
    assert role["Properties"]["MaxSessionDuration"] == 3600
    assert "mf-eu-central-1-permissions-boundary" in json.dumps(role["Properties"]["PermissionsBoundary"])


def _push_and_check(statements: list[dict]) -> tuple[dict, dict]:
    """The push role's push statement and its read-only check statement, apart from the registry token's."""
    (push,) = [s for s in statements if s["Action"] not in ("ecr:GetAuthorizationToken", "ecr:DescribeImages")]
    (check,) = [s for s in statements if s["Action"] == "ecr:DescribeImages"]
    return push, check


def _assert_names_the_service_repositories_of(github, statement: dict, region: str) -> None:
    """``statement`` names the three service repositories in ``region``, which that region's platform stack creates."""
    repositories = [json.dumps(arn) for arn in statement["Resource"]]
    assert len(repositories) == 3
    for service, arn in zip(["auth", "persona", "vc-start"], repositories, strict=True):
        assert f"arn:aws:ecr:{region}:" in arn and arn.endswith(f':repository/mf/{service}"]]}}')
    names = {r["Properties"]["RepositoryName"] for r in github.resources(f"mf-{region}/platform", "AWS::ECR::Repository").values()}
    assert names == {"mf/auth", "mf/persona", "mf/vc-start"}


def test_the_push_role_may_push_only_to_the_primary_regions_service_repositories(github):
    """containers.yml pushes to the primary region only: replication copies each push to the other regions."""
    role_id, _ = _role(github, "mf-github-image-push")
    statements = _statements(github, role_id)
    assert {"Action": "ecr:GetAuthorizationToken", "Effect": "Allow", "Resource": "*"} in statements
    push, _ = _push_and_check(statements)
    assert push["Action"] == sorted(ECR_PUSH_ACTIONS)
    _assert_names_the_service_repositories_of(github, push, "eu-central-1")


def test_the_push_role_may_only_look_up_tags_in_the_other_regions_repositories(github):
    """Before the push, containers.yml asks every other region whether it has the repository and the tag:
    DescribeImages there, nothing that writes (and nothing in us-east-1, where the edge has no repository)."""
    role_id, _ = _role(github, "mf-github-image-push")
    _, check = _push_and_check(_statements(github, role_id))
    _assert_names_the_service_repositories_of(github, check, "eu-west-1")
    # The role's boundary (the primary stage's) lets it use ECR in both regions.
    boundary = {s.get("Sid"): s for s in _boundary_statements(github, "mf-eu-central-1/baseline")}
    platform = boundary["AllowOnlyThePlatformsServicesInTheAppsRegions"]
    assert "ecr:*" in platform["Action"]
    assert sorted(platform["Condition"]["StringEquals"]["aws:RequestedRegion"]) == ["eu-central-1", "eu-west-1"]


def test_the_push_role_can_tag_an_index_of_scanned_manifests_but_not_delete_or_retag(github):
    """containers.yml pushes manifests by digest and then tags an index of them: `imagetools create` reads
    each manifest and its config blob back. Immutability must stay the repository's, not the role's, choice."""
    role_id, _ = _role(github, "mf-github-image-push")
    push, _ = _push_and_check(_statements(github, role_id))
    assert {"ecr:PutImage", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:BatchCheckLayerAvailability"} <= set(push["Action"])
    assert not {"ecr:BatchDeleteImage", "ecr:PutImageTagMutability", "ecr:DeleteRepository", "ecr:SetRepositoryPolicy",
                "ecr:PutLifecyclePolicy", "ecr:PutImageScanningConfiguration"} & set(push["Action"])
    assert not any("*" in action for action in push["Action"])


def test_the_diff_role_may_only_assume_the_cdk_lookup_roles_and_the_boundary_lets_it(github):
    role_id, _ = _role(github, "mf-github-diff")
    (statement,) = _statements(github, role_id)
    assert statement["Action"] == "sts:AssumeRole"
    lookup_roles = statement["Resource"]
    rendered = [json.dumps(arn) for arn in lookup_roles]
    for region, arn in zip(["eu-central-1", "eu-west-1", "us-east-1"], rendered, strict=True):  # both regions and the edge
        assert ":role/cdk-hnb659fds-lookup-role-" in arn and arn.endswith(f'"-{region}"]]}}')
    # A boundary that did not allow sts:AssumeRole on these ARNs would make the role useless.
    boundary = _boundary_statements(github, "mf-eu-central-1/baseline")
    allowed = [s for s in boundary if s["Effect"] == "Allow" and s["Action"] == "sts:AssumeRole"]
    assert allowed == [{"Sid": "AllowAssumingOnlyTheNamedRoles", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": lookup_roles}]


def test_no_other_boundary_allows_assuming_roles(github, dev):
    for assembly, stack_path in [(github, "mf-eu-west-1/baseline"), (github, "mf-edge/baseline"), (dev, "mf-eu-central-1/baseline")]:
        assert "sts:" not in json.dumps(_boundary_statements(assembly, stack_path)), stack_path


def test_the_role_arns_are_stack_outputs_named_after_the_repository_variables(github):
    outputs = github.template(GLOBAL)["Outputs"]
    push_id, _ = _role(github, "mf-github-image-push")
    diff_id, _ = _role(github, "mf-github-diff")
    assert outputs["GitHubImagePushRoleArn"]["Value"] == {"Fn::GetAtt": [push_id, "Arn"]}
    assert "AWS_IMAGE_PUSH_ROLE_ARN" in outputs["GitHubImagePushRoleArn"]["Description"]
    assert outputs["GitHubDiffRoleArn"]["Value"] == {"Fn::GetAtt": [diff_id, "Arn"]}
    assert "AWS_DIFF_ROLE_ARN" in outputs["GitHubDiffRoleArn"]["Description"]


def test_without_github_config_there_is_no_oidc_provider_and_no_ci_role(dev):
    for stack_path, _, resource in dev.all_resources():
        assert resource["Type"] != "AWS::IAM::OIDCProvider", stack_path
        assert "github" not in json.dumps(resource.get("Properties", {})).lower(), stack_path


def test_an_existing_provider_is_trusted_instead_of_creating_a_second_one():
    # IAM allows one provider per URL and account: a second copy of the app, or any other tool that
    # already registered GitHub, would make creating one fail.
    stack = cdk.Stack(cdk.App(), "Ci", env=cdk.Environment(account="111122223333", region="eu-central-1"))
    existing = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com"
    GitHubOidc(stack, "GitHubOidc", repository="example-org/foundation", branch="release/2026", role_name_prefix="mf",
               image_repository_arns=["arn:aws:ecr:eu-central-1:111122223333:repository/mf/auth"], diff_regions=["eu-central-1"],
               existing_provider_arn=existing)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::IAM::OIDCProvider", 0)
    for role in template.find_resources("AWS::IAM::Role").values():
        (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Federated": existing}
        assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == "repo:example-org/foundation:ref:refs/heads/release/2026"


@pytest.mark.parametrize("kwargs, message", [
    ({"repository": "foundation"}, "owner/name"),
    ({"branch": "release/*"}, "without wildcards"),
    ({"image_repository_arns": []}, "ECR repositories"),
    ({"diff_regions": []}, "regions"),
])
def test_the_construct_refuses_props_that_would_widen_or_break_the_trust(kwargs, message):
    props = {"repository": "example-org/foundation", "branch": "main", "role_name_prefix": "mf",
             "image_repository_arns": ["arn:aws:ecr:eu-central-1:111122223333:repository/mf/auth"], "diff_regions": ["eu-central-1"]}
    with pytest.raises(ValueError, match=message):
        GitHubOidc(cdk.Stack(cdk.App(), "Ci"), "GitHubOidc", **{**props, **kwargs})
