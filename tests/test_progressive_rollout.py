"""Progressive rollout: the App Mesh traffic-shift state machines, read from the synthesized templates and walked
state by state (no AWS needed), and the Service Connect variant, which leaves rollout to ECS and has none."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import aws_cdk as cdk
import pytest
from aws_cdk import aws_appmesh as appmesh
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from constructs.meshed_service import CanaryTraffic, ShiftSettings, TrafficShift
from constructs.meshed_service.adot import GRPC_DURATION, HTTP_DURATION
from constructs.meshed_service.traffic_shift import (
    NOT_EXERCISED_ERROR, NOT_SCALED_ERROR, ROLLBACK_INCOMPLETE_ERROR, ROLLED_BACK_ERROR, SERVICE_MISSING_ERROR, canary_task_count,
)

SERVICES = ("auth", "persona", "vc-start")
# The services another service calls (cdk.json): the router's weights move only calls through the mesh,
# so only they have a state machine; nothing calls vc-start.
SHIFTED = ("auth", "persona")
REGIONS = ("eu-central-1", "eu-west-1")
DEFAULT_STEPS, DEFAULT_BAKE_SECONDS = [5, 25, 50, 100], 600
UPDATE_ROUTE, DESCRIBE_ALARMS = ":states:::aws-sdk:appmesh:updateRoute", ":states:::aws-sdk:cloudwatch:describeAlarms"
DESCRIBE_SERVICES, UPDATE_SERVICE = ":states:::aws-sdk:ecs:describeServices", ":states:::aws-sdk:ecs:updateService"
GET_METRIC_DATA = ":states:::aws-sdk:cloudwatch:getMetricData"
MIN_CANARY_REQUESTS = 60  # appmesh.shift_min_canary_requests by default: the count at 100 %


def _required(min_requests: int, percent: int) -> int:
    """A bake at percent % needs that share of min_requests, at least one (written out here, not imported)."""
    return max(1, -(-min_requests * percent // 100))
SCALE_CHECK_SECONDS, SCALE_CHECKS = 15, 20  # the default scale_timeout_minutes (5) in 15-second reads


# --- Reading a definition ------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A DefinitionString as text: Fn::Join joined, other intrinsics as ${...} placeholders."""
    if isinstance(value, str):
        return value
    (function, argument), = value.items()
    if function == "Fn::Join":
        separator, parts = argument
        return separator.join(_text(part) for part in parts)
    if function == "Ref":
        return "${%s}" % argument
    if function == "Fn::GetAtt":
        return "${%s}" % ".".join(argument)
    raise AssertionError(f"unexpected intrinsic {function} in a definition")


