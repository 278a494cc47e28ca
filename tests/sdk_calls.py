"""The AWS API calls a synthesized template makes at run time, and a check of each against botocore's service models.

Three kinds of call are read:
- Step Functions ``aws-sdk`` tasks (``arn:<partition>:states:::aws-sdk:<service>:<action>``, the action the
  operation in camelCase). Step Functions developer guide, "AWS SDK service integrations": "Parameters in Step
  Functions are expressed in PascalCase, even if the native service API is in camelCase"; nested members too
  (what AWS Support told the author of awsdocs/aws-step-functions-developer-guide PR #80). Results come back
  with PascalCase keys (not stated in the guide; what public state machines read, e.g.
  ``$.Services[0].RunningCount``). ``Key.$`` is the key ``Key`` given by a JSONPath. The ResultSelector's paths,
  and the paths later states read under the task's ResultPath, must name members of the output shape.
- SSM Automation ``aws:executeAwsApi`` / ``aws:waitForAwsResourceProperty`` / ``aws:assertAwsResourceProperty``
  steps ("aws:executeAwsApi", Systems Manager user guide): ``Service`` is the boto3 client name ("ssm", "ec2"),
  ``Api`` "the API operation or method name": only the operation name as botocore has it passes here (whether a
  snake_case method name works too is not confirmed); the other inputs are the operation's parameters as boto3
  names them, ``Selector`` / ``PropertySelector`` JSONPaths into boto3's response.
- CDK ``AwsCustomResource`` calls (``Custom::*`` with Create/Update/Delete JSON): SDK for JavaScript v3, whose
  members are the model's names (botocore's); ``outputPaths`` are dotted paths into the response. The service
  is taken lowercased as botocore's name (true of EC2, KMS, SSM, the ones the app uses).

Values are checked loosely: a literal must have the member's kind (string, number, boolean, list, structure,
map) and, for a string with enum values, be one of them; a placeholder (``{{ X }}``, ``${...}``, a JSONPath) is
accepted for any member.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import botocore.session
from botocore.exceptions import UnknownServiceError
from botocore.model import ListShape, MapShape, OperationNotFoundError, Shape, StructureShape

# Step Functions aws-sdk service names that differ from botocore's: none the app uses does; add one here
# (from the developer guide's list of supported services) before the app uses it.
STATES_SERVICE_NAMES: dict[str, str] = {}
# The SSM Automation actions that call an API, and the inputs each takes besides the API's parameters.
AUTOMATION_API_ACTIONS = {
    "aws:executeAwsApi": {"Service", "Api"},
    "aws:waitForAwsResourceProperty": {"Service", "Api", "PropertySelector", "DesiredValues"},
    "aws:assertAwsResourceProperty": {"Service", "Api", "PropertySelector", "DesiredValues"},
}
_STATES_SDK = re.compile(r":states:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)(\.\w+)?$")
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\$\{.*?\}")
_JSONPATH_IN_TEXT = re.compile(r"\$(?:\.[A-Za-z0-9_]+|\[\d+\])+")
_JSON_KINDS = {"string": str, "integer": int, "long": int, "boolean": bool, "float": (int, float), "double": (int, float),
               "timestamp": (str, int, float), "blob": str}


@lru_cache(maxsize=None)
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def exact(name: str) -> str:
    return name


@dataclass(frozen=True)
class SdkCall:
    """One API call: where it is, the service and operation as botocore names them, its parameters, the key
    casing it uses, and the selectors into its response (each a list of steps: names and list indexes)."""

    where: str
    service: str
    operation: str
    parameters: dict[str, Any]
    casing: Callable[[str], str]
    selectors: tuple[tuple[str | int, ...], ...] = ()
    json_path_keys: bool = False  # Step Functions: "Key.$" is the key "Key"


def check(call: SdkCall) -> list[str]:
    """Every problem of ``call`` as a sentence naming where it is; empty when botocore's model accepts it."""
    try:
        model = _session().get_service_model(call.service)
    except UnknownServiceError:
        return [f"{call.where}: unknown service {call.service!r}"]
    try:
        operation = model.operation_model(call.operation)
    except OperationNotFoundError:
        return [f"{call.where}: {call.service} has no operation {call.operation!r}"]
    errors = _check_value(operation.input_shape, call.parameters, f"{call.where}: {call.service}.{call.operation}", call)
    for selector in call.selectors:
        error = _resolve(operation.output_shape, selector, call.casing)
        if error:
            errors.append(f"{call.where}: {call.service}.{call.operation} response has no {_show(selector)}: {error}")
    return errors


