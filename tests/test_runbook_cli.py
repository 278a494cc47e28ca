"""Every AWS CLI command the runbooks give is one the AWS CLI v2 accepts: the service and command exist,
every option is an option of that command, and every required option is given.

An on-call engineer pastes these commands at 3 a.m.; a misspelled option fails there, not here, unless
this test reads them. tests/test_runbooks.py checks the names the commands cite; this checks the
commands themselves.

How a command is found: in fenced code blocks and inline code spans of the runbooks and their README,
every shell command whose first word is `aws` (after `VAR=` assignments, `do`/`then`/`else`, or the
`name() {` that starts a shell function),
including those nested in `$(...)` (also inside double quotes), across `\\` line continuations, up to
an unquoted `|`, `;`, `&`, `>`, the `)` closing its `$(`, or the end of the line (of the span, for
inline code). A quoted word, a shell variable (`"$X"`, `${X}`) and a placeholder (`<prefix>`) are
values, never options. An inline span that is only `aws <service> <command>` names a command in prose:
its service and command are checked, not its required options.

How a command is checked: against botocore's service models, which the AWS CLI v2 builds its commands
from. `aws <service> <command>` is `xform_name(operation, '-')` of an operation of that service; an
option is `--` + `xform_name(member, '-')` of an input member (a boolean member also as `--no-<name>`),
an option every generated command has (GENERATED_OPTIONS, plus PAGINATION_OPTIONS for an operation
with a paginator), or a global option (GLOBAL_OPTIONS). `aws <service> wait <waiter>` is checked
against botocore's waiter model and the waiter's operation. The CLI's hand-written commands are not in
botocore: CUSTOM_COMMANDS lists the ones the runbooks use with their options, from the AWS CLI v2
reference. A required member is missing when no option gives it, unless `--cli-input-json` /
`--cli-input-yaml` does; botocore fills idempotency tokens itself, so those are never missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError
from botocore import xform_name

from tests.test_runbooks import FENCED, command_file_id, command_files

# AWS CLI v2 global options, from the synopsis every command's reference page ends with, e.g.
# https://docs.aws.amazon.com/cli/latest/reference/logs/tail.html (and the user guide's
# https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-options.html).
GLOBAL_OPTIONS = frozenset({
    "--debug", "--endpoint-url", "--no-verify-ssl", "--no-paginate", "--output", "--query", "--profile",
    "--region", "--version", "--color", "--no-sign-request", "--ca-bundle", "--cli-read-timeout",
    "--cli-connect-timeout", "--cli-binary-format", "--no-cli-pager", "--cli-auto-prompt", "--no-cli-auto-prompt",
})
# The global options that are flags: the word after them is not their value.
GLOBAL_FLAGS = frozenset({"--debug", "--no-verify-ssl", "--no-paginate", "--no-sign-request", "--no-cli-pager",
                          "--cli-auto-prompt", "--no-cli-auto-prompt"})
# Options the CLI adds to every command generated from an operation (each operation page's synopsis,
# e.g. https://docs.aws.amazon.com/cli/latest/reference/ecs/update-service.html).
GENERATED_OPTIONS = frozenset({"--cli-input-json", "--cli-input-yaml", "--generate-cli-skeleton"})
# ... and to an operation botocore has a paginator for (e.g. .../reference/ecs/list-tasks.html).
PAGINATION_OPTIONS = frozenset({"--starting-token", "--page-size", "--max-items"})
# CLI service names that differ from botocore's (only the ones a runbook needs): the CLI's `s3` is its
# hand-written high-level command set (CUSTOM_COMMANDS); botocore's s3 operations are `aws s3api`.
SERVICE_ALIASES = {"s3api": "s3"}
CUSTOM_ONLY_SERVICES = frozenset({"s3"})

# The AWS CLI v2's hand-written commands a runbook uses: (service, command) -> its own options (the
# global options come on top).
CUSTOM_COMMANDS: dict[tuple[str, str], frozenset[str]] = {
    # https://docs.aws.amazon.com/cli/latest/reference/logs/tail.html
    ("logs", "tail"): frozenset({"--since", "--follow", "--format", "--filter-pattern", "--log-stream-names",
                                 "--log-stream-name-prefix"}),
    # https://docs.aws.amazon.com/cli/latest/reference/s3/cp.html
    ("s3", "cp"): frozenset({
        "--dryrun", "--quiet", "--include", "--exclude", "--acl", "--follow-symlinks", "--no-follow-symlinks",
        "--no-guess-mime-type", "--sse", "--sse-c", "--sse-c-key", "--sse-kms-key-id", "--sse-c-copy-source",
        "--sse-c-copy-source-key", "--storage-class", "--grants", "--website-redirect", "--content-type",
        "--cache-control", "--content-disposition", "--content-encoding", "--content-language", "--expires",
        "--source-region", "--only-show-errors", "--no-progress", "--page-size", "--ignore-glacier-warnings",
        "--force-glacier-transfer", "--request-payer", "--checksum-mode", "--checksum-algorithm", "--metadata",
        "--metadata-directive", "--expected-size", "--recursive"}),
}

# Words before `aws` that still leave it the command word: assignments (E=$(aws ...)) and keywords.
LEADING_KEYWORDS = frozenset({"do", "then", "else", "time", "!", "{", "if", "while", "until", "xargs", "watch"})
# Commands that run the rest of the line as a command: their own flags may come before `aws`, and so may
# the value of those that take one (`xargs -n 100`, `watch -n 5`).
RUNNERS = frozenset({"xargs", "watch"})
RUNNER_FLAGS_WITH_A_VALUE = frozenset({"-n", "-L", "-P", "-s", "-I", "-d", "-E", "-a", "--interval"})
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FUNCTION_HEAD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\(\)$")  # `current() { aws ... }`: the function's command
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")  # <prefix>, <new vCPU count>: not a redirect
INLINE_SPAN = re.compile(r"`([^`]+)`")
OPERATORS = "|;&>"

SESSION = botocore.session.get_session()


# ---- Reading commands out of markdown ----

@dataclass
class Word:
    text: str  # as written, quotes included
    offset: int  # in the markdown, for the line number


@dataclass
class Command:
    words: list[Word] = field(default_factory=list)
    inline: bool = False  # from an inline code span, not a code block


class _Reader:
    """A small shell reader: words, quotes, `$(...)`, `\\` continuations, comments and operators; enough for
    the commands the runbooks give, not a shell. (shlex does not read `$(...)`, and a bash parser would take
    the runbooks' `<placeholder>` values for redirections.)"""

    def __init__(self, text: str, base: int, inline: bool):
        self.text, self.base, self.inline = text, base, inline
        self.commands: list[Command] = []

    def read(self, i: int = 0, nested: bool = False) -> int:
        """Read commands from ``i`` to the end, or (``nested``) to the `)` that closes a `$(`; return where it stopped."""
        command = Command(inline=self.inline)
        word, start = "", None
        text = self.text

        def end_word():
            nonlocal word, start
            if start is not None:
                command.words.append(Word(word, self.base + start))
            word, start = "", None

        def end_command():
            nonlocal command
            end_word()
            if command.words:
                self.commands.append(command)
            command = Command(inline=self.inline)

        while i < len(text):
            char = text[i]
            if char == "\\" and text[i + 1:i + 2] == "\n":  # line continuation
                end_word()
                i += 2
            elif char == "\\":
                start = i if start is None else start
                word += text[i:i + 2]
                i += 2
            elif char == "\n":
                end_word() if self.inline else end_command()
                i += 1
            elif char in " \t":
                end_word()
                i += 1
            elif char == "#" and start is None:  # a comment, to the end of the line
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
            elif char == "'":
                end = text.find("'", i + 1)
                end = len(text) - 1 if end < 0 else end
                start = i if start is None else start
                word += text[i:end + 1]
                i = end + 1
            elif text.startswith("$((", i):  # arithmetic, a value: to its closing `))`
                start, depth, end = (i if start is None else start), 0, i + 1
                while end < len(text):
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    if depth == 0:
                        break
                    end += 1
                word += text[i:end + 1]
                i = end + 1
            elif char == '"' or text.startswith("$(", i):  # a value; the commands in a $(...) are read too
                start, begin = (i if start is None else start), i
                i = self._double_quoted(i + 1) if char == '"' else self.read(i + 2, nested=True)
                word += text[begin:i]
            elif char == ")" and nested:
                end_command()
                return i + 1
            elif char == "<" and PLACEHOLDER.match(text, i):
                match = PLACEHOLDER.match(text, i)
                start = i if start is None else start
                word += match.group(0)
                i = match.end()
            elif char in OPERATORS or char == "<":
                end_command()
                i += 1
            else:
                start = i if start is None else start
                word += char
                i += 1
        end_command()
        return i

    def _double_quoted(self, i: int) -> int:
        """Skip a double-quoted string from just after its `"`, reading the commands of any `$(...)` in it."""
        text = self.text
        while i < len(text) and text[i] != '"':
            if text[i] == "\\":
                i += 2
            elif text.startswith("$(", i):
                i = self.read(i + 2, nested=True)
            else:
                i += 1
        return i + 1


def code_regions(markdown: str) -> list[tuple[int, str, bool]]:
    """(offset, text, inline) of every fenced code block (without its fence lines) and inline code span."""
    regions = []
    for match in FENCED.finditer(markdown):
        body_start = markdown.index("\n", match.start()) + 1 if "\n" in match.group(0) else match.end()
        body_end = max(body_start, match.end() - 3)
        regions.append((body_start, markdown[body_start:body_end], False))
    outside = FENCED.sub(lambda match: " " * len(match.group(0)), markdown)  # keep the offsets
    for match in INLINE_SPAN.finditer(outside):
        if "\n\n" not in match.group(1):
            regions.append((match.start(1), match.group(1), True))
    return regions


def aws_commands(markdown: str) -> list[tuple[int, list[Word], bool]]:
    """(line, the words from `aws` on, inline) of every AWS CLI command in ``markdown``, in order."""
    found = []
    for offset, text, inline in code_regions(markdown):
        reader = _Reader(text, offset, inline)
        reader.read()
        for command in reader.commands:
            for index, word in enumerate(command.words):
                if word.text == "aws":
                    found.append((markdown.count("\n", 0, word.offset) + 1, command.words[index:], command.inline))
                    break
                after_runner = any(w.text in RUNNERS for w in command.words[:index])
                runner_flag = after_runner and (word.text.startswith("-") or command.words[index - 1].text in RUNNER_FLAGS_WITH_A_VALUE)
                leading = word.text in LEADING_KEYWORDS or ASSIGNMENT.match(word.text) or FUNCTION_HEAD.match(word.text)
                if not leading and not runner_flag:
                    break
    return sorted(found, key=lambda item: (item[0], item[1][0].offset))


# ---- Checking a command against botocore ----

@lru_cache(maxsize=None)
def _service_model(service: str) -> Any:
    try:
        return SESSION.get_service_model(SERVICE_ALIASES.get(service, service))
    except UnknownServiceError:
        return None


@lru_cache(maxsize=None)
def _operations(service: str) -> dict[str, str]:
    """CLI command name -> botocore operation name."""
    return {xform_name(name, "-"): name for name in _service_model(service).operation_names}


@lru_cache(maxsize=None)
def _waiters(service: str) -> dict[str, str]:
    """CLI waiter name -> the operation it polls."""
    try:
        model = SESSION.get_waiter_model(SERVICE_ALIASES.get(service, service))
    except Exception:  # botocore raises DataNotFoundError for a service without waiters
        return {}
    return {xform_name(name, "-"): model.get_waiter(name).operation for name in model.waiter_names}


@lru_cache(maxsize=None)
def _has_paginator(service: str, operation: str) -> bool:
    try:
        return SESSION.get_paginator_model(SERVICE_ALIASES.get(service, service)).get_paginator(operation) is not None
    except Exception:  # DataNotFoundError (no paginators) or ValueError (none for this operation)
        return False


def _operation_options(service: str, operation: str) -> tuple[frozenset[str], dict[str, str], frozenset[str]]:
    """(allowed options, {required option: member}, flag options) of one operation as the CLI builds it."""
    shape = _service_model(service).operation_model(operation).input_shape
    members = shape.members if shape is not None else {}
    options = set(GLOBAL_OPTIONS | GENERATED_OPTIONS)
    flags = set(GLOBAL_FLAGS)
    if _has_paginator(service, operation):
        options |= PAGINATION_OPTIONS
    for name, member in members.items():
        option = "--" + xform_name(name, "-")
        options.add(option)
        if member.type_name == "boolean":
            options.add("--no-" + option[2:])
            flags |= {option, "--no-" + option[2:]}
    required = {"--" + xform_name(name, "-"): name for name in (shape.required_members if shape is not None else [])
                if not members[name].metadata.get("idempotencyToken")}
    return frozenset(options), required, frozenset(flags)


def command_problems(words: list[str], reference_only: bool = False) -> list[str]:
    """What the AWS CLI v2 would reject in ``aws <words...>`` (the words after `aws`)."""
    index = 0
    while index < len(words) and words[index].startswith("--"):  # global options before the service
        if words[index].split("=")[0] not in GLOBAL_OPTIONS:
            return [f"unknown global option {words[index]}"]
        index += 1 if words[index] in GLOBAL_FLAGS or "=" in words[index] else 2
    if index >= len(words):
        return ["no service"]
    service, rest = words[index], words[index + 1:]
    if service not in CUSTOM_ONLY_SERVICES and _service_model(service) is None:
        return [f"unknown service {service}"]
    if not rest or rest[0].startswith("--"):
        return [] if reference_only else [f"no command for `aws {service}`"]
    command, rest = rest[0], rest[1:]
    name = f"aws {service} {command}"
    if (service, command) in CUSTOM_COMMANDS:
        allowed, required, flags = CUSTOM_COMMANDS[(service, command)] | GLOBAL_OPTIONS, {}, GLOBAL_FLAGS
    elif service in CUSTOM_ONLY_SERVICES:
        return [f"unknown command `{name}` (not in CUSTOM_COMMANDS)"]
    elif command == "wait":
        if not rest or rest[0] not in _waiters(service):
            return [f"unknown waiter `{name} {rest[0] if rest else ''}`".rstrip("` ") + "`"]
        name += f" {rest[0]}"
        allowed, required, flags = _operation_options(service, _waiters(service)[rest[0]])
        allowed -= PAGINATION_OPTIONS  # a waiter does not paginate
        rest = rest[1:]
    elif command in _operations(service):
        allowed, required, flags = _operation_options(service, _operations(service)[command])
    else:
        return [f"unknown command `{name}`"]
    given = [word.split("=")[0] for word in rest if word.startswith("--")]
    # --no-<flag> gives a required boolean member too (false): `--no-enable-termination-protection`.
    given_members = {"--" + option[5:] if option.startswith("--no-") and option in flags else option for option in given}
    problems = [f"unknown option {option} for `{name}`" for option in given if option not in allowed]
    if not reference_only and not {"--cli-input-json", "--cli-input-yaml"} & set(given):
        problems += [f"missing required {option} for `{name}`" for option in required if option not in given_members]
    return problems


def runbook_cli_problems(markdown: str) -> list[str]:
    """`line N: problem` for every AWS CLI command of ``markdown`` the CLI would reject."""
    problems = []
    for line, words, inline in aws_commands(markdown):
        texts = [word.text for word in words[1:]]
        reference_only = inline and not any(text.startswith("--") for text in texts)
        problems += [f"line {line}: {problem}" for problem in command_problems(texts, reference_only)]
    return problems


# ---- Tests ----

def test_the_reader_finds_nested_continued_and_inline_commands():
    text = ("Run `aws ecs describe-services --cluster mf --services <service>` first.\n"
            "```sh\n"
            "# aws ecs not-a-command in a comment\n"
            "TD=$(aws ecs describe-services --cluster mf --services \"$SERVICE\" \\\n"
            "  --query 'services[0].taskDefinition' --output text)\n"
            "for R in eu-central-1 eu-west-1; do aws ssm get-parameter --name /mf/x --region $R | jq .; done\n"
            "echo \"$(aws sts get-caller-identity --query Account --output text)\" > out.txt\n"
            "aws logs tail /aws/lambda/mf-x --since 1h && echo aws sqs nothing\n"
            "until aws sts get-caller-identity; do sleep 1; done\n"
            "echo a | xargs -r aws ecs describe-tasks --cluster mf --tasks\n"
            "echo a | xargs -r -n 100 aws ecs describe-tasks --cluster mf --tasks\n"
            "watch -n 5 aws ecs list-tasks --cluster mf\n"
            "current() { aws secretsmanager list-secret-version-ids --region $1 --secret-id s; }\n"
            "```\n")
    commands = [(line, [word.text for word in words]) for line, words, _ in aws_commands(text)]
    assert commands == [
        (1, ["aws", "ecs", "describe-services", "--cluster", "mf", "--services", "<service>"]),
        (4, ["aws", "ecs", "describe-services", "--cluster", "mf", "--services", '"$SERVICE"',
             "--query", "'services[0].taskDefinition'", "--output", "text"]),
        (6, ["aws", "ssm", "get-parameter", "--name", "/mf/x", "--region", "$R"]),
        (7, ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"]),
        (8, ["aws", "logs", "tail", "/aws/lambda/mf-x", "--since", "1h"]),
        (9, ["aws", "sts", "get-caller-identity"]),
        (10, ["aws", "ecs", "describe-tasks", "--cluster", "mf", "--tasks"]),
        (11, ["aws", "ecs", "describe-tasks", "--cluster", "mf", "--tasks"]),
        (12, ["aws", "ecs", "list-tasks", "--cluster", "mf"]),
        (13, ["aws", "secretsmanager", "list-secret-version-ids", "--region", "$1", "--secret-id", "s"]),
    ]


def test_an_unknown_command_option_or_missing_required_option_is_reported():
    """The checker itself: each kind of mistake it exists to catch, and what it accepts."""
    text = ("```sh\n"
            "aws ecs update-servce --cluster mf --service auth\n"            # unknown command
            "aws ecs update-service --cluster mf --service auth --desired-cont 2\n"  # misspelled option
            "aws sqs get-queue-attributes --attribute-names All\n"            # missing --queue-url
            "aws ecss list-clusters\n"                                        # unknown service
            "aws ecs wait services-stabel --cluster mf --services auth\n"     # unknown waiter
            "aws logs tail /aws/lambda/x --folow\n"                           # custom command's option
            "aws s3 copy a s3://b/\n"                                         # unknown custom command
            "aws ecs update-service --cluster mf --service auth --force-new-deployment --no-cli-pager\n"
            "aws ecs update-service --service auth --no-force-new-deployment --region=eu-west-1\n"
            "aws ecs wait services-stable --cluster mf --services auth\n"
            "aws ecs list-tasks --cluster mf --max-items 5\n"
            "aws fis start-experiment --experiment-template-id EXT1\n"          # clientToken is filled in
            "aws sqs get-queue-attributes --cli-input-json file://in.json\n"
            "aws --region eu-west-1 s3 cp s3://b/k - --quiet\n"
            "aws cloudformation update-termination-protection --stack-name mf-x --no-enable-termination-protection\n"
            "aws service-quotas request-service-quota-increase --service-code ecs --quota-code <code from a list>"
            " --desired-value <new count>\n"
            "aws logs filter-log-events --log-group-name x --start-time $(( ($(date +%s) - 900) * 1000 ))\n"
            "```\nSee `aws lambda invoke` and `aws ecs update-servce`.\n")
    assert runbook_cli_problems(text) == [
        "line 2: unknown command `aws ecs update-servce`",
        "line 3: unknown option --desired-cont for `aws ecs update-service`",
        "line 4: missing required --queue-url for `aws sqs get-queue-attributes`",
        "line 5: unknown service ecss",
        "line 6: unknown waiter `aws ecs wait services-stabel`",
        "line 7: unknown option --folow for `aws logs tail`",
        "line 8: unknown command `aws s3 copy` (not in CUSTOM_COMMANDS)",
        "line 20: unknown command `aws ecs update-servce`",
    ]


@pytest.mark.parametrize("path", command_files(), ids=command_file_id)
def test_every_aws_cli_command_in_a_runbook_is_one_the_cli_accepts(path: Path):
    problems = runbook_cli_problems(path.read_text())
    assert not problems, f"{command_file_id(path)}:\n" + "\n".join(problems)


def test_the_reader_sees_the_commands_the_runbooks_hold():
    """The check above passes because it reads the commands, not because it finds none."""
    commands = [(path, words) for path in command_files() for _, words, _ in aws_commands(path.read_text())]
    assert len(commands) >= 150
    services = {words[1].text for _, words in commands if len(words) > 1}
    assert {"ecs", "ssm", "sqs", "cloudwatch", "elbv2", "secretsmanager", "appmesh", "fis", "logs", "s3"} <= services
    texts = {path: path.read_text() for path in command_files()}
    nested = [words for path, text in texts.items() for _, words, _ in aws_commands(text)
              if text[words[0].offset - 2:words[0].offset] == "$("]
    assert len(nested) >= 10, "the commands nested in $(...) are read too"
