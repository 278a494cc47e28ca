"""persona's DynamoDB table: personas, the owner index, and slot reservations.

Items (pk / sk):
- `PERSONA#<id>` / `PROFILE`: the persona, incl. the `reserved` counter.
- `OWNER#<sub>` / `PERSONA#<id>`: owner index, so listing is a Query (no Scan, no GSI), one page at a time.
- `OWNER#<sub>` / `COUNT`: how many personas the owner has (`personas`), so creating one can check the cap atomically.
- `PERSONA#<id>` / `RESERVATION#<session_id>`: a slot held for a session (HELD -> CONFIRMED -> RELEASED).

The table's sparse index `holds` (HOLDS_INDEX) holds the HELD reservations only, so finding a persona's expired holds
reads those, never the persona's history of confirmed and released reservations (a session a minute is some 10,000
items a week).

Every change of a reservation's status that moves the counter happens in one TransactWriteItems
with the counter update, so `reserved` always equals the number of HELD + CONFIRMED reservations;
likewise creating and deleting a persona moves its owner's `personas` count.
A HELD reservation's deadline is `hold_expires_at`, not the table's TTL attribute `expires_at`: if
DynamoDB's TTL deleted an expired hold, its slot could never be given back. Only RELEASED items get
`expires_at` (they are kept a week as tombstones, so late duplicate calls stay idempotent; deleting a persona
leaves its tombstones to that expiry rather than read its whole history).

The store is synchronous (boto3); async callers run it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from servicekit.dynamo import is_conditional_failure
from servicekit.logging import get_logger

HELD = "HELD"
CONFIRMED = "CONFIRMED"
RELEASED = "RELEASED"
REASON_EXPIRED = "reservation_expired"
# Every stored release reason: the saga's events carry it, and their contracts want snake_case.
REASON_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# SlotReleased's reason for a SessionStarted whose session persona never reserved a slot for.
REASON_NOT_FOUND = "reservation_not_found"
RELEASED_RETENTION_SECONDS = 7 * 24 * 3600
# Optimistic retries when a concurrent writer won a race (conditional check / transaction conflict).
_ATTEMPTS = 8
# A transaction's cancellation reasons that mean DynamoDB throttled it (TransactWriteItems API reference), not that a
# condition failed or a concurrent transaction conflicted (TransactionConflict): retrying at once cannot help.
_THROTTLED_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
# Batch calls that DynamoDB answered only in part (it leaves items unprocessed when throttled): the calls for the rest,
# 50 ms apart and doubling, before the request answers storage unavailable (0.75 s of back-off in all).
_BATCH_ATTEMPTS = 5

# Persona and session ids are UUIDs in practice; anything outside this cannot name an item.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

# The sparse global secondary index of HELD reservations (cdk.json `services.persona.table_indexes`, which
# local/bootstrap.py creates too): partition key `persona_id`, sort key `hold_expires_at` (a number). Only a HELD
# reservation has `hold_expires_at` (confirming and releasing REMOVE it), so the index holds exactly the live holds,
# also those written before it existed (DynamoDB backfills a new index). Keys only: pk and sk name the reservation.
HOLDS_INDEX = "holds"
# Until the index is ACTIVE (a deploy that adds it backfills it first) DynamoDB answers a Query on it with these:
# reclaiming then reads the persona's partition as before the index, and logs that it did.
# DynamoDB's answers while a new index backfills ("Cannot read from backfilling global secondary index") or before a
# deploy has created it ("The table does not have the specified index"); moto's too. Any other error is raised: a
# fallback on every ValidationException would hide a broken query behind the history scan the index removes.
_INDEX_NOT_READY_MESSAGES = ("backfilling global secondary index", "does not have the specified index")


def index_not_ready(exc: ClientError) -> bool:
    """Whether ``exc`` says the holds index cannot answer yet (not that the query is wrong)."""
    error = exc.response.get("Error", {})
    if error.get("Code") == "ResourceNotFoundException":
        return True
    message = error.get("Message", "").lower()
    return error.get("Code") == "ValidationException" and any(text in message for text in _INDEX_NOT_READY_MESSAGES)

# Listing: personas per page (HTTP `limit`, gRPC `page_size`), and how many personas one owner may have.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
DEFAULT_MAX_PERSONAS_PER_OWNER = 100
_PAGE_TOKEN_MAX_CHARS = 512

log = get_logger(__name__)
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class StoreError(Exception):
    """Base of the store's domain errors."""


