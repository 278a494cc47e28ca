"""EventPublisher envelope on a (moto) EventBridge bus, and QueueConsumer's exactly-once handling."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from servicekit.correlation import correlation_scope, current_correlation_id
from servicekit import events
from servicekit.events import EventPublisher, EventPublishError, QueueConsumer
from servicekit.tracing import configure_telemetry, get_tracer

@pytest.fixture
def bus(aws_env, aws_client):
    """Bus `mf-events` with a rule routing source `mf.test` to queue `events-q` (visibility 0 so a
    message left on the queue is immediately receivable again)."""
    events, sqs = aws_client("events"), aws_client("sqs")
    events.create_event_bus(Name="mf-events")
    queue_url = sqs.create_queue(QueueName="events-q", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="to-q", EventBusName="mf-events", EventPattern=json.dumps({"source": ["mf.test"]}))
    events.put_targets(Rule="to-q", EventBusName="mf-events", Targets=[{"Id": "q", "Arn": arn}])
    return queue_url


@pytest.fixture
def settings(make_settings, bus):
    return make_settings(event_bus_name="mf-events", event_source="mf.test", queue_url=bus)


@pytest.fixture
def queued(aws_client):
    """Messages currently receivable on a queue (does not delete them)."""

    def receive(queue_url: str) -> list[dict]:
        return aws_client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])

    return receive


@pytest.fixture
def send(aws_client):
    def put(queue_url: str, body: dict | str) -> None:
        aws_client("sqs").send_message(QueueUrl=queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body))

    return put


async def _eventually(condition, timeout: float = 10.0) -> bool:
    """Whether ``condition()`` holds within ``timeout`` seconds (polled): moto's visibility runs on the wall clock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def _message(detail_type: str, data: dict, event_id: str | None = None, **detail_extra) -> dict:
    detail = {"event_id": event_id or str(uuid.uuid4()), "occurred_at": "2025-01-01T00:00:00Z", "correlation_id": "c-1", "data": data}
    detail.update(detail_extra)
    body = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": "mf.test", "detail": detail}
    return body


async def test_publish_puts_detail_envelope_on_the_bus(settings, bus, queued):
    exporter = InMemorySpanExporter()
    configure_telemetry(settings, span_exporter=exporter)
    with correlation_scope("corr-pub"), get_tracer("t").start_as_current_span("request"):
        event_id = await EventPublisher(settings).publish("SessionStarted", {"session_id": "s1"})

    (message,) = queued(bus)
    event = json.loads(message["Body"])
    assert event["detail-type"] == "SessionStarted" and event["source"] == "mf.test"
    detail = event["detail"]
    assert detail["event_id"] == event_id and uuid.UUID(event_id)
    assert detail["data"] == {"session_id": "s1"}
    assert detail["correlation_id"] == "corr-pub"
    assert detail["occurred_at"].endswith("Z")
    producer = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER)
    assert detail["traceparent"] == f"00-{producer.context.trace_id:032x}-{producer.context.span_id:016x}-01"


async def test_publish_failure_raises_event_publish_error(make_settings, aws_env):
    publisher = EventPublisher(make_settings(event_bus_name="no-such-bus", event_source="mf.test"))
    with pytest.raises(EventPublishError):
        await publisher.publish("SessionStarted", {"session_id": "s1"})


def _rejected(code: str) -> dict:
    """PutEvents' answer (HTTP 200) when EventBridge rejected the one entry with `code`; botocore does not retry it."""
    return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": f"{code} for this entry"}]}


@pytest.mark.parametrize("code", ["ThrottlingException", "InternalFailure"])
async def test_an_entry_rejected_with_a_retryable_code_is_put_again(settings, bus, queued, answer_instead, code):
    put_events = answer_instead("PutEvents", _rejected(code), status=200, times=1)
    event_id = await EventPublisher(settings).publish("SessionStarted", {"session_id": "s1"})
    assert put_events.sent == 2
    (message,) = queued(bus)
    assert json.loads(message["Body"])["detail"]["event_id"] == event_id  # the same event: consumers dedupe by its id


@pytest.mark.parametrize("code", ["AccessDeniedException", "MalformedDetail", "NotAuthorizedForSourceException"])
async def test_an_entry_rejected_for_good_fails_at_once(settings, bus, queued, answer_instead, code):
    put_events = answer_instead("PutEvents", _rejected(code), status=200)
    with pytest.raises(EventPublishError, match=code):
        await EventPublisher(settings).publish("SessionStarted", {"session_id": "s1"})
    assert put_events.sent == 1
    assert queued(bus) == []


