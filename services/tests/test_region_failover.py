"""The region-failover function (constructs/operations/failover/handler.py) with boto3 and the AWS CRT, the pins
of its layer, against a local HTTP server that answers as the CloudFront KeyValueStore API does.

moto 5.2.5 has no cloudfront-keyvaluestore backend (only cloudfront), so the server here stands in for the three
REST calls (the shapes of botocore's service model) and records each request as it arrived, signature included.
The client finds it through AWS_ENDPOINT_URL_CLOUDFRONT_KEYVALUESTORE; the service's endpoint rules put the
store's account in front of the host (<account>.localhost), which the test resolves to loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError
from harness import load_module

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "constructs" / "operations" / "failover" / "handler.py"
LAYER_REQUIREMENTS = REPO / "constructs" / "operations" / "failover_layer" / "requirements.txt"
ACCOUNT = "111122223333"
STORE = f"arn:aws:cloudfront::{ACCOUNT}:key-value-store/0b0a4e5c-8a3b-4c1e-9d2f-5e6f7a8b9c0d"
REGIONS = "eu-central-1,eu-west-1"

failover = load_module("region_failover_handler", HANDLER)


class FakeKeyValueStore:
    """One store: its keys, an ETag that changes with every put, and every request received."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self.version = 1
        self.requests: list[dict] = []
        self.overwrite_after_put: str | None = None  # another writer's value, landing right after a put

    @property
    def etag(self) -> str:
        return f"KV{self.version:08d}"


