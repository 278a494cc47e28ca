"""A service's non-secret configuration as SSM String parameters, injected into its containers by ECS."""

from __future__ import annotations

import re
from typing import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.fingerprint import fingerprint

_NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")


def config_path(prefix: str, service: str) -> str:
    """The parameter path of one service's configuration: ``/<prefix>/<service>/config``."""
    return f"/{prefix}/{service}/config"


class ServiceConfigParameters(Construct):
    """One SSM String parameter per setting, ``/<prefix>/<service>/config/<NAME>`` = value.

    ``secrets`` maps each setting's name to an ``ecs.Secret`` for a container's ``secrets``: ECS
    reads the parameters when a task starts, so a changed value reaches the service with its next
    tasks (a new deployment, a scale-out, a replaced task), without a new image or task definition.
    A changed parameter alone starts no deployment, though: put ``digest`` (a short hash of the values)
    in the containers' environment, and a deployed change of any value changes the task definition too,
    so ECS rolls it out like a new image (deployment strategy, alarms, circuit breaker).
    Passing a secret to a task definition grants its execution role CDK's parameter reads
    (``ssm:GetParameters``, ``GetParameter``, ``GetParameterHistory``) on that parameter's ARN only. No other
    role of the app reads the path: none is allowed to read parameters on ``*`` (tests/test_least_privilege.py,
    AWS managed policies included), and the permissions boundary grants nothing by itself.

    Every parameter is tagged ``service=<service>``, like the service's other resources.

    Attributes: ``path``, ``parameters`` (name -> ``ssm.StringParameter``), ``secrets``, ``digest``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, service: str, values: Mapping[str, str]) -> None:
        super().__init__(scope, construct_id)
        if not _PREFIX_PATTERN.match(prefix) or not _PREFIX_PATTERN.match(service):
            raise ValueError(f"prefix={prefix!r}, service={service!r} is invalid: expected lower-case letters, digits and hyphens")
        for name, value in values.items():
            if not _NAME_PATTERN.match(name):
                raise ValueError(f"values[{name!r}] is invalid: the name must be an upper-case environment variable name")
            if value == "":
                # SSM rejects an empty value; an empty setting stays a plain environment variable.
                raise ValueError(f"values[{name!r}]='' is invalid: SSM parameters cannot be empty")
        self.path = config_path(prefix, service)
        self.parameters: dict[str, ssm.StringParameter] = {}
        self.secrets: dict[str, ecs.Secret] = {}
        for name, value in sorted(values.items()):
            parameter = ssm.StringParameter(
                self, name, parameter_name=f"{self.path}/{name}", string_value=value, tier=ssm.ParameterTier.STANDARD,
                description=f"{service}: {name}, read by its tasks when they start",
            )
            self.parameters[name] = parameter
            self.secrets[name] = ecs.Secret.from_ssm_parameter(parameter)
        cdk.Tags.of(self).add("service", service)
        # The values as the template holds them (a token as its Ref or GetAtt: logical IDs, stable across synths),
        # keys sorted: the same settings give the same digest on every synth, and any changed value another one.
        resolved = cdk.Stack.of(self).resolve(dict(values))
        self.digest = fingerprint(resolved, 16)
