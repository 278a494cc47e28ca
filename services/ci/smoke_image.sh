#!/usr/bin/env bash
# Smoke test of one service image, run the way ECS runs it. containers.yml runs it on the linux/amd64
# image after the Trivy scans and before any push; `make test` only checks that the workflow calls it.
#
# The Dockerfiles promise a numeric non-root user (10001), a process that needs no writable root
# filesystem and writes no bytecode (ECS mounts the root read-only, with a tmpfs at /tmp as its only
# writable path: constructs/meshed_service), and a HEALTHCHECK on /health/live. Run that way, with no AWS
# credentials (readiness needs AWS and is not asked; liveness must not):
#   - the image's default command answers 200 on /health/live through a published port, and Docker's
#     own HEALTHCHECK reports healthy, both within WAIT_SECONDS;
#   - with GRPC_PORT (persona), its gRPC server answers a grpc.health.v1 Check (NOT_SERVING, not
#     ready, is an answer);
#   - with WORKER, `python -m $WORKER` (the task definition's worker container, here with no network at
#     all) starts consuming and is still running after its receives have failed for a while;
#   - neither the venv's python nor the base image's finds pip or ensurepip's pip wheel (no installer).
# Every container must run each process as 10001:10001, exit 0 on SIGTERM within ECS's 30 s stop timeout
# (python is PID 1: only its own handler stops it), log no "Read-only file system" error, and leave
# `docker diff` empty outside /tmp. With --read-only nothing can land there (a write fails instead, and
# the checks above catch what that breaks), so an entry would mean the root was writable after all. (What
# lands in the tmpfs is in memory, not in the container's layer: docker diff never lists it.)
#
# Environment: IMAGE (a local tag of the image); LAYOUT (optional: the scanned OCI image layout, whose
# layers the image must have); GRPC_PORT, WORKER (optional); WAIT_SECONDS (default 90).
# Needs docker, curl and jq.
set -euo pipefail

: "${IMAGE:?set IMAGE to the local tag of the image}"
WAIT_SECONDS="${WAIT_SECONDS:-90}"

# As ECS runs the app and worker containers (constructs/meshed_service): read-only root, user
# 10001:10001, and at /tmp a tmpfs with the task definition's options and size (TMPFS_MOUNT_OPTIONS,
# scratch_size_mib), as Fargate mounts one. Not a Docker volume: Docker fills a new volume from the
# image's /tmp, mode 1777, where a Fargate task volume is a bind mount only root may write, so a
# volume here would pass what fails in ECS. Stricter than Fargate: no capabilities, no privilege gain.
AS_ECS=(--read-only --tmpfs "/tmp:nosuid,nodev,noexec,size=64m" --user 10001:10001 --cap-drop ALL
        --security-opt no-new-privileges)
# What the processes refuse to start without, as placeholders: boto3 builds no client without a
# region (ECS sets AWS_REGION in every task), every process needs TABLE_NAME, vc-start and both
# workers publish (EVENT_BUS_NAME), the workers consume (QUEUE_URL).
APP_ENV=(-e AWS_REGION=eu-central-1 -e TABLE_NAME=smoke -e EVENT_BUS_NAME=smoke)
QUEUE_URL=https://sqs.eu-central-1.amazonaws.com/000000000000/smoke

containers=()
cleanup() {
  if [ "${#containers[@]}" -gt 0 ]; then docker rm -f -v "${containers[@]}" > /dev/null || true; fi
}
trap cleanup EXIT

# fail MESSAGE [CONTAINER]: the error, then the container's logs and state (its health-check results), exit 1.
fail() {
  echo "::error::${IMAGE}: $1"
  if [ -n "${2:-}" ]; then
    echo "--- docker logs"
    docker logs "$2" 2>&1 || true
    echo "--- docker inspect .State"
    docker inspect -f '{{json .State}}' "$2" | jq . || true
  fi
  exit 1
}

# state CONTAINER: "<status> <health>", e.g. "running starting"; health "none": the image has no HEALTHCHECK.
state() {
  docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"
}

# as_10001 CONTAINER: every process in it runs with real and effective uid and gid 10001.
as_10001() {
  local processes
  processes="$(docker top "$1" -eo pid,ruid,euid,rgid,egid,args)"
  echo "$processes"
  awk 'NR > 1 { n++; if ($2 != 10001 || $3 != 10001 || $4 != 10001 || $5 != 10001) bad++ }
       END { exit !(n > 0 && bad == 0) }' <<< "$processes" || fail "a process runs as another user than 10001:10001" "$1"
}

# stop_and_check CONTAINER: SIGTERM, then exit status 0 in time, no write refused by the read-only
# root, nothing written outside /tmp.
stop_and_check() {
  local code logs written
  docker stop --timeout 30 "$1" > /dev/null
  code="$(docker inspect -f '{{.State.ExitCode}}' "$1")"
  [ "$code" = 0 ] || fail "exit status $code after SIGTERM, not 0 (137: killed after 30 s)" "$1"
  logs="$(docker logs "$1" 2>&1)"
  if grep -q 'Read-only file system' <<< "$logs"; then fail "a write to the read-only root failed" "$1"; fi
  written="$(docker diff "$1" | awk '$2 != "/tmp" && index($2, "/tmp/") != 1 { printf "%s%s", sep, $0; sep = "; " }')"
  [ -z "$written" ] || fail "wrote outside /tmp: ${written}" "$1"
  echo "stopped with exit status 0; nothing written outside /tmp"
}

