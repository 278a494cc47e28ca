"""Idempotency keys for POST handlers: the first response is stored and replayed for retries.

Item: {pk: "IDEMPOTENCY#<principal>#<key>", sk: "IDEMPOTENCY", request_hash, status IN_PROGRESS|COMPLETED,
owner (the request that holds it), lease_until, run_id, status_code, body (JSON text), expires_at (24 h TTL)}.

`run_id` names the work of one use of a key: it is handed to the handler, and a retry that takes over an
unfinished run gets the same one (its holder died, could not store its answer, or released the key with a
5xx, 401, 403 or 429), so a handler that names what it creates after it (vc-start's session id) finds it
and resumes instead of creating it twice. The key stays bound to its request body for the record's 24 h:
another body gets 422 even after a release. A key used again after its record expired starts a new run.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from . import aws
from .dynamo import held_by, is_conditional_failure
from .errors import ApiError
from .logging import get_logger
from .settings import ServiceSettings

log = get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL_SECONDS = 24 * 3600
# An IN_PROGRESS record older than this belongs to a request that died; the key may be reused.
IN_PROGRESS_LEASE_SECONDS = 60
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Answers about the caller's credentials or rate, not about the request: a retry (e.g. with a fresh
# token) must run again rather than replay them for 24 h.
_NOT_REPLAYED = frozenset({401, 403, 429})


def validate_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ -")
    return key


def idempotency_key(key: Annotated[str | None, Header(
    alias=HEADER, description="Makes a retried POST safe; a malformed key gets 400 invalid_idempotency_key",
    # Documented, not enforced by FastAPI: its own check would answer 422; ours answers 400.
    json_schema_extra={"pattern": _KEY.pattern, "minLength": 1, "maxLength": 128},
)] = None) -> str | None:
    """FastAPI dependency: the validated Idempotency-Key header (None when absent)."""
    return None if key is None else validate_key(key)


def request_hash(body: Any) -> str:
    canonical = json.dumps(jsonable_encoder(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any


@dataclass(frozen=True)
class Claimed:
    """The key is this request's to run: a new run, or (``taken_over``) the unfinished run of an earlier request,
    whose ``run_id`` it keeps."""

    run_id: str
    taken_over: bool = False


def _in_progress(retry_after_seconds: int) -> ApiError:
    return ApiError(409, "request_in_progress", "a request with this Idempotency-Key is in progress; retry shortly",
                    headers={"Retry-After": str(max(1, retry_after_seconds))})


class IdempotencyStore:
    def __init__(self, settings: ServiceSettings, table_name: str | None = None) -> None:
        self.settings = settings
        self.table_name = table_name or settings.table_name
        if not self.table_name:
            raise ValueError("TABLE_NAME must be set for idempotency records")

    @staticmethod
    def _key(principal: str, key: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"IDEMPOTENCY#{principal}#{key}"}, "sk": {"S": "IDEMPOTENCY"}}

    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    async def begin(self, principal: str, key: str, req_hash: str, owner: str) -> Claimed | StoredResponse:
        """Claim the key for ``owner``, or return the stored response to replay.

        Raises ApiError 422 `idempotency_key_reused` (different body) or 409 `request_in_progress` (with
        Retry-After: when the holder's lease ends).
        """
        validate_key(key)
        now = int(time.time())
        run_id = str(uuid.uuid4())
        item = {
            **self._key(principal, key),
            "request_hash": {"S": req_hash},
            "status": {"S": "IN_PROGRESS"},
            # Only the holder completes or releases the record: a request that outlived its lease must not
            # overwrite or delete the record of the retry that took the key over.
            "owner": {"S": owner},
            "lease_until": {"N": str(now + IN_PROGRESS_LEASE_SECONDS)},
            "run_id": {"S": run_id},
            "expires_at": {"N": str(now + TTL_SECONDS)},
        }
        try:
            await aws.run_sync(
                self._ddb().put_item,
                TableName=self.table_name,
                Item=item,
                # Expired records may linger until DynamoDB's TTL sweeper removes them.
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
            return Claimed(run_id)
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
        got = await aws.run_sync(self._ddb().get_item, TableName=self.table_name, Key=self._key(principal, key), ConsistentRead=True)
        existing = got.get("Item")
        if existing is None:  # expired and removed between our put and get: let the client retry
            raise _in_progress(1)
        if existing.get("owner") == item["owner"] and existing.get("run_id") == item["run_id"]:
            # Our own record: botocore retried the put (after a 5xx or a timeout) that DynamoDB had applied.
            return Claimed(run_id)
        if existing["request_hash"]["S"] != req_hash:
            raise ApiError(422, "idempotency_key_reused", "Idempotency-Key was already used with a different request body")
        if existing["status"]["S"] == "COMPLETED":
            return StoredResponse(int(existing["status_code"]["N"]), json.loads(existing["body"]["S"]))
        lease_until = int(existing["lease_until"]["N"])
        if lease_until >= now:
            raise _in_progress(lease_until - now + 1)
        return await self._take_over(principal, key, existing, owner, now)

    async def _take_over(self, principal: str, key: str, existing: dict[str, Any], owner: str, now: int) -> Claimed:
        """Claim a run whose holder's lease ended, keeping its run id (a record from before run ids gets one)."""
        try:
            response = await aws.run_sync(
                self._ddb().update_item,
                TableName=self.table_name,
                Key=self._key(principal, key),
                # if_not_exists: a record from before run ids (remove it once such records have expired, after 24 h).
                UpdateExpression="SET #o = :me, lease_until = :lease, run_id = if_not_exists(run_id, :fresh)",
                # Or already ours: botocore retried this update (after a 5xx or a timeout) that DynamoDB had applied.
                ConditionExpression="#s = :ip AND (#o = :me OR (#o = :previous AND lease_until < :now))",
                ExpressionAttributeNames={"#o": "owner", "#s": "status"},
                ExpressionAttributeValues={
                    ":me": {"S": owner}, ":previous": existing["owner"], ":ip": {"S": "IN_PROGRESS"},
                    ":lease": {"N": str(now + IN_PROGRESS_LEASE_SECONDS)}, ":now": {"N": str(now)},
                    ":fresh": {"S": str(uuid.uuid4())},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if is_conditional_failure(exc):  # another retry took it over, or the holder finished: ask again to see which
                raise _in_progress(1) from None
            raise
        log.warning("idempotency key taken over from an unfinished run", extra={"run_id": response["Attributes"]["run_id"]["S"]})
        return Claimed(response["Attributes"]["run_id"]["S"], taken_over=True)

    async def complete(self, principal: str, key: str, owner: str, status_code: int, body: Any) -> None:
        """Store the response; raises a conditional-check failure when ``owner`` no longer holds the key."""
        await aws.run_sync(
            self._ddb().update_item,
            TableName=self.table_name,
            Key=self._key(principal, key),
            UpdateExpression="SET #s = :done, status_code = :code, body = :body REMOVE lease_until",
            **held_by(owner, names={"#s": "status"}, values={
                ":done": {"S": "COMPLETED"},
                ":code": {"N": str(status_code)},
                ":body": {"S": json.dumps(jsonable_encoder(body), separators=(",", ":"))},
            }),
        )

    async def release(self, principal: str, key: str, owner: str) -> None:
        """End ``owner``'s lease now, so the client's retry takes the run over at once (with its run id) and
        runs it again (only while ``owner`` holds the key)."""
        try:
            await aws.run_sync(self._ddb().update_item, TableName=self.table_name, Key=self._key(principal, key),
                               UpdateExpression="SET lease_until = :ended", **held_by(owner, values={":ended": {"N": "0"}}))
        except Exception as exc:  # the in-progress lease is the backstop
            if not is_conditional_failure(exc):
                log.warning("could not release idempotency key", exc_info=True)


async def run_idempotent(
    store: IdempotencyStore,
    *,
    principal: str,
    key: str | None,
    request_body: Any,
    handler: Callable[[Claimed], Awaitable[tuple[int, Any]]],
) -> Response:
    """Run `handler(run)` (-> (status_code, body)) at most once per (principal, key, body); ``run`` says the run's id
    and whether an earlier request's unfinished run was taken over.

    No key: just runs it, as a new run. Replays carry `Idempotent-Replayed: true`. A 4xx ApiError from
    the handler is stored and replayed like a success (except 401/403/429); a 5xx or unexpected error
    releases the key so a retry runs again, with the same run id.
    """
    if key is None:
        status_code, body = await handler(Claimed(str(uuid.uuid4())))
        return JSONResponse(jsonable_encoder(body), status_code=status_code)
    owner = uuid.uuid4().hex
    claim = await store.begin(principal, key, request_hash(request_body), owner)
    if isinstance(claim, StoredResponse):
        return JSONResponse(claim.body, status_code=claim.status_code, headers={REPLAYED_HEADER: "true"})
    try:
        status_code, body = await handler(claim)
    except ApiError as exc:
        if exc.status >= 500 or exc.status in _NOT_REPLAYED:
            await store.release(principal, key, owner)
            raise
        await _complete(store, principal, key, owner, exc.status, exc.body())
        raise
    except BaseException:
        await store.release(principal, key, owner)
        raise
    await _complete(store, principal, key, owner, status_code, body)
    return JSONResponse(jsonable_encoder(body), status_code=status_code)


async def _complete(store: IdempotencyStore, principal: str, key: str, owner: str, status_code: int, body: Any) -> None:
    # The work is done: failing to record it must not turn the answer into a 500. Retries get 409
    # request_in_progress until the lease ends, and then take the run over with its run id: a handler that
    # names its work after it (vc-start's session) answers what the first run made.
    try:
        await store.complete(principal, key, owner, status_code, body)
    except Exception as exc:
        if is_conditional_failure(exc):
            log.warning("idempotency key was taken over by a retry before this request finished")
        else:
            log.warning("could not record the response of an idempotent request", exc_info=True)
