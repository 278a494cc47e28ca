from .vpc_network import DEFAULT_INTERFACE_ENDPOINTS, VpcNetwork

__all__ = ["DEFAULT_INTERFACE_ENDPOINTS", "VpcNetwork"]