if [ -n "${LAYOUT:-}" ]; then
  # What runs here is what was scanned (and is pushed): the same layers as the OCI layout.
  manifest="$(jq -r '.manifests[0].digest' "${LAYOUT}/index.json")"
  config="$(jq -r '.config.digest' "${LAYOUT}/blobs/${manifest/://}")"
  [ "$config" != null ] || fail "${LAYOUT}/index.json does not list an image manifest first"
  scanned="$(jq -c '.rootfs.diff_ids' "${LAYOUT}/blobs/${config/://}")"
  loaded="$(docker image inspect -f '{{json .RootFS.Layers}}' "$IMAGE" | jq -c .)"
  [ "$scanned" = "$loaded" ] || fail "its layers ${loaded} are not the scanned layout's ${scanned}"
fi

# No installer at run time: the runtime installs nothing (the Dockerfiles' builder stage does), so
# neither the venv's python nor the base image's may find pip, or a pip wheel for ensurepip.
for python in python /usr/local/bin/python; do
  docker run --rm "${AS_ECS[@]}" --network none "$IMAGE" "$python" -c \
    'import ensurepip, importlib.util, pathlib, sys; bundled = pathlib.Path(ensurepip.__file__).parent / "_bundled"
sys.exit(importlib.util.find_spec("pip") is not None or any(bundled.glob("pip-*.whl")))' \
    || fail "${python} in the image finds pip: the runtime image must hold no installer"
done
echo "=== ${IMAGE}: neither python in it finds pip or a pip wheel"

echo "=== ${IMAGE}: the image's command, $(docker image inspect -f '{{json .Config.Cmd}}' "$IMAGE")"
app="$(docker run -d "${AS_ECS[@]}" "${APP_ENV[@]}" --publish 127.0.0.1::8080 "$IMAGE")"
containers+=("$app")
url="http://$(docker port "$app" 8080/tcp | sed -n 1p)/health/live"
started=$SECONDS
deadline=$((SECONDS + WAIT_SECONDS))
live=""
while true; do
  read -r status health <<< "$(state "$app")"
  [ "$status" = running ] || fail "it stopped (${status}) before it was live and healthy" "$app"
  [ "$health" != none ] || fail "the image has no HEALTHCHECK" "$app"
  [ "$health" != unhealthy ] || fail "Docker's HEALTHCHECK reports unhealthy" "$app"
  if [ -z "$live" ] && curl -fsS -o /dev/null --max-time 3 "$url" 2> /dev/null; then
    live=$((SECONDS - started))
    echo "/health/live answered 200 after ${live} s"
  fi
  if [ -n "$live" ] && [ "$health" = healthy ]; then
    echo "HEALTHCHECK healthy after $((SECONDS - started)) s"
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] || fail "not live and healthy within ${WAIT_SECONDS} s (live: ${live:-no}, health: ${health})" "$app"
  sleep 2
done

if [ -n "${GRPC_PORT:-}" ]; then
  # From inside the container, with the image's own grpc: any answer shows the server is up.
  grpc_check='import sys, grpc
from grpc_health.v1 import health_pb2 as pb, health_pb2_grpc as rpc
with grpc.insecure_channel("127.0.0.1:" + sys.argv[1]) as channel:
    reply = rpc.HealthStub(channel).Check(pb.HealthCheckRequest(), timeout=10)
print(pb.HealthCheckResponse.ServingStatus.Name(reply.status))'
  answer="$(docker exec "$app" python -c "$grpc_check" "$GRPC_PORT")" || fail "no gRPC answer on port ${GRPC_PORT}" "$app"
  echo "gRPC health on port ${GRPC_PORT}: ${answer}"
fi
as_10001 "$app"
stop_and_check "$app"

if [ -n "${WORKER:-}" ]; then
  # As the task definition runs it: same image and settings, its own command, no health check.
  echo "=== ${IMAGE}: python -m ${WORKER}"
  worker="$(docker run -d "${AS_ECS[@]}" "${APP_ENV[@]}" -e QUEUE_URL="$QUEUE_URL" --network none --no-healthcheck \
    "$IMAGE" python -m "$WORKER")"
  containers+=("$worker")
  deadline=$((SECONDS + WAIT_SECONDS))
  until grep -qF "consuming ${QUEUE_URL}" <<< "$(docker logs "$worker" 2>&1)"; do
    read -r status _ <<< "$(state "$worker")"
    [ "$status" = running ] || fail "the worker stopped (${status}) before it consumed" "$worker"
    [ "$SECONDS" -lt "$deadline" ] || fail "the worker did not start consuming within ${WAIT_SECONDS} s" "$worker"
    sleep 2
  done
  sleep 10  # a receive fails about once a second without AWS: the worker must outlive that
  read -r status _ <<< "$(state "$worker")"
  [ "$status" = running ] || fail "the worker stopped (${status}) after failed receives" "$worker"
  echo "consuming, and still running 10 s later"
  as_10001 "$worker"
  stop_and_check "$worker"
fi
