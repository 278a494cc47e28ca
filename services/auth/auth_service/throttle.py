"""Login throttling: a lock per (username, address) that grows exponentially, and a guard per username.

- An address that fails `threshold` times in a row for a username is locked out of that username for
  `lock_seconds`, doubling with each further lock, at most `max_lock_seconds`. A success from the address
  clears its record. Nobody else is affected: the lock is keyed by the address, so an attacker locks out
  only himself, not the user he names.
- A username that has had `account_threshold` failures today (UTC) from all addresses together is under
  attack from many addresses: each address then gets one attempt per lock instead of `threshold`. An
  address that has not failed for the username still gets its attempt, so the guard cannot lock the user
  out either. A login a lock refused is no failure, also when a concurrent request set the lock while it was
  in flight (LockedMeanwhile): the guard counts the guesses answered, so a burst from one address counts
  `threshold` failures towards it, not one per request.

Items, in the user table and whether or not the user exists (so nothing here tells which names exist):
- pk=USER#<name>, sk=FROM#<address>: failures (since the last lock or success), lock_count (locks in a row),
  locked_until (epoch s to the millisecond, so that a lock lasts its whole length), failure_ids (ids of the
  failures counted since the last lock), lock_id (the failure that set the lock), expires_at (TTL: a day after
  the last failure or the end of the last lock).
- pk=USER#<name>, sk=FAILURES#<UTC day number>: failures (counted up to account_threshold), failure_ids,
  expires_at (the day's end).

Every write is a conditional update, so concurrent attempts cannot lose a failure or slip past a lock, and
each carries its own id: botocore retries a write that DynamoDB answered with a 500 or a timeout, and
DynamoDB may have applied it; a retry that fails its condition and finds its id in the item
(ReturnValuesOnConditionCheckFailure=ALL_OLD) is the write applied once, not a conflict. One gap is left:
a success from the same address that lands between a failure's first attempt and its retry clears the ids,
so that failure counts once more after the success.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from servicekit.dynamo import failed_against, is_conditional_failure
from servicekit.forwarded import IPAddress

from .users import user_pk

DAY_SECONDS = 86_400
# An address's record outlives its last failure or lock by this long; DynamoDB's TTL then deletes it (within
# days, not at once, so a record may be remembered longer, never shorter: it only ever makes locks come sooner).
MEMORY_SECONDS = DAY_SECONDS
# One IPv6 subscriber gets a /64 (or more): keying by the full address would give an attacker 2^64 of them.
IPV6_PREFIX = 64
_NOT_LOCKED = "(attribute_not_exists(locked_until) OR locked_until <= :now)"


def address_key(address: IPAddress | None) -> str:
    """The part of the caller's address throttling keys by: an IPv4 address, an IPv6 /64, or "unknown"."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True)
class ThrottlePolicy:
    threshold: int  # failures in a row from one address before it is locked out of the username
    lock_seconds: int  # the first lock; each further lock doubles
    max_lock_seconds: int  # the longest lock: the bound on how long a user waits after her own last failure
    account_threshold: int  # failures per username and UTC day (all addresses) that turn on the guard

    def lock_duration(self, lock_number: int) -> int:
        """Seconds of the `lock_number`-th lock in a row (1-based)."""
        return min(self.max_lock_seconds, self.lock_seconds * 2 ** min(lock_number - 1, 32))


@dataclass(frozen=True)
class FailureResult:
    """What one recorded failure did: the address's count since its last lock, or the lock it set."""

    failures: int
    guarded: bool
    locked_until: float | None = None
    lock_number: int = 0


class LockedMeanwhile(Exception):
    """A conditional update found the address locked by a concurrent request."""


