"""Before a region deploys: every image tag it will run from ECR is in that region's repository.

A missing tag (a typo in cdk.json, a commit whose containers.yml run failed and pushed nothing) would otherwise
show only during the deploy: the services stack's new tasks stop with CannotPullContainerError, the ECS
deployment never completes, and CloudFormation waits for it and rolls back. The check asks ECR instead, in a
minute, and fails naming the service, repository, region and tag.

Only `image_tag` and `canary_image_tag` are ECR's (`<prefix>/<service>`); `image` is another registry's, which the
pipeline does not read. containers.yml pushes to the primary region; ECR replication copies each push to the
other regions.
"""

from __future__ import annotations

import shlex
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import pipelines

from constructs.container_registry import repository_name
from stacks.config import FoundationConfig

RETRY_INTERVAL_SECONDS = 15
# ECR replicates a push to the other regions asynchronously, usually within minutes. A release reaches another region
# long after its tags were pushed (before the commit that names them, then the primary region's deploy and smoke
# test), so a tag missing there is rarely just late; but it may be (a tag pushed right before the commit, a slow
# replication): wait for it up to 5 minutes in all (not per tag), then fail. The primary region, where
# containers.yml pushes, has nothing to wait for.
REPLICA_WAIT_SECONDS = 300
STEP_TIMEOUT = cdk.Duration.minutes(15)


def _check_image(primary_region: str) -> str:
    """The shell function ``check_image <service> <repository> <tag>``: asks ECR once, or again every
    RETRY_INTERVAL_SECONDS while the step's wait budget lasts. A missing tag (or one ECR would not answer about) is
    reported and counted, not fatal, so that one run names every such tag."""
    return f"""missing=0; waits_left=$((REPLICATION_WAIT_SECONDS / {RETRY_INTERVAL_SECONDS}))
check_image() {{
  local service=$1 repository=$2 tag=$3 answer
  until answer=$(aws ecr describe-images --region "$ECR_REGION" --repository-name "$repository" --image-ids "imageTag=$tag" \\
      --query 'imageDetails[0].imageDigest' --output text 2>&1); do
    if [ "$waits_left" -le 0 ]; then
      if [[ $answer != *ImageNotFoundException* ]]; then  # no answer about the tag (access, throttling...): say so
        echo "ERROR: could not check $service's $repository:$tag in $ECR_REGION (${{answer//$'\\n'/ }})"
        missing=$((missing + 1)); return
      fi
      echo "MISSING: $service runs $repository:$tag, which is not in the ECR repository $repository of $ECR_REGION (${{answer//$'\\n'/ }})"
      if [ "$ECR_REGION" = {primary_region} ]; then
        echo "  containers.yml pushes $repository:<commit SHA> only when its build, Trivy scan and smoke test pass: check the tag and that commit's run"
      else
        echo "  ECR replicates each push to {primary_region} here, and did not in $REPLICATION_WAIT_SECONDS s: aws ecr describe-image-replication-status --region {primary_region} --repository-name $repository --image-id imageTag=$tag"
        echo "  (a region added after the push gets no replica of it: start an ECR replication backfill, aws ecr start-replication-backfill --region {primary_region}; README.md, Add a region)"
      fi
      missing=$((missing + 1)); return
    fi
    waits_left=$((waits_left - 1)); sleep {RETRY_INTERVAL_SECONDS}
  done
  echo "found: $service $repository:$tag in $ECR_REGION ($answer)"
}}"""


def ecr_image_tags(config: FoundationConfig) -> list[tuple[str, str, str]]:
    """(service, repository, tag) of every tag a region stage runs from ECR, in config order: each service's
    ``image_tag`` and ``canary_image_tag`` (App Mesh; without it the canary runs the service's own image)."""
    return [(service.name, repository_name(config.prefix, service.name), tag) for service in config.services
            for tag in service.ecr_tags]


def checked_repository_arns(config: FoundationConfig, regions: Sequence[str]) -> list[str]:
    """The ARNs of the repositories the image checks read, in each of ``regions`` (none without ECR tags)."""
    repositories = dict.fromkeys(repository for _, repository, _ in ecr_image_tags(config))
    return [f"arn:{cdk.Aws.PARTITION}:ecr:{region}:{config.account}:repository/{repository}"
            for region in regions for repository in repositories]


def image_check_commands(config: FoundationConfig) -> list[str]:
    """The shell lines (bash) that check each tag in $ECR_REGION and fail if any is missing."""
    tags = ecr_image_tags(config)
    return [
        _check_image(config.primary_region),
        *(f"check_image {shlex.quote(service)} {shlex.quote(repository)} {shlex.quote(tag)}" for service, repository, tag in tags),
        f'echo "$missing of {len(tags)} image tags missing or unchecked in $ECR_REGION"',
        'test "$missing" -eq 0',
    ]


def image_check_step(config: FoundationConfig, *, region: str) -> pipelines.CodeBuildStep | None:
    """The pre-deploy step of the stage in ``region``, or None when its services run no tag from ECR (every image
    built by the pipeline or from another registry). Its role may only DescribeImages of those repositories there."""
    if not ecr_image_tags(config):
        return None
    return pipelines.CodeBuildStep(
        f"ImageCheck-{region}",
        env={"ECR_REGION": region,
             "REPLICATION_WAIT_SECONDS": "0" if region == config.primary_region else str(REPLICA_WAIT_SECONDS)},
        # One command: CodeBuild may run each command in a shell of its own, carrying variables but not functions.
        commands=["\n".join(image_check_commands(config))],
        # bash, not CodeBuild's default sh: the script replaces newlines in ECR's answer with ${var//...}.
        partial_build_spec=codebuild.BuildSpec.from_object({"version": "0.2", "env": {"shell": "bash"}}),
        role_policy_statements=[iam.PolicyStatement(
            actions=["ecr:DescribeImages"], resources=checked_repository_arns(config, [region]))],
        timeout=STEP_TIMEOUT,
    )
