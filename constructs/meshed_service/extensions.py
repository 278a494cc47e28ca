"""The extension interface: how sidecars and mesh wiring plug into MeshedFargateService.

Each extension overrides only the hooks it needs. The service calls every hook of every extension
in the order the extensions were given, hook by hook:

1. ``modify_task_definition_props(props)``  before the task definition exists (e.g. proxy config)
2. ``use_task_definition(service)``         after the app container exists (add sidecar containers)
3. ``resolve_container_dependencies(service)`` once every container exists (start order)
4. ``modify_service_props(props)``          before the ECS service exists (mesh, deployment settings and
                                            the alarms they name)
5. ``use_service(service)``                 after the ECS service exists (grants, wiring)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import MeshedFargateService


class ServiceExtension:
    """Base class: a no-op for every hook."""

    def modify_task_definition_props(self, props: dict[str, Any]) -> dict[str, Any]:
        return props

    def use_task_definition(self, service: MeshedFargateService) -> None:
        pass

    def resolve_container_dependencies(self, service: MeshedFargateService) -> None:
        pass

    def modify_service_props(self, props: dict[str, Any]) -> dict[str, Any]:
        return props

    def use_service(self, service: MeshedFargateService) -> None:
        pass
