#!/usr/bin/env bash
# Before containers.yml pushes a service's image: is the repository <prefix>/<service> in every region of
# cdk.json, and which of them hold the commit's tag? Run with the image push role's credentials.
#
# - A region without the repository stops the job before anything is pushed. ECR replication (the primary
#   region's global stack) would create it on the first push with ECR's defaults (mutable tags, no KMS key, no
#   lifecycle policy), and that region's platform stack, which creates <prefix>/<service>, would then fail on
#   the existing name. Deploy every region's platform stack first.
# - The primary region holds the tag (a rerun for a commit already pushed): tags are immutable, so nothing is
#   pushed again. ECR replicates only pushes made after a region was added to its rule, so a region added since
#   (or whose repository was re-created) lacks the tag: it gets a copy of the primary's image by digest
#   (`crane copy` keeps manifests and digests as they are), read back and compared. A region whose tag names
#   another image stops the job: tags are immutable, someone pushed another image there under this tag.
# - The primary region lacks the tag: the workflow pushes the scanned layouts there, and replication copies
#   them to the other regions.
#
# Environment: REPOSITORY (<prefix>/<service>), PRIMARY_REGION, REGIONS (every region of cdk.json, separated by
# spaces), GITHUB_SHA (the tag), GITHUB_OUTPUT (gets repository=<the primary's repository URI> and
# exists=true|false, whether the primary holds the tag). Logs docker (and so crane) in to each region's
# registry. Needs aws, docker and crane.
set -euo pipefail

: "${REPOSITORY:?set REPOSITORY to <prefix>/<service>}" "${PRIMARY_REGION:?}" "${REGIONS:?}" "${GITHUB_SHA:?}"
: "${GITHUB_OUTPUT:?}"
account="$(aws sts get-caller-identity --query Account --output text)"
registry() { echo "${account}.dkr.ecr.$1.amazonaws.com"; }

declare -A digest  # region -> digest of the tag there, empty when the repository has no such tag
no_repository=()
for region in $REGIONS; do
  aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$(registry "$region")"
  if answer="$(aws ecr describe-images --region "$region" --repository-name "$REPOSITORY" \
      --image-ids "imageTag=${GITHUB_SHA}" --query 'imageDetails[0].imageDigest' --output text 2>&1)"; then
    digest[$region]="$answer"
  elif [[ $answer == *ImageNotFoundException* ]]; then
    digest[$region]=""
  elif [[ $answer == *RepositoryNotFoundException* ]]; then
    no_repository+=("$region")
  else  # no answer about the tag (access denied, throttling): deciding on a guess could push or copy wrongly
    echo "::error::could not check ${REPOSITORY}:${GITHUB_SHA} in ${region}: ${answer//$'\n'/ }"
    exit 1
  fi
done
for region in "${no_repository[@]}"; do
  echo "::error::the ECR repository ${REPOSITORY} is not in ${region}: deploy every region's platform stack" \
    "(npx cdk deploy '${REPOSITORY%%/*}-${region}/platform') before the first push, or ECR replication creates it" \
    "with ECR's defaults and that deploy then fails on the existing name"
done
if [ "${#no_repository[@]}" -gt 0 ]; then
  exit 1
fi

echo "repository=$(registry "$PRIMARY_REGION")/${REPOSITORY}" >> "$GITHUB_OUTPUT"
source_digest="${digest[$PRIMARY_REGION]}"
if [ -z "$source_digest" ]; then
  echo "exists=false" >> "$GITHUB_OUTPUT"
  echo "${REPOSITORY}:${GITHUB_SHA} is not in ${PRIMARY_REGION}: pushing it there; ECR replication copies it to the other regions"
  exit 0
fi
echo "exists=true" >> "$GITHUB_OUTPUT"

source_image="$(registry "$PRIMARY_REGION")/${REPOSITORY}@${source_digest}"
failed=0
for region in $REGIONS; do
  target="$(registry "$region")/${REPOSITORY}:${GITHUB_SHA}"
  case "${digest[$region]}" in
    "$source_digest")
      echo "found: ${REPOSITORY}:${GITHUB_SHA} in ${region} (${source_digest})" ;;
    "")
      echo "copying ${REPOSITORY}:${GITHUB_SHA} (${source_digest}) from ${PRIMARY_REGION} to ${region}"
      # A failed copy is judged by what the region holds after it: replication may have delivered the same image
      # meanwhile (a rerun right after the push), and the tag, once there, cannot be written again.
      crane copy "$source_image" "$target" || echo "crane copy failed; reading what ${region} holds now"
      copied="$(crane digest "$target" 2>&1)" || copied="none (${copied//$'\n'/ })"
      if [ "$copied" != "$source_digest" ]; then
        echo "::error::${REPOSITORY}:${GITHUB_SHA} in ${region} is ${copied}, not ${PRIMARY_REGION}'s ${source_digest}"
        failed=1
      else
        echo "copied: ${REPOSITORY}:${GITHUB_SHA} in ${region} (${copied})"
      fi ;;
    *)
      echo "::error::${REPOSITORY}:${GITHUB_SHA} in ${region} is ${digest[$region]}, not ${PRIMARY_REGION}'s" \
        "${source_digest}: another image was pushed there under this tag (tags are immutable)"
      failed=1 ;;
  esac
done
exit "$failed"
