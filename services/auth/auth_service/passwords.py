"""Argon2id password hashing with costs from settings, and a dummy hash for unknown users."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Hashes and checks passwords; every check costs one Argon2 verification, hit or miss."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        # parallelism=1 is OWASP's recommended shape (t=2, m=19 MiB, p=1); the costs are the knobs.
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Verifying against this hash when the user does not exist spends the same time as a real
        # check, so response timing does not reveal which usernames are registered.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def burn(self, password: str) -> None:
        """Spend one verification's worth of time for a login that cannot succeed."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other costs than today's settings."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False
