"""The user table: one item per user, keyed by the lower-cased username.

Item: pk=USER#<username_lower>, sk=PROFILE, {user_id, username, password_hash, failed_attempts,
locked_until (epoch s, 0 = never locked), created_at, failure_ids (ids of the failures counted since
the last lock or success), lock_id (the failure that set the lock)}. Every write that matters for
lockout is a conditional update, so concurrent logins cannot lose a failure or undo a lock.

botocore retries a write that DynamoDB answered with a 500 or a timeout, and DynamoDB may have applied
it anyway: the retry then fails its condition against its own first attempt. So each conditional write
carries an id of its own (user_id, failure id, lock id) and a condition failure that finds that id in
the item (ReturnValuesOnConditionCheckFailure=ALL_OLD) is the write applied once, not a conflict.
One gap is left: a successful login that lands between a failure's first attempt and its retry clears
the ids, so that failure counts once more after the success (a count of 1 instead of 0). Keeping the
ids across successes would close it but let the set grow without bound.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from servicekit.dynamo import failed_against, is_conditional_failure

from .errors import UsernameTaken

PROFILE = "PROFILE"


def user_pk(username: str) -> str:
    return f"USER#{username.lower()}"


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    password_hash: str
    failed_attempts: int
    locked_until: int
    created_at: str

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> User:
        return cls(
            user_id=item["user_id"]["S"],
            username=item["username"]["S"],
            password_hash=item["password_hash"]["S"],
            failed_attempts=int(item.get("failed_attempts", {"N": "0"})["N"]),
            locked_until=int(item.get("locked_until", {"N": "0"})["N"]),
            created_at=item["created_at"]["S"],
        )


@dataclass(frozen=True)
class FailureResult:
    """What one recorded failure did: the new count, or the lock it set."""

    failed_attempts: int
    locked_until: int | None = None


class LockedMeanwhile(Exception):
    """A conditional update found the account locked by a concurrent request."""


# A failed login counts once per attempt id, also when botocore resends the write after a lost answer.
# Also the write a failed login for an unknown user makes (record_unknown_failure), so both cost the same.
_COUNT_FAILURE = "SET failed_attempts = if_not_exists(failed_attempts, :zero) + :one ADD failure_ids :attempts"
_IF_UNLOCKED_AND_NEW = (
    "attribute_exists(pk) AND (attribute_not_exists(locked_until) OR locked_until <= :now)"
    " AND NOT contains(failure_ids, :attempt)"
)


def _failure_values(attempt: str, now: int) -> dict[str, Any]:
    return {
        ":zero": {"N": "0"},
        ":one": {"N": "1"},
        ":now": {"N": str(now)},
        ":attempts": {"SS": [attempt]},
        ":attempt": {"S": attempt},
    }


class UserStore:
    """DynamoDB access for users through a low-level boto3 client (synchronous; call from a thread)."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def create(self, username: str, password_hash: str, *, now: float) -> User:
        name = username.lower()
        user = User(
            user_id=str(uuid.uuid4()),
            username=name,
            password_hash=password_hash,
            failed_attempts=0,
            locked_until=0,
            created_at=datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z"),
        )
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": user_pk(name)},
                    "sk": {"S": PROFILE},
                    "user_id": {"S": user.user_id},
                    "username": {"S": user.username},
                    "password_hash": {"S": user.password_hash},
                    "failed_attempts": {"N": "0"},
                    "locked_until": {"N": "0"},
                    "created_at": {"S": user.created_at},
                },
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # Our own user_id: a retry of this put, which DynamoDB had applied before its answer was lost.
            if (failed_against(exc) or {}).get("user_id", {}).get("S") != user.user_id:
                raise UsernameTaken(name) from exc
        return user

    def get(self, username: str) -> User | None:
        # Strongly consistent: the lockout decision must see the latest failure count.
        resp = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": user_pk(username)}, "sk": {"S": PROFILE}},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return User.from_item(item) if item else None

    def record_failure(self, user: User, *, now: float, threshold: int, lockout_seconds: int) -> FailureResult:
        """Count one failed login; the failure that reaches `threshold` locks the account.

        Raises LockedMeanwhile if another request locked the account since `user` was read.
        """
        key = {"pk": {"S": user_pk(user.username)}, "sk": {"S": PROFILE}}
        now_n = {"N": str(int(now))}
        attempt = str(uuid.uuid4())
        try:
            resp = self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression=_COUNT_FAILURE,
                ConditionExpression=_IF_UNLOCKED_AND_NEW,
                ExpressionAttributeValues=_failure_values(attempt, int(now)),
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            count = int(resp["Attributes"]["failed_attempts"]["N"])
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            old = failed_against(exc) or {}
            # Our id is in the item: a retry of this write, which DynamoDB had applied (the lock and a
            # success clear the ids, so the account is not locked since). Otherwise it is locked.
            if attempt not in old.get("failure_ids", {}).get("SS", []):
                raise LockedMeanwhile() from exc
            count = int(old["failed_attempts"]["N"])
        if count < threshold:
            return FailureResult(failed_attempts=count)
        until = int(now) + lockout_seconds
        try:
            # Only one of several concurrent failures sets the lock; the counter restarts so the
            # user gets a fresh set of attempts once the lock has expired.
            self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET locked_until = :until, failed_attempts = :zero, lock_id = :attempt REMOVE failure_ids",
                ConditionExpression="failed_attempts >= :threshold AND (attribute_not_exists(locked_until) OR locked_until <= :now)",
                ExpressionAttributeValues={
                    ":until": {"N": str(until)},
                    ":zero": {"N": "0"},
                    ":threshold": {"N": str(threshold)},
                    ":now": now_n,
                    ":attempt": {"S": attempt},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # Locked by this very failure (a retry of the lock write DynamoDB had applied), or by another.
            if (failed_against(exc) or {}).get("lock_id", {}).get("S") != attempt:
                raise LockedMeanwhile() from exc
        return FailureResult(failed_attempts=count, locked_until=until)

    def record_unknown_failure(self, username: str) -> None:
        """The same conditional write a wrong password costs, on a user that does not exist.

        It writes nothing (the condition fails) but takes one DynamoDB round trip, so a failed login
        for an unknown name takes as long as one for a real user.
        """
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": user_pk(username)}, "sk": {"S": PROFILE}},
                UpdateExpression=_COUNT_FAILURE,
                ConditionExpression=_IF_UNLOCKED_AND_NEW,
                ExpressionAttributeValues=_failure_values(str(uuid.uuid4()), 0),
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise

    def record_success(self, user: User, *, now: float) -> None:
        """Reset the failure count after a good password, unless a concurrent request locked the account.

        Written on every success, also when ``user`` was read with no failures: the lock a concurrent
        burst of wrong guesses sets resets the count to 0, so a read taken just after an expired lock
        shows 0 whether or not the account is locked again by now; only the conditional write can tell.
        It also drops the failure ids: they need only outlive a retry, and the item must not grow with each
        failure (a retry of this write sets the same values again).
        """
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": user_pk(user.username)}, "sk": {"S": PROFILE}},
                UpdateExpression="SET failed_attempts = :zero REMOVE failure_ids",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(locked_until) OR locked_until <= :now)",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":now": {"N": str(int(now))}},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise LockedMeanwhile() from exc
            raise

    def replace_hash(self, user: User, new_hash: str) -> None:
        """Store a re-hash made with new cost settings; skipped if the password changed meanwhile."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": user_pk(user.username)}, "sk": {"S": PROFILE}},
                UpdateExpression="SET password_hash = :new",
                ConditionExpression="password_hash = :old",
                ExpressionAttributeValues={":new": {"S": new_hash}, ":old": {"S": user.password_hash}},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
