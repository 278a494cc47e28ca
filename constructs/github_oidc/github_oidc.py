"""GitHub Actions -> AWS through OIDC: the account's provider and the roles CI workflows assume."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs.compliance import acknowledge_nag

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
# The audience aws-actions/configure-aws-credentials requests by default.
STS_AUDIENCE = "sts.amazonaws.com"
# What pushing the scanned images needs besides the registry token: upload blobs and manifests by
# digest (crane checks layers and manifests first), then tag an index of them (`docker buildx imagetools
# create` reads each manifest and its config blob for the platform: BatchGetImage, GetDownloadUrlForLayer),
# and DescribeImages: the workflow skips a commit whose immutable tag is already pushed. Nothing that
# deletes an image or changes the repository's tag mutability.
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload", "ecr:DescribeImages",
    "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart",
)


def cdk_lookup_role_arns(regions: Sequence[str], qualifier: str = cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER) -> list[str]:
    """The CDK bootstrap's lookup role in each region of this account: read-only, what `cdk diff
    --method=template` assumes. Built from pseudo parameters, so the same ARNs render in any stack
    (the permissions boundary that must allow them lives in another stack than the role)."""
    account, partition = cdk.Aws.ACCOUNT_ID, cdk.Aws.PARTITION
    return [f"arn:{partition}:iam::{account}:role/cdk-{qualifier}-lookup-role-{account}-{region}" for region in regions]


class GitHubOidc(Construct):
    """Lets one repository's workflows on one branch assume two roles: push images, and run `cdk diff`.

    Both roles trust only tokens whose ``aud`` is sts.amazonaws.com and whose ``sub`` is exactly
    ``repo:<repository>:ref:refs/heads/<branch>``: pull requests, other branches, tags, forks and
    jobs that use a GitHub environment get no credentials.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository: str,
        branch: str,
        role_name_prefix: str,
        image_repository_arns: Sequence[str],
        diff_regions: Sequence[str],
        image_check_repository_arns: Sequence[str] = (),
        bootstrap_qualifier: str = cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER,
        existing_provider_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if repository.count("/") != 1 or not all(repository.split("/")):
            raise ValueError(f"repository={repository!r} is invalid: expected owner/name")
        if not branch or any(char in branch for char in "*?: "):
            raise ValueError(f"branch={branch!r} is invalid: expected a branch name without wildcards, colons or spaces")
        if not image_repository_arns:
            raise ValueError("image_repository_arns=[] is invalid: name the ECR repositories CI may push to")
        if not diff_regions:
            raise ValueError("diff_regions=[] is invalid: name the regions whose stacks `cdk diff` reads")

        if existing_provider_arn:
            self.provider_arn = existing_provider_arn
        else:
            # The native resource (no custom resource). No thumbprints: IAM verifies GitHub's
            # certificate against its own trusted root CAs.
            provider = iam.OidcProviderNative(
                self, "Provider", url=f"https://{GITHUB_OIDC_HOST}", client_ids=[STS_AUDIENCE]
            )
            self.provider_arn = provider.oidc_provider_arn
        self.subject = f"repo:{repository}:ref:refs/heads/{branch}"

        self.image_push_role = iam.Role(
            self, "ImagePushRole",
            role_name=f"{role_name_prefix}-github-image-push",
            assumed_by=self._principal(),
            description=f"GitHub Actions ({repository}@{branch}): push service images to ECR",
            max_session_duration=cdk.Duration.hours(1),
        )
        token_statement = iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        self.image_push_role.add_to_policy(token_statement)
        self.image_push_role.add_to_policy(iam.PolicyStatement(actions=list(ECR_PUSH_ACTIONS), resources=list(image_repository_arns)))
        if image_check_repository_arns:
            # Read-only: whether a repository holds a tag. With the ARN allowed, a missing repository answers
            # RepositoryNotFoundException rather than AccessDenied, so no other action is needed to tell the two apart.
            self.image_push_role.add_to_policy(iam.PolicyStatement(
                actions=["ecr:DescribeImages"], resources=list(image_check_repository_arns)))
        acknowledge_nag(
            self.image_push_role,
            "ecr:GetAuthorizationToken has no resource-level permissions: it returns a registry login token, "
            "and the push actions that token enables are limited to the service repositories",
            "AwsSolutions-IAM5[Resource::*]",
        )

        self.diff_role = iam.Role(
            self, "DiffRole",
            role_name=f"{role_name_prefix}-github-diff",
            assumed_by=self._principal(),
            description=f"GitHub Actions ({repository}@{branch}): cdk diff through the CDK lookup roles (read-only)",
            max_session_duration=cdk.Duration.hours(1),
        )
        # `cdk diff --method=template` reads deployed templates through the bootstrap's lookup role
        # (ReadOnlyAccess without kms:Decrypt). The deploy role is not needed: no change set is created.
        self.diff_role.add_to_policy(iam.PolicyStatement(
            actions=["sts:AssumeRole"], resources=cdk_lookup_role_arns(diff_regions, bootstrap_qualifier)
        ))

        for role in (self.image_push_role, self.diff_role):
            acknowledge_nag(
                role,
                "The role's few least-privilege statements are its own inline policy, which lives and dies with the "
                "role; a managed policy would only add a second resource to keep in step",
                "NIST.800.53.R5-IAMNoInlinePolicy",
            )

    def _principal(self) -> iam.IPrincipal:
        return iam.WebIdentityPrincipal(self.provider_arn, conditions={
            "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE, f"{GITHUB_OIDC_HOST}:sub": self.subject},
        })
