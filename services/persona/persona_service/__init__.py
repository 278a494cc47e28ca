"""persona: users' personas and the session slots reserved on them (HTTP + gRPC + event worker)."""

__version__ = "1.0.0"
