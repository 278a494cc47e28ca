"""Progressive rollout for the App Mesh backend: a Step Functions state machine per service that moves
its routes' weights from the primary to the canary virtual node step by step, and back on an alarm.

Flow (``steps`` = 5, 25, 50, 100 by default)::

    RecordStartingRoute -> CheckAlarmsStart -> AlarmGateStart
        -> ReadPrimary1 -> PrimaryRead1 -> PrimaryCount1 (PrimaryAtMax1 above max_tasks) -> CanaryCount1 -> ScaleCanary1 -> StartScaleWait1
        -> [ScaleWait1 (15 s) -> ReadCanary1 -> CanaryScaled1 -> CountDownScale1] until the canary runs its count
        -> Shift1 -> StartBake1
        -> [Bake1 (wait 1 min) -> CheckAlarms1 -> AlarmGate1 -> CountDown1 -> BakeLeft1] until the bake is over
        -> Baked1 -> CountCanaryRequests1 (-> CountCanaryGrpcCalls1 for a gRPC service) -> TrafficGate1 -> CanaryServed1
        -> ReadPrimary2 -> ... -> Shift2 -> ... -> CanaryServed4 -> Promoted (Succeed)
    any alarm check that finds an alarm in ALARM (or misses one), a canary that does not reach its count in time
    (ScaleTimedOut<n>), an ECS service that is not found (ServiceMissing<n>), a canary that answered fewer than
    its step's share of ``min_requests`` in its bake (CanaryNotExercised<n>), and any failed call -> Rollback -> ScaleInCanary -> RolledBack (Fail)
    a route Rollback cannot set back after its retries -> RollbackIncomplete (Fail: traffic may still be split)

The alarms are read once a minute throughout each bake (``bake_minutes`` checks, each after a one-minute
wait), so a canary that trips one is rolled back within about a minute, not at the end of its bake.
Before each shift to p %, the canary ECS service gets max(1, ceil(primary desired count x p / 100)) tasks (the
primary's count read at that moment, taken as at most ``primary_max_tasks``), and the shift waits until that many
run: one task cannot carry 25 % or more of the service's mesh calls. ``Rollback`` sets every route of the service
to 100 % primary, 0 % canary first, and only then returns the canary to ``canary_tasks`` (scaling in a canary that
still takes traffic would overload it). The routes are replaced whole
(UpdateRoute takes the full spec), so each update carries the route's own match, retry policy and
timeout from the template, with only the weights changed.

The alarms treat missing data as not breaching, and their rates count as 0 % below 20 requests a minute: a
canary that sends no metrics (a broken app or collector) or gets no calls would pass every check. So after each
bake ``CountCanaryRequests<n>`` reads how many HTTP requests the canary answered since the bake began
(``$.bake.startedAt``, the time StartBake<n> was entered, after the shift) until now, from the services' own
duration histograms by ``deployment.variant`` (the alarms' namespace and dimensions), and for a gRPC service
``CountCanaryGrpcCalls<n>`` its gRPC calls the same way (a separate read: a service only called over gRPC has no
HTTP datapoints at all). The shift goes on only with at least its step's share of ``min_requests`` (``min_requests`` x p / 100, at least 1) of
either kind. GetMetricData is asked for one-minute datapoints summed by RUNNING_SUM, newest
first: the first value is the whole window's total whatever the minute boundaries (a single period as long as the
bake could be split at a period boundary, and the newest part alone read as the total). CloudWatch rounds the
start down to the minute, so up to a minute before the bake (the canary at the previous step) may count; the
last minute or two may not be ingested yet, so the count errs low, which only makes the gate stricter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import aws_cdk as cdk
from aws_cdk import aws_appmesh as appmesh
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_role_dependency_lint
from constructs.meshed_service.adot import GRPC_DURATION, HTTP_DURATION, VARIANT_ATTRIBUTE

DEFAULT_STEPS_PERCENT = (5, 25, 50, 100)
# The alarms it reads trip on 2 of 3 one-minute datapoints: a shorter bake could pass before they can.
MIN_BAKE_MINUTES = 3
# One check a minute costs about 13 execution history events; a standard execution keeps at most 25,000.
MAX_TOTAL_BAKE_MINUTES = 24 * 60
# The alarms' own period: reading them more often sees nothing new.
CHECK_INTERVAL_SECONDS = 60
# How often the canary's running count is read while it scales out (a Fargate task starts in about a minute).
SCALE_CHECK_INTERVAL_SECONDS = 15
# The scale-out waits' share of the history budget: with MAX_TOTAL_BAKE_MINUTES of checks, 1,840 checks of
# about 13 events each stay below 25,000.
MAX_TOTAL_SCALE_CHECKS = 400
ROLLED_BACK_ERROR = "CanaryRolledBack"
ROLLBACK_INCOMPLETE_ERROR = "RollbackIncomplete"
NOT_SCALED_ERROR = "CanaryNotScaled"
SERVICE_MISSING_ERROR = "EcsServiceMissing"
NOT_EXERCISED_ERROR = "CanaryNotExercised"
# One-minute datapoints, summed by the query itself: the total does not depend on where periods begin.
TRAFFIC_READ_PERIOD_SECONDS = 60
# The state that reads the canary's count of each kind, + the step number.
COUNT_STATE_PREFIX = {"http": "CountCanaryRequests", "grpc": "CountCanaryGrpcCalls"}


def canary_task_count(primary_desired: int, percent: int, primary_max_tasks: int) -> int:
    """Tasks the canary needs for ``percent`` % of the calls the primary's ``primary_desired`` tasks take,
    at least one, at most the primary's maximum."""
    return min(primary_max_tasks, max(1, -(-primary_desired * percent // 100)))


def required_canary_requests(min_requests: int, percent: int) -> int:
    """What a bake at ``percent`` % must count: its share of ``min_requests`` (the count at 100 %), at least 1. The canary
    gets that share of the mesh's calls, so a flat threshold would hold a quiet service back at the first steps."""
    return max(1, math.ceil(min_requests * percent / 100))


@dataclass(frozen=True)
class CanaryTraffic:
    """Where the canary's request counts are (its tasks' duration histograms in ``namespace``, dimensions
    ``service.name`` = ``service_name`` and ``deployment.variant`` = canary; with ``grpc`` its gRPC calls too), and
    how many HTTP requests, or gRPC calls, each bake must have seen for the shift to go on."""

    namespace: str
    service_name: str
    grpc: bool
    min_requests: int

    def __post_init__(self) -> None:
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) or self.min_requests < 1:
            raise ValueError(f"min_requests={self.min_requests!r} is invalid: expected an integer of 1 or more "
                             "(0 would let a canary without metrics pass)")

    @property
    def metrics(self) -> dict[str, str]:
        """Kind of request (http, grpc) -> the duration metric that counts them."""
        return {"http": HTTP_DURATION, **({"grpc": GRPC_DURATION} if self.grpc else {})}


@dataclass(frozen=True)
class ShiftSettings:
    """Canary percentages in order (strictly increasing, ending at 100) and the wait after each."""

    steps_percent: Sequence[int] = DEFAULT_STEPS_PERCENT
    bake_minutes: int = 10
    # Below the canary's tasks-below-desired alarm (10 minutes), so a slow scale-out is this timeout, not that alarm.
    scale_timeout_minutes: int = 5

    def __post_init__(self) -> None:
        steps = list(self.steps_percent)
        if not steps or steps[-1] != 100 or any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps_percent={steps} is invalid: expected strictly increasing percentages from 1 to 100, ending at 100")
        if self.bake_minutes < MIN_BAKE_MINUTES:
            raise ValueError(f"bake_minutes={self.bake_minutes} is invalid: expected {MIN_BAKE_MINUTES} or more")
        if self.bake_minutes * len(steps) > MAX_TOTAL_BAKE_MINUTES:
            raise ValueError(f"bake_minutes={self.bake_minutes} is invalid with {len(steps)} steps: expected at most "
                             f"{MAX_TOTAL_BAKE_MINUTES} minutes of bake in all (one execution's history holds about a day of checks)")
        if self.scale_timeout_minutes < 1 or self.scale_checks * len(steps) > MAX_TOTAL_SCALE_CHECKS:
            raise ValueError(f"scale_timeout_minutes={self.scale_timeout_minutes} is invalid with {len(steps)} steps: expected 1 or more and at most "
                             f"{MAX_TOTAL_SCALE_CHECKS * SCALE_CHECK_INTERVAL_SECONDS // 60} minutes of scale-out waits in all")

    @property
    def scale_checks(self) -> int:
        """Reads of the canary's running count before a step times out."""
        return self.scale_timeout_minutes * 60 // SCALE_CHECK_INTERVAL_SECONDS


class TrafficShift(Construct):
    """The traffic-shift state machine of one App Mesh service.

    ``routes``: the service's routes (HTTP, and gRPC when it has a gRPC port), each with weighted targets
    on ``primary_node`` and ``canary_node``. ``alarm_names``: alarms read before the first step and every
    minute of each bake, by name
    (names are deterministic; a reference would tie this stack to the one that owns them).
    ``primary_service`` / ``canary_service``: the ECS services behind the two nodes; the canary is scaled to
    its share of the primary's tasks (at most ``primary_max_tasks``) before each step and back to
    ``canary_tasks`` (its count in the template) on a rollback. ``canary_traffic``: where the canary's request count
    is read after each bake, and the least it must be for the shift to go on (required: quiet alarms alone would
    promote a canary nobody called). Exposes ``state_machine``, ``role`` and ``log_group``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, state_machine_name: str, mesh: appmesh.IMesh,
        routes: Sequence[appmesh.Route], primary_node: appmesh.VirtualNode, canary_node: appmesh.VirtualNode,
        alarm_names: Sequence[str], settings: ShiftSettings, log_encryption_key: kms.IKey,
        log_retention: logs.RetentionDays, primary_service: ecs.IBaseService, canary_service: ecs.IBaseService,
        primary_max_tasks: int, canary_traffic: CanaryTraffic, canary_tasks: int = 1,
    ) -> None:
        super().__init__(scope, construct_id)
        if not routes:
            raise ValueError("routes=[] is invalid: pass the service's routes")
        if not alarm_names:
            raise ValueError("alarm_names=[] is invalid: a shift without an alarm to check cannot roll back")
        if not 1 <= canary_tasks <= primary_max_tasks:
            raise ValueError(f"canary_tasks={canary_tasks} is invalid: expected 1 to primary_max_tasks ({primary_max_tasks})")
        stack = cdk.Stack.of(self)
        self.settings, self.alarm_names, self.canary_traffic = settings, list(alarm_names), canary_traffic
        self._mesh_name = _name(mesh, "mesh_name")
        self._routes = list(routes)
        self._node_names = {"primary": _name(primary_node, "virtual_node_name"), "canary": _name(canary_node, "virtual_node_name")}
        self._route_arns = [route.route_arn for route in self._routes]
        self._primary_max_tasks, self._canary_tasks = primary_max_tasks, canary_tasks
        self._cluster_name = _name(canary_service.cluster, "cluster_name")
        self._ecs = {"primary": (_name(primary_service, "service_name"), primary_service.service_arn),
                     "canary": (_name(canary_service, "service_name"), canary_service.service_arn)}
        self._alarm_arns = [stack.format_arn(service="cloudwatch", resource="alarm", resource_name=name,
                                             arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME) for name in self.alarm_names]

        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
                             description=f"Runs {state_machine_name}: the service's App Mesh routes, alarms and ECS services only")
        self.log_group = logs.LogGroup(
            self, "Logs", log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
            encryption_key=log_encryption_key, retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine", state_machine_name=state_machine_name, role=self.role,
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            comment=f"Shift traffic to the canary {', '.join(map(str, settings.steps_percent))} %, "
                    f"baking {settings.bake_minutes} min after each step with the alarms read every minute; all back to the primary on an alarm",
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            # The longest run: every bake and every scale-out wait plus a margin for the calls.
            timeout=cdk.Duration.minutes((settings.bake_minutes + settings.scale_timeout_minutes) * len(settings.steps_percent) + 30),
        )
        skip_role_dependency_lint(self.state_machine.node.default_child, holder="state machine")
        acknowledge_nag(
            self.role,
            "The state machine's log delivery (logs:*LogDelivery, logs:Describe*), X-Ray tracing "
            "(xray:PutTraceSegments, PutTelemetryRecords, GetSampling*) and the canary's request count "
            "(cloudwatch:GetMetricData) actions have no resource-level permissions; "
            "the App Mesh, CloudWatch alarm and ECS statements name this service's route, alarm and ECS service ARNs",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            self.role,
            "CDK writes the state machine's grants (its routes, its alarms, its ECS services, logs, X-Ray) into the role's own inline "
            "policy, which lives and dies with the role and the state machine",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )

    # The definition ------------------------------------------------------------------------------

    def _definition(self) -> sfn.IChainable:
        settings = self.settings
        rolled_back = sfn.Fail(
            self, "RolledBack", error=ROLLED_BACK_ERROR,
            cause="An alarm was in ALARM (or missing, the canary did not scale out or was not exercised, or a call failed): all traffic is "
                  "back on the primary node and the canary back to its own task count")
        # Traffic first, then tasks: a canary scaled in while it still takes its share would be overloaded.
        scale_in = self._update_canary_count("ScaleInCanary", self._canary_tasks,
                                             comment=f"Back to the canary's own {self._canary_tasks} task(s), after the routes")
        scale_in.add_catch(sfn.Fail(
            self, "RolledBackCanaryStillScaled", error=ROLLED_BACK_ERROR,
            cause="All traffic is back on the primary node, but setting the canary's desired count back failed: "
                  "set it by hand (runbooks/canary-rollback.md)"), result_path="$.error")
        # A route the rollback cannot set back even after its retries leaves traffic split: end in a failure
        # that says so, not in the raw SDK error, and leave the canary's tasks as they are.
        rollback_incomplete = sfn.Fail(
            self, "RollbackIncomplete", error=ROLLBACK_INCOMPLETE_ERROR,
            cause="Setting a route back to 100 % primary failed: traffic may still be split between the primary and the "
                  "canary. Force a rollback by hand (runbooks/canary-rollback.md)")
        rollback = self._set_weights("Rollback", canary_percent=0, catch=rollback_incomplete, then=scale_in.next(rolled_back))
        chain = sfn.Chain.start(self._describe_route()).next(self._alarm_check("Start", rollback))
        for step, percent in enumerate(settings.steps_percent, start=1):
            shift = self._set_weights(f"Shift{step}", canary_percent=percent, catch=rollback)
            chain = chain.next(self._scale_canary(step, percent, rollback)).next(shift).next(self._bake(step, percent, rollback)) \
                .next(self._traffic_gate(step, percent, rollback))
        return chain.next(sfn.Succeed(
            self, "Promoted", comment="All traffic on the canary node; promote its image to the primary"))

    def _bake(self, step: int, percent: int, rollback: sfn.IChainable) -> sfn.IChainable:
        """Wait a minute, read the alarms, repeat until ``bake_minutes`` have passed; roll back at the first alarm."""
        checks = self.settings.bake_minutes * 60 // CHECK_INTERVAL_SECONDS
        # startedAt: where the canary's request count after the bake begins (after the shift).
        start = sfn.Pass(self, f"StartBake{step}", result_path="$.bake",
                         parameters={"checksLeft": checks, "startedAt": sfn.JsonPath.string_at("$$.State.EnteredTime")},
                         comment=f"Bake {self.settings.bake_minutes} min at {percent} % canary: {checks} alarm checks")
        wait = sfn.Wait(self, f"Bake{step}", time=sfn.WaitTime.duration(cdk.Duration.seconds(CHECK_INTERVAL_SECONDS)))
        count_down = sfn.Pass(
            self, f"CountDown{step}", result_path="$.bake",
            parameters={"checksLeft": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.bake.checksLeft"), -1),
                        "startedAt": sfn.JsonPath.string_at("$.bake.startedAt")})
        done = sfn.Pass(self, f"Baked{step}", result_path=sfn.JsonPath.DISCARD)
        left = sfn.Choice(self, f"BakeLeft{step}").when(
            sfn.Condition.number_greater_than("$.bake.checksLeft", 0), wait).otherwise(done)
        start.next(wait).next(self._alarm_check(f"{step}", rollback, on_ok=count_down))
        count_down.next(left)
        return sfn.Chain.custom(start, [done], start)

    def _traffic_gate(self, step: int, percent: int, rollback: sfn.IChainable) -> sfn.IChainable:
        """After the bake: go on only if the canary answered at least the step's share of ``min_requests`` HTTP requests
        or gRPC calls in it (see the module's docstring: quiet alarms say nothing about a canary without metrics)."""
        traffic = self.canary_traffic
        dimensions = [{"Name": "service.name", "Value": traffic.service_name}, {"Name": VARIANT_ATTRIBUTE, "Value": "canary"}]
        # One read per protocol: a service called only over gRPC has no HTTP datapoints at all, and what metric math
        # makes of a sum with a series that has none is not something to rely on.
        reads = []
        for kind, metric_name in traffic.metrics.items():
            read = tasks.CallAwsService(
                self, f"{COUNT_STATE_PREFIX[kind]}{step}", service="cloudwatch", action="getMetricData",
                # GetMetricData has no resource-level permissions.
                iam_action="cloudwatch:GetMetricData", iam_resources=["*"],
                comment=f"The canary's {kind} requests in its bake at {percent} %: the newest running sum is the total",
                parameters={
                    "MetricDataQueries": [
                        {"Id": "m", "ReturnData": False, "MetricStat": {
                            "Metric": {"Namespace": traffic.namespace, "MetricName": metric_name, "Dimensions": dimensions},
                            "Period": TRAFFIC_READ_PERIOD_SECONDS, "Stat": "SampleCount"}},
                        # FILL: a minute without datapoints adds 0 instead of leaving a gap in the sum.
                        {"Id": "served", "ReturnData": True, "Label": f"canary {kind} requests since the bake began",
                         "Expression": "RUNNING_SUM(FILL(m, 0))"}],
                    "ScanBy": "TimestampDescending",
                    "StartTime": sfn.JsonPath.string_at("$.bake.startedAt"),
                    "EndTime": sfn.JsonPath.string_at("$$.State.EnteredTime")},
                # Only the expression returns data; a canary without metrics gives no values at all.
                result_selector={"Values.$": "$.MetricDataResults[0].Values"}, result_path=f"$.traffic.{kind}")
            read.add_retry(errors=["States.TaskFailed"], interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
            read.add_catch(rollback, result_path="$.error")
            reads.append(read)
        required = required_canary_requests(traffic.min_requests, percent)
        not_exercised = sfn.Pass(
            self, f"CanaryNotExercised{step}", result_path="$.error",
            result=sfn.Result.from_object({"Error": NOT_EXERCISED_ERROR, "Cause": (
                f"The canary answered fewer than {required} {' or '.join(traffic.metrics)} requests in its "
                f"{self.settings.bake_minutes} min at {percent} % (or sent no metrics): its alarms could not judge it")}))
        not_exercised.next(rollback)
        served = sfn.Pass(self, f"CanaryServed{step}", result_path=sfn.JsonPath.DISCARD)
        enough = [sfn.Condition.and_(sfn.Condition.is_present(f"$.traffic.{kind}.Values[0]"),
                                     sfn.Condition.number_greater_than_equals(f"$.traffic.{kind}.Values[0]", required))
                  for kind in traffic.metrics]
        gate = sfn.Choice(self, f"TrafficGate{step}").when(sfn.Condition.or_(*enough), served).otherwise(not_exercised)
        chain = sfn.Chain.start(reads[0])
        for read in reads[1:]:
            chain = chain.next(read)
        return sfn.Chain.custom(reads[0], [served], chain.next(gate))

    def _scale_canary(self, step: int, percent: int, rollback: sfn.IChainable) -> sfn.IChainable:
        """Give the canary its share of the primary's tasks for ``percent`` %, then wait (bounded) until they run."""
        max_tasks = self._primary_max_tasks
        # DescribeServices answers a missing service with an empty list (and a failure entry): read only after
        # an IsPresent check, else the path error fails the execution without a rollback.
        missing = sfn.Pass(
            self, f"ServiceMissing{step}", result_path="$.error",
            result=sfn.Result.from_object({"Error": SERVICE_MISSING_ERROR, "Cause": "DescribeServices found no such ECS service"}))
        missing.next(rollback)
        read_primary = self._describe_service(f"ReadPrimary{step}", "primary", rollback, result_path="$.primary")
        primary_count = sfn.Pass(self, f"PrimaryCount{step}", result_path="$.scale",
                                 parameters={"primaryDesired": sfn.JsonPath.number_at("$.primary.Services[0].DesiredCount")})
        # JSONPath has no multiplication: the count for each primary count from 0 to its maximum, worked out here.
        counts = ", ".join(str(canary_task_count(desired, percent, max_tasks)) for desired in range(max_tasks + 1))
        count = sfn.Pass(
            self, f"CanaryCount{step}", result_path="$.scale",
            comment=f"max(1, ceil(primary desired count x {percent} / 100)), at most {max_tasks}",
            parameters={"primaryDesired": sfn.JsonPath.number_at("$.scale.primaryDesired"),
                        "canaryDesired.$": f"States.ArrayGetItem(States.Array({counts}), $.scale.primaryDesired)"})
        # Above its maximum (set by hand): counted as the maximum, the canary's cap anyway at 100 %.
        at_max = sfn.Pass(self, f"PrimaryAtMax{step}", result=sfn.Result.from_object({"primaryDesired": max_tasks}), result_path="$.scale")
        primary_read = sfn.Choice(self, f"PrimaryRead{step}").when(
            sfn.Condition.not_(sfn.Condition.is_present("$.primary.Services[0]")), missing
        ).when(sfn.Condition.number_greater_than("$.primary.Services[0].DesiredCount", max_tasks), at_max.next(count)
               ).otherwise(primary_count.next(count))
        scale = self._update_canary_count(f"ScaleCanary{step}", sfn.JsonPath.number_at("$.scale.canaryDesired"),
                                          comment=f"The canary's tasks for {percent} % of the calls")
        scale.add_catch(rollback, result_path="$.error")
        checks = self.settings.scale_checks
        start_wait = sfn.Pass(self, f"StartScaleWait{step}", result=sfn.Result.from_object({"checksLeft": checks}),
                              result_path="$.scaleWait", comment=f"At most {self.settings.scale_timeout_minutes} min for the canary's tasks to run")
        wait = sfn.Wait(self, f"ScaleWait{step}", time=sfn.WaitTime.duration(cdk.Duration.seconds(SCALE_CHECK_INTERVAL_SECONDS)))
        read_canary = self._describe_service(f"ReadCanary{step}", "canary", rollback, result_path="$.canary")
        count_down = sfn.Pass(
            self, f"CountDownScale{step}", result_path="$.scaleWait",
            parameters={"checksLeft": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.scaleWait.checksLeft"), -1)})
        timed_out = sfn.Pass(
            self, f"ScaleTimedOut{step}", result_path="$.error",
            result=sfn.Result.from_object({"Error": NOT_SCALED_ERROR, "Cause": f"The canary did not run its tasks for {percent} % "
                                           f"within {self.settings.scale_timeout_minutes} min"}))
        timed_out.next(rollback)
        scaled = sfn.Pass(self, f"CanaryScaled{step}", result_path=sfn.JsonPath.DISCARD)
        # RUNNING tasks only: the app container starts after Envoy is healthy, and an essential container
        # that turns unhealthy stops its task (out of the count); the bake's alarms judge the rest.
        ready = sfn.Choice(self, f"CanaryReady{step}").when(
            sfn.Condition.not_(sfn.Condition.is_present("$.canary.Services[0]")), missing
        ).when(
            sfn.Condition.number_greater_than_equals_json_path("$.canary.Services[0].RunningCount", "$.scale.canaryDesired"), scaled
        ).when(sfn.Condition.number_greater_than("$.scaleWait.checksLeft", 1), count_down).otherwise(timed_out)
        count_down.next(wait)
        read_primary.next(primary_read)
        count.next(scale).next(start_wait).next(wait).next(read_canary).next(ready)
        return sfn.Chain.custom(read_primary, [scaled], read_primary)

    def _describe_service(self, state_id: str, variant: str, rollback: sfn.IChainable, *, result_path: str) -> tasks.CallAwsService:
        name, arn = self._ecs[variant]
        task = tasks.CallAwsService(
            self, state_id, service="ecs", action="describeServices", iam_action="ecs:DescribeServices",
            iam_resources=[arn], parameters={"Cluster": self._cluster_name, "Services": [name]},
            result_selector={"Services.$": "$.Services"}, result_path=result_path)
        task.add_retry(errors=["States.TaskFailed"], interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
        task.add_catch(rollback, result_path="$.error")
        return task

    def _update_canary_count(self, state_id: str, desired_count: Any, *, comment: str) -> tasks.CallAwsService:
        name, arn = self._ecs["canary"]
        task = tasks.CallAwsService(
            self, state_id, service="ecs", action="updateService", iam_action="ecs:UpdateService",
            iam_resources=[arn], parameters={"Cluster": self._cluster_name, "Service": name, "DesiredCount": desired_count},
            comment=comment, result_path=sfn.JsonPath.DISCARD)
        task.add_retry(errors=["States.TaskFailed"], interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
        return task

    def _describe_route(self) -> sfn.IChainable:
        """The first route as it stands, for the execution history (and a fast failure if it is gone)."""
        route = self._routes[0]
        task = tasks.CallAwsService(
            self, "RecordStartingRoute", service="appmesh", action="describeRoute", iam_action="appmesh:DescribeRoute",
            iam_resources=self._route_arns,
            parameters={"MeshName": self._mesh_name, "VirtualRouterName": self._router_name(route),
                        "RouteName": self._route_name(route)},
            result_selector={"Spec.$": "$.Route.Spec"}, result_path="$.startingRoute")
        return task

    def _alarm_check(self, label: str, rollback: sfn.IChainable, on_ok: sfn.Pass | None = None) -> sfn.IChainable:
        """Read the alarms; go on (to ``on_ok``) only if every one exists and none is in ALARM."""
        names = self.alarm_names
        check = tasks.CallAwsService(
            self, f"CheckAlarms{label}", service="cloudwatch", action="describeAlarms",
            iam_action="cloudwatch:DescribeAlarms", iam_resources=self._alarm_arns,
            parameters={"AlarmNames": names, "AlarmTypes": ["MetricAlarm"]},
            result_selector={"MetricAlarms.$": "$.MetricAlarms"}, result_path="$.alarms")
        check.add_retry(errors=["States.TaskFailed"], interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
        check.add_catch(rollback, result_path="$.error")
        found = "$.alarms.MetricAlarms"
        alarm_or_missing = sfn.Condition.or_(
            # One alarm fewer than asked for: it was deleted or never deployed; shifting blind is not allowed.
            sfn.Condition.not_(sfn.Condition.is_present(f"{found}[{len(names) - 1}]")),
            *(sfn.Condition.and_(sfn.Condition.is_present(f"{found}[{i}]"),
                                 sfn.Condition.string_equals(f"{found}[{i}].StateValue", "ALARM"))
              for i in range(len(names))),
        )
        next_step = on_ok or sfn.Pass(self, f"AlarmsOk{label}", result_path=sfn.JsonPath.DISCARD)
        choice = sfn.Choice(self, f"AlarmGate{label}").when(alarm_or_missing, rollback).otherwise(next_step)
        return sfn.Chain.custom(check, [next_step], check.next(choice))

    def _set_weights(self, state_id: str, *, canary_percent: int, catch: sfn.IChainable | None = None,
                     then: sfn.IChainable | None = None) -> sfn.IChainable:
        """Set every route of the service to ``canary_percent`` on the canary node, the rest on the primary."""
        updates = [self._update_route(f"{state_id}{'' if i == 0 else f'-{self._route_name(route)}'}", route, canary_percent)
                   for i, route in enumerate(self._routes)]
        for update in updates:
            update.add_retry(errors=["States.TaskFailed"], interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
            if catch is not None:
                update.add_catch(catch, result_path="$.error")
        chain = sfn.Chain.start(updates[0])
        for update in updates[1:]:
            chain = chain.next(update)
        return chain.next(then) if then is not None else chain

    def _update_route(self, state_id: str, route: appmesh.Route, canary_percent: int) -> tasks.CallAwsService:
        return tasks.CallAwsService(
            self, state_id, service="appmesh", action="updateRoute", iam_action="appmesh:UpdateRoute",
            iam_resources=self._route_arns,
            parameters={"MeshName": self._mesh_name, "VirtualRouterName": self._router_name(route),
                        "RouteName": self._route_name(route), "Spec": self._spec(route, canary_percent)},
            comment=f"{100 - canary_percent} % primary, {canary_percent} % canary",
            result_path=sfn.JsonPath.DISCARD)

    def _spec(self, route: appmesh.Route, canary_percent: int) -> dict[str, Any]:
        """The route's template spec with new weights, in the SDK's shape (PascalCase)."""
        cfn_route = route.node.default_child
        assert isinstance(cfn_route, appmesh.CfnRoute)
        spec = cdk.Stack.of(self).resolve(cfn_route.spec)
        (kind, body), = spec.items()  # httpRoute or grpcRoute
        weights = {"primary": 100 - canary_percent, "canary": canary_percent}
        port = body["action"]["weightedTargets"][0].get("port")
        body = {**body, "action": {"weightedTargets": [
            {"virtualNode": self._node_names[variant], "weight": weight, **({"port": port} if port else {})}
            for variant, weight in weights.items()]}}
        return _pascal({kind: body})

    @staticmethod
    def _router_name(route: appmesh.Route) -> str:
        return _name(route.virtual_router, "virtual_router_name")

    @staticmethod
    def _route_name(route: appmesh.Route) -> str:
        return _name(route, "route_name")


def _name(construct: Construct, attribute: str) -> str:
    """The resource's name as the template sets it (a literal, readable in the definition), else its token."""
    given = getattr(construct.node.default_child, attribute, None)
    return given if isinstance(given, str) and not cdk.Token.is_unresolved(given) else getattr(construct, attribute)


def _pascal(value: Any) -> Any:
    """The CloudFormation spec's keys as Step Functions' SDK integrations take them (PascalCase)."""
    if isinstance(value, dict):
        return {key[:1].upper() + key[1:]: _pascal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_pascal(item) for item in value]
    return value