async def test_an_entry_throttled_every_time_fails_after_the_retry_attempts(settings, bus, queued, answer_instead):
    put_events = answer_instead("PutEvents", _rejected("ThrottlingException"), status=200)
    with pytest.raises(EventPublishError, match="ThrottlingException"):
        await EventPublisher(settings).publish("SessionStarted", {"session_id": "s1"})
    assert put_events.sent == settings.retry_attempts == 3
    assert queued(bus) == []


async def test_consumer_handles_event_and_continues_trace(settings, bus, queued):
    exporter = InMemorySpanExporter()
    configure_telemetry(settings, span_exporter=exporter)
    seen = []

    async def on_started(data, envelope):
        seen.append((data, envelope["detail-type"], current_correlation_id()))

    with correlation_scope("corr-flow"), get_tracer("t").start_as_current_span("request") as origin:
        await EventPublisher(settings).publish("SessionStarted", {"session_id": "s1"})
    stats = await QueueConsumer(settings, {"SessionStarted": on_started}).poll_once()

    assert stats["handled"] == 1
    assert seen == [({"session_id": "s1"}, "SessionStarted", "corr-flow")]
    consumer_span = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER)
    assert consumer_span.context.trace_id == origin.get_span_context().trace_id
    assert queued(bus) == []  # deleted


async def test_same_event_twice_is_handled_once(settings, bus, queued, send):
    calls = []

    async def handler(data, envelope):
        calls.append(data)

    body = _message("SlotConfirmed", {"session_id": "s1"})
    send(bus, body)
    send(bus, body)  # at-least-once delivery: a duplicate
    consumer = QueueConsumer(settings, {"SlotConfirmed": handler})
    first = await consumer.poll_once()
    second = await consumer.poll_once()
    total = {k: first[k] + second[k] for k in first}
    assert calls == [{"session_id": "s1"}]
    assert total["handled"] == 1 and total["duplicate"] == 1
    assert queued(bus) == []


async def test_failing_handler_leaves_message_and_releases_claim(settings, bus, queued, send):
    attempts = []

    async def flaky(data, envelope):
        attempts.append(data)
        if len(attempts) == 1:
            raise RuntimeError("downstream hiccup")

    send(bus, _message("SlotReleased", {"session_id": "s2"}))
    consumer = QueueConsumer(settings.model_copy(update={"event_retry_backoff_seconds": 0}), {"SlotReleased": flaky})
    assert (await consumer.poll_once())["failed"] == 1
    # Redelivered (no backoff here) and, since the claim was released, handled this time.
    assert (await consumer.poll_once())["handled"] == 1
    assert len(attempts) == 2
    assert queued(bus) == []


async def test_a_failed_event_comes_back_after_a_backoff_that_grows_with_its_receives(settings, bus, queued, send):
    """Not after the queue's visibility timeout (150 s in the app): persona holds a session's slot 120 s,
    so the saga's retries must come sooner."""

    async def failing(data, envelope):
        raise RuntimeError("downstream hiccup")

    send(bus, _message("SlotReleased", {"session_id": "s5"}))
    consumer = QueueConsumer(settings.model_copy(update={"event_retry_backoff_seconds": 2, "event_retry_backoff_max_seconds": 2}),
                             {"SlotReleased": failing})
    assert (await consumer.poll_once())["failed"] == 1
    assert queued(bus) == []  # hidden for the backoff (the queue's own visibility timeout is 0 here)
    assert await _eventually(lambda: len(queued(bus)) == 1)
    received = {"Attributes": {"ApproximateReceiveCount": "4"}}
    assert consumer._retry_delay(received) == 2  # capped
    assert QueueConsumer(settings, {})._retry_delay(received) == 40  # default: 10 s per receive, at most 60 s
    assert QueueConsumer(settings, {})._retry_delay({"Attributes": {"ApproximateReceiveCount": "7"}}) == 60


@pytest.mark.parametrize("body", ["{not json", json.dumps({"detail-type": "SlotReleased"}), json.dumps(_message("Unknown", {}))])
async def test_unparseable_or_unknown_events_are_left_on_the_queue_for_the_backoff(settings, bus, body, queued, send):
    calls = []

    async def handler(data, envelope):
        calls.append(data)

    send(bus, body)
    consumer = QueueConsumer(settings.model_copy(update={"event_retry_backoff_seconds": 2}), {"SlotReleased": handler})
    stats = await consumer.poll_once()
    assert stats["failed"] == 1 and calls == []
    assert queued(bus) == []  # hidden for the backoff, like any failure
    assert await _eventually(lambda: len(queued(bus)) == 1)  # still there: SQS will move it to the DLQ after maxReceiveCount


