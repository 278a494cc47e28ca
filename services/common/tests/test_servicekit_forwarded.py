"""servicekit.forwarded: the caller's address is the X-Forwarded-For entry the platform's proxies wrote."""

from __future__ import annotations

import ipaddress

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from servicekit.forwarded import client_ip, parse_ip, request_client_ip

VIEWER = "203.0.113.7"
CLOUDFRONT = "198.51.100.20"  # as the ALB saw the edge
PEER = "10.10.1.5"  # the ALB's node, the socket's peer of every task


def ip(text):
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("header", "hops", "caller"),
    [
        # Behind CloudFront and the ALB: CloudFront appends the viewer, the ALB appends CloudFront.
        ([f"{VIEWER}, {CLOUDFRONT}"], 2, VIEWER),
        # Whatever the viewer sent itself stays to the left and is not read, whichever address it names.
        ([f"192.0.2.1, 192.0.2.2, {VIEWER}, {CLOUDFRONT}"], 2, VIEWER),
        # A request may carry the header on several lines: they are one list, in order.
        (["192.0.2.1", f"{VIEWER}, {CLOUDFRONT}"], 2, VIEWER),
        # Behind the ALB alone the ALB's entry is the caller.
        ([f"192.0.2.1, {VIEWER}"], 1, VIEWER),
        # Fewer entries than hops: a caller that reached the ALB directly (inside the VPC); the ALB wrote the one entry.
        ([VIEWER], 2, VIEWER),
        # The ALB's optional client port, IPv6 with and without a port, IPv4-mapped IPv6.
        ([f"{VIEWER}:51234, {CLOUDFRONT}"], 2, VIEWER),
        ([f"[2001:db8::7]:443, {CLOUDFRONT}"], 2, "2001:db8::7"),
        ([f"2001:db8::7, {CLOUDFRONT}"], 2, "2001:db8::7"),
        ([f"::ffff:{VIEWER}, {CLOUDFRONT}"], 2, VIEWER),
    ],
)
def test_the_caller_is_the_entry_the_trusted_proxies_wrote(header, hops, caller):
    assert client_ip(header, PEER, hops) == ip(caller)


def test_without_trusted_proxies_or_without_the_header_the_socket_peer_is_the_caller():
    assert client_ip([f"192.0.2.1, {VIEWER}"], PEER, 0) == ip(PEER)  # make run-local: nothing forwards, nothing is trusted
    assert client_ip([], PEER, 2) == ip(PEER)  # a caller inside the mesh, not through the proxies
    assert client_ip([" , "], PEER, 2) == ip(PEER)
    assert client_ip([], None, 2) is None


@pytest.mark.parametrize("value", ["unknown", "not-an-ip", "300.1.1.1", "2001:db8::zz"])
def test_what_is_not_an_address_is_no_caller(value):
    assert parse_ip(value) is None
    assert client_ip([f"{value}, {CLOUDFRONT}"], PEER, 2) is None


def test_a_request_s_caller_is_read_from_its_headers():
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, str | None]:
        found = request_client_ip(request, 2)
        return {"caller": str(found) if found else None}

    with TestClient(app) as client:
        answer = client.get("/who", headers=[("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", f"{VIEWER}, {CLOUDFRONT}")])
        assert answer.json() == {"caller": VIEWER}
