"""Every `--query` of every AWS CLI command in the runbooks compiles and names only fields the command's
output has.

A JMESPath typo (`Stacks[0].StackStatuss`, `services[].taskDefinitions`, `stackStatus`) is not an error
for the AWS CLI: it prints `None` or nothing, at 3 a.m. tests/test_runbook_cli.py finds the commands and
checks their options; this checks the value of their `--query`.

How a query is read: the word after `--query` (or after `--query=`) as the shell passes it: one level of
single or double quotes stripped (and `\\"`, `\\\\`, `\\$`, `` \\` `` unescaped inside double quotes). A
query with a shell variable in it (`$X` outside single quotes) is not checked: its text is not known
here. A backtick outside single quotes is a command substitution to the shell, and an unquoted `[`, `*`,
`?` or `{` a file pattern (zsh stops with "no matches found"): both are reported.

How a query is checked: it compiles with `jmespath.compile` (the library the AWS CLI uses), then the
walker below follows its AST through botocore's output shape of the operation (`operation_model.
output_shape`; for a paginated command the CLI queries the pages merged, which have the same shape).
Member names are case-sensitive, as in the CLI's JSON. A field of a structure must be one of its
members, a key of a map with an enum key shape one of that enum; a field of a list, or an index, slice
or projection of something that is not a list, gives null and is reported; so is `==` / `!=` between a
field with an enum and a string not in it (`StateValue=='Alarm'`), and a backtick literal that is not
JSON (`` `RUNNING` ``: jmespath still reads it as a string but deprecates it). Filter conditions and the
expressions of `sort_by` / `max_by` / `min_by` / `map` are checked against the list's element; the
arguments of every other function against the current node. After a literal, a comparison, `||` / `&&`
/ `!`, a function whose result is not one of its arguments (`length`, `keys`, `to_string`, ...), a
document type, or a multi-select list whose items differ in shape, the walker knows no shape and stops
checking. A pipe passes on the shape its left side produced. `aws <service> wait ...` prints nothing, so
a `--query` there is reported; a hand-written command (CUSTOM_COMMANDS, `aws s3 ...`) has no model:
its query is compiled, not walked.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jmespath
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from jmespath.exceptions import JMESPathError

from tests.test_runbook_cli import (CUSTOM_COMMANDS, CUSTOM_ONLY_SERVICES, GLOBAL_FLAGS, _operations, _service_model,
                                    aws_commands)
from tests.test_runbooks import command_file_id, command_files


# ---- The shapes a query can produce besides botocore's ----

@dataclass(frozen=True)
class ListOf:
    """A list the query builds (a projection, a flatten, a multi-select list); None: elements unknown."""
    element: Any


@dataclass(frozen=True, eq=False)
class Hash:
    """The object a multi-select hash builds: key -> shape (None: unknown)."""
    members: dict[str, Any]


def _name(shape: Any) -> str:
    if isinstance(shape, ListOf):
        return f"a list of {_name(shape.element)}" if shape.element is not None else "a list"
    if isinstance(shape, Hash):
        return "a multi-select hash"
    return f"{shape.name} ({shape.type_name})" if not isinstance(shape, StructureShape) else shape.name


def _no_such(kind: str, name: str, owner: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6) or [c for c in choices if c.lower() == name.lower()]
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{owner} has no {kind} {name} ({hint}{kind}s: {', '.join(choices)})"


class _Walker:
    """Follows a parsed query through the output shape; each node kind returns the shape it produces (None:
    unknown, stop checking) and adds what the CLI would answer with null to ``problems``."""

    def __init__(self):
        self.problems: list[str] = []

    def walk(self, node: dict, shape: Any) -> Any:
        return getattr(self, node["type"])(node, shape)

    def _fail(self, problem: str) -> None:
        self.problems.append(problem)  # and the caller returns None: nothing after it is checked

    # -- what a field, an index and a projection need of a shape

    def member(self, shape: Any, name: str) -> Any:
        if shape is None or getattr(shape, "is_document_type", False):
            return None
        if isinstance(shape, StructureShape):
            if name in shape.members:
                return shape.members[name]
            return self._fail(_no_such("member", name, shape.name, list(shape.members)))
        if isinstance(shape, Hash):
            if name in shape.members:
                return shape.members[name]
            return self._fail(_no_such("key", name, "the multi-select hash", list(shape.members)))
        if isinstance(shape, MapShape):
            keys = shape.key.enum
            return shape.value if not keys or name in keys else self._fail(_no_such("key", name, shape.name, keys))
        if isinstance(shape, (ListShape, ListOf)):
            return self._fail(f"{_name(shape)} is a list: its field {name} is null (project it: [].{name})")
        return self._fail(f"{_name(shape)} has no field {name}")

    def element(self, shape: Any) -> Any:
        if shape is None or getattr(shape, "is_document_type", False):
            return None
        if isinstance(shape, ListShape):
            return shape.member
        if isinstance(shape, ListOf):
            return shape.element
        return self._fail(f"{_name(shape)} is not a list: an index, slice or projection of it is null")

    # -- the node kinds

    def field(self, node, shape):
        return self.member(shape, node["value"])

    def subexpression(self, node, shape):
        for child in node["children"]:
            shape = self.walk(child, shape)
        return shape

    pipe = subexpression  # the right side reads what the left side produced
    index_expression = subexpression  # children: what is indexed, then the index or slice

    def index(self, node, shape):
        return self.element(shape)

    def slice(self, node, shape):
        return shape if self.element(shape) is not None else None

    def current(self, node, shape):
        return shape

    identity = current

    def literal(self, node, shape):
        return None

    def flatten(self, node, shape):
        element = self.element(self.walk(node["children"][0], shape))
        if isinstance(element, (ListShape, ListOf)):
            element = self.element(element)
        return ListOf(element)

    def projection(self, node, shape):
        left, right = node["children"]
        return ListOf(self.walk(right, self.element(self.walk(left, shape))))

    def value_projection(self, node, shape):  # `*`: the values of an object
        left, right = node["children"]
        values = self.walk(left, shape)
        return ListOf(self.walk(right, values.value if isinstance(values, MapShape) else None))

    def filter_projection(self, node, shape):
        left, right, condition = node["children"]
        element = self.element(self.walk(left, shape))
        self.walk(condition, element)
        return ListOf(self.walk(right, element))

    def multi_select_list(self, node, shape):
        items = [self.walk(child, shape) for child in node["children"]]
        same = all(isinstance(item, Shape) for item in items) and len({item.name for item in items}) == 1
        return ListOf(items[0] if same else None)

    def multi_select_dict(self, node, shape):
        return Hash({pair["value"]: self.walk(pair["children"][0], shape) for pair in node["children"]})

    def comparator(self, node, shape):
        sides = [self.walk(child, shape) for child in node["children"]]
        if node["value"] in ("eq", "ne"):  # a field with an enum against a string it never holds
            for side, other in zip(sides, reversed(node["children"]), strict=True):
                value = other.get("value")
                if isinstance(side, Shape) and side.enum and other["type"] == "literal" and isinstance(value, str) \
                        and value not in side.enum:
                    self._fail(f"{side.name} is never {value!r} (values: {', '.join(side.enum)})")
        return None  # a boolean

    def and_expression(self, node, shape):
        for child in node["children"]:
            self.walk(child, shape)
        return None  # which side the result is, is not known here

    or_expression = not_expression = and_expression

    def expref(self, node, shape):
        return None  # only meaningful as a function's argument, handled there

    def function_expression(self, node, shape):
        name, args = node["value"], node["children"]
        if name in EXPRESSION_FUNCTIONS:  # sort_by(list, &expr), max_by, min_by; map(&expr, list)
            expression, items = (args[0], args[1]) if name == "map" else (args[1], args[0])
            items = self.walk(items, shape)
            result = self.walk(expression["children"][0], self.element(items))
            return EXPRESSION_FUNCTIONS[name](items, result, self)
        results = [self.walk(arg, shape) for arg in args]
        return results[0] if name in SAME_AS_ARGUMENT else None


LITERAL = re.compile(r"`((?:[^`\\]|\\.)*)`")  # a JSON literal: `"RUNNING"`, `0`, `[]`

# What a function taking an expression returns: (the list, the expression's shape, walker) -> shape.
EXPRESSION_FUNCTIONS: dict[str, Callable[[Any, Any, _Walker], Any]] = {
    "sort_by": lambda items, result, walker: items,
    "max_by": lambda items, result, walker: walker.element(items),
    "min_by": lambda items, result, walker: walker.element(items),
    "map": lambda items, result, walker: ListOf(result),
}
# Functions that return their (first) argument's shape; every other one returns a number, string or
# boolean, or a shape this walker does not follow (keys, values, merge, to_array, not_null, ...).
SAME_AS_ARGUMENT = frozenset({"sort", "reverse"})


def query_problems(query: str, output_shape: Any) -> list[str]:
    """What in ``query`` makes the CLI print null or fail, for a command whose output is ``output_shape``
    (None: compile only)."""
    try:
        with warnings.catch_warnings():  # the deprecated literals are reported below, on every call
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            parsed = jmespath.compile(query).parsed
    except JMESPathError as error:
        return [f"does not compile: {str(error).splitlines()[0]}"]
    walker = _Walker()
    for literal in LITERAL.findall(query):
        try:
            json.loads(literal)
        except ValueError:  # jmespath still reads `RUNNING` as a string, and warns that it will stop
            walker.problems.append(f"`{literal}` is a deprecated JMESPath literal: write `\"{literal}\"` or '{literal}'")
    if output_shape is not None:
        walker.walk(parsed, output_shape)
    return walker.problems


# ---- The queries of the runbooks' commands ----

def _shell_value(word: str) -> tuple[str | None, list[str]]:
    """(the query the CLI receives or None if a shell variable makes it unknown, the shell problems)."""
    quote = word[0] if len(word) > 1 and word[0] == word[-1] and word[0] in "'\"" else ""
    text = word[1:-1] if quote else word
    if quote == '"':
        text = re.sub(r'\\([\\"$`])', r"\1", text)
    if quote == "'":
        return text, []
    problems = []
    if "`" in word:
        problems.append("the shell runs its `...` as a command: put the query in single quotes")
    if not quote and re.search(r"[\[*?{]", word):
        problems.append("unquoted, the shell reads it as a file pattern: put the query in single quotes")
    # A shell variable: what the CLI receives depends on it, so the query is not checked.
    return (None if "$" in text else text), problems


def _output_shape(words: list[str]) -> tuple[str, Any, str | None]:
    """(`aws <service> <command>`, the output shape to walk (None: compile only), a problem with any
    query at all) of ``aws <words...>``. Unknown services and commands are test_runbook_cli's to report."""
    index = 0
    while index < len(words) and words[index].startswith("--"):  # global options before the service
        index += 1 if words[index] in GLOBAL_FLAGS or "=" in words[index] else 2
    service, command = (words[index:index + 2] + ["", ""])[:2]
    name = f"aws {service} {command}"
    if (service, command) in CUSTOM_COMMANDS or service in CUSTOM_ONLY_SERVICES or _service_model(service) is None:
        return name, None, None
    if command == "wait":
        waiter = words[index + 2] if len(words) > index + 2 else ""
        return f"{name} {waiter}", None, "a waiter prints nothing: its --query does nothing"
    if command not in _operations(service):
        return name, None, None
    output = _service_model(service).operation_model(_operations(service)[command]).output_shape
    return name, output, None if output is not None else "the command prints nothing: its --query does nothing"


