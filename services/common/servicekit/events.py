"""Domain events on EventBridge (publish) and their SQS subscriptions (consume, exactly-once handling).

Every event's `detail` is an envelope:
  {"event_id": uuid4, "occurred_at": ISO 8601, "correlation_id", "traceparent", "data": {...}}
so consumers can dedupe, continue the trace and keep the correlation id.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import aws
from .correlation import correlation_scope, current_correlation_id
from .dynamo import epoch_in, held_by, is_conditional_failure
from .logging import get_logger
from .resilience import retrying
from .settings import ServiceSettings
from .tracing import get_tracer

log = get_logger(__name__)
tracer = get_tracer(__name__)

PROCESSED_TTL_SECONDS = 7 * 24 * 3600
# A claim older than this belongs to a consumer that died mid-handling; another may take it over.
CLAIM_LEASE_SECONDS = 120
# A handler is cut off well within the lease. Its claim is then kept until the lease ends: work it
# started in a thread (a boto3 call) or elsewhere (a gRPC call persona is applying) may still be running, and a
# redelivery must not overlap it. A stopping worker cuts the handler in hand off sooner: SHUTDOWN_TIMEOUT_SECONDS
# after the stop, as ECS SIGKILLs 30 s after SIGTERM (stacks/config.py STOP_TIMEOUT_SECONDS, checked against it).
HANDLER_TIMEOUT_SECONDS = 60
# Messages per receive. They are handled one after another, and the last must be taken before the app's
# visibility timeout (150 s, stacks/services_stack.py) returns it to the queue: 2 x 60 s fits; 10 would not.
BATCH_SIZE = 2
if HANDLER_TIMEOUT_SECONDS >= CLAIM_LEASE_SECONDS:
    raise ValueError("HANDLER_TIMEOUT_SECONDS must be shorter than CLAIM_LEASE_SECONDS")

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


# PutEvents answers 200 with the entry rejected (FailedEntryCount), which botocore does not retry; of the entry's error
# codes, these are the retryable ones (EventBridge API reference, PutEventsResultEntry). The others (access denied, a
# malformed entry, ...) fail the same way every time.
RETRYABLE_ENTRY_ERRORS = frozenset({"InternalFailure", "ThrottlingException"})


class EventPublishError(Exception):
    """PutEvents failed (call error or a rejected entry)."""


class _RetryableRejection(EventPublishError):
    """EventBridge rejected the entry with a RETRYABLE_ENTRY_ERRORS code."""


class EventPublisher:
    def __init__(self, settings: ServiceSettings, *, bus_name: str | None = None, source: str | None = None) -> None:
        self.settings = settings
        self.bus_name = bus_name or settings.event_bus_name
        self.source = source or settings.event_source
        if not self.bus_name or not self.source:
            raise ValueError("EVENT_BUS_NAME and EVENT_SOURCE must be set to publish events")

    def envelope(self, data: Mapping[str, Any]) -> dict[str, Any]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {
            "event_id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "correlation_id": current_correlation_id(),
            "traceparent": carrier.get("traceparent"),
            "data": dict(data),
        }

    async def publish(self, detail_type: str, data: Mapping[str, Any]) -> str:
        """Put one event on the bus; returns its event_id. Raises EventPublishError."""
        with tracer.start_as_current_span(f"publish {detail_type}", kind=SpanKind.PRODUCER) as span:
            detail = self.envelope(data)  # inside the span: consumers continue from it
            span.set_attribute("messaging.system", "aws_eventbridge")
            span.set_attribute("messaging.destination.name", self.bus_name)
            span.set_attribute("messaging.message.id", detail["event_id"])
            entry = {"Source": self.source, "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": self.bus_name}
            try:
                # A rejection that may pass puts the same entry again (its event_id, by which consumers dedupe),
                # with the backoff of calls to other services (RETRY_ATTEMPTS within CALL_BUDGET_SECONDS).
                async for attempt in retrying(self.settings, lambda exc: isinstance(exc, _RetryableRejection), f"PutEvents {detail_type}"):
                    with attempt:
                        await self._put(detail_type, entry)
            except EventPublishError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
        log.info("published %s", detail_type, extra={"event_id": detail["event_id"], "detail_type": detail_type})
        return detail["event_id"]

    async def _put(self, detail_type: str, entry: dict[str, Any]) -> None:
        try:
            result = await aws.run_sync(aws.client("events", self.settings).put_events, Entries=[entry])
        except Exception as exc:  # botocore errors of every kind (botocore retried them already) mean the same to callers
            raise EventPublishError(f"publishing {detail_type} failed: {type(exc).__name__}: {exc}") from exc
        if result.get("FailedEntryCount", 0):
            failed = next((e for e in result.get("Entries", []) if e.get("ErrorCode")), {})
            code = failed.get("ErrorCode", "?")
            error = _RetryableRejection if code in RETRYABLE_ENTRY_ERRORS else EventPublishError
            raise error(f"publishing {detail_type} rejected: {code}: {failed.get('ErrorMessage', '')}")


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future:
    """Run a blocking call in a daemon thread: an abandoned 20 s long poll must not delay process exit
    (executor threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # loop already closed: nobody is waiting any more
            pass

    threading.Thread(target=target, name="sqs-receive", daemon=True).start()
    return future


class QueueConsumer:
    """Long-polls QUEUE_URL and hands each event to `handlers[detail_type](data, envelope)` at most once.

    `envelope` is the whole EventBridge event (`detail-type`, `source`, `detail` with event_id etc.).
    Success or duplicate -> message deleted; any failure (a handler that raised, a malformed message, one
    without a handler) -> message visible again after a backoff (and, after maxReceiveCount receives, moved
    to the DLQ by SQS); a handler cut off at HANDLER_TIMEOUT_SECONDS (or SHUTDOWN_TIMEOUT_SECONDS after the
    consumer is told to stop), or an event another consumer holds -> back when the claim's lease ends.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        handlers: Mapping[str, Handler],
        *,
        table_name: str | None = None,
        queue_url: str | None = None,
        wait_seconds: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.handlers = dict(handlers)
        self.table_name = table_name or settings.table_name
        self.queue_url = queue_url or settings.queue_url
        if not self.queue_url or not self.table_name:
            raise ValueError("QUEUE_URL and TABLE_NAME must be set to consume events")
        self.wait_seconds = settings.queue_wait_seconds if wait_seconds is None else wait_seconds
        self.batch_size = batch_size

    # --- dedupe markers ------------------------------------------------------------------------

    def _marker_key(self, event_id: str) -> dict[str, str]:
        return {"pk": f"EVENT#{event_id}", "sk": "EVENT"}

    async def _claim(self, event_id: str, detail_type: str, owner: str) -> tuple[str, int]:
        """('claimed' | 'done' (already handled) | 'busy' (another consumer is handling it), and for busy
        the seconds until that consumer's lease ends)."""
        ddb = aws.client("dynamodb", self.settings)
        now = int(time.time())
        try:
            await aws.run_sync(
                ddb.put_item,
                TableName=self.table_name,
                Item={
                    "pk": {"S": f"EVENT#{event_id}"},
                    "sk": {"S": "EVENT"},
                    "status": {"S": "IN_PROGRESS"},
                    "detail_type": {"S": detail_type},
                    "lease_until": {"N": str(now + CLAIM_LEASE_SECONDS)},
                    # Only this claim's holder may finish or release it: a holder that outlived its lease
                    # must not overwrite or delete the claim of the consumer that took over.
                    "owner": {"S": owner},
                    "expires_at": {"N": str(epoch_in(PROCESSED_TTL_SECONDS))},
                },
                ConditionExpression="attribute_not_exists(pk) OR (#s = :in_progress AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":in_progress": {"S": "IN_PROGRESS"}, ":now": {"N": str(now)}},
            )
            return "claimed", 0
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
        got = await aws.run_sync(ddb.get_item, TableName=self.table_name, Key=_av(self._marker_key(event_id)), ConsistentRead=True)
        item = got.get("Item")
        if item is None:  # released between our put and our read: nobody handled it, so try again soon
            return "busy", 1
        status = item.get("status", {}).get("S")
        if status == "IN_PROGRESS":
            if item.get("owner", {}).get("S") == owner:
                # Our own claim: botocore retried the put (after a 5xx or a timeout) that DynamoDB had applied.
                return "claimed", 0
            return "busy", max(1, int(item.get("lease_until", {}).get("N", now)) - now + 1)
        # No status attribute: a marker written by a simpler producer of markers counts as done.
        return "done", 0

    async def _finish(self, event_id: str, owner: str) -> None:
        ddb = aws.client("dynamodb", self.settings)
        try:
            await aws.run_sync(
                ddb.update_item,
                TableName=self.table_name,
                Key=_av(self._marker_key(event_id)),
                UpdateExpression="SET #s = :done, processed_at = :now REMOVE lease_until",
                **held_by(owner, names={"#s": "status"}, values={":done": {"S": "DONE"}, ":now": {"N": str(int(time.time()))}}),
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            # Another consumer took the claim over (this run outlived its lease): its run records the result.
            log.warning("claim on event %s was taken over before this consumer finished", event_id)

    async def _release(self, event_id: str, owner: str) -> None:
        ddb = aws.client("dynamodb", self.settings)
        try:
            await aws.run_sync(ddb.delete_item, TableName=self.table_name, Key=_av(self._marker_key(event_id)), **held_by(owner))
        except Exception as exc:  # the lease expiry is the backstop
            if not is_conditional_failure(exc):
                log.warning("could not release claim on event %s", event_id, exc_info=True)

    # --- messages --------------------------------------------------------------------------------

    async def _delete(self, receipt_handle: str) -> None:
        await aws.run_sync(aws.client("sqs", self.settings).delete_message, QueueUrl=self.queue_url, ReceiptHandle=receipt_handle)

    async def _visible_in(self, message: Mapping[str, Any], seconds: int) -> None:
        """Make the message visible again after ``seconds`` instead of the queue's visibility timeout."""
        try:
            await aws.run_sync(aws.client("sqs", self.settings).change_message_visibility, QueueUrl=self.queue_url,
                               ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(seconds))
        except Exception:  # the queue's visibility timeout is the backstop
            log.warning("could not change the visibility of message %s", message.get("MessageId"), exc_info=True)

    def _retry_delay(self, message: Mapping[str, Any]) -> int:
        """Backoff before a failed message's next try, growing with each receive: the first retries land while
        persona still holds the slot (120 s), and with the app's 8 receives a failing event is retried for some
        4.5 minutes before its queue dead-letters it (a compensation must outlast a short outage)."""
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        return min(self.settings.event_retry_backoff_max_seconds, self.settings.event_retry_backoff_seconds * receives)

    async def handle_message(self, message: Mapping[str, Any], stop_event: asyncio.Event | None = None) -> str:
        """Process one SQS message; returns 'handled', 'duplicate', 'busy' or 'failed'. Once ``stop_event`` is set,
        the handler has SHUTDOWN_TIMEOUT_SECONDS left at most."""
        try:
            envelope = json.loads(message["Body"])
            detail_type = envelope["detail-type"]
            detail = envelope["detail"]
            if isinstance(detail, str):  # tolerate producers that double-encode
                detail = envelope["detail"] = json.loads(detail)
            event_id = detail["event_id"]
            data = detail.get("data", {})
        except (KeyError, TypeError, ValueError) as exc:
            log.error("unparseable message %s: %s: %s; retried, then dead-lettered", message.get("MessageId"), type(exc).__name__, exc)
            await self._visible_in(message, self._retry_delay(message))
            return "failed"
        handler = self.handlers.get(detail_type)
        if handler is None:
            log.error("no handler for detail-type %s (event %s); retried, then dead-lettered", detail_type, event_id)
            await self._visible_in(message, self._retry_delay(message))
            return "failed"

        parent = propagate.extract({"traceparent": detail["traceparent"]}) if detail.get("traceparent") else None
        with (
            correlation_scope(detail.get("correlation_id")),
            tracer.start_as_current_span(f"process {detail_type}", context=parent, kind=SpanKind.CONSUMER) as span,
        ):
            span.set_attribute("messaging.system", "aws_sqs")
            span.set_attribute("messaging.message.id", event_id)
            extra = {"event_id": event_id, "detail_type": detail_type}
            owner = uuid.uuid4().hex
            try:
                claim, busy_for = await self._claim(event_id, detail_type, owner)
            except Exception as exc:
                log.error("could not claim event %s: %s", event_id, exc, extra=extra)
                await self._visible_in(message, self._retry_delay(message))
                return "failed"
            if claim == "done":
                log.info("duplicate %s ignored", detail_type, extra=extra)
                await self._delete(message["ReceiptHandle"])
                return "duplicate"
            if claim == "busy":
                # Back when the holder's lease ends (it may have died), not at the queue's visibility timeout:
                # each receive counts towards maxReceiveCount, and a few early ones would dead-letter the
                # message before anyone could take the claim over.
                log.info("%s is being handled by another consumer; back in %d s", detail_type, busy_for, extra=extra)
                await self._visible_in(message, busy_for)
                return "busy"
            claimed_at = time.monotonic()
            cut_off = asyncio.timeout(HANDLER_TIMEOUT_SECONDS)
            try:
                async with cut_off:
                    shorten = self._cut_short_on_stop(cut_off, stop_event) if stop_event is not None else None
                    try:
                        result = handler(data, envelope)
                        if inspect.isawaitable(result):
                            await result
                    finally:
                        if shorten is not None:
                            shorten.cancel()
            except TimeoutError as exc:
                if not cut_off.expired():  # the handler's own timeout: an ordinary failure
                    return await self._failed(message, event_id, owner, detail_type, exc, span, extra)
                span.record_exception(exc)
                if stop_event is not None and stop_event.is_set():
                    span.set_status(Status(StatusCode.ERROR, "cut off: the worker is stopping"))
                    log.warning("handler for %s cut off after %.1f s: the worker is stopping (SHUTDOWN_TIMEOUT_SECONDS=%g); "
                                "the claim stays until its lease ends", detail_type, time.monotonic() - claimed_at,
                                self.settings.shutdown_timeout_seconds, extra=extra)
                else:
                    span.set_status(Status(StatusCode.ERROR, f"timed out after {HANDLER_TIMEOUT_SECONDS} s"))
                    log.error("handler for %s timed out after %d s; the claim stays until its lease ends", detail_type,
                              HANDLER_TIMEOUT_SECONDS, extra=extra)
                await self._visible_in(message, max(1, CLAIM_LEASE_SECONDS - int(time.monotonic() - claimed_at) + 1))
                return "failed"
            except Exception as exc:
                return await self._failed(message, event_id, owner, detail_type, exc, span, extra)
            await self._finish(event_id, owner)
            await self._delete(message["ReceiptHandle"])
            log.info("handled %s", detail_type, extra=extra)
            return "handled"

    def _cut_short_on_stop(self, cut_off: asyncio.Timeout, stop_event: asyncio.Event) -> asyncio.Future[None]:
        """Once ``stop_event`` is set, move ``cut_off`` to SHUTDOWN_TIMEOUT_SECONDS from then if that is sooner.
        HANDLER_TIMEOUT_SECONDS is longer than ECS's stop timeout: a handler left to run would be SIGKILLed, the rest
        of its batch kept hidden for the queue's visibility timeout, its logs and spans lost. The caller cancels the
        returned task when the handler ends."""
        async def shorten() -> None:
            await stop_event.wait()
            deadline = asyncio.get_running_loop().time() + self.settings.shutdown_timeout_seconds
            when = cut_off.when()
            if when is None or deadline < when:
                cut_off.reschedule(deadline)

        return asyncio.ensure_future(shorten())

    async def _failed(self, message: Mapping[str, Any], event_id: str, owner: str, detail_type: str, exc: Exception,
                      span: Any, extra: dict[str, Any]) -> str:
        """A handler that raised: release the claim, and let the message come back after the backoff."""
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        log.error("handler for %s failed; message left for redelivery", detail_type, exc_info=exc, extra=extra)
        await self._release(event_id, owner)
        await self._visible_in(message, self._retry_delay(message))
        return "failed"

    async def _receive(self) -> list[dict[str, Any]]:
        sqs = aws.client("sqs", self.settings)

        def receive() -> dict[str, Any]:
            # Empty polls every 20 s would be a root trace each: not worth tracing.
            with suppress_instrumentation():
                return sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )

        response = await _in_daemon_thread(receive)
        return response.get("Messages", [])

    async def process(self, messages: list[Mapping[str, Any]], stop_event: asyncio.Event | None = None) -> dict[str, int]:
        """Handle a batch in turn. Once ``stop_event`` is set, the message in hand has SHUTDOWN_TIMEOUT_SECONDS left
        at most and the rest of the batch goes back to the queue at once (a stopping worker has the stop timeout,
        not the batch's handlers' time)."""
        stats = {"received": len(messages), "handled": 0, "duplicate": 0, "busy": 0, "failed": 0, "returned": 0}
        for message in messages:
            if stop_event is not None and stop_event.is_set():
                await self._visible_in(message, 0)
                stats["returned"] += 1
                continue
            try:
                outcome = await self.handle_message(message, stop_event)
            except Exception as exc:  # e.g. DynamoDB/SQS hiccup after handling: SQS redelivers, markers dedupe
                log.error("processing message %s failed: %s: %s", message.get("MessageId"), type(exc).__name__, exc, exc_info=exc)
                outcome = "failed"
            stats[outcome] += 1
        return stats

    async def poll_once(self) -> dict[str, int]:
        """One receive (long poll) and the whole batch handled."""
        return await self.process(await self._receive())

    async def run_until(self, stop_event: asyncio.Event) -> None:
        """Poll until `stop_event` is set: the message in hand is finished (or cut off SHUTDOWN_TIMEOUT_SECONDS after
        the stop), the rest of its batch handed back."""
        log.info("consuming %s", self.queue_url)
        while not stop_event.is_set():
            receive = asyncio.ensure_future(self._receive())
            stopper = asyncio.ensure_future(stop_event.wait())
            done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                # Stopping mid long-poll: whatever that poll returns becomes visible again later.
                receive.cancel()
                break
            stopper.cancel()
            try:
                messages = receive.result()
            except Exception as exc:
                log.error("receive failed: %s: %s", type(exc).__name__, exc)
                await _sleep_or_stop(stop_event, 1.0)
                continue
            if messages:
                await self.process(messages, stop_event)
        log.info("consumer stopped")


async def _sleep_or_stop(stop_event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop_event.wait(), seconds)
    except TimeoutError:
        pass


def _av(key: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in key.items()}