def _check_value(shape: Shape | None, value: Any, where: str, call: SdkCall) -> list[str]:
    if shape is None:
        return [f"{where}: the operation takes no parameters"] if value else []
    if isinstance(value, str) and _PLACEHOLDER.search(value) and shape.type_name != "string":
        return []  # a run-time value
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{where}: expected a structure ({shape.name}), got {value!r}"]
        by_key = {call.casing(name): name for name in shape.members}
        errors, given = [], set()
        for key, item in value.items():
            computed = call.json_path_keys and key.endswith(".$")
            name = by_key.get(key[:-2] if computed else key)
            if name is None:
                errors.append(f"{where}: unknown member {key!r} of {shape.name} (members: {', '.join(sorted(by_key))})")
                continue
            given.add(name)
            if not computed:
                errors += _check_value(shape.members[name], item, f"{where}.{key}", call)
        errors += [f"{where}: required member {call.casing(name)!r} of {shape.name} is missing"
                   for name in shape.required_members if name not in given]
        return errors
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{where}: expected a list ({shape.name}), got {value!r}"]
        return [error for i, item in enumerate(value) for error in _check_value(shape.member, item, f"{where}[{i}]", call)]
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{where}: expected a map ({shape.name}), got {value!r}"]
        return [error for key, item in value.items() for error in _check_value(shape.value, item, f"{where}.{key}", call)]
    kind = _JSON_KINDS.get(shape.type_name, object)
    if isinstance(value, bool) and shape.type_name != "boolean" or not isinstance(value, kind):
        return [f"{where}: expected a {shape.type_name}, got {value!r}"]
    enum = getattr(shape, "enum", None)  # string shapes only
    if enum and isinstance(value, str) and not _PLACEHOLDER.search(value) and value not in enum:
        return [f"{where}: {value!r} is not one of {', '.join(enum)}"]
    return []


def _resolve(shape: Shape | None, steps: tuple[str | int, ...], casing: Callable[[str], str]) -> str | None:
    """None when ``steps`` lead through ``shape``; else why not."""
    for step in steps:
        if shape is None:
            return f"nothing below {step!r}"
        if isinstance(step, int):
            if not isinstance(shape, ListShape):
                return f"[{step}] indexes a {shape.type_name}"
            shape = shape.member
        elif isinstance(shape, StructureShape):
            names = {casing(name): name for name in shape.members}
            if step not in names:
                return f"{shape.name} has no member {step!r} (members: {', '.join(sorted(names))})"
            shape = shape.members[names[step]]
        elif isinstance(shape, MapShape):
            shape = shape.value
        else:
            return f"{step!r} below a {shape.type_name}"
    return None


def _show(steps: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in steps)


def json_path_steps(path: str) -> tuple[str | int, ...]:
    """``$.a[0].b`` -> ("a", 0, "b"): only the plain names and indexes these templates use."""
    if not re.fullmatch(r"\$(\.[A-Za-z0-9_]+|\[\d+\])*", path):
        raise ValueError(f"unsupported JSONPath {path!r}")
    return tuple(int(index) if index else name for name, index in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path))


# --- Reading templates -----------------------------------------------------------------------------