def _machines(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """State machine name -> its resource, with the parsed definition under "Definition"."""
    return {resource["Properties"]["StateMachineName"]: {**resource, "Definition": json.loads(_text(resource["Properties"]["DefinitionString"]))}
            for resource in template["Resources"].values() if resource["Type"] == "AWS::StepFunctions::StateMachine"}


def _successors(state: dict[str, Any]) -> list[str]:
    targets = [state.get("Next"), state.get("Default"), *(rule["Next"] for rule in state.get("Choices", [])),
               *(catch["Next"] for catch in state.get("Catch", []))]
    return [target for target in targets if target]


def _paths(definition: dict[str, Any], start: str | None = None) -> Iterator[list[str]]:
    """Every path from ``start`` (StartAt) to a terminal state; the graph from there must have no cycle."""
    states = definition["States"]

    def walk(path: list[str]) -> Iterator[list[str]]:
        successors = _successors(states[path[-1]])
        if not successors:
            yield path
        for successor in successors:
            assert successor not in path, f"cycle through {successor}"
            yield from walk([*path, successor])

    yield from walk([start or definition["StartAt"]])


def _is(state: dict[str, Any], resource: str) -> bool:
    return state["Type"] == "Task" and state["Resource"].endswith(resource)


def _canary_weight(state: dict[str, Any]) -> tuple[str, int, int]:
    """(route name, primary %, canary %) of an updateRoute task."""
    parameters = state["Parameters"]
    (route,) = parameters["Spec"].values()
    weights = {target["VirtualNode"].rsplit("-", 1)[1]: target["Weight"] for target in route["Action"]["WeightedTargets"]}
    return parameters["RouteName"], weights["primary"], weights["canary"]


def _expected_success(steps: list[int], bake_seconds: int, canary_counts: list[int], grpc: bool = False) -> list[Any]:
    """A check before the first shift; before each shift the canary's desired count (``canary_counts``, one per
    step) and one read that finds it running; after each shift, a check after every minute of its bake, then the
    count of the canary's requests in the bake (and of its gRPC calls, for a ``grpc`` service)."""
    events: list[Any] = [("check",)]
    for percent, count in zip(steps, canary_counts, strict=True):
        events += [("scale", count), ("wait", SCALE_CHECK_SECONDS), ("shift", percent), *[("wait", 60), ("check",)] * (bake_seconds // 60),
                   ("count",), *([("count", "grpc")] if grpc else [])]
    return [*events, "Succeed"]


# --- A tiny interpreter: runs a definition with the alarms a scenario gives each check --------------

@dataclass
class FakeEcs:
    """The two ECS services as a run sees them. ``primary_desired``: the primary's desired count at each read.
    The canary runs a new desired count from the ``reads_to_run``-th read after the update (never: None)."""

    primary_desired: int = 2
    reads_to_run: int | None = 1
    canary_desired: int = 1
    canary_running: int = 1
    reads_since_update: int = 0
    missing: frozenset[str] = frozenset()  # services DescribeServices does not find
    calls: list[str] = field(default_factory=list)

    def describe(self, service: str) -> list[dict[str, Any]]:
        self.calls.append(f"describe {service}")
        if service in self.missing:
            return []
        return [self._describe(service)]

    def _describe(self, service: str) -> dict[str, Any]:
        if not service.endswith("-canary"):
            return {"ServiceName": service, "DesiredCount": self.primary_desired}
        self.reads_since_update += 1
        if self.reads_to_run is not None and self.reads_since_update >= self.reads_to_run:
            self.canary_running = self.canary_desired
        return {"ServiceName": service, "DesiredCount": self.canary_desired, "RunningCount": self.canary_running}

    def update(self, service: str, desired_count: int) -> None:
        assert service.endswith("-canary"), f"the run may scale only the canary, not {service}"
        self.calls.append(f"update {service} {desired_count}")
        self.canary_desired, self.reads_since_update = desired_count, 0


START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _timestamp(moment: dt.datetime) -> str:
    """As $$.State.EnteredTime gives it: ISO 8601, UTC, milliseconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _run(definition: dict[str, Any], alarm_state: Callable[[int], str] = lambda check: "OK",
         ecs_services: FakeEcs | None = None, final: dict[str, Any] | None = None,
         served: Callable[[int], float | None] = lambda step: 1000,
         grpc_served: Callable[[int], float | None] = lambda step: 1000) -> list[Any]:
    """What one execution does, in order: ("check",), ("scale", canary desired count), ("shift", canary %) once
    per step (one step updates every route of the service), ("wait", seconds), ("count",) (the canary's requests
    read), then "Succeed" or "Fail". ``alarm_state(n)``: every alarm's state at the n-th check (from 0).
    ``served(n)``: the canary's HTTP requests the n-th read (from 1) finds, None for no datapoints at all (a canary
    without metrics); ``grpc_served(n)`` the same for its gRPC calls (gRPC services only; a read of its own). A clock starts at START; every task takes a second, a Wait its seconds. ``final``: filled with
    the end state's name, the execution's document, ``timeline`` ((time, event) for every event) and ``reads``
    (each read's StartTime and EndTime)."""
    ecs_services = ecs_services or FakeEcs()
    states, document, events, name, checks = definition["States"], {}, [], definition["StartAt"], 0
    clock, timeline, reads, grpc_reads = START, [], [], 0
    for _ in range(100_000):
        state = states[name]
        kind = state["Type"]
        context = {"State": {"EnteredTime": _timestamp(clock)}}
        if kind in ("Succeed", "Fail"):
            if final is not None:
                final.update(state=name, document=document, timeline=timeline, reads=reads)
            return [*events, kind]
        if kind == "Choice":
            name = _choose(state, document)
            continue
        if kind == "Task":
            clock += dt.timedelta(seconds=1)
        before = len(events)
        if _is(state, GET_METRIC_DATA):
            parameters = _fields(state["Parameters"], document, context)
            window = (parameters["StartTime"], parameters["EndTime"])
            assert window[0] < window[1], f"an empty window {window}"
            (metric,) = [q["MetricStat"]["Metric"]["MetricName"] for q in parameters["MetricDataQueries"] if "MetricStat" in q]
            if metric == GRPC_DURATION:
                grpc_reads += 1
                value = grpc_served(grpc_reads)
            else:
                reads.append(window)
                value = served(len(reads))
            response = {"MetricDataResults": [{"Id": "served", "StatusCode": "Complete", "Values": [] if value is None else [value]}]}
            _put(document, state["ResultPath"], _fields(state["ResultSelector"], response))
            events.append(("count",) if metric == HTTP_DURATION else ("count", "grpc"))
        elif _is(state, DESCRIBE_ALARMS):
            names = state["Parameters"]["AlarmNames"]
            _put(document, state["ResultPath"], {"MetricAlarms": [{"AlarmName": n, "StateValue": alarm_state(checks)} for n in names]})
            events.append(("check",))
            checks += 1
        elif _is(state, UPDATE_ROUTE):
            shift = ("shift", _canary_weight(state)[2])
            if events[-1] != shift:
                events.append(shift)
        elif _is(state, DESCRIBE_SERVICES):
            (service,) = state["Parameters"]["Services"]
            response = {"Services": ecs_services.describe(service)}
            _put(document, state["ResultPath"], _fields(state["ResultSelector"], response))
        elif _is(state, UPDATE_SERVICE):
            count = _fields(state["Parameters"], document)["DesiredCount"]
            ecs_services.update(state["Parameters"]["Service"], count)
            events.append(("scale", count))
        elif kind == "Wait":
            clock += dt.timedelta(seconds=state["Seconds"])
            events.append(("wait", state["Seconds"]))
        elif kind == "Pass" and "Result" in state:
            _put(document, state["ResultPath"], state["Result"])
        elif kind == "Pass" and "Parameters" in state:
            _put(document, state["ResultPath"], _fields(state["Parameters"], document, context))
        timeline += [(_timestamp(clock), event) for event in events[before:]]
        name = state["Next"]
    raise AssertionError("the execution does not end")


def _put(document: dict[str, Any], path: str | None, value: Any) -> None:
    """As a ResultPath: null discards the result; a nested path makes the objects on its way."""
    if path is None:
        return
    *parents, leaf = path.removeprefix("$.").split(".")
    for key in parents:
        document = document.setdefault(key, {})
    document[leaf] = value


def _fields(template: dict[str, Any], document: Any, context: Any = None) -> dict[str, Any]:
    """Parameters or a ResultSelector applied to ``document``: "key.$" values are paths (``$$.``: the
    ``context`` object) or intrinsics."""
    return {key.removesuffix(".$"): _intrinsic(value, document, context) if key.endswith(".$") else value
            for key, value in template.items()}


def _read(document: Any, path: str) -> Any:
    present, value = _lookup(document, path)
    assert present, f"{path} is read before it is set"
    return value


def _intrinsic(expression: str, document: Any, context: Any = None) -> Any:
    if expression.startswith("$$."):
        assert context is not None, f"{expression} read where the interpreter gives no context object"
        return _read(context, expression.removeprefix("$"))
    if expression.startswith("$"):
        return _read(document, expression)
    if match := re.fullmatch(r"States\.MathAdd\((\$[.\w]+), (-?\d+)\)", expression):
        return _read(document, match.group(1)) + int(match.group(2))
    if match := re.fullmatch(r"States\.ArrayGetItem\(States\.Array\(([\d, ]+)\), (\$[.\w]+)\)", expression):
        table, index = [int(item) for item in match.group(1).split(",")], _read(document, match.group(2))
        assert 0 <= index < len(table), f"{match.group(2)}={index} is outside the table: the execution would fail"
        return table[index]
    raise AssertionError(f"unexpected intrinsic {expression}")


# --- A tiny Choice evaluator: the subset these definitions use --------------------------------------

def _lookup(document: Any, path: str) -> tuple[bool, Any]:
    value = document
    for key, index in re.findall(r"\.([A-Za-z]+)|\[(\d+)\]", path.removeprefix("$")):
        if key:
            if not isinstance(value, dict) or key not in value:
                return False, None
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return False, None
            value = value[int(index)]
    return True, value


def _matches(rule: dict[str, Any], document: Any) -> bool:
    if "Or" in rule:
        return any(_matches(r, document) for r in rule["Or"])
    if "And" in rule:
        return all(_matches(r, document) for r in rule["And"])
    if "Not" in rule:
        return not _matches(rule["Not"], document)
    present, value = _lookup(document, rule["Variable"])
    if "IsPresent" in rule:
        return present == rule["IsPresent"]
    if "StringEquals" in rule:
        assert present, f"{rule['Variable']} is read without an IsPresent guard: the execution would fail"
        return value == rule["StringEquals"]
    assert present, f"{rule['Variable']} is read before it is set"
    if "NumericGreaterThan" in rule:
        return value > rule["NumericGreaterThan"]
    if "NumericGreaterThanEquals" in rule:
        return value >= rule["NumericGreaterThanEquals"]
    if "NumericGreaterThanEqualsPath" in rule:
        return value >= _read(document, rule["NumericGreaterThanEqualsPath"])
    raise AssertionError(f"unexpected rule {rule}")


def _choose(state: dict[str, Any], document: Any) -> str:
    return next((rule["Next"] for rule in state["Choices"] if _matches(rule, document)), state["Default"])


def _gate_after(definition: dict[str, Any], check: str) -> dict[str, Any]:
    gate = definition["States"][definition["States"][check]["Next"]]
    assert gate["Type"] == "Choice"
    return gate


# --- The App Mesh variant --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def machines(appmesh) -> dict[str, dict[str, dict[str, Any]]]:
    """Region -> state machine name -> resource (with "Definition")."""
    return {region: _machines(appmesh.template(f"mf-{region}/services")) for region in REGIONS}


def test_appmesh_has_one_traffic_shift_per_service_in_each_region_with_its_arn_as_output(appmesh, machines):
    for region in REGIONS:
        assert sorted(machines[region]) == sorted(f"mf-{name}-traffic-shift" for name in SHIFTED)
        outputs = appmesh.template(f"mf-{region}/services")["Outputs"]
        shift_outputs = {key: output["Value"]["Ref"] for key, output in outputs.items() if key.startswith("TrafficShiftArn")}
        assert sorted(shift_outputs) == ["TrafficShiftArnAuth", "TrafficShiftArnPersona"]
        machine_ids = {logical_id for logical_id in appmesh.resources(f"mf-{region}/services", "AWS::StepFunctions::StateMachine")}
        assert set(shift_outputs.values()) == machine_ids


def test_a_quiet_run_shifts_through_the_configured_steps_reading_the_alarms_every_minute_of_each_bake(machines):
    for region in REGIONS:
        for name, machine in machines[region].items():
            # A primary of 2 tasks: the canary keeps 1 up to 50 %, and runs 2 for 100 %.
            assert _run(machine["Definition"], ecs_services=FakeEcs(primary_desired=2)) == \
                _expected_success(DEFAULT_STEPS, DEFAULT_BAKE_SECONDS, [1, 1, 1, 2], grpc=name == "mf-persona-traffic-shift"), name


def test_an_alarm_at_any_check_of_any_bake_returns_all_traffic_to_the_primary_at_once(machines):
    for name, machine in machines["eu-central-1"].items():
        definition = machine["Definition"]
        quiet = _run(definition)
        check_positions = [i for i, event in enumerate(quiet) if event == ("check",)]
        assert len(check_positions) == 1 + len(DEFAULT_STEPS) * DEFAULT_BAKE_SECONDS // 60
        for n, position in enumerate(check_positions):
            alarmed = _run(definition, lambda check, n=n: "ALARM" if check == n else "OK")
            # Everything up to the alarmed check as in a quiet run, then straight to 0 % canary, and only then
            # the canary back to its one task (scaled in first, it would take its share on fewer tasks).
            assert alarmed == [*quiet[:position + 1], ("shift", 0), ("scale", 1), "Fail"], (name, n)


def test_no_minute_of_a_bake_passes_without_an_alarm_check_that_can_roll_back(machines):
    for name, machine in machines["eu-central-1"].items():
        states = machine["Definition"]["States"]
        waits = {state_name: state for state_name, state in states.items()
                 if state["Type"] == "Wait" and not _is(states[state["Next"]], DESCRIBE_SERVICES)}
        assert len(waits) == len(DEFAULT_STEPS), name
        for wait in waits.values():
            check = states[wait["Next"]]
            assert wait["Seconds"] <= 60 and _is(check, DESCRIBE_ALARMS), name
            assert [c["Next"] for c in check["Catch"]] == ["Rollback"]
            assert "Rollback" in [rule["Next"] for rule in states[check["Next"]]["Choices"]]


def test_every_step_updates_all_of_the_services_routes_keeping_their_match_retries_and_timeout(appmesh, machines):
    """UpdateRoute replaces the whole spec: each update must carry the template's route, weights aside."""
    template = appmesh.template("mf-eu-central-1/services")
    routes = {(r["Properties"]["MeshName"]["Fn::GetAtt"][0], r["Properties"]["RouteName"], _router_of(template, r)): r["Properties"]["Spec"]
              for r in template["Resources"].values() if r["Type"] == "AWS::AppMesh::Route"}
    for name in SHIFTED:
        definition = machines["eu-central-1"][f"mf-{name}-traffic-shift"]["Definition"]
        updates = [state for state in definition["States"].values() if _is(state, UPDATE_ROUTE)]
        service_routes = {key[1]: spec for key, spec in routes.items() if key[2] == name}
        assert service_routes, name
        # Each step and the rollback touch every route of the service (persona: HTTP and gRPC).
        assert len(updates) == (len(DEFAULT_STEPS) + 1) * len(service_routes)
        for update in updates:
            parameters = update["Parameters"]
            assert (parameters["MeshName"], parameters["VirtualRouterName"]) == ("mf", name)
            (kind, sent), = parameters["Spec"].items()
            (template_kind, declared), = service_routes[parameters["RouteName"]].items()
            assert kind == template_kind
            assert {k: v for k, v in sent.items() if k != "Action"} == {k: v for k, v in declared.items() if k != "Action"}
            targets = sent["Action"]["WeightedTargets"]
            assert [t["VirtualNode"] for t in targets] == [f"{name}-primary", f"{name}-canary"]
            assert [t["Port"] for t in targets] == [t["Port"] for t in declared["Action"]["WeightedTargets"]]
            assert sum(t["Weight"] for t in targets) == 100


def _router_of(template: dict[str, Any], route: dict[str, Any]) -> str:
    router_id = route["Properties"]["VirtualRouterName"]["Fn::GetAtt"][0]
    return template["Resources"][router_id]["Properties"]["VirtualRouterName"]


def test_an_alarm_or_a_missing_alarm_sends_every_gate_to_the_rollback_and_quiet_alarms_let_it_go_on(machines):
    for name, machine in machines["eu-central-1"].items():
        definition = machine["Definition"]
        checks = [state_name for state_name, state in definition["States"].items() if _is(state, DESCRIBE_ALARMS)]
        assert len(checks) == len(DEFAULT_STEPS) + 1
        for check in checks:
            names = definition["States"][check]["Parameters"]["AlarmNames"]
            gate = _gate_after(definition, check)

            def outcome(states: list[str], gate=gate, names=names) -> str:
                # DescribeAlarms answers in no promised order; the ResultSelector keeps MetricAlarms.
                alarms = [{"AlarmName": alarm, "StateValue": state} for alarm, state in zip(reversed(names), states, strict=False)]  # fewer states: a missing alarm
                return _choose(gate, {"alarms": {"MetricAlarms": alarms}})

            quiet = outcome(["OK"] * len(names))
            assert quiet != "Rollback" and outcome(["INSUFFICIENT_DATA"] * len(names)) == quiet
            for i in range(len(names)):
                assert outcome(["OK"] * i + ["ALARM"] + ["OK"] * (len(names) - i - 1)) == "Rollback", (name, check, i)
            assert outcome(["OK"] * (len(names) - 1)) == "Rollback", "an alarm that does not exist must stop the shift"
            # A failed DescribeAlarms call (after its retries) rolls back too.
            assert [c["Next"] for c in definition["States"][check]["Catch"]] == ["Rollback"]


def test_the_rollback_sets_every_route_to_all_primary_then_the_canary_to_one_task_and_ends_the_run_as_failed(machines):
    for name, machine in machines["eu-central-1"].items():
        definition = machine["Definition"]
        all_paths = list(_paths(definition, "Rollback"))
        # A route that cannot be set back (after retries) ends the run at once as RollbackIncomplete: traffic may
        # still be split, the canary keeps its tasks, and the error says so (not the SDK's raw one).
        incomplete = [path for path in all_paths if path[-1] == "RollbackIncomplete"]
        routes = 2 if name == "mf-persona-traffic-shift" else 1
        assert len(incomplete) == routes
        for path in incomplete:
            end = definition["States"][path[-1]]
            assert (end["Type"], end["Error"]) == ("Fail", ROLLBACK_INCOMPLETE_ERROR) and "split" in end["Cause"]
            assert not any(_is(definition["States"][s], UPDATE_SERVICE) for s in path)
        paths = [path for path in all_paths if path[-1] != "RollbackIncomplete"]
        # Scaling the canary back in either succeeds or fails (after retries); the run fails as rolled back either way.
        assert len(paths) == 2
        for path in paths:
            states = [definition["States"][s] for s in path]
            updates = [_canary_weight(s) for s in states if _is(s, UPDATE_ROUTE)]
            assert {route for route, _, _ in updates} == ({"Route", "GrpcRoute"} if name == "mf-persona-traffic-shift" else {"Route"})
            assert all((primary, canary) == (100, 0) for _, primary, canary in updates)
            (scale_in,) = [i for i, s in enumerate(states) if _is(s, UPDATE_SERVICE)]
            assert all(i < scale_in for i, s in enumerate(states) if _is(s, UPDATE_ROUTE)), "routes first, then the canary's tasks"
            service = name.removeprefix("mf-").removesuffix("-traffic-shift")
            assert states[scale_in]["Parameters"] == {"Cluster": "mf", "Service": f"{service}-canary", "DesiredCount": 1}
            end = states[-1]
            assert (end["Type"], end["Error"]) == ("Fail", ROLLED_BACK_ERROR)
        # Every failed shift call (after retries) also ends in the rollback.
        for state_id, state in definition["States"].items():
            if _is(state, UPDATE_ROUTE) and not state_id.startswith("Rollback") and "Catch" in state:
                assert [c["Next"] for c in state["Catch"]] == ["Rollback"]
        shifts = [s for s in definition["States"] if s.startswith("Shift")]
        assert all("Catch" in definition["States"][s] for s in shifts)
        # So does every failed read or scale of the ECS services during the shift.
        ecs_calls = [s for s_name, s in definition["States"].items() if (_is(s, DESCRIBE_SERVICES) or _is(s, UPDATE_SERVICE))
                     and s_name != "ScaleInCanary"]
        assert len(ecs_calls) == 3 * len(DEFAULT_STEPS)
        assert all([c["Next"] for c in s["Catch"]] == ["Rollback"] for s in ecs_calls)


def test_the_alarms_checked_are_the_services_own_and_exist_in_the_observability_stack_without_a_dependency(appmesh, machines):
    for region in REGIONS:
        observed = {r["Properties"]["AlarmName"] for r in appmesh.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}
        for name in SHIFTED:
            definition = machines[region][f"mf-{name}-traffic-shift"]["Definition"]
            checked = {tuple(s["Parameters"]["AlarmNames"]) for s in definition["States"].values() if _is(s, DESCRIBE_ALARMS)}
            (names,) = checked
            assert {f"mf-{name}-lb-group0-5xx-rate", f"mf-{name}-lb-group0-p95-latency"} <= set(names)
            # The canary's own traffic (the load balancer sends it nothing): its 5xx rate and p95, gRPC too for persona.
            canary = {f"mf-{name}-canary-5xx-rate", f"mf-{name}-canary-p95-latency", f"mf-{name}-canary-tasks-below-desired",
                      f"mf-{name}-canary-no-running-tasks"}
            if name == "persona":
                canary |= {"mf-persona-canary-grpc-error-rate", "mf-persona-canary-grpc-p95-latency"}
            assert canary <= set(names)
            assert set(names) <= observed, set(names) - observed
        # Names, not references: the services stack does not wait for (or import from) the observability stack.
        assert not any("observability" in dependency for dependency in appmesh.stack_artifacts[f"mf-{region}/services"].get("dependencies", []))


def test_each_role_may_update_only_its_services_routes_and_read_only_its_alarms_and_metric_data(appmesh):
    for region in REGIONS:
        stack = f"mf-{region}/services"
        routes = appmesh.resources(stack, "AWS::AppMesh::Route")
        policies = appmesh.resources(stack, "AWS::IAM::Policy")
        ecs_services = {r["Properties"]["ServiceName"]: logical_id for logical_id, r in appmesh.resources(stack, "AWS::ECS::Service").items()}
        for machine in appmesh.resources(stack, "AWS::StepFunctions::StateMachine").values():
            name = machine["Properties"]["StateMachineName"].removeprefix("mf-").removesuffix("-traffic-shift")
            role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
            statements = [s for p in policies.values() if {"Ref": role_id} in p["Properties"]["Roles"]
                          for s in p["Properties"]["PolicyDocument"]["Statement"]]
            own_routes = {route_id for route_id, route in routes.items()
                          if route["Properties"]["VirtualRouterName"]["Fn::GetAtt"][0].startswith(f"AppMesh{name.replace('-', '')}router")}
            ecs_grants, unscoped = set(), set()
            for statement in statements:
                actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                if any(a.startswith("ecs:") for a in actions):
                    ecs_grants |= {(action, resource["Ref"]) for action in actions for resource in resources}
                elif any(a.startswith("appmesh:") for a in actions):
                    assert sorted(actions) == ["appmesh:DescribeRoute", "appmesh:UpdateRoute"]
                    assert {r["Ref"] for r in resources} == own_routes, name
                elif "cloudwatch:DescribeAlarms" in actions:
                    assert actions == ["cloudwatch:DescribeAlarms"]
                    arns = [_text(r) for r in resources]
                    assert all(re.fullmatch(rf"arn:aws:cloudwatch:{region}:\$\{{AWS::AccountId}}:alarm:mf-{name}-[a-z0-9-]+", a) for a in arns), arns
                else:
                    # Log delivery, X-Ray and the canary's request count: actions without resource-level
                    # permissions (acknowledged in nag).
                    assert all(a.split(":")[0] in ("logs", "xray") or a == "cloudwatch:GetMetricData" for a in actions), statement
                    assert resources == ["*"] and not any(a.endswith("*") for a in actions), statement
                    unscoped |= set(actions)
            assert "cloudwatch:GetMetricData" in unscoped, name
            # Reads of both of its ECS services; a desired count for the canary only.
            primary, canary = ecs_services[name], ecs_services[f"{name}-canary"]
            assert ecs_grants == {("ecs:DescribeServices", primary), ("ecs:DescribeServices", canary), ("ecs:UpdateService", canary)}, name


def test_the_stages_permissions_boundary_admits_every_action_of_the_traffic_shift_roles(appmesh):
    """A boundary is an intersection: an action it does not allow would fail at run time, in the middle of a shift."""
    for region in REGIONS:
        stack = f"mf-{region}/services"
        (boundary,) = appmesh.resources(f"mf-{region}/baseline", "AWS::IAM::ManagedPolicy").values()
        allows = [s for s in boundary["Properties"]["PolicyDocument"]["Statement"]
                  if s["Effect"] == "Allow" and region in s.get("Condition", {}).get("StringEquals", {}).get("aws:RequestedRegion", [])]
        allowed = {action for s in allows for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        roles = {m["Properties"]["RoleArn"]["Fn::GetAtt"][0] for m in appmesh.resources(stack, "AWS::StepFunctions::StateMachine").values()}
        actions = {action for p in appmesh.resources(stack, "AWS::IAM::Policy").values()
                   if {r["Ref"] for r in p["Properties"]["Roles"]} & roles
                   for s in p["Properties"]["PolicyDocument"]["Statement"]
                   for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert {"ecs:UpdateService", "ecs:DescribeServices"} <= actions
        assert all(f"{action.split(':')[0]}:*" in allowed for action in actions), sorted(a for a in actions if f"{a.split(':')[0]}:*" not in allowed)


def test_each_state_machine_logs_everything_to_an_encrypted_log_group_with_retention_and_traces(appmesh):
    stack = "mf-eu-central-1/services"
    log_groups = appmesh.resources(stack, "AWS::Logs::LogGroup")
    for machine in appmesh.resources(stack, "AWS::StepFunctions::StateMachine").values():
        properties = machine["Properties"]
        assert properties["TracingConfiguration"] == {"Enabled": True}
        logging = properties["LoggingConfiguration"]
        assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is True
        log_group = log_groups[logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]]["Properties"]
        assert log_group["LogGroupName"] == f"/aws/vendedlogs/states/{properties['StateMachineName']}"
        assert "KmsKeyId" in log_group and log_group["RetentionInDays"] > 0


# --- The Service Connect variant -------------------------------------------------------------------

def test_service_connect_has_no_traffic_shift_state_machine(dev):
    for region in REGIONS:
        assert dev.resources(f"mf-{region}/services", "AWS::StepFunctions::StateMachine") == {}
        assert not any(key.startswith("TrafficShiftArn") for key in dev.template(f"mf-{region}/services").get("Outputs", {}))


# --- The construct, with other settings ------------------------------------------------------------

# Each distinct _shift_stack's template, as JSON text: most tests build the same default stack, and a synth costs
# about half a CPU-second, the parse of the text a millisecond.
_SHIFT_TEMPLATES: dict[tuple[str, int, int], str] = {}


def _shift_stack(settings: ShiftSettings, primary_max_tasks: int = 6, min_requests: int = MIN_CANARY_REQUESTS) -> dict[str, Any]:
    """The template of a stack with one TrafficShift, a fresh copy each call (built once per distinct arguments)."""
    key = (repr(settings), primary_max_tasks, min_requests)
    if key not in _SHIFT_TEMPLATES:
        _SHIFT_TEMPLATES[key] = json.dumps(_build_shift_stack(settings, primary_max_tasks, min_requests))
    return json.loads(_SHIFT_TEMPLATES[key])


def _build_shift_stack(settings: ShiftSettings, primary_max_tasks: int, min_requests: int) -> dict[str, Any]:
    app = cdk.App()
    stack = cdk.Stack(app, "Shift", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    mesh = appmesh.Mesh(stack, "Mesh", mesh_name="mf")
    router = appmesh.VirtualRouter(stack, "Router", mesh=mesh, virtual_router_name="auth",
                                   listeners=[appmesh.VirtualRouterListener.http(8080)])
    nodes = {variant: appmesh.VirtualNode(stack, variant, mesh=mesh, virtual_node_name=f"auth-{variant}")
             for variant in ("primary", "canary")}
    route = router.add_route("Route", route_spec=appmesh.RouteSpec.http(weighted_targets=[
        appmesh.WeightedTarget(virtual_node=nodes["primary"], weight=90), appmesh.WeightedTarget(virtual_node=nodes["canary"], weight=10)]))
    cluster = ecs.Cluster.from_cluster_attributes(
        stack, "Cluster", cluster_name="mf", vpc=ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-1", availability_zones=["eu-west-1a"]))
    services = {variant: ecs.FargateService.from_fargate_service_attributes(stack, f"{variant}-service", cluster=cluster, service_name=name)
                for variant, name in (("primary", "auth"), ("canary", "auth-canary"))}
    TrafficShift(stack, "Shift", state_machine_name="mf-auth-traffic-shift", mesh=mesh, routes=[route],
                 primary_node=nodes["primary"], canary_node=nodes["canary"], alarm_names=["mf-auth-error-logs"],
                 settings=settings, log_encryption_key=kms.Key(stack, "Key"), log_retention=logs.RetentionDays.ONE_WEEK,
                 primary_service=services["primary"], canary_service=services["canary"], primary_max_tasks=primary_max_tasks,
                 canary_traffic=CanaryTraffic(namespace="mf/services", service_name="auth", grpc=False, min_requests=min_requests))
    return Template.from_stack(stack).to_json()


def test_configured_steps_and_bake_time_shape_the_run():
    definition = _machines(_shift_stack(ShiftSettings(steps_percent=[10, 40, 100], bake_minutes=3)))["mf-auth-traffic-shift"]["Definition"]
    assert _run(definition, ecs_services=FakeEcs(primary_desired=5)) == _expected_success([10, 40, 100], 180, [1, 2, 5])
    # Three bakes, three scale-out waits of at most 5 minutes and a margin for the calls: a stuck run ends
    # rather than holding a half-shifted route.
    assert definition["TimeoutSeconds"] == (3 * (3 + 5) + 30) * 60


@pytest.mark.parametrize("primary, counts", [
    (0, [1, 1, 1, 1]),   # a primary scaled to nothing: the canary still keeps one task
    (3, [1, 1, 2, 3]),   # ceil(3 x 25 / 100) = 1, ceil(3 x 50 / 100) = 2
    (4, [1, 1, 2, 4]),
    (6, [1, 2, 3, 6]),   # the primary's maximum
    (10, [1, 2, 3, 6]),  # above it (set by hand): counted as the maximum, no failed table lookup
])
def test_before_each_shift_the_canary_gets_its_share_of_the_primarys_tasks_at_most_the_primarys_maximum(primary, counts):
    definition = _machines(_shift_stack(ShiftSettings(), primary_max_tasks=6))["mf-auth-traffic-shift"]["Definition"]
    fake = FakeEcs(primary_desired=primary)
    assert _run(definition, ecs_services=fake) == _expected_success(DEFAULT_STEPS, DEFAULT_BAKE_SECONDS, counts)
    # Read the primary, scale the canary, read the canary until it runs: the primary itself is never changed.
    assert fake.calls[:3] == ["describe auth", f"update auth-canary {counts[0]}", "describe auth-canary"]


def test_the_canary_count_is_the_primarys_share_rounded_up_at_least_one_at_most_the_maximum():
    assert [canary_task_count(10, p, 10) for p in DEFAULT_STEPS] == [1, 3, 5, 10]
    assert [canary_task_count(20, p, 20) for p in DEFAULT_STEPS] == [1, 5, 10, 20]
    assert canary_task_count(21, 5, 40) == 2 and canary_task_count(1, 100, 1) == 1 and canary_task_count(0, 50, 4) == 1


def test_a_canary_that_starts_slowly_holds_the_shift_until_its_tasks_run():
    definition = _machines(_shift_stack(ShiftSettings()))["mf-auth-traffic-shift"]["Definition"]
    events = _run(definition, ecs_services=FakeEcs(primary_desired=4, reads_to_run=3))
    step3 = events.index(("scale", 2))
    # Three 15-second reads before the canary's two tasks run; the weights move only then.
    assert events[step3:step3 + 5] == [("scale", 2), *[("wait", SCALE_CHECK_SECONDS)] * 3, ("shift", 50)]


def test_a_canary_that_never_reaches_its_count_is_rolled_back_after_the_scale_timeout(appmesh, machines):
    final: dict[str, Any] = {}
    definition = _machines(_shift_stack(ShiftSettings()))["mf-auth-traffic-shift"]["Definition"]
    events = _run(definition, ecs_services=FakeEcs(primary_desired=4, reads_to_run=None), final=final)
    # 5 % and 25 % need the one task it has; 50 % needs two, which never run: 20 reads (5 min), then the
    # routes back to the primary and the canary back to one task, without a shift to 50 %.
    step3 = events.index(("scale", 2))
    assert events[step3:] == [("scale", 2), *[("wait", SCALE_CHECK_SECONDS)] * SCALE_CHECKS, ("shift", 0), ("scale", 1), "Fail"]
    assert ("shift", 50) not in events
    assert final["state"] == "RolledBack" and final["document"]["error"]["Error"] == NOT_SCALED_ERROR
    # The app's machines wait the same (the tasks-below-desired alarm would wait 10 minutes).
    for name, machine in machines["eu-central-1"].items():
        events = _run(machine["Definition"], ecs_services=FakeEcs(primary_desired=4, reads_to_run=None))
        assert events[-3:] == [("shift", 0), ("scale", 1), "Fail"], name
        assert events.count(("wait", SCALE_CHECK_SECONDS)) == 2 + SCALE_CHECKS, name


@pytest.mark.parametrize("missing", ["auth", "auth-canary"])
def test_an_ecs_service_that_is_not_found_rolls_the_shift_back_instead_of_failing_it_half_shifted(missing):
    definition = _machines(_shift_stack(ShiftSettings()))["mf-auth-traffic-shift"]["Definition"]
    final: dict[str, Any] = {}
    events = _run(definition, ecs_services=FakeEcs(missing=frozenset({missing})), final=final)
    assert events[-3:] == [("shift", 0), ("scale", 1), "Fail"] and not any(e[0] == "shift" and e[1] > 0 for e in events[:-1])
    assert final["state"] == "RolledBack" and final["document"]["error"]["Error"] == SERVICE_MISSING_ERROR


@pytest.mark.parametrize("step", range(1, len(DEFAULT_STEPS) + 1))
def test_a_canary_without_metrics_in_any_bake_is_rolled_back_as_not_exercised_not_promoted(step):
    """Its alarms stay OK on missing data: only the request count tells a silent canary from a healthy one."""
    definition = _machines(_shift_stack(ShiftSettings()))["mf-auth-traffic-shift"]["Definition"]
    final: dict[str, Any] = {}
    events = _run(definition, served=lambda n: None if n == step else 1000, final=final)
    assert events[-5:] == [("check",), ("count",), ("shift", 0), ("scale", 1), "Fail"]
    assert [e[1] for e in events if e[0] == "shift"] == [*DEFAULT_STEPS[:step], 0], "no shift after the silent bake"
    assert events.count(("count",)) == step
    assert final["state"] == "RolledBack" and final["document"]["error"]["Error"] == NOT_EXERCISED_ERROR


def test_a_grpc_canary_passes_on_its_grpc_calls_alone_and_fails_on_neither(machines):
    """persona is called over gRPC only (vc-start): its canary has no HTTP requests at all, which must not hold it back."""
    definition = machines["eu-central-1"]["mf-persona-traffic-shift"]["Definition"]
    final: dict[str, Any] = {}
    events = _run(definition, served=lambda n: None, grpc_served=lambda n: 1000, final=final)
    assert events[-1] == "Succeed" and events.count(("count",)) == events.count(("count", "grpc")) == len(DEFAULT_STEPS)
    events = _run(definition, served=lambda n: None, grpc_served=lambda n: _required(MIN_CANARY_REQUESTS, DEFAULT_STEPS[0]) - 1,
                  final=final)
    assert events[-1] == "Fail" and final["document"]["error"]["Error"] == NOT_EXERCISED_ERROR
    assert [e[1] for e in events if e[0] == "shift"] == [DEFAULT_STEPS[0], 0]
    assert _run(definition, served=lambda n: 1000, grpc_served=lambda n: None)[-1] == "Succeed"  # HTTP alone counts too


@pytest.mark.parametrize("min_requests", [1, MIN_CANARY_REQUESTS, 500])
def test_a_bake_needs_its_steps_share_of_min_requests_from_the_canary(min_requests):
    """At 5 % the canary gets a twentieth of the mesh's calls: a flat threshold would hold a quiet service back."""
    definition = _machines(_shift_stack(ShiftSettings(), min_requests=min_requests))["mf-auth-traffic-shift"]["Definition"]
    needed = [_required(min_requests, percent) for percent in DEFAULT_STEPS]
    assert needed[-1] == min_requests and needed[0] == max(1, -(-min_requests * 5 // 100))
    final: dict[str, Any] = {}
    assert _run(definition, served=lambda n: needed[n - 1] - 1 if n == 2 else needed[n - 1], final=final)[-4:] == \
        [("count",), ("shift", 0), ("scale", 1), "Fail"]
    assert final["document"]["error"]["Error"] == NOT_EXERCISED_ERROR and f"fewer than {needed[1]} " in final["document"]["error"]["Cause"]
    assert _run(definition, served=lambda n: needed[n - 1]) == _expected_success(DEFAULT_STEPS, DEFAULT_BAKE_SECONDS, [1, 1, 1, 2])
    # CloudWatch's SampleCount is a float.
    assert _run(definition, served=lambda n: float(needed[n - 1]))[-1] == "Succeed"


def test_the_request_count_covers_the_bake_from_after_the_shift_to_after_its_last_alarm_check():
    definition = _machines(_shift_stack(ShiftSettings(bake_minutes=3)))["mf-auth-traffic-shift"]["Definition"]
    final: dict[str, Any] = {}
    _run(definition, final=final)
    timeline, reads = final["timeline"], final["reads"]
    assert len(reads) == len(DEFAULT_STEPS)
    for (start, end), percent in zip(reads, DEFAULT_STEPS, strict=True):
        shifted = next(time for time, event in timeline if event == ("shift", percent))
        read = next(time for time, event in timeline if event == ("count",) and time > shifted)
        checks = [time for time, event in timeline if event == ("check",) and shifted < time < read]
        assert len(checks) == 3
        # Event times are when a call returned. ISO 8601 in UTC with the same width: text order is time order.
        assert shifted <= start < checks[0] and checks[-1] <= end < read, (percent, start, end)


def _reachable(definition: dict[str, Any], start: str, avoiding: str) -> set[str]:
    """The states a run from ``start`` can reach without passing ``avoiding``."""
    states, seen, todo = definition["States"], set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name == avoiding:
            continue
        seen.add(name)
        todo += _successors(states[name])
    return seen


def test_every_path_from_a_shift_to_the_next_step_or_promotion_counts_the_canarys_requests(machines):
    for name, machine in machines["eu-central-1"].items():
        definition = machine["Definition"]
        states = definition["States"]
        for step in range(1, len(DEFAULT_STEPS) + 1):
            count, following = f"CountCanaryRequests{step}", f"ReadPrimary{step + 1}" if step < len(DEFAULT_STEPS) else "Promoted"
            assert _is(states[count], GET_METRIC_DATA), name
            reached = _reachable(definition, f"Shift{step}", avoiding=count)
            assert following not in reached and "Promoted" not in reached, (name, step)
            assert following in _reachable(definition, f"Shift{step}", avoiding="Rollback")
            # A failed read (after its retries) rolls back; so does a count below the threshold or none at all.
            assert [c["Next"] for c in states[count]["Catch"]] == ["Rollback"]
            assert states[count]["Retry"][0]["ErrorEquals"] == ["States.TaskFailed"]
            grpc = name == "mf-persona-traffic-shift"
            after = states[count]["Next"]
            if grpc:  # its gRPC calls: a read of their own, failing the same way
                assert after == f"CountCanaryGrpcCalls{step}" and _is(states[after], GET_METRIC_DATA)
                assert [c["Next"] for c in states[after]["Catch"]] == ["Rollback"]
                after = states[after]["Next"]
            gate = states[after]
            assert gate["Type"] == "Choice" and states[gate["Default"]]["Next"] == "Rollback"
            assert states[gate["Default"]]["Result"]["Error"] == NOT_EXERCISED_ERROR
            (rule,) = gate["Choices"]
            kinds = ["http", "grpc"] if grpc else ["http"]
            needed = _required(MIN_CANARY_REQUESTS, DEFAULT_STEPS[step - 1])
            assert [{"Variable": f"$.traffic.{kind}.Values[0]", "NumericGreaterThanEquals": needed}
                    in either["And"] for kind, either in zip(kinds, rule["Or"], strict=True)] == [True] * len(kinds), rule


def _metric_stats(queries: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"],
             json.dumps(sorted((d["Name"], d["Value"]) for d in q["MetricStat"]["Metric"]["Dimensions"])), q["MetricStat"]["Stat"])
            for q in queries if "MetricStat" in q}


def test_the_request_count_reads_the_metrics_the_canarys_rate_alarms_count_requests_with(appmesh, machines):
    for region in REGIONS:
        alarms = {r["Properties"]["AlarmName"]: r["Properties"] for r in appmesh.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}
        for name in SHIFTED:
            states = machines[region][f"mf-{name}-traffic-shift"]["Definition"]["States"]
            reads = [s["Parameters"] for s in states.values() if _is(s, GET_METRIC_DATA)]
            # Every step reads the same, one read per protocol.
            rates = ["5xx-rate", *(["grpc-error-rate"] if name == "persona" else [])]
            assert len(reads) == len(DEFAULT_STEPS) * len(rates) and len({json.dumps(r, sort_keys=True) for r in reads}) == len(rates)
            queries = [q for read in reads for q in read["MetricDataQueries"]]
            # The rate alarms' request counts: their SampleCount queries without a status code dimension.
            expected = {stat for rate in rates for stat in _metric_stats(alarms[f"mf-{name}-canary-{rate}"]["Metrics"])
                        if "status_code" not in stat[2]}
            assert _metric_stats(queries) == expected and len(expected) == len(rates), (region, name)
            assert {q["MetricStat"]["Metric"]["MetricName"] for q in queries if "MetricStat" in q} == \
                {"http.server.request.duration", *(["rpc.server.duration"] if name == "persona" else [])}
            assert all(q["MetricStat"]["Period"] == 60 for q in queries if "MetricStat" in q)
            for read in reads:  # each returns the running sum of its one metric
                (returned,) = [q for q in read["MetricDataQueries"] if q["ReturnData"]]
                assert returned["Expression"] == "RUNNING_SUM(FILL(m, 0))"


def test_the_apps_machines_cover_every_primary_count_up_to_the_primarys_maximum(appmesh, machines):
    """The table a step looks the canary's count up in must reach the primary's max_tasks (else the run fails)."""
    for name, machine in machines["eu-central-1"].items():
        service = name.removeprefix("mf-").removesuffix("-traffic-shift")
        maximum = _primary_max_tasks(appmesh, "mf-eu-central-1/services", service)
        for primary in (1, maximum, maximum + 3):
            events = _run(machine["Definition"], ecs_services=FakeEcs(primary_desired=primary))
            assert [count for kind, *count in events[:-1] if kind == "scale"] == \
                [[canary_task_count(min(primary, maximum), p, maximum)] for p in DEFAULT_STEPS], (name, primary)


def _primary_max_tasks(assembly, stack: str, service: str) -> int:
    services = {logical_id: r["Properties"]["ServiceName"] for logical_id, r in assembly.resources(stack, "AWS::ECS::Service").items()}
    for target in assembly.resources(stack, "AWS::ApplicationAutoScaling::ScalableTarget").values():
        parts = target["Properties"]["ResourceId"]["Fn::Join"][1]
        if any(isinstance(p, dict) and services.get(p.get("Fn::GetAtt", [None])[0]) == service for p in parts):
            return target["Properties"]["MaxCapacity"]
    raise AssertionError(f"no scalable target for {service}")


@pytest.mark.parametrize("steps, bake, scale_timeout", [
    ([5, 25, 50], 10, 5), ([25, 5, 100], 10, 5), ([0, 100], 10, 5), ([50, 50, 100], 10, 5), ([100], 2, 5),
    ([5, 25, 50, 100], 361, 5), ([5, 25, 50, 100], 10, 0), ([5, 25, 50, 100], 10, 26)])
def test_shift_settings_refuse_steps_that_do_not_end_at_all_canary_a_bake_shorter_than_the_alarms_need_or_scale_waits_too_long(
        steps, bake, scale_timeout):
    with pytest.raises(ValueError, match="is invalid"):
        ShiftSettings(steps_percent=steps, bake_minutes=bake, scale_timeout_minutes=scale_timeout)


@pytest.mark.parametrize("min_requests", [0, -1, True, 1.5])
def test_canary_traffic_refuses_a_threshold_a_canary_without_metrics_would_pass(min_requests):
    with pytest.raises(ValueError, match="is invalid"):
        CanaryTraffic(namespace="mf/services", service_name="auth", grpc=False, min_requests=min_requests)