async def test_event_claimed_by_another_consumer_is_left_alone(settings, bus, queued, send):
    calls = []

    async def handler(data, envelope):
        calls.append(data)

    body = _message("SlotConfirmed", {"session_id": "s3"})
    consumer = QueueConsumer(settings, {"SlotConfirmed": handler})
    claimed = await consumer._claim(body["detail"]["event_id"], "SlotConfirmed", "another-consumer")  # someone else is on it
    assert claimed == ("claimed", 0)
    send(bus, body)
    assert (await consumer.poll_once())["busy"] == 1
    # Left on the queue, but hidden until the other consumer's lease ends (it may have died holding it):
    # receives before then would only count towards maxReceiveCount.
    assert calls == [] and queued(bus) == []
    assert (await consumer._claim(body["detail"]["event_id"], "SlotConfirmed", "a-third"))[0] == "busy"
    _, busy_for = await consumer._claim(body["detail"]["event_id"], "SlotConfirmed", "a-third")
    assert events.CLAIM_LEASE_SECONDS - 2 <= busy_for <= events.CLAIM_LEASE_SECONDS + 1


async def test_a_claim_released_while_another_consumer_looks_is_retried_not_taken_as_done(settings, bus, queued, send, aws_client):
    """The holder's handler failed and released its claim between this consumer's put and its read: the
    event was never handled, so it must come back, not be deleted as a duplicate."""
    from servicekit import aws

    calls = []

    async def handler(data, envelope):
        calls.append(data)

    body = _message("SlotConfirmed", {"session_id": "s6"})
    consumer = QueueConsumer(settings, {"SlotConfirmed": handler})
    assert (await consumer._claim(body["detail"]["event_id"], "SlotConfirmed", "holder"))[0] == "claimed"
    ddb = aws.client("dynamodb", settings)
    read = ddb.get_item

    def read_after_the_holder_released(**kwargs):
        aws_client("dynamodb").delete_item(TableName=settings.table_name, Key=kwargs["Key"])
        return read(**kwargs)

    ddb.get_item = read_after_the_holder_released
    try:
        send(bus, body)
        assert (await consumer.poll_once())["busy"] == 1
    finally:
        ddb.get_item = read
    assert await _eventually(lambda: len(queued(bus)) == 1)  # back after a second
    assert (await consumer.poll_once())["handled"] == 1 and len(calls) == 1


async def test_a_claim_that_dynamodb_applied_but_answered_500_is_still_this_consumers(settings, bus, queued, send, lose_answer):
    """botocore retries the put, which then fails its condition on the claim its first attempt wrote: that claim is
    this consumer's own, not another consumer's (the event would wait out the 120 s lease unhandled)."""
    calls = []

    async def handler(data, envelope):
        calls.append(data)

    body = _message("SlotConfirmed", {"session_id": "s9"})
    send(bus, body)
    lost = lose_answer("PutItem", f"EVENT#{body['detail']['event_id']}")
    stats = await QueueConsumer(settings, {"SlotConfirmed": handler}).poll_once()
    assert lost.lost == 1
    assert stats["handled"] == 1 and calls == [{"session_id": "s9"}]
    assert queued(bus) == []


async def test_only_a_claims_holder_finishes_or_releases_it(settings, aws_client):
    """A consumer whose run outlived its lease must not overwrite or delete the claim of the one that took over."""
    consumer = QueueConsumer(settings, {})
    key = {"pk": {"S": "EVENT#e7"}, "sk": {"S": "EVENT"}}
    assert (await consumer._claim("e7", "SlotConfirmed", "new-holder"))[0] == "claimed"
    await consumer._finish("e7", "stale-holder")
    await consumer._release("e7", "stale-holder")
    item = aws_client("dynamodb").get_item(TableName=settings.table_name, Key=key)["Item"]
    assert (item["status"]["S"], item["owner"]["S"]) == ("IN_PROGRESS", "new-holder")
    # A stale finish of a claim that is gone creates nothing (an item without expires_at would never expire).
    await consumer._finish("e8", "stale-holder")
    assert "Item" not in aws_client("dynamodb").get_item(TableName=settings.table_name, Key={**key, "pk": {"S": "EVENT#e8"}})
    await consumer._finish("e7", "new-holder")
    assert aws_client("dynamodb").get_item(TableName=settings.table_name, Key=key)["Item"]["status"]["S"] == "DONE"


