"""Registration and password login with throttling (synchronous: Argon2 and boto3 run in a worker thread)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NoReturn

from .errors import HashingBusy, InvalidCredentials, LoginThrottled
from .passwords import Passwords
from .throttle import LockedMeanwhile, LoginThrottle
from .users import User, UserStore

log = logging.getLogger(__name__)


class Accounts:
    def __init__(self, store: UserStore, passwords: Passwords, throttle: LoginThrottle, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._passwords = passwords
        self._throttle = throttle
        self._clock = clock

    def register(self, username: str, password: str) -> User:
        """Create a user; raises UsernameTaken if the name exists in any letter case, HashingBusy before any write."""
        user = self._store.create(username, self._passwords.hash(password), now=self._clock())
        log.info("user registered", extra={"user_id": user.user_id})
        return user

    def authenticate(self, username: str, password: str, address: str) -> User:
        """Return the user for a correct password from `address` (throttle.address_key); raise InvalidCredentials,
        LoginThrottled, or HashingBusy (before any write).

        Known and unknown usernames take the same path, the same reads and writes and one Argon2 verification,
        and get the same answers: neither the answer nor its timing tells whether a name is registered."""
        now = self._clock()
        locked_until = self._throttle.locked_until(username, address)
        if locked_until > now:
            # No password check while locked: the lock must stop guessing, not just slow it.
            log.info("login refused", extra={"reason": "throttled", "address": address})
            raise LoginThrottled(_retry_after(locked_until, now))
        user = self._store.get(username)
        if user is None:
            self._passwords.burn(password)  # the Argon2 work a wrong password for a real user costs
            self._fail(username, address, now, None)
        if not self._passwords.verify(user.password_hash, password):
            self._fail(username, address, now, user)
        try:
            self._throttle.record_success(username, address, now=now)
        except LockedMeanwhile:
            self._raise_current_lock(username, address)
        if self._passwords.needs_rehash(user.password_hash):
            self._upgrade_hash(user, password)
        log.info("login succeeded", extra={"user_id": user.user_id, "address": address})
        return user

    def _upgrade_hash(self, user: User, password: str) -> None:
        try:
            new_hash = self._passwords.hash(password)
        except HashingBusy:
            return  # the login has succeeded already; a later one upgrades the hash
        self._store.replace_hash(user, new_hash)

    def _fail(self, username: str, address: str, now: float, user: User | None) -> NoReturn:
        try:
            result = self._throttle.record_failure(username, address, now=now)
        except LockedMeanwhile:
            self._raise_current_lock(username, address)
        # user_id only for a real user; never the username (people type passwords into it).
        extra = {"reason": "wrong_password" if user else "unknown_user", "address": address, "failures": result.failures,
                 "guarded": result.guarded, **({"user_id": user.user_id} if user else {})}
        if result.locked_until is not None:
            log.warning("login locked for address", extra={**extra, "locked_until": result.locked_until, "lock_number": result.lock_number})
        else:
            log.info("login failed", extra=extra)
        raise InvalidCredentials()

    def _raise_current_lock(self, username: str, address: str) -> NoReturn:
        now = self._clock()
        locked_until = self._throttle.locked_until(username, address)
        if locked_until > now:
            raise LoginThrottled(_retry_after(locked_until, now))
        raise InvalidCredentials()  # the race resolved itself; the caller just retries


def _retry_after(locked_until: float, now: float) -> int:
    return max(1, math.ceil(locked_until - now))
