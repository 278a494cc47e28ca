"""The session table: one item per session, state changes as conditional writes.

A session is born PENDING and leaves PENDING exactly once, to ACTIVE or CANCELLED. Every transition is a
conditional update on the current status, so concurrent actors (the saga in the request, the worker
reacting to persona's events, redeliveries, a timeout) cannot both win.

A session is stored with its deadline, `pending_until` (creation plus the creating process's pending
timeout): past it, a PENDING session is overdue, can no longer become ACTIVE, and `time_out` moves it to
CANCELLED `timed_out` (when it is read, confirmed late, or swept). Every process judges by that stored
deadline, so processes with different settings (a rollout that changes the timeout) agree.

The sweep index (cdk.json `services.vc-start.table_indexes`) is a sparse global secondary index over two
attributes, `sweep_shard` and `sweep_at` (when to look), that only the sessions the sweeper (sweeper.py)
may have to act on carry: every PENDING session, due at its deadline, and a CANCELLED one whose
SessionCancelled is still to be published, due a grace period after the cancel (the request or worker
that cancelled it publishes first). Settling a session removes them, and so does publishing its
SessionCancelled (`clear_sweep`). The shard names the region that wrote the entry: each region sweeps only
its own, because the table is a global table whose replicas resolve concurrent writes by last writer, and
a conditional write checks only the local replica.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servicekit import aws
from servicekit.aws import run_sync
from servicekit.dynamo import failed_against, is_conditional_failure
from servicekit.logging import get_logger

from vc_start.models import CancelReason, Session, SessionStatus
from vc_start.settings import DEFAULT_SESSION_PENDING_TIMEOUT_SECONDS, VcStartSettings

log = get_logger(__name__)

SORT_KEY = "SESSION"
# The sweep index: its name and key attributes as cdk.json declares them (local/bootstrap.py creates it from there).
SWEEP_INDEX = "sweep"
SWEEP_SHARD = "sweep_shard"
SWEEP_AT = "sweep_at"
# The id of the transition that left PENDING (a random id per write): how a retried write recognises itself.
LAST_WRITE = "last_write"
# The index's partitions: with one constant partition key every session would write to the same one.
SWEEP_SHARDS = 4
# How long a cancel that must be compensated waits for its own SessionCancelled before the sweeper sends it.
COMPENSATION_GRACE_SECONDS = 60.0
# A session an earlier version stored has no deadline: it is judged by its creation plus this store's timeout
# (such sessions are gone minutes after the rollout; then this can go).
LEGACY_IN_TIME = "(attribute_not_exists(pending_until) AND created_at > :legacy_cutoff)"
LEGACY_OVERDUE = "(attribute_not_exists(pending_until) AND created_at <= :legacy_cutoff)"


def iso_at(epoch: float) -> str:
    """Fixed-width UTC timestamp (ms, "Z"): such strings sort like the instants, so DynamoDB can compare them."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _key(session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"SESSION#{session_id}"}, "sk": {"S": SORT_KEY}}


def _from_item(item: dict[str, Any], legacy_timeout: float) -> Session:
    reason = item.get("reason", {})
    return Session(
        session_id=item["session_id"]["S"],
        persona_id=item["persona_id"]["S"],
        user_id=item["user_id"]["S"],
        status=SessionStatus(item["status"]["S"]),
        reason=reason.get("S"),
        created_at=item["created_at"]["S"],
        updated_at=item["updated_at"]["S"],
        pending_until=item["pending_until"]["S"] if "pending_until" in item else iso_at(_epoch(item["created_at"]["S"]) + legacy_timeout),
    )


