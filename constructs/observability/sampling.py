"""TraceSampling: X-Ray sampling rules per service, at the rate the services' own sampler uses."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_xray as xray
from constructs import Construct

# X-Ray applies the matching rule with the lowest priority number; its Default rule has 10000.
HEALTH_RULE_PRIORITY = 100
FIRST_SERVICE_RULE_PRIORITY = 1000


class TraceSampling(Construct):
    """One rule ``<prefix>-<service>`` per service (``rate`` of the requests, after ``reservoir_per_second``
    traces each second), and ``<prefix>-health``, which samples no health probe.

    The rules decide for clients that ask X-Ray (X-Ray SDKs, an OpenTelemetry collector or SDK with the
    X-Ray remote sampler). The services' OpenTelemetry SDK samples on its own, by OTEL_TRACES_SAMPLER_ARG:
    give it the same ``rate`` so both agree. Exposes ``rules`` (service -> rule) and ``health_rule``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, rule_name_prefix: str, services: Sequence[str],
                 rate: float, reservoir_per_second: int) -> None:
        super().__init__(scope, construct_id)
        if not 0 <= rate <= 1:
            raise ValueError(f"rate={rate} is invalid: expected a share from 0 to 1")
        if len(f"{rule_name_prefix}-health") > 32 or any(len(f"{rule_name_prefix}-{name}") > 32 for name in services):
            raise ValueError(f"rule_name_prefix={rule_name_prefix!r}: X-Ray rule names <prefix>-<service> must fit 32 characters")
        self.health_rule = self._rule("health", f"{rule_name_prefix}-health", HEALTH_RULE_PRIORITY, service="*",
                                      url_path="*/health/*", rate=0, reservoir=0)
        self.rules = {name: self._rule(name, f"{rule_name_prefix}-{name}", FIRST_SERVICE_RULE_PRIORITY + i, service=name,
                                       url_path="*", rate=rate, reservoir=reservoir_per_second)
                      for i, name in enumerate(services)}
        for name, rule in self.rules.items():
            cdk.Tags.of(rule).add("service", name)  # not the health rule: every service's probes

    def _rule(self, construct_id: str, rule_name: str, priority: int, *, service: str, url_path: str, rate: float,
              reservoir: int) -> xray.CfnSamplingRule:
        return xray.CfnSamplingRule(self, construct_id, sampling_rule=xray.CfnSamplingRule.SamplingRuleProperty(
            rule_name=rule_name, priority=priority, fixed_rate=rate, reservoir_size=reservoir, service_name=service,
            service_type="*", host="*", http_method="*", url_path=url_path, resource_arn="*", version=1))
