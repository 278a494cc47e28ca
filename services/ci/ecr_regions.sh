#!/usr/bin/env bash
# Before containers.yml pushes a service's image: is the repository <prefix>/<service> in every region of
# cdk.json, and does the primary region hold the commit's tag? Run with the image push role's credentials.
#
# - A region without the repository stops the job before anything is pushed: deploy every region's platform
#   stack before the first push (why: constructs/container_registry/README.md, "What it does not do").
# - The primary region holds the tag: tags are immutable, so nothing is pushed again. A region that lacks it
#   (added since the push) gets it from ECR replication backfill, not from this job (README.md, "Add a region").
# - No region holds the tag: the workflow pushes the scanned layouts to the primary region, and replication
#   copies them to the others.
# - Another region holds the tag but the primary does not (its repository was re-created): stop. A rebuild
#   would push a different digest under the same immutable tag, and replicating it into that region would fail.
#
# Environment: REPOSITORY (<prefix>/<service>), PRIMARY_REGION, REGIONS (every region of cdk.json, separated by
# spaces), GITHUB_SHA (the tag), GITHUB_OUTPUT (gets repository=<the primary's repository URI> and
# exists=true|false, whether the primary holds the tag). Logs docker in to the primary region's registry (the
# push needs no other). Needs aws and docker.
set -euo pipefail

: "${REPOSITORY:?set REPOSITORY to <prefix>/<service>}" "${PRIMARY_REGION:?}" "${REGIONS:?}" "${GITHUB_SHA:?}"
: "${GITHUB_OUTPUT:?}"
if [[ " ${REGIONS} " != *" ${PRIMARY_REGION} "* ]]; then
  echo "::error::the primary region ${PRIMARY_REGION} is not one of the regions of cdk.json (${REGIONS})"
  exit 1
fi
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT

declare -A digest  # region -> digest of the tag there, empty when the repository has no such tag
no_repository=()
for region in $REGIONS; do
  # stderr apart from stdout: a CLI warning is not a digest.
  if answer="$(aws ecr describe-images --region "$region" --repository-name "$REPOSITORY" \
      --image-ids "imageTag=${GITHUB_SHA}" --query 'imageDetails[0].imageDigest' --output text 2>"$errors")"; then
    digest[$region]="$answer"
  elif grep -q ImageNotFoundException "$errors"; then
    digest[$region]=""
  elif grep -q RepositoryNotFoundException "$errors"; then
    no_repository+=("$region")
  else  # no answer about the tag (access denied, throttling): deciding on a guess could push wrongly
    echo "::error::could not check ${REPOSITORY}:${GITHUB_SHA} in ${region}: $(tr '\n' ' ' < "$errors")"
    exit 1
  fi
done
for region in "${no_repository[@]}"; do
  echo "::error::the ECR repository ${REPOSITORY} is not in ${region}: deploy every region's platform stack" \
    "(npx cdk deploy '${REPOSITORY%%/*}-${region}/platform') before the first push"
done
if [ "${#no_repository[@]}" -gt 0 ]; then
  exit 1
fi

if [ -n "${digest[$PRIMARY_REGION]}" ]; then
  echo "exists=true" >> "$GITHUB_OUTPUT"
  echo "${REPOSITORY}:${GITHUB_SHA} is in ${PRIMARY_REGION} (${digest[$PRIMARY_REGION]}): nothing to push"
  exit 0
fi
for region in $REGIONS; do
  if [ -n "${digest[$region]}" ]; then
    echo "::error::${REPOSITORY}:${GITHUB_SHA} is in ${region} (${digest[$region]}) but not in ${PRIMARY_REGION}" \
      "(its repository re-created?): a rebuild would push another digest under this immutable tag, and replication" \
      "into ${region} would fail. Push nothing; copy the image back to ${PRIMARY_REGION} by hand"
    exit 1
  fi
done
account="$(aws sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${PRIMARY_REGION}.amazonaws.com"
aws ecr get-login-password --region "$PRIMARY_REGION" | docker login --username AWS --password-stdin "$registry"
echo "repository=${registry}/${REPOSITORY}" >> "$GITHUB_OUTPUT"
echo "exists=false" >> "$GITHUB_OUTPUT"
echo "${REPOSITORY}:${GITHUB_SHA} is in no region: pushing it to ${PRIMARY_REGION}; ECR replication copies it to the other regions"
