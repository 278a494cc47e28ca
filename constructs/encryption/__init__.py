from .logs_key import LogsEncryptionKey

__all__ = ["LogsEncryptionKey"]
