"""Registration and password login with lockout (synchronous: Argon2 and boto3 run in a worker thread)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NoReturn

from .errors import AccountLocked, HashingBusy, InvalidCredentials
from .passwords import Passwords
from .users import LockedMeanwhile, User, UserStore

log = logging.getLogger(__name__)


class Accounts:
    def __init__(
        self,
        store: UserStore,
        passwords: Passwords,
        *,
        lockout_threshold: int,
        lockout_seconds: int,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._threshold = lockout_threshold
        self._lockout_seconds = lockout_seconds
        self._clock = clock

    def register(self, username: str, password: str) -> User:
        """Create a user; raises UsernameTaken if the name exists in any letter case, HashingBusy before any write."""
        user = self._store.create(username, self._passwords.hash(password), now=self._clock())
        log.info("user registered", extra={"user_id": user.user_id})
        return user

    def authenticate(self, username: str, password: str) -> User:
        """Return the user for a correct password; raise InvalidCredentials, AccountLocked, or HashingBusy
        (before any write, for known and unknown users alike)."""
        user = self._store.get(username)
        if user is None:
            # The same Argon2 work and DynamoDB write as a wrong password for a real user, so
            # response timing does not tell which usernames exist.
            self._passwords.burn(password)
            self._store.record_unknown_failure(username)
            log.info("login failed", extra={"reason": "unknown_user"})
            raise InvalidCredentials()
        now = self._clock()
        if user.locked_until > now:
            # No password check while locked: the lock must stop guessing, not just slow it.
            log.info("login refused", extra={"reason": "account_locked", "user_id": user.user_id})
            raise AccountLocked(self._retry_after(user.locked_until, now))
        if not self._passwords.verify(user.password_hash, password):
            self._fail(user, now)
        try:
            self._store.record_success(user, now=now)
        except LockedMeanwhile:
            self._raise_current_lock(user.username)
        if self._passwords.needs_rehash(user.password_hash):
            self._upgrade_hash(user, password)
        log.info("login succeeded", extra={"user_id": user.user_id})
        return user

    def _upgrade_hash(self, user: User, password: str) -> None:
        try:
            new_hash = self._passwords.hash(password)
        except HashingBusy:
            return  # the login has succeeded already; a later one upgrades the hash
        self._store.replace_hash(user, new_hash)

    def _fail(self, user: User, now: float) -> NoReturn:
        try:
            result = self._store.record_failure(
                user, now=now, threshold=self._threshold, lockout_seconds=self._lockout_seconds
            )
        except LockedMeanwhile:
            self._raise_current_lock(user.username)
        if result.locked_until is not None:
            log.warning("account locked", extra={"user_id": user.user_id, "locked_until": result.locked_until})
        else:
            extra = {"reason": "wrong_password", "user_id": user.user_id, "failed_attempts": result.failed_attempts}
            log.info("login failed", extra=extra)
        raise InvalidCredentials()

    def _raise_current_lock(self, username: str) -> NoReturn:
        now = self._clock()
        current = self._store.get(username)
        if current is not None and current.locked_until > now:
            raise AccountLocked(self._retry_after(current.locked_until, now))
        raise InvalidCredentials()  # the race resolved itself; the caller just retries

    @staticmethod
    def _retry_after(locked_until: int, now: float) -> int:
        return max(1, math.ceil(locked_until - now))
