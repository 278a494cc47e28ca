"""Bad config stops `cdk synth` with one line naming the key, the value and what is allowed.

Every case runs the real entry point in a subprocess: app.py started the way the CDK CLI starts it
(cdk.json's "app" command, the merged context in CDK_CONTEXT_JSON, `-c` values as strings). A dozen
cases, one of each kind, also go through the pinned CLI itself and must print the same line: that
shows the CLI hands the app what these runs hand it. (A CLI start costs about 1 s, app.py's own
check 0.1 s, since app.py checks the config before it loads aws-cdk-lib.)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stacks.config import CONFIG_DIGEST
from tests.assembly import REPO_ROOT, cdk_json_context, committed_context

CDK_CLI = REPO_ROOT / "node_modules" / ".bin" / "cdk"
APP_COMMAND = shlex.split(json.loads((REPO_ROOT / "cdk.json").read_text())["app"])
CONTROL = "no overrides"


def _regions(*entries: tuple[str, str]) -> str:
    return json.dumps([{"name": name, "cidr": cidr} for name, cidr in entries])


_PIPELINE = {"connection_arn": "arn:aws:codeconnections:eu-central-1:111122223333:connection/00000000-0000-0000-0000-000000000000",
             "repository": "example-org/foundation", "branch": "main"}

_SWEEP = {"partition_key": "sweep_shard", "sort_key": "sweep_at"}

# (case id, -c overrides, text the error line must contain: key, bad value, what is allowed)
CASES = [
    ("unknown key", {"colour": "blue"}, ["colour='blue'", "unknown key", "prefix"]),
    ("regions not a list", {"regions": "eu-central-1"}, ["regions='eu-central-1'", "list"]),
    ("region entry missing cidr", {"regions": json.dumps([{"name": "eu-central-1"}])}, ["regions[0]", '"name" and "cidr"']),
    ("unknown region", {"regions": _regions(("eu-central-1", "10.10.0.0/16"), ("eu-moon-1", "10.20.0.0/16"))}, ["regions[1].name='eu-moon-1'", "eu-west-1"]),
    ("duplicate region", {"regions": _regions(("eu-central-1", "10.10.0.0/16"), ("eu-central-1", "10.20.0.0/16"))}, ["regions[1].name='eu-central-1'", "only once"]),
    ("cidr not a network", {"regions": _regions(("eu-central-1", "10.10.0.0/33"))}, ["regions[0].cidr='10.10.0.0/33'", "CIDR notation"]),
    ("cidr with host bits", {"regions": _regions(("eu-central-1", "10.10.0.1/16"))}, ["regions[0].cidr='10.10.0.1/16'", "CIDR notation"]),
    ("cidr not private", {"regions": _regions(("eu-central-1", "8.8.0.0/16"))}, ["regions[0].cidr='8.8.0.0/16'", "RFC 1918"]),
    ("overlapping cidrs", {"regions": _regions(("eu-central-1", "10.10.0.0/16"), ("eu-west-1", "10.10.128.0/17"))}, ["regions[1].cidr='10.10.128.0/17'", "overlap 10.10.0.0/16"]),
    ("cidr too small for 3 AZs", {"regions": _regions(("eu-central-1", "10.10.0.0/24"))}, ["regions[0].cidr='10.10.0.0/24'", "/16 to /23", "3 AZs"]),
    ("primary region not configured", {"primary_region": "eu-west-1", "regions": _regions(("eu-central-1", "10.10.0.0/16"))}, ["primary_region='eu-west-1'", "eu-central-1"]),
    ("account too short", {"account": "12345"}, ["account='12345'", "12 digits"]),
    ("account not digits", {"account": "12345678901x"}, ["account='12345678901x'", "12 digits"]),
    ("unknown profile", {"profile": "staging"}, ["profile='staging'", "dev, prod"]),
    ("unknown mesh", {"mesh": "istio"}, ["mesh='istio'", "service-connect, appmesh"]),
    ("profile not a string", {"profile": ["prod"]}, ['profile=["prod"]', "allowed values are dev, prod"]),
    ("mesh null", {"mesh": None}, ["mesh=null", "allowed values are service-connect, appmesh"]),
    ("bad prefix", {"prefix": "MF_1"}, ["prefix='MF_1'", "lower-case"]),
    ("bad namespace", {"namespace": "svc local"}, ["namespace='svc local'", "DNS domain"]),
    ("memory not a Fargate size", {"services": json.dumps({"auth": {"cpu": 256, "memory_mib": 4096}})}, ["services.auth.memory_mib=4096", "512, 1024, 2048"]),
    ("task too small for the App Mesh sidecars", {"mesh": "appmesh", "services": json.dumps({"auth": {"cpu": 256, "memory_mib": 512}})},
     ["services.auth.cpu=256", "mesh=appmesh", "at least 512"]),
    ("App Mesh certificate name beyond ACM's 64 characters", {"mesh": "appmesh", "namespace": "mesh.payments-platform.internal-services.example.internal"},
     ["namespace='mesh.payments-platform.internal-services.example.internal'", "certificate name persona.mesh.", "ACM's 64"]),
    ("call to an unknown service", {"services": json.dumps({"auth": {}, "persona": {"calls": ["billing"]}})}, ['services.persona.calls=["billing"]', "auth"]),
    ("secret as a plain value", {"services": json.dumps({"auth": {"secrets": {"JWT_KEY": "hunter2"}}})}, ["services.auth.secrets.JWT_KEY='hunter2'", "secretsmanager:"]),
    ("environment name longer than SSM takes", {"services": json.dumps({"auth": {"environment": {"X" * 129: "1"}}})},
     ["services.auth.environment.XXXX", "at most 128 characters"]),
    ("secret named like a variable the stack sets", {"services": json.dumps({"auth": {"table": True, "secrets": {"TABLE_NAME": "ssm:/ops/table"}}})},
     ["services.auth.secrets.TABLE_NAME='ssm:/ops/table'", "the stack or environment already sets this variable"]),
    # Which X-Forwarded-For entries are the caller's follows from the ingress; an override would let callers choose theirs.
    ("environment overriding the proxies the stack trusts", {"services": json.dumps({"auth": {"environment": {"TRUSTED_PROXY_HOPS": "3"}}})},
     ["services.auth.environment.TRUSTED_PROXY_HOPS='3'", "the stack sets this variable itself"]),
    # The hash that makes a deployed settings change a new task definition; a fixed one would stop that.
    ("environment setting the config digest", {"services": json.dumps({"auth": {"environment": {CONFIG_DIGEST: "0"}}})},
     [f"services.auth.environment.{CONFIG_DIGEST}='0'", "the stack sets this variable itself"]),
    ("environment value SSM would not store", {"services": json.dumps({"auth": {"environment": {"OTHER": "{{ssm:/other/param}}"}}})},
     ["services.auth.environment.OTHER='{{ssm:/other/param}}'", "at most 4096 characters without {{", "SSM Standard parameter"]),
    # ECS SIGKILLs a task 30 s after SIGTERM: the drain and the in-flight grace must end 3 s before.
    ("shutdown past the stop timeout", {"services": json.dumps({"auth": {"environment": {"SHUTDOWN_TIMEOUT_SECONDS": "26"}}})},
     ["services.auth.environment.SHUTDOWN_TIMEOUT_SECONDS='26'", "DRAIN_SECONDS=5 (servicekit's default)", "takes 31 s", "at most 27 s",
      "30 s stop timeout"]),
    ("drain and shutdown past the stop timeout", {"services": json.dumps({"auth": {"environment": {"DRAIN_SECONDS": "10", "SHUTDOWN_TIMEOUT_SECONDS": "18"}}})},
     ["services.auth.environment.SHUTDOWN_TIMEOUT_SECONDS='18'", "with DRAIN_SECONDS=10 a stopping task takes 28 s", "at most 27 s"]),
    ("drain not a number", {"services": json.dumps({"auth": {"environment": {"DRAIN_SECONDS": "5s"}}})},
     ["services.auth.environment.DRAIN_SECONDS='5s'", "a number of seconds, 0 or more"]),
    ("unknown deployment strategy", {"deployment": json.dumps({"strategy": "BIG_BANG"})}, ["deployment.strategy='BIG_BANG'", "CANARY, LINEAR, ROLLING"]),
    ("canary alarm that a failing canary cannot trip", {"deployment": json.dumps({"canary_percent": 2, "alarm_5xx_percent": 5})}, ["deployment.alarm_5xx_percent=5.0", "below deployment.canary_percent=2.0"]),
    # 100 / 3 % is 33 steps: 10 + 33 x 60 = 1990 minutes.
    ("linear deployment longer than 33 hours", {"deployment": json.dumps({"strategy": "LINEAR", "linear_step_percent": 3, "step_bake_minutes": 60})},
     ["deployment.step_bake_minutes=60", "at most 1980 minutes", "x 33 steps = 1990"]),
    ("private CA of another region", {"mesh_options": json.dumps({"private_ca_arns": {"eu-west-1": "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/11111111-2222-3333-4444-555555555555"}})}, ["mesh_options.private_ca_arns.eu-west-1=", "must be in eu-west-1"]),
    ("container running as root", {"services": json.dumps({"auth": {"user": "0:0"}})}, ["services.auth.user='0:0'", "non-root"]),
    ("health check path longer than a target group takes", {"services": json.dumps({"auth": {"health_check_path": "/" + "h" * 1024}})},
     ["services.auth.health_check_path='/hhh", "at most 1024 characters"]),
    ("health check not a command", {"services": json.dumps({"auth": {"health_check_command": "curl localhost"}})}, ["services.auth.health_check_command='curl localhost'", '"CMD" or "CMD-SHELL"']),
    ("service name the mesh derives", {"services": json.dumps({"auth": {}, "auth-sc": {}})}, ["services.auth-sc={}", "not ending in -sc, -grpc, -canary"]),
    ("canary image without app mesh", {"services": json.dumps({"auth": {"image_tag": "1", "canary_image_tag": "2"}})}, ["services.auth.canary_image_tag='2'", "mesh=appmesh only"]),
    ("appmesh canary weight too high", {"appmesh": json.dumps({"canary_weight_percent": 20})}, ["appmesh.canary_weight_percent=20", "1 to 5"]),
    ("shift steps not ending at 100", {"appmesh": json.dumps({"shift_steps_percent": [5, 25, 50]})}, ["appmesh.shift_steps_percent=[5, 25, 50]", "ending at 100"]),
    ("shift steps out of order", {"appmesh": json.dumps({"shift_steps_percent": [25, 5, 100]})}, ["appmesh.shift_steps_percent=[25, 5, 100]", "strictly increasing"]),
    ("shift step not an integer", {"appmesh": json.dumps({"shift_steps_percent": [5, "50", 100]})}, ['appmesh.shift_steps_percent=[5, "50", 100]', "integer percentages"]),
    ("shift bake too short", {"appmesh": json.dumps({"shift_bake_minutes": 1})}, ["appmesh.shift_bake_minutes=1", "3 to 1440"]),
    ("shift bakes longer than a day in all", {"mesh": "appmesh", "appmesh": json.dumps({"shift_bake_minutes": 400})},
     ["appmesh.shift_bake_minutes=400", "with 4 shift steps at most 360", "1440 minutes in all"]),
    ("no canary requests asked for", {"appmesh": json.dumps({"shift_min_canary_requests": 0})}, ["appmesh.shift_min_canary_requests=0", "1 to 1000000"]),
    ("canary requests not an integer", {"appmesh": json.dumps({"shift_min_canary_requests": "60"})}, ["appmesh.shift_min_canary_requests='60'", "integer"]),
    ("domain not an object", {"domain": "example.com"}, ["domain='example.com'", "zone_name", "hosted_zone_id"]),
    ("domain without a zone ID", {"domain": json.dumps({"zone_name": "example.com"})}, ['domain={"zone_name": "example.com"}', "hosted_zone_id"]),
    ("domain zone name with upper case", {"domain": json.dumps({"zone_name": "Example.com", "hosted_zone_id": "Z0123456789ABC"})}, ["domain.zone_name='Example.com'", "lower-case DNS zone name"]),
    ("malformed hosted zone ID", {"domain": json.dumps({"zone_name": "example.com", "hosted_zone_id": "zone-1"})}, ["domain.hosted_zone_id='zone-1'", "Route 53 hosted zone ID"]),
    # 50 characters pass the zone name's pattern; eu-central-1.api.<zone> is 67.
    ("domain too long for an ACM certificate", {"regions": _regions(("eu-central-1", "10.10.0.0/16")), "domain": json.dumps({
        "zone_name": "platform-engineering.internal-services.example.com", "hosted_zone_id": "Z0123456789ABC"})},
     ["domain.zone_name='platform-engineering.internal-services.example.com'", "eu-central-1.api.platform-engineering", "67 characters; ACM allows 64"]),
    ("two services on one path", {"services": json.dumps({"auth": {"path": "/api/x"}, "persona": {"path": "/api/x"}})}, ["services.persona.path='/api/x'", "already routes to auth"]),
    ("edge with three regions", {"regions": _regions(("eu-central-1", "10.10.0.0/16"), ("eu-west-1", "10.20.0.0/16"), ("eu-north-1", "10.30.0.0/16"))}, ["regions=", "exactly two regions"]),
    ("two services on one rule priority", {"services": json.dumps({"auth": {"path": "/api/a", "priority": 10}, "persona": {"path": "/api/p", "priority": 10}})},
     ["services.persona.priority=10", "auth's load balancer rule already has this priority", "1-50000"]),
    # Two names whose derived priorities meet (CRC-32 of the name): the error says so.
    ("two names on one derived rule priority", {"services": json.dumps({"svc-aad": {"path": "/api/a"}, "svc-abx": {"path": "/api/b"}})},
     ["services.svc-abx.priority=33820", "svc-aad's", "derived from the name"]),
    ("rule priority without a path", {"services": json.dumps({"auth": {"priority": 10}})}, ["services.auth.priority=10", "needs the service's path"]),
    ("rule priority out of range", {"services": json.dumps({"auth": {"path": "/api/auth", "priority": 50001}})}, ["services.auth.priority=50001", "from 1 to 50000"]),
    ("service path outside /api/", {"services": json.dumps({"auth": {"path": "/auth"}})}, ["services.auth.path='/auth'", "under /api/"]),
    ("consumes from an unknown service", {"services": json.dumps({"auth": {}, "persona": {"table": True, "worker": True, "consumes": {"billing": ["X"]}}})},
     ['services.persona.consumes.billing=["X"]', "not another configured service", "auth"]),
    ("consumes without a worker", {"services": json.dumps({"auth": {}, "persona": {"table": True, "consumes": {"auth": ["UserCreated"]}}})},
     ["services.persona.worker=false", "must be true when consumes is set"]),
    ("worker without events", {"services": json.dumps({"auth": {"worker": True}})}, ["services.auth.worker=true", "needs consumes"]),
    ("consumes without a table", {"services": json.dumps({"auth": {}, "persona": {"worker": True, "consumes": {"auth": ["UserCreated"]}}})},
     ["services.persona.table=false", "processed event IDs"]),
    ("gRPC port on the HTTP port", {"services": json.dumps({"auth": {"grpc_port": 8080}})}, ["services.auth.grpc_port=8080", "must differ from port=8080"]),
    # Taken by the Service Connect proxy only behind a load balancer with mesh TLS (prod): refused in dev as well.
    ("port of the Service Connect proxy", {"services": json.dumps({"auth": {"port": 15443, "path": "/api/auth"}})},
     ["services.auth.port=15443", "must differ from the sidecars' ports", "15443"]),
    ("port of the collector's health check", {"services": json.dumps({"auth": {"port": 8080, "grpc_port": 13133}})},
     ["services.auth.grpc_port=13133", "9901, 13133, 15000"]),
    ("more services than one stack holds", {"mesh": "appmesh", "services": json.dumps({f"svc{i}": {"image_tag": "1"} for i in range(6)})},
     ['services=["svc0", "svc1", "svc2", "svc3", "svc4", "svc5"]', "with mesh=appmesh at most 5 services", "500 resources, 1 MB"]),
    ("two token signers", {"services": json.dumps({"auth": {"signing_key": True}, "persona": {"signing_key": True}})},
     ["services.persona.signing_key=true", "auth already does"]),
    ("index name DynamoDB refuses", {"services": json.dumps({"auth": {"table": True, "table_indexes": {"by shard": _SWEEP}}})},
     ["services.auth.table_indexes='by shard'", "the index name must be 3-255 letters, digits"]),
    ("index with one attribute as both keys", {"services": json.dumps({"auth": {"table": True, "table_indexes": {
        "sweep": {"partition_key": "sweep_at", "sort_key": "sweep_at"}}}})},
     ["services.auth.table_indexes.sweep.sort_key='sweep_at'", "must differ from partition_key"]),
    ("index on the TTL attribute", {"services": json.dumps({"auth": {"table": True, "table_indexes": {"sweep": {**_SWEEP, "sort_key": "expires_at"}}}})},
     ["services.auth.table_indexes.sweep.sort_key='expires_at'", "not the table's TTL attribute"]),
    ("index sort key of a type DynamoDB has no name for here", {"services": json.dumps({"auth": {"table": True, "table_indexes": {
        "sweep": {**_SWEEP, "sort_key_type": "binary"}}}})},
     ["services.auth.table_indexes.sweep.sort_key_type='binary'", "expected one of string, number"]),
    ("index without a table", {"services": json.dumps({"auth": {"table_indexes": {"sweep": _SWEEP}}})},
     ['services.auth.table_indexes={"sweep": {"partition_key": "sweep_shard", "sort_key": "sweep_at"}}', "needs table: true"]),
    ("max receive count out of range", {"events": json.dumps({"max_receive_count": 0})}, ["events.max_receive_count=0", "1 to 1000"]),
    ("archive kept forever", {"events": json.dumps({"archive_retention_days": 0})}, ["events.archive_retention_days=0", "1 to 3650"]),
    ("github repository without an owner", {"github": json.dumps({"repository": "foundation"})},
     ["github.repository='foundation'", "owner/name"]),
    ("github branch with a wildcard", {"github": json.dumps({"repository": "example-org/foundation", "branch": "release/*"})},
     ["github.branch='release/*'", "no wildcards"]),
    ("malformed connection ARN", {"account": "111122223333", "pipeline": json.dumps({**_PIPELINE, "connection_arn": "arn:aws:codeconnections:eu-central-1:111122223333:connection/my-github"})},
     ["pipeline.connection_arn='arn:aws:codeconnections:eu-central-1:111122223333:connection/my-github'", "CodeConnections connection ARN"]),
    ("malformed repository", {"account": "111122223333", "pipeline": json.dumps({**_PIPELINE, "repository": "https://github.com/example-org/foundation"})},
     ["pipeline.repository='https://github.com/example-org/foundation'", "owner/name"]),
    ("pipeline without an account", {"pipeline": json.dumps(_PIPELINE)}, ["account=null", "the pipeline needs a 12-digit account"]),
    ("connection outside the primary region", {"account": "111122223333", "pipeline": json.dumps({**_PIPELINE, "connection_arn": _PIPELINE["connection_arn"].replace("eu-central-1", "eu-west-1")})},
     ["pipeline.connection_arn='arn:aws:codeconnections:eu-west-1:", "must be in eu-central-1, the pipeline's region"]),
    ("approver e-mail that is no address", {"account": "111122223333", "pipeline": json.dumps({**_PIPELINE, "approval_emails": ["release-team"]})},
     ['pipeline.approval_emails=["release-team"]', "e-mail addresses"]),
    ("prod pipeline that notifies nobody of its approval", {"account": "111122223333", "profile": "prod", "pipeline": json.dumps(_PIPELINE)},
     ["pipeline.approval_emails=[]", "waits for a manual approval", "at least one e-mail address"]),
    # auth runs a tag CI pushed; persona would be built by the pipeline's Assets stage, past containers.yml's Trivy gate.
    ("prod pipeline that would build a service's image itself", {"account": "111122223333", "profile": "prod",
                                                                 "pipeline": json.dumps({**_PIPELINE, "approval_emails": ["release@example.com"]}),
                                                                 "services": json.dumps({"auth": {"image_tag": "1.4.2"}, "persona": {}})},
     ["services.persona.image_tag=null", "the prod pipeline", "containers.yml scanned and pushed", "or image"]),
    ("event without a contract", {"services": json.dumps({"auth": {}, "persona": {"table": True, "worker": True, "consumes": {"auth": ["UserCreated"]}}})},
     ["services.persona.consumes.auth='UserCreated'", "contract in services/contracts/events/", "UserCreated.schema.json"]),
    ("budget limit of zero", {"budget": json.dumps({"monthly_limit_usd": 0})}, ["budget.monthly_limit_usd=0", "1 to 10000000"]),
    ("budget limit for an unknown profile", {"budget": json.dumps({"monthly_limit_usd": {"dev": 100, "staging": 200}})},
     ['budget.monthly_limit_usd={"dev": 100, "staging": 200}', "exactly the keys dev, prod"]),
    ("more budget thresholds than Budgets allows", {"budget": json.dumps({"alert_thresholds_percent": [10, 20, 30, 40, 50, 60]})},
     ["budget.alert_thresholds_percent=[10, 20, 30, 40, 50, 60]", "1 to 5 distinct percentages", "at most 10"]),
    ("budget e-mail that is no address", {"budget": json.dumps({"notify_emails": ["oncall"]})},
     ['budget.notify_emails=["oncall"]', "e-mail addresses"]),
    ("sampling rate above 1", {"observability": json.dumps({"xray_sampling_rate": 1.5})}, ["observability.xray_sampling_rate=1.5", "from 0 to 1"]),
    ("negative sampling reservoir", {"observability": json.dumps({"xray_reservoir_per_second": -1})}, ["observability.xray_reservoir_per_second=-1", "from 0 to 1000"]),
    ("quota alarm above 100 %", {"observability": json.dumps({"quota_alarm_percent": 120})}, ["observability.quota_alarm_percent=120", "from 1 to 100"]),
    ("edge 5xx alarm at 0 %", {"observability": json.dumps({"edge_5xx_alarm_percent": 0})}, ["observability.edge_5xx_alarm_percent=0", "from 0.1 to 100"]),
    ("alarm e-mail given twice", {"observability": json.dumps({"notify_emails": ["oncall@example.com", "oncall@example.com"]})},
     ['observability.notify_emails=["oncall@example.com", "oncall@example.com"]', "distinct e-mail addresses"]),
    ("edge 5xx alarm over more minutes than it reads", {"observability": json.dumps({"edge_5xx_alarm_minutes": 6})}, ["observability.edge_5xx_alarm_minutes=6", "from 1 to 5"]),
    ("negative table throttle alarm threshold", {"observability": json.dumps({"table_throttle_alarm_requests": -1})},
     ["observability.table_throttle_alarm_requests=-1", "integer from 0 to 1000000"]),
    ("fractional table system error alarm threshold", {"observability": json.dumps({"table_system_error_alarm_requests": 0.5})},
     ["observability.table_system_error_alarm_requests=0.5", "integer from 0 to 1000000"]),
    ("unknown observability key", {"observability": json.dumps({"sampling": 0.1})}, ["observability.sampling=0.1", "unknown key", "xray_sampling_rate"]),
    ("signing key rotation beyond a year", {"data": json.dumps({"signing_key_rotation_days": 400})},
     ["data.signing_key_rotation_days=400", "1 to 365"]),
    ("legacy function without a path", {"services": json.dumps({"auth": {"legacy": {"function_name": "auth-v1"}}})},
     ['services.auth.legacy={"function_name": "auth-v1"}', "needs the service's path"]),
    ("legacy function of another region", {"services": json.dumps({"auth": {"path": "/api/auth", "legacy": {"function_arns": {
        "eu-central-1": "arn:aws:lambda:eu-west-1:111122223333:function:auth-v1"}}}})},
     ["services.auth.legacy.function_arns.eu-central-1='arn:aws:lambda:eu-west-1:", "must be in eu-central-1"]),
    ("legacy function ARN that is no ARN", {"services": json.dumps({"auth": {"path": "/api/auth", "legacy": {"function_arns": {
        "eu-central-1": "auth-v1"}}}})}, ["services.auth.legacy.function_arns.eu-central-1='auth-v1'", "Lambda function ARN"]),
    ("migration percent above 100", {"services": json.dumps({"auth": {"path": "/api/auth", "legacy": {
        "function_name": "auth-v1", "initial_percent_to_service": 101}}})},
     ["services.auth.legacy.initial_percent_to_service=101", "from 0 to 100"]),
    ("service without an image or a Dockerfile", {"regions": _regions(("eu-central-1", "10.10.0.0/16")),
                                                  "services": json.dumps({"auth": {"path": "/api/auth"}, "billing": {"path": "/api/billing"}})},
     ["services.billing.image=null", "add services/billing/Dockerfile, or set image_tag"]),
    # Its key's alias would be alias/mf/logs, the logs key's in every region: the data stack would fail (AlreadyExists).
    ("service named like a platform key alias", {"services": json.dumps({"logs": {"path": "/api/logs", "table": True, "image_tag": "1"}})},
     ['services.logs={"path": "/api/logs", "table": true, "image_tag": "1"}', "must not be logs, ecr, pipeline-logs, edge-logs",
      "alias <prefix>/logs"]),
    ("chaos targets an unknown service", {"chaos": json.dumps({"service": "billing"})},
     ["chaos.service='billing'", "auth, persona, vc-start"]),
    ("chaos stops every task", {"chaos": json.dumps({"service": "persona", "stop_percent": 100})},
     ["chaos.stop_percent=100", "from 1 to 99"]),
    # The stop-tasks experiment stops at least one task: of one, that is the whole service, which prod refuses.
    ("chaos stops a prod service's only task", {"profile": "prod", "account": "111122223333",
                                                 "services": json.dumps({**cdk_json_context()["services"], "persona": {
                                                     **cdk_json_context()["services"]["persona"], "min_tasks": 1}})},
     ["services.persona.min_tasks=1", "with profile prod and chaos.service=persona", "expected at least 2"]),
    ("chaos in a fourth availability zone", {"chaos": json.dumps({"service": "persona", "availability_zone": "d"})},
     ["chaos.availability_zone='d'", "a, b, c"]),
    # dev's only NAT gateway and its interface endpoints are in zone a: cutting it off cuts every zone off AWS's APIs.
    ("chaos cuts off the zone every dev zone depends on", {"chaos": json.dumps({"service": "persona", "availability_zone": "a"})},
     ["chaos.availability_zone='a'", "with profile dev", "regional outage", "expected b, c"]),
    ("chaos latency beyond what FIS takes", {"chaos": json.dumps({"service": "persona", "latency_ms": 20000})},
     ["chaos.latency_ms=20000", "from 1 to 10000"]),
    # The longest prefix, region and service name each pass alone; together the FIS role name is 65 characters.
    ("chaos role name beyond IAM's 64 characters", {
        "prefix": "abcdefghij", "primary_region": "ap-southeast-1",
        "regions": json.dumps([{"name": "ap-southeast-1", "cidr": "10.10.0.0/16"}, {"name": "eu-west-1", "cidr": "10.20.0.0/16"}]),
        "services": json.dumps({"a-very-long-service1": {"port": 8080}}), "chaos": json.dumps({"service": "a-very-long-service1"})},
     ["chaos.service='a-very-long-service1'", "abcdefghij-ap-southeast-1-a-very-long-service1-fis-network-faults exceeds IAM's 64"]),
]


# One case of each kind issue 2 names (unknown key, wrong type, unknown or duplicate region, invalid,
# overlapping or too small CIDR, primary not in regions, malformed account, unknown profile or mesh),
# plus a nested JSON override: these also run through the CLI.
THROUGH_THE_CLI = [
    "unknown key", "regions not a list", "unknown region", "duplicate region", "cidr not a network",
    "overlapping cidrs", "cidr too small for 3 AZs", "primary region not configured", "account too short",
    "unknown profile", "unknown mesh", "shift step not an integer",
]
_CLI_ENV = {"CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "true"}


def _run_cli(overrides: dict[str, str], outdir: Path) -> subprocess.CompletedProcess[str]:
    args = [str(CDK_CLI), "synth", "--quiet", "--no-notices", "--output", str(outdir), "**"]
    for key, value in overrides.items():
        args += ["-c", f"{key}={value}"]
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **_CLI_ENV})


def _run_app(overrides: dict[str, str], outdir: Path) -> subprocess.CompletedProcess[str]:
    """app.py as `cdk synth` starts it, with the reference settings (cdk_json_context) and ``overrides`` on top."""
    env = {**os.environ, **_CLI_ENV, "CDK_OUTDIR": str(outdir),
           "CDK_CONTEXT_JSON": json.dumps({**cdk_json_context(), **overrides})}
    return subprocess.run(APP_COMMAND, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("config error: ")]
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[tuple[str, str], tuple[subprocess.CompletedProcess[str], Path]]:
    """Every run up front, two at a time, keyed by (entry point, case): each is a process start."""
    overrides = {case_id: case_overrides for case_id, case_overrides, _ in CASES}
    runs = [(_run_app, case_id, overrides[case_id]) for case_id in overrides]
    runs += [(_run_cli, case_id, overrides[case_id]) for case_id in THROUGH_THE_CLI]
    runs.insert(0, (_run_cli, CONTROL, {}))  # the one full synth first
    outdirs = [tmp_path_factory.mktemp("synth") for _ in runs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda run, outdir: run[0](run[2], outdir), runs, outdirs)
        return {(run.__name__, case_id): (result, outdir)
                for (run, case_id, _), result, outdir in zip(runs, done, outdirs, strict=True)}


@pytest.fixture(scope="module")
def cli_results(results) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    return {case_id: result for (entry_point, case_id), result in results.items() if entry_point == "_run_cli"}


@pytest.mark.parametrize("case_id, overrides, expected", CASES, ids=[case[0] for case in CASES])
def test_bad_config_stops_synth_with_one_clear_line(results, case_id, overrides, expected):
    result, outdir = results["_run_app", case_id]
    assert result.returncode == 2, result.stdout + result.stderr
    error_line = _error_line(result)
    for text in expected:
        assert text in error_line
    assert "Traceback" not in result.stderr
    assert "jsii" not in result.stderr.lower()
    assert not list(outdir.iterdir()), "nothing may be half-built"


def test_the_dozen_cases_of_each_kind_print_the_same_line_through_the_cli(cli_results, results):
    assert {case_id for case_id, _, _ in CASES} >= set(THROUGH_THE_CLI)
    for case_id in THROUGH_THE_CLI:
        result, outdir = cli_results[case_id]
        assert result.returncode != 0, result.stdout + result.stderr
        assert _error_line(result) == _error_line(results["_run_app", case_id][0]), case_id
        assert "Traceback" not in result.stderr and "jsii" not in result.stderr.lower(), case_id
        assert not list(outdir.glob("**/*.template.json")), f"{case_id}: nothing may be half-built"


def _nat_gateways(outdir: Path) -> int:
    return sum(
        resource["Type"] == "AWS::EC2::NatGateway"
        for template in outdir.glob("assembly-*/*.template.json")
        for resource in json.loads(template.read_text())["Resources"].values()
    )


def test_cdk_json_as_committed_synthesizes_through_the_cli(cli_results):
    """The control for the cases above: the same CLI call without bad overrides succeeds."""
    result, outdir = cli_results[CONTROL]
    assert result.returncode == 0, result.stderr
    # 8 + 6 regional stacks (primary: data, global), 2 edge stacks; and a smoke-test stack per region once
    # cdk.json configures the pipeline (its set-up puts it there).
    smoke_tests = 2 if committed_context()["pipeline"] else 0
    assert len(list(outdir.glob("assembly-*/*.template.json"))) == 16 + smoke_tests
    # One NAT gateway per region in dev, one per zone in prod (a prod deployment's cdk.json says prod).
    assert _nat_gateways(outdir) == {"dev": 2, "prod": 6}[committed_context().get("profile", "dev")]


def test_a_template_cloudformation_would_refuse_stops_synth_with_one_line(tmp_path):
    """The service caps are an estimate; app.py checks every synthesized template against CloudFormation's quotas."""
    from app import template_limit_problems

    fits, too_big, too_many = tmp_path / "fits.json", tmp_path / "big.json", tmp_path / "many.json"
    fits.write_text(json.dumps({"Resources": {f"R{i}": {"Type": "AWS::SNS::Topic"} for i in range(500)}}))
    too_big.write_text(json.dumps({"Resources": {"R": {"Type": "AWS::SNS::Topic", "Metadata": {"pad": "x" * 1_000_000}}}}))
    too_many.write_text(json.dumps({"Resources": {f"R{i}": {"Type": "AWS::SNS::Topic"} for i in range(501)}}))
    problems = template_limit_problems([("mf-eu-central-1-services", fits), ("a-big", too_big), ("a-many", too_many)])
    assert [p.split("'s template")[0] for p in problems] == ["config error: services is invalid: stack a-big",
                                                              "config error: services is invalid: stack a-many"]
    assert all("\n" not in p and "configure fewer services" in p for p in problems)