class LoginThrottle:
    """DynamoDB access for the throttle's items through a low-level boto3 client (synchronous; call from a thread)."""

    def __init__(self, dynamodb: Any, table_name: str, policy: ThrottlePolicy) -> None:
        self._db = dynamodb
        self._table = table_name
        self.policy = policy

    def locked_until(self, username: str, address: str) -> float:
        """When the address's lock for the username ends (epoch s; 0: never locked)."""
        # Strongly consistent: the decision must see the latest lock.
        item = self._db.get_item(TableName=self._table, Key=self._address_key(username, address), ConsistentRead=True).get("Item")
        return float(item["locked_until"]["N"]) if item and "locked_until" in item else 0.0

    def record_failure(self, username: str, address: str, *, now: float) -> FailureResult:
        """Count one failed login for the username, from the address; the failure that reaches the threshold
        locks the address out of the username. Raises LockedMeanwhile if another request locked it since the read:
        that login is refused like any other the lock refuses, and is no failure of the username's day either."""
        attempt = str(uuid.uuid4())
        key = self._address_key(username, address)
        try:
            resp = self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET failures = if_not_exists(failures, :zero) + :one, expires_at = :expires ADD failure_ids :attempts",
                ConditionExpression=f"{_NOT_LOCKED} AND NOT contains(failure_ids, :attempt)",
                ExpressionAttributeValues={**_attempt_values(attempt), ":zero": {"N": "0"}, ":one": {"N": "1"},
                                           ":now": _instant(now), ":expires": {"N": str(int(now) + MEMORY_SECONDS)}},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            item = resp["Attributes"]
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            item = failed_against(exc) or {}
            # Our id is in the item: a retry of this write, which DynamoDB had applied (a lock or a success
            # clears the ids, so the address is not locked since). Otherwise a concurrent request locked it.
            if attempt not in item.get("failure_ids", {}).get("SS", []):
                raise LockedMeanwhile() from exc
        # Counted for the username only once its address counted it: a login a concurrent lock refused is no guess
        # tested (its answer is that lock's 429, whatever the password), so it must not bring the guard on sooner.
        today = self._count_for_username(username, attempt, int(now))
        guarded = today >= self.policy.account_threshold
        threshold = 1 if guarded else self.policy.threshold
        failures = int(item["failures"]["N"])
        if failures < threshold:
            return FailureResult(failures=failures, guarded=guarded)
        lock_number = int(item.get("lock_count", {"N": "0"})["N"]) + 1
        until = round(now + self.policy.lock_duration(lock_number), 3)
        try:
            # Only one of several concurrent failures sets the lock; the count restarts for after it.
            self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET locked_until = :until, failures = :zero, lock_id = :attempt, expires_at = :expires"
                                 " ADD lock_count :one REMOVE failure_ids",
                ConditionExpression=f"failures >= :threshold AND {_NOT_LOCKED}",
                ExpressionAttributeValues={":until": _instant(until), ":zero": {"N": "0"}, ":one": {"N": "1"},
                                           ":threshold": {"N": str(threshold)}, ":now": _instant(now),
                                           ":attempt": {"S": attempt}, ":expires": {"N": str(int(until) + MEMORY_SECONDS)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # Locked by this very failure (a retry of the lock write DynamoDB had applied), or by another.
            current = failed_against(exc) or {}
            if current.get("lock_id", {}).get("S") != attempt:
                if float(current.get("locked_until", {"N": "0"})["N"]) > now:
                    # Another failure set the lock first: this login gets its 429, so it was no failure for the day.
                    self._uncount_for_username(username, attempt, int(now))
                raise LockedMeanwhile() from exc
        return FailureResult(failures=failures, guarded=guarded, locked_until=until, lock_number=lock_number)

    def record_success(self, username: str, address: str, *, now: float) -> None:
        """Clear the address's record after a good password, unless a concurrent request locked it.

        Written on every success, also when the read found no record: wrong guesses sent together with this
        one may have locked the address since, and only a conditional write can tell. A success from an
        address without a record writes nothing (the condition fails on the missing item)."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._address_key(username, address),
                UpdateExpression="SET failures = :zero, lock_count = :zero, expires_at = :expires REMOVE failure_ids, locked_until, lock_id",
                ConditionExpression=f"attribute_exists(pk) AND {_NOT_LOCKED}",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":now": _instant(now),
                                           ":expires": {"N": str(int(now) + MEMORY_SECONDS)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            if failed_against(exc):  # the record exists, so the condition failed on its lock
                raise LockedMeanwhile() from exc

    def _count_for_username(self, username: str, attempt: str, now: int) -> int:
        """Count the failure in the username's day; returns the day's count (at most account_threshold: beyond it
        nothing changes, and the ids stay few)."""
        day = now // DAY_SECONDS
        try:
            resp = self._db.update_item(
                TableName=self._table,
                Key=self._day_key(username, now),
                UpdateExpression="SET failures = if_not_exists(failures, :zero) + :one, expires_at = :expires ADD failure_ids :attempts",
                ConditionExpression="(attribute_not_exists(failures) OR failures < :cap) AND NOT contains(failure_ids, :attempt)",
                ExpressionAttributeValues={**_attempt_values(attempt), ":zero": {"N": "0"}, ":one": {"N": "1"},
                                           ":cap": {"N": str(self.policy.account_threshold)},
                                           ":expires": {"N": str((day + 1) * DAY_SECONDS)}},
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return int(resp["Attributes"]["failures"]["N"])
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # At the cap already, or a retry of this write that DynamoDB had applied: either way the count stands.
            return int((failed_against(exc) or {})["failures"]["N"])

    def _uncount_for_username(self, username: str, attempt: str, now: int) -> None:
        """Take a failure counted by _count_for_username back out of the username's day."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._day_key(username, now),
                UpdateExpression="SET failures = failures - :one DELETE failure_ids :attempts",
                ConditionExpression="contains(failure_ids, :attempt)",
                ExpressionAttributeValues={**_attempt_values(attempt), ":one": {"N": "1"}},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # Not counted (the day was at its cap), or a retry of this write that DynamoDB had applied.

    @staticmethod
    def _day_key(username: str, now: int) -> dict[str, Any]:
        return {"pk": {"S": user_pk(username)}, "sk": {"S": f"FAILURES#{now // DAY_SECONDS}"}}

    @staticmethod
    def _address_key(username: str, address: str) -> dict[str, Any]:
        return {"pk": {"S": user_pk(username)}, "sk": {"S": f"FROM#{address}"}}


def _instant(epoch_seconds: float) -> dict[str, str]:
    """A moment as a DynamoDB number, to the millisecond."""
    return {"N": f"{epoch_seconds:.3f}"}


def _attempt_values(attempt: str) -> dict[str, Any]:
    return {":attempts": {"SS": [attempt]}, ":attempt": {"S": attempt}}
