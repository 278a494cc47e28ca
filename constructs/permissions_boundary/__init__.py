from .permissions_boundary import DEFAULT_ALLOWED_SERVICES, KEY_VALUE_STORE_WRITER_ACTIONS, PermissionsBoundary

__all__ = ["DEFAULT_ALLOWED_SERVICES", "KEY_VALUE_STORE_WRITER_ACTIONS", "PermissionsBoundary"]