def command_queries(markdown: str) -> list[tuple[int, list[str], str]]:
    """(line of the query, the words after `aws`, the `--query` word as written) of every query in ``markdown``."""
    found = []
    for _, words, _ in aws_commands(markdown):
        texts = [word.text for word in words[1:]]
        for option, value in zip(words[1:], words[2:] + [None], strict=True):
            if option.text == "--query" and value is not None:
                found.append((markdown.count("\n", 0, value.offset) + 1, texts, value.text))
            elif option.text.startswith("--query="):
                found.append((markdown.count("\n", 0, option.offset) + 1, texts, option.text[len("--query="):]))
    return found


def runbook_query_problems(markdown: str) -> list[str]:
    """`line N: `aws <service> <command>` --query `<query>`: problem` for every query problem in ``markdown``."""
    problems = []
    for line, words, word in command_queries(markdown):
        name, output, command_problem = _output_shape(words)
        query, found = _shell_value(word)
        if command_problem:
            found.append(command_problem)
        elif query is not None:
            found += query_problems(query, output)
        problems += [f"line {line}: `{name}` --query `{query or word}`: {problem}" for problem in found]
    return problems


# ---- Tests ----

def test_the_walker_reports_each_kind_of_mistake_and_accepts_what_the_cli_answers():
    text = ("```sh\n"
            "aws cloudformation describe-stacks --stack-name x --query 'Stacks[0].StackStatuss'\n"
            "aws cloudformation describe-stacks --stack-name x --query 'Stacks[0].stackStatus'\n"
            "aws ecs describe-services --cluster c --services s --query 'services[].taskDefinitions'\n"
            "aws ecs describe-services --cluster c --services s --query 'services.serviceName'\n"
            "aws ecs describe-services --cluster c --services s --query 'services[0][0]'\n"
            "aws ecs describe-tasks --cluster c --tasks t --query 'tasks[].containers[?nam==`\"worker\"`].reason'\n"
            "aws cloudwatch get-metric-statistics --namespace n --metric-name m --start-time 1 --end-time 2 "
            "--period 60 --query 'sort_by(Datapoints, &Timestamps)[-1]'\n"
            "aws cloudwatch describe-alarms --query 'max_by(MetricAlarms, &StateUpdatedTimestamp).AlarmNam'\n"
            "aws sqs get-queue-attributes --queue-url u --query Attributes.QueueArnn\n"
            "aws ecs describe-services --cluster c --services s --query '{a:services[0].serviceName}.b'\n"
            "aws ecs list-services --cluster c --query 'serviceArns[?length(@) > `0`] | [0].x'\n"
            "aws ecs describe-services --cluster c --services s --query 'services[?'\n"
            "aws ecs wait services-stable --cluster c --services s --query 'services[0]'\n"
            "aws ecs describe-services --cluster c --services s --query services[0].serviceName\n"
            "aws ecs describe-services --cluster c --services s --query \"services[0].deployments[?rolloutState=='SUCCEEDED']\"\n"
            "aws sqs list-message-move-tasks --source-arn a --query \"Results[0].{h:TaskHandle,s:`whoami`}\"\n"
            "aws cloudwatch describe-alarms --query \"MetricAlarms[?StateValue=='Alarm'].AlarmName\"\n"
            "aws ecs list-tasks --cluster c --query=taskArn\n"
            # Accepted: projections, filters, functions and hashes the CLI answers; a variable; custom commands.
            "aws cloudformation describe-stacks --query \"Stacks[0].Outputs[?OutputKey=='X'].OutputValue | [0]\"\n"
            "aws ec2 describe-network-acls --query 'NetworkAcls[].Associations[].[NetworkAclAssociationId]'\n"
            "aws cloudwatch describe-alarms --query \"MetricAlarms[?!ends_with(AlarmName, '-x') && StateValue=='OK']"
            ".{n:AlarmName,d:Dimensions[*].Name}\"\n"
            "aws cloudwatch describe-alarms --query 'length(MetricAlarms[?StateValue==`\"ALARM\"`]) || `0`'\n"
            "aws cloudwatch describe-alarms --query '[CompositeAlarms,MetricAlarms][][AlarmName,StateValue]'\n"
            "aws dynamodb get-item --table-name t --key k --query Item.pk.S\n"
            "aws ecs describe-services --cluster c --services s --query \"services[?serviceName=='$S'].nope\"\n"
            "aws logs tail /aws/x --query 'any.thing'\n"
            "```\n")
    problems = runbook_query_problems(text)
    expected = [  # (line, the command and query, the start of the problem)
        (2, "`aws cloudformation describe-stacks` --query `Stacks[0].StackStatuss`",
         "Stack has no member StackStatuss (did you mean StackStatus? members: StackId, StackName, "),
        (3, "`aws cloudformation describe-stacks` --query `Stacks[0].stackStatus`",
         "Stack has no member stackStatus (did you mean StackStatus? members: "),
        (4, "`aws ecs describe-services` --query `services[].taskDefinitions`",
         "Service has no member taskDefinitions (did you mean taskDefinition? members: serviceArn, "),
        (5, "`aws ecs describe-services` --query `services.serviceName`",
         "Services (list) is a list: its field serviceName is null (project it: [].serviceName)"),
        (6, "`aws ecs describe-services` --query `services[0][0]`",
         "Service is not a list: an index, slice or projection of it is null"),
        (7, "`aws ecs describe-tasks` --query `tasks[].containers[?nam==`\"worker\"`].reason`",
         "Container has no member nam (did you mean name? members: "),  # relative to the list's element
        (8, "`aws cloudwatch get-metric-statistics` --query `sort_by(Datapoints, &Timestamps)[-1]`",
         "Datapoint has no member Timestamps (did you mean Timestamp? members: "),
        (9, "`aws cloudwatch describe-alarms` --query `max_by(MetricAlarms, &StateUpdatedTimestamp).AlarmNam`",
         "MetricAlarm has no member AlarmNam (did you mean AlarmName? members: "),
        (10, "`aws sqs get-queue-attributes` --query `Attributes.QueueArnn`",
         "QueueAttributeMap has no key QueueArnn (did you mean QueueArn? keys: All, Policy, "),
        (11, "`aws ecs describe-services` --query `{a:services[0].serviceName}.b`",
         "the multi-select hash has no key b (keys: a)"),
        (12, "`aws ecs list-services` --query `serviceArns[?length(@) > `0`] | [0].x`",
         "String (string) has no field x"),
        (13, "`aws ecs describe-services` --query `services[?`", "does not compile: "),
        (14, "`aws ecs wait services-stable` --query `services[0]`",
         "a waiter prints nothing: its --query does nothing"),
        (15, "`aws ecs describe-services` --query `services[0].serviceName`",
         "unquoted, the shell reads it as a file pattern: put the query in single quotes"),
        (16, "`aws ecs describe-services` --query `services[0].deployments[?rolloutState=='SUCCEEDED']`",
         "DeploymentRolloutState is never 'SUCCEEDED' (values: COMPLETED, FAILED, IN_PROGRESS)"),
        (17, "`aws sqs list-message-move-tasks` --query `Results[0].{h:TaskHandle,s:`whoami`}`",
         "the shell runs its `...` as a command: put the query in single quotes"),
        (17, "`aws sqs list-message-move-tasks` --query `Results[0].{h:TaskHandle,s:`whoami`}`",
         "`whoami` is a deprecated JMESPath literal: write `\"whoami\"` or 'whoami'"),
        (18, "`aws cloudwatch describe-alarms` --query `MetricAlarms[?StateValue=='Alarm'].AlarmName`",
         "StateValue is never 'Alarm' (values: OK, ALARM, INSUFFICIENT_DATA)"),
        (19, "`aws ecs list-tasks` --query `taskArn`", "ListTasksResponse has no member taskArn (did you mean taskArns?"),
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for problem, (line, command, start) in zip(problems, expected, strict=True):
        assert problem.startswith(f"line {line}: {command}: {start}"), problem


@pytest.mark.parametrize("path", command_files(), ids=command_file_id)
def test_every_query_in_a_runbook_names_fields_the_output_has(path: Path):
    problems = runbook_query_problems(path.read_text())
    assert not problems, "\n".join(f"{command_file_id(path)} {problem}" for problem in problems)


def test_the_queries_are_read_and_walked():
    """The check above passes because it walks the queries, not because it finds none."""
    queries = [(words, word) for path in command_files() for _, words, word in command_queries(path.read_text())]
    assert len(queries) >= 90
    assert len([word for words, word in queries if _output_shape(words)[1] is not None]) >= 90
