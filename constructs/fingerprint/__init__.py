from .fingerprint import fingerprint

__all__ = ["fingerprint"]
