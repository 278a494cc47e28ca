"""One MonitoringFacade per dashboard, with every alarm notifying the region's alarm topic on ALARM and OK."""

from __future__ import annotations

from typing import Any

import cdk_monitoring_constructs as monitoring
from aws_cdk import aws_sns as sns
from constructs import Construct

# Alarm descriptions end with "Runbook: runbooks/<name>.md"; the file lives in the repo's runbooks/.
RUNBOOK_DIRECTORY = "runbooks"


def runbook_link(name: str) -> str:
    return f"{RUNBOOK_DIRECTORY}/{name}.md"


def dashboard_facade(scope: Construct, construct_id: str, *, dashboard_name: str, alarm_topic: sns.ITopic,
                     alarm_name_prefix: str) -> monitoring.MonitoringFacade:
    """A facade that renders one interactive dashboard named ``dashboard_name``.

    Actions are enabled and go to ``alarm_topic`` on ALARM and on OK, so a pager sees the recovery too.
    """
    topic_action = monitoring.SnsAlarmActionStrategy(on_alarm_topic=alarm_topic, on_ok_topic=alarm_topic)
    return monitoring.MonitoringFacade(
        scope, construct_id,
        alarm_factory_defaults=monitoring.AlarmFactoryDefaults(
            actions_enabled=True, alarm_name_prefix=alarm_name_prefix, action=topic_action),
        dashboard_factory=monitoring.DefaultDashboardFactory(
            scope, f"{construct_id}Dashboards", dashboard_name_prefix=dashboard_name,
            create_dashboard=True, create_summary_dashboard=False, create_alarm_dashboard=False,
            rendering_preference=monitoring.DashboardRenderingPreference.INTERACTIVE_ONLY,
        ),
    )


def named_alarm(threshold_type: type, *, alarm_name: str, summary: str, runbook: str, **threshold: Any) -> dict[str, Any]:
    """``{"Critical": <threshold_type>(...)}`` for a facade's ``add_*_alarm`` props: an exact alarm name,
    and a description that ends with the runbook to follow (the facade appends "Runbook: <link>")."""
    return {"Critical": threshold_type(
        alarm_name_override=alarm_name, alarm_description_override=summary, runbook_link=runbook_link(runbook), **threshold)}


class NamedAlarms:
    """``named_alarm`` that also remembers each alarm's name, in ``names``.

    Cheaper than asking the facade afterwards: ``created_alarms()`` returns structs whose every
    property is a round trip to jsii's Node process, some 2,000 of them for this app's alarms.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, threshold_type: type, *, alarm_name: str, summary: str, runbook: str, **threshold: Any) -> dict[str, Any]:
        self.names.append(alarm_name)
        return named_alarm(threshold_type, alarm_name=alarm_name, summary=summary, runbook=runbook, **threshold)