class SessionExistsError(Exception):
    """A session with this id is already stored: an earlier run of the same idempotent request made it, or this
    put's own first attempt (a retried write)."""


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
        """``pending_timeout_seconds``: the deadline given to the sessions this store creates, and the age past
        which a session an earlier version stored without one is overdue."""
        self._db = dynamodb
        self._region = dynamodb.meta.region_name  # this process's replica of the global table
        self._table = table_name
        self._pending_timeout = pending_timeout_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: VcStartSettings) -> SessionStore:
        """The store on TABLE_NAME, giving new sessions SESSION_PENDING_TIMEOUT_SECONDS."""
        if not settings.table_name:
            raise ValueError("TABLE_NAME must be set")
        return cls(aws.client("dynamodb", settings), settings.table_name, pending_timeout_seconds=settings.session_pending_timeout_seconds)

    def _shard(self, number: int) -> str:
        """The ``number``-th sweep partition of this region."""
        return f"{self._region}#{number}"

    def _shard_of(self, session_id: str) -> str:
        return self._shard(zlib.crc32(session_id.encode()) % SWEEP_SHARDS)

    def is_overdue(self, session: Session) -> bool:
        return session.status is SessionStatus.PENDING and session.pending_until <= iso_at(self._clock())

    async def create(self, session_id: str, persona_id: str, user_id: str) -> Session:
        now, deadline = iso_at(self._clock()), iso_at(self._clock() + self._pending_timeout)
        session = Session(session_id, persona_id, user_id, SessionStatus.PENDING, None, now, now, deadline)
        item = {
            **_key(session_id),
            "session_id": {"S": session_id},
            "persona_id": {"S": persona_id},
            "user_id": {"S": user_id},
            "status": {"S": session.status.value},
            "created_at": {"S": now},
            "updated_at": {"S": now},
            "pending_until": {"S": deadline},
            # Swept at its deadline, if nothing settled it by then.
            SWEEP_SHARD: {"S": self._shard_of(session_id)},
            SWEEP_AT: {"S": deadline},
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
        return _from_item(item, self._pending_timeout) if item else None

    async def activate(self, session_id: str) -> Transition:
        """PENDING -> ACTIVE, unless the session is overdue (then it is left PENDING for `time_out`)."""
        return await self._transition(session_id, SessionStatus.ACTIVE, None, also=f"({LEGACY_IN_TIME} OR pending_until > :now)")

    async def cancel(self, session_id: str, reason: str, *, compensate: bool = False) -> Transition:
        """PENDING -> CANCELLED with a reason. ``compensate``: the caller will publish SessionCancelled, and the
        sweeper publishes it if `clear_sweep` has not been called within COMPENSATION_GRACE_SECONDS."""
        return await self._transition(session_id, SessionStatus.CANCELLED, reason, compensate=compensate)

    async def time_out(self, session_id: str) -> Transition:
        """PENDING -> CANCELLED `timed_out`, only if the session is (still) overdue; to be compensated like
        `cancel(compensate=True)`."""
        return await self._transition(session_id, SessionStatus.CANCELLED, CancelReason.TIMED_OUT.value,
                                      also=f"({LEGACY_OVERDUE} OR pending_until <= :now)", compensate=True)

    async def clear_sweep(self, session_id: str) -> None:
        """Take a settled session out of the sweep index: its SessionCancelled has been published. Best
        effort: if this fails the sweeper publishes SessionCancelled once more, which releases nothing more."""
        try:
            await run_sync(
                self._db.update_item,
                TableName=self._table,
                Key=_key(session_id),
                UpdateExpression=f"REMOVE {SWEEP_SHARD}, {SWEEP_AT}",
                ConditionExpression="attribute_exists(pk) AND #status <> :pending",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":pending": {"S": SessionStatus.PENDING.value}},
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                log.warning("session left in the sweep index", extra={"session_id": session_id, "error": str(exc)})

    async def due_for_sweep(self, shard: int, *, limit: int) -> list[str]:
        """Up to ``limit`` ids of sessions whose sweep instant has come in this region's ``shard``-th partition,
        oldest first (the index is eventually consistent: the sweeper reads each session again before acting)."""
        ids: list[str] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "#shard = :shard AND #at <= :now",
            "ExpressionAttributeNames": {"#shard": SWEEP_SHARD, "#at": SWEEP_AT},
            "ExpressionAttributeValues": {":shard": {"S": self._shard(shard)}, ":now": {"S": iso_at(self._clock())}},
        }
        while len(ids) < limit:
            response = await run_sync(self._db.query, **query, Limit=limit - len(ids))
            ids += [item["pk"]["S"].removeprefix("SESSION#") for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return ids

    async def _transition(
        self, session_id: str, to: SessionStatus, reason: str | None, *, also: str | None = None, compensate: bool = False,
    ) -> Transition:
        """Conditional PENDING -> `to`; `also`: an extra condition, which may use the current instant `:now` and
        `:legacy_cutoff` (LEGACY_IN_TIME).
        The session leaves the sweep index, or with ``compensate`` is due there after the grace period.
        A write that DynamoDB applied but answered with an error, which botocore then retried, counts as applied."""
        condition = "attribute_exists(pk) AND #status = :from"
        values: dict[str, Any] = {
            ":to": {"S": to.value},
            ":from": {"S": SessionStatus.PENDING.value},
            ":now": {"S": iso_at(self._clock())},
        }
        if also is not None:
            condition += f" AND {also}"
            values[":legacy_cutoff"] = {"S": iso_at(self._clock() - self._pending_timeout)}
        # Names this write, so that a retry of it can tell it was applied (below).
        write_id = uuid.uuid4().hex
        values[":write"] = {"S": write_id}
        sets, removes = ["#status = :to", "updated_at = :now", f"{LAST_WRITE} = :write"], []
        if reason is None:
            removes.append("reason")
        else:
            sets.append("reason = :reason")
            values[":reason"] = {"S": reason}
        if compensate:
            sets += [f"{SWEEP_SHARD} = :shard", f"{SWEEP_AT} = :sweep_at"]
            values[":shard"] = {"S": self._shard_of(session_id)}
            values[":sweep_at"] = {"S": iso_at(self._clock() + COMPENSATION_GRACE_SECONDS)}
        else:
            removes += [SWEEP_SHARD, SWEEP_AT]
        update = f"SET {', '.join(sets)}" + (f" REMOVE {', '.join(removes)}" if removes else "")
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
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            current = failed_against(exc)
            if current is not None and current.get(LAST_WRITE, {}).get("S") == write_id:
                # Our own write: botocore retried it (after a 5xx or a timeout) when DynamoDB had applied it.
                return Transition(applied=True, session=_from_item(current, self._pending_timeout))
            # Lost the race or already decided: report what is there now.
            return Transition(applied=False, session=_from_item(current, self._pending_timeout) if current else None)
        return Transition(applied=True, session=_from_item(response["Attributes"], self._pending_timeout))