async def test_a_handler_is_cut_off_before_its_claim_lease_ends_and_keeps_the_claim_until_then(
        settings, bus, queued, send, monkeypatch, aws_client):
    """What the handler started in a thread may still run: the event comes back only when the lease ends."""
    monkeypatch.setattr(events, "HANDLER_TIMEOUT_SECONDS", 0.2)
    cancelled = []

    async def slow(data, envelope):
        try:
            await asyncio.sleep(5)
        finally:
            cancelled.append(True)

    body = _message("SlotConfirmed", {"session_id": "s9"})
    send(bus, body)
    consumer = QueueConsumer(settings.model_copy(update={"event_retry_backoff_seconds": 0}), {"SlotConfirmed": slow})
    assert (await asyncio.wait_for(consumer.poll_once(), 2))["failed"] == 1
    assert cancelled == [True] and queued(bus) == []  # hidden until the lease ends, not for the (zero) backoff
    claim = aws_client("dynamodb").get_item(TableName=settings.table_name,
                                            Key={"pk": {"S": f"EVENT#{body['detail']['event_id']}"}, "sk": {"S": "EVENT"}})["Item"]
    assert claim["status"]["S"] == "IN_PROGRESS"  # kept


async def test_a_handlers_own_timeout_is_an_ordinary_failure(settings, bus, queued, send, aws_client):
    """Only the consumer's cut-off keeps the claim for its lease; a TimeoutError the handler raises itself releases it."""
    async def gives_up(data, envelope):
        raise TimeoutError("the downstream call timed out")

    body = _message("SlotConfirmed", {"session_id": "s10"})
    send(bus, body)
    consumer = QueueConsumer(settings.model_copy(update={"event_retry_backoff_seconds": 0}), {"SlotConfirmed": gives_up})
    assert (await consumer.poll_once())["failed"] == 1
    assert len(queued(bus)) == 1  # back after the (zero) backoff, not the lease
    key = {"pk": {"S": f"EVENT#{body['detail']['event_id']}"}, "sk": {"S": "EVENT"}}
    assert "Item" not in aws_client("dynamodb").get_item(TableName=settings.table_name, Key=key)  # claim released


async def test_a_stopping_consumer_returns_the_rest_of_its_batch_at_once(settings, bus, queued, send, aws_client):
    aws_client("sqs").set_queue_attributes(QueueUrl=bus, Attributes={"VisibilityTimeout": "60"})
    stop = asyncio.Event()
    handled = []

    async def handler(data, envelope):
        handled.append(data)
        stop.set()  # SIGTERM arrives while the first message is handled

    for n in range(3):
        send(bus, _message("SlotConfirmed", {"n": n}))
    consumer = QueueConsumer(settings, {"SlotConfirmed": handler}, batch_size=3)
    messages = await consumer._receive()
    assert len(messages) == 3
    stats = await consumer.process(messages, stop)
    assert (stats["handled"], stats["returned"]) == (1, 2) and len(handled) == 1
    assert len(queued(bus)) == 2  # visible again now (not in 60 s), for a consumer that is not stopping


async def test_a_stopping_consumer_cuts_the_handler_in_hand_off_after_the_shutdown_timeout(settings, bus, queued, send, aws_client):
    """ECS SIGKILLs a worker 30 s after SIGTERM, sooner than HANDLER_TIMEOUT_SECONDS: once stopping, the handler in
    hand gets SHUTDOWN_TIMEOUT_SECONDS, then the consumer stops by itself; the event comes back when its claim's lease
    ends (as after any cut-off), so a redelivery never overlaps what the handler started."""
    stop, started, cancelled = asyncio.Event(), asyncio.Event(), []

    async def slow(data, envelope):
        started.set()
        try:
            await asyncio.sleep(30)  # longer than the shutdown timeout below, shorter than HANDLER_TIMEOUT_SECONDS
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    body = _message("SlotConfirmed", {"session_id": "s11"})
    send(bus, body)
    consumer = QueueConsumer(settings.model_copy(update={"shutdown_timeout_seconds": 0.5}), {"SlotConfirmed": slow})
    run = asyncio.ensure_future(consumer.run_until(stop))
    await asyncio.wait_for(started.wait(), 5)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    stop.set()  # SIGTERM while the handler runs
    await asyncio.wait_for(run, 5)
    assert 0.5 <= loop.time() - stopped_at < 3 and cancelled == [True]
    assert queued(bus) == []  # hidden until the lease ends (this queue's visibility timeout is 0)
    claim = aws_client("dynamodb").get_item(TableName=settings.table_name,
                                            Key={"pk": {"S": f"EVENT#{body['detail']['event_id']}"}, "sk": {"S": "EVENT"}})["Item"]
    assert claim["status"]["S"] == "IN_PROGRESS"  # kept


async def test_run_until_stops_when_event_is_set(settings, bus, send):
    import asyncio

    handled = asyncio.Event()
    stop = asyncio.Event()

    async def handler(data, envelope):
        handled.set()
        stop.set()

    send(bus, _message("SlotConfirmed", {"session_id": "s4"}))
    consumer = QueueConsumer(settings, {"SlotConfirmed": handler})
    await asyncio.wait_for(consumer.run_until(stop), 5)
    assert handled.is_set()
