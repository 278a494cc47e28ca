"""Shared by every test folder.

- Trace every request (the production default samples a small share, see servicekit.tracing), so
  tests that assert exported spans see them. Subprocesses inherit it.
- moto's EC2 starts without its catalogue of public AMIs (some 15,000 images parsed from JSON, about
  a second each time a test starts a mock with EC2 in it, e.g. the strangler-fig handler's load
  balancer): no test here reads an AMI. Subprocesses (moto servers) inherit it.
- ``atomic_moto``: for tests that race requests against in-process moto.
- ``lose_answer``: in-process moto applies a DynamoDB call and then answers it 500, as DynamoDB may.
"""

import json
import os
import threading

import pytest
from moto.core.botocore_stubber import BotocoreStubber

os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def atomic_moto(monkeypatch):
    """Real DynamoDB applies each request atomically; moto's in-process backend does not lock, so serialize it."""
    lock = threading.Lock()
    original = BotocoreStubber.process_request

    def locked(self, request):
        with lock:
            return original(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", locked)


@pytest.fixture
def lose_answer(monkeypatch):
    """``lose_answer("PutItem", "EVENT#e1")``: the next DynamoDB call of that operation whose request body contains
    the text is applied by moto and then answered 500 InternalServerError, as DynamoDB may answer a write it
    applied; botocore's retry then sends the same request again. Returns the list of the operations answered so,
    to check that the test did lose one."""
    lost: list[str] = []

    def lose(operation: str, body_contains: str) -> list[str]:
        original = BotocoreStubber.process_request  # chained: each call loses one more answer
        answered = False

        def process(self, request):
            nonlocal answered
            response = original(self, request)
            target = request.headers.get("X-Amz-Target", b"")
            target = target.decode() if isinstance(target, bytes) else target
            body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
            if response is None or answered or not target.endswith(f".{operation}") or body_contains not in body:
                return response
            answered = True
            lost.append(operation)
            error = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}
            return 500, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(error)

        monkeypatch.setattr(BotocoreStubber, "process_request", process)
        return lost

    return lose