def text(value: Any) -> Any:
    """A template value with its intrinsics as ``${...}`` placeholders (Fn::Join joined)."""
    if isinstance(value, list):
        return [text(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (function, argument), = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(str(text(part)) for part in parts)
        if function == "Ref":
            return "${%s}" % argument
        if function == "Fn::GetAtt":
            return "${%s}" % ".".join(argument)
        if function.startswith("Fn::"):
            return "${%s}" % function
    return {key: text(item) for key, item in value.items()}


def calls_in(template: dict[str, Any], stack: str) -> Iterator[SdkCall]:
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        where = f"{stack}/{logical_id}"
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            definition = json.loads(text(properties["DefinitionString"]))
            yield from state_machine_calls(definition, where)
        elif resource["Type"] == "AWS::SSM::Document" and properties.get("DocumentType") == "Automation":
            content = text(properties["Content"])
            yield from automation_calls(json.loads(content) if isinstance(content, str) else content, where)
        elif resource["Type"].startswith("Custom::") or resource["Type"] == "AWS::CloudFormation::CustomResource":
            for event in ("Create", "Update", "Delete"):
                value = text(properties.get(event))
                call = json.loads(value) if isinstance(value, str) else None
                if isinstance(call, dict) and {"service", "action"} <= call.keys():  # an AwsCustomResource call
                    yield custom_resource_call(call, f"{where}.{event}")


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                yield from _states(state[key])


def _paths_read(state: dict[str, Any]) -> Iterator[str]:
    """Every JSONPath a state reads from its input: condition variables and *Path comparisons, ``.$`` values."""
    def walk(value: Any, key: str = "") -> Iterator[str]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, k)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item, key)
        elif isinstance(value, str) and (key == "Variable" or key.endswith("Path") or key.endswith(".$")):
            yield from _JSONPATH_IN_TEXT.findall(value)
    for key in ("Choices", "Parameters", "ItemsPath", "InputPath"):
        if key in state:
            yield from walk(state[key], key)


def state_machine_calls(definition: dict[str, Any], where: str) -> Iterator[SdkCall]:
    states = list(_states(definition))
    readers = [path for _, state in states for path in _paths_read(state)]
    for name, state in states:
        match = _STATES_SDK.search(state.get("Resource", "")) if state.get("Type") == "Task" else None
        if not match:
            continue
        service, action = STATES_SERVICE_NAMES.get(match[1], match[1]), match[2]
        selected = state.get("ResultSelector")
        selectors: list[tuple[str | int, ...]] = []
        if selected is not None:
            selectors += [json_path_steps(path) for key, path in selected.items() if key.endswith(".$")]
        # What later states read of this result, through the ResultSelector when there is one.
        result_path = state.get("ResultPath", "$")
        if result_path not in (None, "$"):
            for path in readers:
                if not path.startswith(result_path + ".") and not path.startswith(result_path + "["):
                    continue
                steps = json_path_steps("$" + path[len(result_path):])
                if selected is None:
                    selectors.append(steps)
                elif isinstance(steps[0], str) and steps[0] + ".$" in selected:
                    selectors.append(json_path_steps(selected[steps[0] + ".$"]) + steps[1:])
        yield SdkCall(f"{where} state {name}", service, pascal(action), state.get("Parameters", {}), pascal,
                      tuple(dict.fromkeys(selectors)), json_path_keys=True)


def automation_calls(content: dict[str, Any], where: str) -> Iterator[SdkCall]:
    for step in content.get("mainSteps", []):
        own_inputs = AUTOMATION_API_ACTIONS.get(step.get("action"))
        if own_inputs is None:
            continue
        inputs = step["inputs"]
        selectors = [output["Selector"] for output in step.get("outputs", [])]
        if "PropertySelector" in inputs:
            selectors.append(inputs["PropertySelector"])
        yield SdkCall(f"{where} step {step['name']}", inputs.get("Service", ""), inputs.get("Api", ""),
                      {k: v for k, v in inputs.items() if k not in own_inputs}, exact,
                      tuple(json_path_steps(selector) for selector in selectors))


def custom_resource_call(call: dict[str, Any], where: str) -> SdkCall:
    action = pascal(call["action"]).removesuffix("Command")
    selectors = tuple(tuple(int(part) if part.isdigit() else part for part in path.split("."))
                      for path in call.get("outputPaths", []))
    return SdkCall(where, call["service"].lower(), action, call.get("parameters", {}), exact, selectors)