def _http_handler(store: FakeKeyValueStore):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status, code, message):
            self._answer(status, {"Message": message}, [("x-amzn-ErrorType", code)])

        def _route(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            store.requests.append({"method": method, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
            if parts[:2] != ["key-value-stores", STORE]:
                return self._error(404, "ResourceNotFoundException", f"no store {parts[1:2]}")
            size = {"ItemCount": len(store.values), "TotalSizeInBytes": sum(len(k) + len(v) for k, v in store.values.items())}
            if method == "GET" and len(parts) == 2:
                return self._answer(200, {"KvsARN": STORE, "Created": 1700000000, **size}, [("ETag", store.etag)])
            key = parts[3]
            if method == "GET":
                if key not in store.values:
                    return self._error(404, "ResourceNotFoundException", f"no key {key}")
                return self._answer(200, {"Key": key, "Value": store.values[key], **size})
            if self.headers.get("If-Match") != store.etag:
                return self._error(409, "ConflictException", "the store changed: ETag does not match")
            store.values[key] = body["Value"]
            store.version += 1
            if store.overwrite_after_put is not None:
                store.values[key] = store.overwrite_after_put
                store.version += 1
            return self._answer(200, size, [("ETag", store.etag)])

        def do_GET(self):
            self._route("GET")

        def do_PUT(self):
            self._route("PUT")

    return Handler


@pytest.fixture
def store(monkeypatch):
    fake = FakeKeyValueStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    endpoint = f"http://localhost:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL_CLOUDFRONT_KEYVALUESTORE": endpoint, "KEY_VALUE_STORE_ARN": STORE, "REGIONS": REGIONS,
    }.items():
        monkeypatch.setenv(name, value)
    real_getaddrinfo = socket.getaddrinfo

    def loopback(host, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == f"{ACCOUNT}.localhost" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback)
    yield fake
    server.shutdown()
    server.server_close()


def test_the_layer_pins_are_the_versions_these_tests_run():
    pins = dict(line.split("==") for line in LAYER_REQUIREMENTS.read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert {"boto3", "botocore", "awscrt"} <= set(pins)
    assert {name: version(name) for name in pins} == pins


def test_a_failover_puts_the_region_with_the_read_etag_and_every_request_is_signed_with_sigv4a(store):
    assert failover.handler({"target_region": "eu-west-1"}, None) == {"previous": None, "active_region": "eu-west-1"}
    assert store.values == {"active_region": "eu-west-1"}
    calls = [(r["method"], r["path"].count("/keys/")) for r in store.requests]
    # Describe (ETag), the previous value (none), the put, the read-back.
    assert calls == [("GET", 0), ("GET", 1), ("PUT", 1), ("GET", 1)]
    (put,) = [r for r in store.requests if r["method"] == "PUT"]
    assert put["headers"]["if-match"] == "KV00000001" and put["body"] == {"Value": "eu-west-1"}
    for request in store.requests:
        headers = request["headers"]
        assert headers["host"].startswith(f"{ACCOUNT}.localhost:")
        authorization = headers["authorization"]
        assert authorization.startswith("AWS4-ECDSA-P256-SHA256 Credential=testing/"), authorization
        assert re.search(r"/cloudfront-keyvaluestore/aws4_request,", authorization), authorization
        assert headers["x-amz-region-set"] == "*"
        assert "x-amz-region-set" in re.search(r"SignedHeaders=([^,]+)", authorization).group(1).split(";")


def test_failing_back_returns_the_region_it_replaced(store):
    store.values["active_region"] = "eu-west-1"
    assert failover.handler({"target_region": "eu-central-1"}, None) == {"previous": "eu-west-1", "active_region": "eu-central-1"}
    assert store.values == {"active_region": "eu-central-1"}


def test_a_value_other_than_the_target_on_read_back_raises(store):
    store.overwrite_after_put = "eu-central-1"  # another writer got in right after the put
    with pytest.raises(RuntimeError, match="active_region reads 'eu-central-1' after putting 'eu-west-1'"):
        failover.handler({"target_region": "eu-west-1"}, None)


def test_a_change_between_the_etag_read_and_the_put_fails_the_put(store, monkeypatch):
    make_client = failover.boto3.client

    def client_with_a_concurrent_writer(*args, **kwargs):
        client = make_client(*args, **kwargs)
        original = client.describe_key_value_store

        def describe_then_someone_writes(**params):
            answer = original(**params)
            store.version += 1  # the ETag moves on before the function's put
            return answer

        client.describe_key_value_store = describe_then_someone_writes
        return client

    monkeypatch.setattr(failover.boto3, "client", client_with_a_concurrent_writer)
    with pytest.raises(ClientError, match="ConflictException"):
        failover.handler({"target_region": "eu-west-1"}, None)
    assert store.values == {}


@pytest.mark.parametrize("event", [{"target_region": "us-east-1"}, {"target_region": ""}, {}, {"target_region": None}])
def test_a_region_that_is_not_configured_is_refused_before_any_call(store, event):
    with pytest.raises(ValueError, match="is not one of the configured regions"):
        failover.handler(event, None)
    assert store.requests == []


def test_without_the_crt_botocore_cannot_sign_the_request_which_is_why_the_layer_exists(store):
    # A fresh interpreter in which `import awscrt` fails, as in a Lambda runtime whose boto3 lacks the CRT.
    script = (
        "import sys; sys.modules['awscrt'] = None\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(HANDLER)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.handler({'target_region': 'eu-west-1'}, None)\n"
    )
    # The child resolves <account>.localhost itself (or not): it must fail before it sends anything.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode != 0
    assert "MissingDependencyException" in result.stderr and "botocore[crt]" in result.stderr, result.stderr[-2000:]
    assert store.requests == []


def test_the_handler_runs_with_only_the_botocore_models_the_layer_keeps(store, tmp_path):
    """The layer leaves out botocore's models of every service but failover.SERVICE_MODELS
    (region_failover.layer_exclude): a botocore pruned the same way must still fail over."""
    import botocore

    pruned = tmp_path / "botocore"
    shutil.copytree(Path(botocore.__file__).parent, pruned, ignore=shutil.ignore_patterns("__pycache__"))
    for entry in (pruned / "data").iterdir():
        if entry.is_dir() and entry.name not in failover.SERVICE_MODELS:
            shutil.rmtree(entry)
    assert sorted(p.name for p in (pruned / "data").iterdir() if p.is_dir()) == ["cloudfront-keyvaluestore"]
    script = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "import socket; real = socket.getaddrinfo\n"
        f"socket.getaddrinfo = lambda host, *a, **k: real('127.0.0.1' if host == '{ACCOUNT}.localhost' else host, *a, **k)\n"
        "import botocore; assert botocore.__file__.startswith(sys.path[0]), botocore.__file__\n"
        "import importlib.util, json\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(HANDLER)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(module.handler({'target_region': 'eu-west-1'}, None)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"previous": None, "active_region": "eu-west-1"}
    assert store.values == {"active_region": "eu-west-1"}
