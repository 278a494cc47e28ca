"""The user table: one item per user, keyed by the lower-cased username.

Item: pk=USER#<username_lower>, sk=PROFILE, {user_id, username, password_hash, created_at}. The login
throttle keeps its own items in the same partition (throttle.py), for names that exist or not. Profiles
written before the throttle carry failed_attempts, locked_until, failure_ids and lock_id from the lockout it
replaced: nothing reads them any more.

botocore retries a write that DynamoDB answered with a 500 or a timeout, and DynamoDB may have applied
it anyway: the retry then fails its condition against its own first attempt. So the conditional put that
creates a user carries its user_id, and a condition failure that finds that id in the item
(ReturnValuesOnConditionCheckFailure=ALL_OLD) is the write applied once, not a taken name.
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
    created_at: str

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> User:
        return cls(
            user_id=item["user_id"]["S"],
            username=item["username"]["S"],
            password_hash=item["password_hash"]["S"],
            created_at=item["created_at"]["S"],
        )


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
        # Strongly consistent: a login right after registration finds the user.
        resp = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": user_pk(username)}, "sk": {"S": PROFILE}},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return User.from_item(item) if item else None

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
