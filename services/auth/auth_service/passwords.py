"""Argon2id password hashing with costs from settings, a dummy hash for unknown users, and a bound on
how many hashes run and wait at once."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import HashingBusy

# Each Argon2 computation holds ARGON2_MEMORY_KIB and a core; bounding them keeps a login burst
# from exhausting the task's memory (excess requests wait their turn instead).
MAX_CONCURRENT_HASHES = 4
# How many more may wait for a turn; beyond that, a burst of logins or registrations (anyone may send them)
# is turned away at once (HashingBusy: 503 busy) instead of queueing without end behind the real ones.
MAX_WAITING_HASHES = 32


class HashGate:
    """Admits at most `running` Argon2 computations at once and `waiting` more in line; refuses the rest.

    Only the computation holds a slot, not the DynamoDB calls around it: a slow table must not keep
    logins from hashing, nor make them look busy. Callers wait in their own (worker) thread.
    """

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = threading.Semaphore(running)
        self._limit = running + waiting
        self._admitted = 0  # holding a slot or waiting for one
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self._limit:
                raise HashingBusy()
            self._admitted += 1
        try:
            with self._slots:
                yield
        finally:
            with self._lock:
                self._admitted -= 1


class Passwords:
    """Hashes and checks passwords; every check costs one Argon2 verification, hit or miss.

    hash, verify and burn raise HashingBusy when the gate's line is full."""

    def __init__(self, *, time_cost: int, memory_kib: int, gate: HashGate | None = None) -> None:
        # parallelism=1 is OWASP's recommended shape (t=2, m=19 MiB, p=1); the costs are the knobs.
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._gate = gate or HashGate(MAX_CONCURRENT_HASHES, MAX_WAITING_HASHES)
        # Verifying against this hash when the user does not exist spends the same time as a real
        # check, so response timing does not reveal which usernames are registered.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        with self._gate.slot():
            return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        with self._gate.slot():
            try:
                return self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

    def burn(self, password: str) -> None:
        """Spend one verification's worth of time for a login that cannot succeed."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other costs than today's settings (reads them; no Argon2 work)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False
