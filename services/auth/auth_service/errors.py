"""Domain errors; the HTTP layer maps each to its status and error code."""

from __future__ import annotations


class UsernameTaken(Exception):
    """Registration for a username (case-insensitive) that already exists."""


class InvalidCredentials(Exception):
    """Unknown user or wrong password: deliberately indistinguishable to the caller."""


class LoginThrottled(Exception):
    """Too many failures in a row for this username from this address; refused until the lock expires."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"locked out for another {retry_after} s")
        self.retry_after = retry_after


class SigningKeyError(Exception):
    """The signing-key secret is missing, unreadable or malformed."""


class HashingBusy(Exception):
    """Too many Argon2 computations running and waiting already; the caller should retry shortly."""
