"""Shared by every test folder.

- Trace every request (the production default samples a small share, see servicekit.tracing), so
  tests that assert exported spans see them. Subprocesses inherit it.
- moto's EC2 starts without its catalogue of public AMIs (some 15,000 images parsed from JSON, about
  a second each time a test starts a mock with EC2 in it, e.g. the strangler-fig handler's load
  balancer): no test here reads an AMI. Subprocesses (moto servers) inherit it.
- ``atomic_moto``: for tests that race requests against in-process moto.
"""

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
