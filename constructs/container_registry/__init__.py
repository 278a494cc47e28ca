from .registry import RegistryReplication, ServiceRepositories

__all__ = ["RegistryReplication", "ServiceRepositories"]