class PersonaNotFound(StoreError):
    def __init__(self, persona_id: str) -> None:
        super().__init__(f"persona {persona_id} not found")


class PersonaInUse(StoreError):
    def __init__(self, persona_id: str, reserved: int) -> None:
        super().__init__(f"persona {persona_id} has {reserved} reserved session slot(s)")


class MaxSessionsBelowReserved(StoreError):
    def __init__(self, max_sessions: int, reserved: int) -> None:
        super().__init__(f"max_sessions {max_sessions} is below the {reserved} slot(s) currently reserved")


class PersonaLimitReached(StoreError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the owner already has the maximum of {limit} personas; delete one to create another")


class InvalidPageToken(StoreError):
    def __init__(self) -> None:
        super().__init__("page_token is not a token a previous page returned")


class NoSlotAvailable(StoreError):
    def __init__(self, persona_id: str, max_sessions: int) -> None:
        super().__init__(f"all {max_sessions} session slot(s) of persona {persona_id} are reserved")


class StoreConflict(StoreError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} kept conflicting with concurrent writes; retry")


class StoreUnavailable(StoreError):
    """DynamoDB throttles: a batch call still left items unprocessed after _BATCH_ATTEMPTS, or a transaction was
    cancelled for throttling. Storage unavailable, retry later (HTTP 503 with Retry-After, gRPC UNAVAILABLE), not a
    conflict. Our own error, not a made-up AWS one: AWS answered every call. ``aws_error``: what DynamoDB answered, for
    the logs' ``aws_error`` field (runbooks/table-errors.md groups by it)."""

    def __init__(self, message: str, aws_error: str) -> None:
        super().__init__(message)
        self.aws_error = aws_error


def _until_processed(call: Callable[..., dict[str, Any]], request: dict[str, Any], unprocessed: str, *,
                     on_answer: Callable[[dict[str, Any]], object] = lambda out: None) -> dict[str, Any]:
    """``call(RequestItems=request)``, then again for what DynamoDB left under ``unprocessed`` (it does so while it
    throttles), 50 ms apart and doubling, at most _BATCH_ATTEMPTS calls; returns what it still left ({} when none)."""
    for attempt in range(_BATCH_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2 ** (attempt - 1))
        out = call(RequestItems=request)
        on_answer(out)
        request = out.get(unprocessed) or {}
        if not request:
            break
    return request


@dataclass(frozen=True)
class Persona:
    persona_id: str
    owner: str
    display_name: str
    attributes: dict[str, str]
    max_sessions: int
    reserved: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class PersonaPage:
    """One page of an owner's personas, in persona_id order; `next_page_token` is None on the last page."""

    items: list[Persona]
    next_page_token: str | None


@dataclass(frozen=True)
class Reservation:
    persona_id: str
    session_id: str
    status: str
    hold_expires_at: int | None = None
    reason: str | None = None

    def expired(self, now: float) -> bool:
        return self.status == HELD and self.hold_expires_at is not None and self.hold_expires_at <= now


class _Cancelled(Exception):
    """A transaction was cancelled; `reasons` holds one code per item ("None" for items that were fine)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _values(**values: Any) -> dict[str, Any]:
    return {f":{k}": _serializer.serialize(v) for k, v in values.items()}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: _deserializer.deserialize(v) for k, v in item.items()}
    # DynamoDB numbers come back as Decimal; everything numeric here is an integer.
    return {k: int(v) if k in {"max_sessions", "reserved", "hold_expires_at", "expires_at"} else v for k, v in out.items()}


def _persona_key(persona_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"PERSONA#{persona_id}"}, "sk": {"S": "PROFILE"}}


def _owner_key(owner: str, persona_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"OWNER#{owner}"}, "sk": {"S": f"PERSONA#{persona_id}"}}


def _owner_count_key(owner: str) -> dict[str, Any]:
    return {"pk": {"S": f"OWNER#{owner}"}, "sk": {"S": "COUNT"}}


def _reservation_key(persona_id: str, session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"PERSONA#{persona_id}"}, "sk": {"S": f"RESERVATION#{session_id}"}}


def encode_page_token(last_persona_id: str) -> str:
    """Opaque to callers: where the next page starts (after this persona id, in the owner's index)."""
    raw = json.dumps({"v": 1, "after": last_persona_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    """The persona id a page token continues after; InvalidPageToken for anything encode_page_token did not make.
    The token names a position in the caller's own owner index only, so a forged one cannot reach other data."""
    try:
        if len(token) > _PAGE_TOKEN_MAX_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidPageToken() from None
    after = data.get("after") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(after, str) or not ID_PATTERN.fullmatch(after):
        raise InvalidPageToken()
    return after


def _to_persona(item: dict[str, Any]) -> Persona:
    p = _plain(item)
    return Persona(
        persona_id=p["persona_id"],
        owner=p["owner"],
        display_name=p["display_name"],
        attributes=dict(p.get("attributes") or {}),
        max_sessions=p["max_sessions"],
        reserved=p["reserved"],
        created_at=p["created_at"],
        updated_at=p["updated_at"],
    )


def _to_reservation(item: dict[str, Any]) -> Reservation:
    p = _plain(item)
    return Reservation(
        persona_id=p["persona_id"],
        session_id=p["session_id"],
        status=p["status"],
        hold_expires_at=p.get("hold_expires_at"),
        reason=p.get("reason"),
    )


class PersonaStore:
    def __init__(self, dynamodb: Any, table_name: str, *, hold_seconds: int = 120, clock: Callable[[], float] = time.time,
                 max_personas_per_owner: int = DEFAULT_MAX_PERSONAS_PER_OWNER) -> None:
        self._db = dynamodb
        self._table = table_name
        self._hold_seconds = hold_seconds
        self._clock = clock
        self._max_personas = max_personas_per_owner

    # ---- personas -------------------------------------------------------------------------

    def create(self, owner: str, display_name: str, attributes: dict[str, str], max_sessions: int) -> Persona:
        """A new persona; PersonaLimitReached when the owner has `max_personas_per_owner` already. The owner's count
        goes up in the same transaction, conditional on staying within the cap, so concurrent creates cannot pass it."""
        now = _iso(self._clock())
        persona = Persona(str(uuid.uuid4()), owner, display_name, dict(attributes), max_sessions, 0, now, now)
        profile = {**_persona_key(persona.persona_id), **self._persona_attrs(persona)}
        index = {**_owner_key(owner, persona.persona_id), "persona_id": {"S": persona.persona_id}}
        items = [
            {"Put": {"TableName": self._table, "Item": profile, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": index}},
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _owner_count_key(owner),
                    "UpdateExpression": "SET personas = personas + :one",
                    # Fails too while the count does not exist yet: _settle_owner_count creates it.
                    "ConditionExpression": "personas < :cap",
                    "ExpressionAttributeValues": _values(one=1, cap=self._max_personas),
                }
            },
        ]
        for _ in range(_ATTEMPTS):
            try:
                self._transact(items)
                return persona
            except _Cancelled as exc:
                if exc.failed(2):
                    self._settle_owner_count(owner)  # raises PersonaLimitReached when the owner is at the cap
                else:
                    time.sleep(random.uniform(0, 0.02))  # transaction conflict (a concurrent create or delete): retry
        raise StoreConflict(f"creating a persona for owner {owner}")

    def get(self, persona_id: str, owner: str) -> Persona:
        """The persona if `owner` owns it; PersonaNotFound otherwise (no hint that it exists)."""
        persona = self._get_persona(persona_id)
        if persona is None or persona.owner != owner:
            raise PersonaNotFound(persona_id[:128])
        return persona

    def list(self, owner: str, *, limit: int = DEFAULT_PAGE_SIZE, page_token: str | None = None) -> PersonaPage:
        """One page of the owner's personas in persona_id order (the owner index's order, so a page reads only its
        own entries): at most `limit`, after the position `page_token` names. A page may hold fewer than `limit`
        when personas are deleted meanwhile; only a None `next_page_token` means there are no more."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE_SIZE}")
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": _values(pk=f"OWNER#{owner}", prefix="PERSONA#"),
            "ConsistentRead": True,
            "Limit": limit + 1,  # one more than the page: tells whether another page follows
        }
        if page_token is not None:
            kwargs["ExclusiveStartKey"] = _owner_key(owner, decode_page_token(page_token))
        page = self._db.query(**kwargs)
        ids = [_plain(item)["persona_id"] for item in page.get("Items", [])]
        more = len(ids) > limit or "LastEvaluatedKey" in page
        ids = ids[:limit]
        found = {p.persona_id: p for p in self._batch_get_personas(ids) if p.owner == owner}
        return PersonaPage([found[pid] for pid in ids if pid in found], encode_page_token(ids[-1]) if more and ids else None)

    def update(
        self,
        persona_id: str,
        owner: str,
        *,
        display_name: str | None = None,
        attributes: dict[str, str] | None = None,
        max_sessions: int | None = None,
    ) -> Persona:
        if not ID_PATTERN.fullmatch(persona_id):
            raise PersonaNotFound(persona_id[:128])
        sets = ["updated_at = :updated_at"]
        values: dict[str, Any] = {"updated_at": _iso(self._clock()), "owner": owner}
        condition = "attribute_exists(pk) AND #owner = :owner"
        if display_name is not None:
            sets.append("display_name = :display_name")
            values["display_name"] = display_name
        if attributes is not None:
            sets.append("attributes = :attributes")
            values["attributes"] = dict(attributes)
        if max_sessions is not None:
            sets.append("max_sessions = :max_sessions")
            values["max_sessions"] = max_sessions
            condition += " AND reserved <= :max_sessions"
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key=_persona_key(persona_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=_values(**values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            current = self.get(persona_id, owner)  # raises PersonaNotFound for missing / foreign personas
            if max_sessions is None:
                raise StoreConflict(f"updating persona {persona_id}") from None
            if self.reclaim_expired(persona_id):  # expired holds must not block the change: retry
                return self.update(persona_id, owner, display_name=display_name, attributes=attributes, max_sessions=max_sessions)
            raise MaxSessionsBelowReserved(max_sessions, current.reserved) from None
        return _to_persona(out["Attributes"])

    def delete(self, persona_id: str, owner: str) -> None:
        """Delete the persona unless slots are reserved (PersonaInUse). Its reservations left are RELEASED tombstones
        (reserved is 0), which carry the TTL attribute: DynamoDB removes them within RELEASED_RETENTION_SECONDS, so
        the delete does not read the persona's history."""
        persona = self.get(persona_id, owner)
        if persona.reserved:
            # Holds whose session never started (e.g. a lost compensation) must not block the delete.
            self.reclaim_expired(persona_id)
        items = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _persona_key(persona_id),
                    "ConditionExpression": "#owner = :owner AND reserved = :zero",
                    "ExpressionAttributeNames": {"#owner": "owner"},
                    "ExpressionAttributeValues": _values(owner=owner, zero=0),
                }
            },
            {"Delete": {"TableName": self._table, "Key": _owner_key(owner, persona_id)}},
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _owner_count_key(owner),
                    "UpdateExpression": "SET personas = personas - :one",
                    "ConditionExpression": "personas > :zero",
                    "ExpressionAttributeValues": _values(one=1, zero=0),
                }
            },
        ]
        for _ in range(_ATTEMPTS):
            try:
                self._transact(items)
                return
            except _Cancelled as exc:
                if exc.failed(2) and not exc.failed(0):
                    # No count to take it from: the owner's personas predate the cap (the count is made from the
                    # owner index when they next create one) or were created by a version without it.
                    items = items[:2]
                    continue
                current = self.get(persona_id, owner)  # PersonaNotFound if it went meanwhile
                if current.reserved:
                    raise PersonaInUse(persona_id, current.reserved) from None
                time.sleep(random.uniform(0, 0.02))  # a concurrent write (a release, another create or delete): retry
        raise StoreConflict(f"deleting persona {persona_id}")

    # ---- reservations ---------------------------------------------------------------------

    def reserve(self, persona_id: str, session_id: str, owner: str) -> Reservation:
        """Hold a slot for `session_id`. Idempotent: a session that has a reservation gets it back as it is,
        HELD, CONFIRMED or RELEASED with its reason (a released slot is never taken again for the session, so
        a ReserveSlot that a compensation overtook takes nothing)."""
        if not ID_PATTERN.fullmatch(session_id):
            raise ValueError("session_id must be 1-128 characters of [A-Za-z0-9_-]")
        for _ in range(_ATTEMPTS):
            now = self._clock()
            persona = self.get(persona_id, owner)
            existing = self._get_reservation(persona_id, session_id)
            if existing is not None:
                if existing.status == HELD and existing.expired(now):
                    # Give the expired hold back. Losing that race means it was just confirmed or released:
                    # re-read and answer from what is there now.
                    if not self._release_transition(existing, REASON_EXPIRED):
                        continue
                    return replace(existing, status=RELEASED, hold_expires_at=None, reason=REASON_EXPIRED)
                return existing
            # Lazy reclaim: holds whose session never started must not keep slots forever.
            self.reclaim_expired(persona_id)
            hold = Reservation(persona_id, session_id, HELD, hold_expires_at=int(now) + self._hold_seconds)
            item = {
                **_reservation_key(persona_id, session_id),
                "persona_id": {"S": persona_id},
                "session_id": {"S": session_id},
                "status": {"S": HELD},
                "hold_expires_at": {"N": str(hold.hold_expires_at)},
                "created_at": {"S": _iso(now)},
            }
            try:
                self._transact(
                    [
                        {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": _persona_key(persona_id),
                                "UpdateExpression": "SET reserved = reserved + :one",
                                "ConditionExpression": "attribute_exists(pk) AND reserved < max_sessions",
                                "ExpressionAttributeValues": _values(one=1),
                            }
                        },
                    ]
                )
                return hold
            except _Cancelled as exc:
                if exc.failed(0):
                    continue  # a concurrent call for the same session created it: return that one
                if exc.failed(1):
                    if self._get_persona(persona_id) is None:
                        raise PersonaNotFound(persona_id) from None
                    raise NoSlotAvailable(persona_id, persona.max_sessions) from None
                time.sleep(random.uniform(0, 0.02))  # transaction conflict: back off, re-read, retry
        raise StoreConflict(f"reserving a slot of persona {persona_id}")

    def release(self, persona_id: str, session_id: str, reason: str, *, owner: str | None = None) -> Reservation:
        """Free the slot of `session_id` (idempotent). With `owner`, the persona must be theirs.

        An unknown reservation is recorded as RELEASED, so a ReserveSlot arriving after its
        compensation (e.g. a retried call) cannot take a slot for a cancelled session.
        """
        for _ in range(_ATTEMPTS):
            persona = self.get(persona_id, owner) if owner is not None else self._get_persona(persona_id)
            current = self._get_reservation(persona_id, session_id)
            if current is None:
                tombstone = Reservation(persona_id, session_id, RELEASED, reason=reason)
                if persona is None or not ID_PATTERN.fullmatch(session_id):
                    return tombstone  # nothing can ever have been reserved under these ids
                if self._put_tombstone(tombstone):
                    return tombstone
                continue
            if current.status == RELEASED:
                return current
            if self._release_transition(current, reason):
                return replace(current, status=RELEASED, hold_expires_at=None, reason=reason)
        raise StoreConflict(f"releasing the slot of session {session_id}")

    def confirm(self, persona_id: str, session_id: str) -> Reservation | None:
        """HELD -> CONFIRMED. Returns the reservation (RELEASED if it was released or had expired), None if unknown."""
        for _ in range(_ATTEMPTS):
            now = self._clock()
            current = self._get_reservation(persona_id, session_id)
            if current is None or current.status in (CONFIRMED, RELEASED):
                return current
            if current.expired(now):
                if self._release_transition(current, REASON_EXPIRED):
                    return replace(current, status=RELEASED, hold_expires_at=None, reason=REASON_EXPIRED)
                continue
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_reservation_key(persona_id, session_id),
                    UpdateExpression="SET #status = :confirmed, confirmed_at = :at REMOVE hold_expires_at",
                    ConditionExpression="#status = :held AND hold_expires_at > :now",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=_values(confirmed=CONFIRMED, held=HELD, now=int(now), at=_iso(now)),
                )
                return replace(current, status=CONFIRMED, hold_expires_at=None)
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
        raise StoreConflict(f"confirming the slot of session {session_id}")

    def reclaim_expired(self, persona_id: str) -> int:
        """Release this persona's HELD reservations whose hold expired; returns how many were released.

        Reads only the expired holds, from the holds index (at most the persona's `reserved`). The index is
        eventually consistent: a hold confirmed or released a moment ago may still show there, and its release
        transition (conditional on HELD) then does nothing."""
        released = 0
        for hold in self._expired_holds(persona_id, int(self._clock())):
            # False means someone else confirmed or released it meanwhile: nothing to do.
            released += self._release_transition(hold, REASON_EXPIRED)
        return released

    def get_reservation(self, persona_id: str, session_id: str) -> Reservation | None:
        return self._get_reservation(persona_id, session_id)

    # ---- internals ------------------------------------------------------------------------

    def _expired_holds(self, persona_id: str, now: int) -> list[Reservation]:
        try:
            items = list(self._paged_query(
                IndexName=HOLDS_INDEX,
                KeyConditionExpression="persona_id = :persona AND hold_expires_at <= :now",
                ExpressionAttributeValues=_values(persona=persona_id, now=now),
            ))
        except ClientError as exc:
            if not index_not_ready(exc):
                raise
            # The index is still being created (or the table predates it): read the partition, as before the index.
            log.warning("holds index not readable; reading the persona's reservations instead",
                        extra={"persona_id": persona_id, "reason": exc.response.get("Error", {}).get("Message", "")})
            items = list(self._query(
                f"PERSONA#{persona_id}",
                "RESERVATION#",
                FilterExpression="#status = :held AND hold_expires_at <= :now",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_values(held=HELD, now=now),
            ))
        return [Reservation(persona_id, item["sk"]["S"].removeprefix("RESERVATION#"), HELD, int(item["hold_expires_at"]["N"]))
                for item in items]

    def _settle_owner_count(self, owner: str) -> None:
        """After a create failed on the owner's count: PersonaLimitReached if the owner really has the maximum; else
        make the count right (create it from the owner index if it does not exist yet, or lower it to what the index
        holds), so the create's retry can pass. Bounded by the owner's personas, and only on this path."""
        item = self._db.get_item(TableName=self._table, Key=_owner_count_key(owner), ConsistentRead=True).get("Item")
        stored = int(item["personas"]["N"]) if item and "personas" in item else None
        if stored is not None and stored < self._max_personas:
            return  # a concurrent delete made room meanwhile: retry
        actual = sum(page.get("Count", 0) for page in self._pages(
            TableName=self._table, Select="COUNT", ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=_values(pk=f"OWNER#{owner}", prefix="PERSONA#"),
        ))
        if stored != actual:
            # Conditional on the count not having moved since it was read, so a concurrent create or delete wins.
            condition = "attribute_not_exists(pk)" if stored is None else "personas = :stored"
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item={**_owner_count_key(owner), "personas": {"N": str(actual)}},
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": _values(stored=stored)} if stored is not None else {}),
                )
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
        if actual >= self._max_personas:
            raise PersonaLimitReached(self._max_personas)

    def _persona_attrs(self, p: Persona) -> dict[str, Any]:
        plain = {
            "persona_id": p.persona_id,
            "owner": p.owner,
            "display_name": p.display_name,
            "attributes": p.attributes,
            "max_sessions": p.max_sessions,
            "reserved": p.reserved,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
        }
        return {k: _serializer.serialize(v) for k, v in plain.items()}

    def _get_persona(self, persona_id: str) -> Persona | None:
        if not ID_PATTERN.fullmatch(persona_id):
            return None
        item = self._db.get_item(TableName=self._table, Key=_persona_key(persona_id), ConsistentRead=True).get("Item")
        return _to_persona(item) if item else None

    def _get_reservation(self, persona_id: str, session_id: str) -> Reservation | None:
        if not (ID_PATTERN.fullmatch(persona_id) and ID_PATTERN.fullmatch(session_id)):
            return None
        key = _reservation_key(persona_id, session_id)
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        return _to_reservation(item) if item else None

    def _release_transition(self, current: Reservation, reason: str) -> bool:
        """current (HELD/CONFIRMED) -> RELEASED and reserved - 1, atomically; False if `current` is stale (StoreUnavailable
        when DynamoDB throttles the transaction: nothing was released)."""
        now = self._clock()
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _reservation_key(current.persona_id, current.session_id),
                            "UpdateExpression": "SET #status = :released, reason = :reason, released_at = :at, "
                            "expires_at = :ttl REMOVE hold_expires_at",
                            "ConditionExpression": "#status = :expected",
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": _values(
                                released=RELEASED,
                                reason=reason,
                                at=_iso(now),
                                ttl=int(now) + RELEASED_RETENTION_SECONDS,
                                expected=current.status,
                            ),
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _persona_key(current.persona_id),
                            "UpdateExpression": "SET reserved = reserved - :one",
                            "ConditionExpression": "reserved > :zero",
                            "ExpressionAttributeValues": _values(one=1, zero=0),
                        }
                    },
                ]
            )
            return True
        except _Cancelled:
            return False

    def _put_tombstone(self, r: Reservation) -> bool:
        now = self._clock()
        item = {
            **_reservation_key(r.persona_id, r.session_id),
            "persona_id": {"S": r.persona_id},
            "session_id": {"S": r.session_id},
            "status": {"S": RELEASED},
            "reason": {"S": r.reason or ""},
            "released_at": {"S": _iso(now)},
            "expires_at": {"N": str(int(now) + RELEASED_RETENTION_SECONDS)},
        }
        try:
            self._db.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
            return True
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            return False

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if _THROTTLED_REASONS.intersection(reasons):
                raise StoreUnavailable(f"DynamoDB cancelled a transaction for throttling ({', '.join(reasons)})",
                                       "TransactionCanceledException") from None
            raise _Cancelled(reasons) from None

    def _query(self, pk: str, sk_prefix: str, **extra: Any) -> Iterable[dict[str, Any]]:
        names = {"#pk": "pk", "#sk": "sk", **extra.pop("ExpressionAttributeNames", {})}
        values = {**_values(pk=pk, prefix=sk_prefix), **extra.pop("ExpressionAttributeValues", {})}
        return self._paged_query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
            **extra,
        )

    def _paged_query(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        for page in self._pages(TableName=self._table, **kwargs):
            yield from page.get("Items", [])

    def _pages(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        while True:
            page = self._db.query(**kwargs)
            yield page
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get_personas(self, persona_ids: list[str]) -> list[Persona]:
        found: list[Persona] = []
        for start in range(0, len(persona_ids), 100):  # BatchGetItem takes at most 100 keys
            request = {self._table: {"Keys": [_persona_key(pid) for pid in persona_ids[start : start + 100]], "ConsistentRead": True}}
            left = _until_processed(self._db.batch_get_item, request, "UnprocessedKeys", on_answer=lambda out: found.extend(
                _to_persona(item) for item in out.get("Responses", {}).get(self._table, [])))
            if left:
                raise StoreUnavailable(f"listing personas: DynamoDB left items unprocessed after {_BATCH_ATTEMPTS} attempts",
                                       "UnprocessedKeys")
        return found
