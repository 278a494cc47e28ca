"""Poison messages: a message a worker can never process must end in its queue's DLQ after maxReceiveCount
receives (not loop forever, not block the queue), while the worker keeps handling good events meanwhile.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import harness

# maxReceiveCount receives, each after the workers' backoff (1 s, 2 s, ... here), and a margin.
DLQ_DEADLINE_SECONDS = sum(harness.WORKER_RETRY_BACKOFF_SECONDS * n for n in range(1, harness.MAX_RECEIVE_COUNT + 1)) + 10


def _dlq_bodies(stack: harness.Stack, dlq_url: str, seen: list[str]) -> list[str]:
    for message in stack.client("sqs").receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
        seen.append(message["Body"])
        stack.client("sqs").delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return seen


def test_poison_messages_reach_the_dlq_while_good_events_keep_flowing(stack: harness.Stack, api: harness.Api,
                                                                     user: tuple[str, str]) -> None:
    _, token = user
    sqs = stack.client("sqs")
    # Not JSON at all, on persona's queue; a well-formed event nobody handles, on vc-start's.
    garbage = "{this is not json"
    unknown_id = str(uuid.uuid4())
    unknown = json.dumps({"version": "0", "id": str(uuid.uuid4()), "detail-type": "SlotExploded", "source": stack.source("persona"),
                          "detail": {"event_id": unknown_id, "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": None,
                                     "traceparent": None, "data": {}}})
    garbage_id = sqs.send_message(QueueUrl=stack.env["persona"]["QUEUE_URL"], MessageBody=garbage)["MessageId"]
    sqs.send_message(QueueUrl=stack.env["vc-start"]["QUEUE_URL"], MessageBody=unknown)

    # Good traffic through both workers while the poison is being redelivered.
    persona = api.create_persona(token)
    session = api.started_session(token, persona["persona_id"])
    api.wait_session(token, session["session_id"], "ACTIVE")

    poisons: list[dict[str, Any]] = [
        {"worker": "persona-worker", "dlq": stack.resource("persona_dlq_url"), "body": garbage, "good": "SessionStarted",
         "failure": lambda r: garbage_id in r.get("message", "") and r.get("level") == "ERROR"},
        {"worker": "vc-start-worker", "dlq": stack.resource("vc_start_dlq_url"), "body": unknown, "good": "SlotConfirmed",
         "failure": lambda r: unknown_id in r.get("message", "") and r.get("level") == "ERROR"},
    ]
    for poison in poisons:
        worker, seen = poison["worker"], []
        stack.wait_for(f"the poison message of {worker} in its DLQ",
                       lambda p=poison, s=seen: p["body"] in _dlq_bodies(stack, p["dlq"], s),
                       timeout=DLQ_DEADLINE_SECONDS, logs=(worker,))
        failures = harness.logged(stack, worker, poison["failure"])
        assert len(failures) == harness.MAX_RECEIVE_COUNT, (
            f"{worker} should have failed the poison message once per receive ({harness.MAX_RECEIVE_COUNT}), "
            f"logged {len(failures)}" + stack.explain(worker))
        # The good event was handled between two receives of the poison: the queue was not blocked.
        correlation_id = _correlation_of(stack, session["session_id"], poison["good"])
        handled = harness.logged(stack, worker, lambda r, p=poison, c=correlation_id: r.get("message") == f"handled {p['good']}"
                                 and r.get("correlation_id") == c)
        assert len(handled) == 1, f"{worker} handled the session's {poison['good']} {len(handled)} times" + stack.explain(worker)
        handled = handled[0]
        assert failures[0]["timestamp"] <= handled["timestamp"] <= failures[-1]["timestamp"], (
            f"{worker} handled {poison['good']} at {handled['timestamp']}, not while the poison was being redelivered "
            f"({failures[0]['timestamp']} .. {failures[-1]['timestamp']})" + stack.explain(worker))
    # Still consuming after the poison left.
    assert api.persona(token, persona["persona_id"])["reserved"] == 1
    harness.assert_slots_match_sessions(stack, api, token, persona["persona_id"])


def _correlation_of(stack: harness.Stack, session_id: str, detail_type: str) -> str:
    """The correlation id the saga's event for the session carried (the request's, taken over by each hop)."""
    tap = stack.taps["persona" if detail_type.startswith("Session") else "vc-start"]
    (message,) = tap.find(detail_type, session_id)
    return message.detail["correlation_id"]
