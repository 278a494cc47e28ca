from .registry import RegistryReplication, ServiceRepositories, repository_name

__all__ = ["RegistryReplication", "ServiceRepositories", "repository_name"]
