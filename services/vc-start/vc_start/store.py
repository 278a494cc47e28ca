"""The session table: one item per session, state changes as conditional writes.

A session is born PENDING and leaves PENDING exactly once, to ACTIVE or CANCELLED. Every transition is a
conditional update on the current status, so concurrent actors (the saga in the request, the worker
reacting to persona's events, redeliveries, a timeout) cannot both win.

A session PENDING for longer than the pending timeout is overdue: it can no longer become ACTIVE, and
`time_out` moves it to CANCELLED `timed_out` (done lazily, when it is read or confirmed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servicekit.aws import run_sync
from servicekit.dynamo import is_conditional_failure

from vc_start.models import CancelReason, Session, SessionStatus
from vc_start.settings import DEFAULT_SESSION_PENDING_TIMEOUT_SECONDS

SORT_KEY = "SESSION"


def iso_at(epoch: float) -> str:
    """Fixed-width UTC timestamp (ms, "Z"): such strings sort like the instants, so DynamoDB can compare them."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key(session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"SESSION#{session_id}"}, "sk": {"S": SORT_KEY}}


def _from_item(item: dict[str, Any]) -> Session:
    reason = item.get("reason", {})
    return Session(
        session_id=item["session_id"]["S"],
        persona_id=item["persona_id"]["S"],
        user_id=item["user_id"]["S"],
        status=SessionStatus(item["status"]["S"]),
        reason=reason.get("S"),
        created_at=item["created_at"]["S"],
        updated_at=item["updated_at"]["S"],
    )


class SessionExistsError(Exception):
    """A session with this id is already stored (ids are uuid4: only a bug gets here)."""


@dataclass(frozen=True)
class Transition:
    """Outcome of a conditional state change: `session` is the new state when applied, else the current one
    (None when the session does not exist)."""

    applied: bool
    session: Session | None


class SessionStore:
    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        pending_timeout_seconds: float = DEFAULT_SESSION_PENDING_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table_name
        self._pending_timeout = pending_timeout_seconds
        self._clock = clock

    def _cutoff(self) -> str:
        """Sessions created at or before this instant are overdue if still PENDING."""
        return iso_at(self._clock() - self._pending_timeout)

    def is_overdue(self, session: Session) -> bool:
        return session.status is SessionStatus.PENDING and session.created_at <= self._cutoff()

    async def create(self, session_id: str, persona_id: str, user_id: str) -> Session:
        now = iso_at(self._clock())
        session = Session(session_id, persona_id, user_id, SessionStatus.PENDING, None, now, now)
        item = {
            **_key(session_id),
            "session_id": {"S": session_id},
            "persona_id": {"S": persona_id},
            "user_id": {"S": user_id},
            "status": {"S": session.status.value},
            "created_at": {"S": now},
            "updated_at": {"S": now},
        }
        try:
            await run_sync(self._db.put_item, TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except Exception as exc:
            if is_conditional_failure(exc):
                raise SessionExistsError(f"session {session_id} already exists") from exc
            raise
        return session

    async def get(self, session_id: str) -> Session | None:
        response = await run_sync(self._db.get_item, TableName=self._table, Key=_key(session_id), ConsistentRead=True)
        item = response.get("Item")
        return _from_item(item) if item else None

    async def activate(self, session_id: str) -> Transition:
        """PENDING -> ACTIVE, unless the session is overdue (then it is left PENDING for `time_out`)."""
        return await self._transition(session_id, SessionStatus.ACTIVE, None, also="created_at > :cutoff")

    async def cancel(self, session_id: str, reason: str) -> Transition:
        """PENDING -> CANCELLED with a reason."""
        return await self._transition(session_id, SessionStatus.CANCELLED, reason)

    async def time_out(self, session_id: str) -> Transition:
        """PENDING -> CANCELLED `timed_out`, only if the session is (still) overdue."""
        return await self._transition(session_id, SessionStatus.CANCELLED, CancelReason.TIMED_OUT.value, also="created_at <= :cutoff")

    async def _transition(self, session_id: str, to: SessionStatus, reason: str | None, *, also: str | None = None) -> Transition:
        """Conditional PENDING -> `to`; `also`: an extra condition, which may use the overdue cutoff `:cutoff`."""
        condition = "attribute_exists(pk) AND #status = :from"
        values: dict[str, Any] = {
            ":to": {"S": to.value},
            ":from": {"S": SessionStatus.PENDING.value},
            ":now": {"S": iso_at(self._clock())},
        }
        if also is not None:
            condition += f" AND {also}"
            values[":cutoff"] = {"S": self._cutoff()}
        if reason is None:
            update = "SET #status = :to, updated_at = :now REMOVE reason"
        else:
            update = "SET #status = :to, updated_at = :now, reason = :reason"
            values[":reason"] = {"S": reason}
        try:
            response = await run_sync(
                self._db.update_item,
                TableName=self._table,
                Key=_key(session_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            # Lost the race or already decided: report what is there now.
            return Transition(applied=False, session=await self.get(session_id))
        return Transition(applied=True, session=_from_item(response["Attributes"]))
