from .permissions_boundary import DEFAULT_ALLOWED_SERVICES, PermissionsBoundary

__all__ = ["DEFAULT_ALLOWED_SERVICES", "PermissionsBoundary"]
