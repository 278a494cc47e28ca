"""The caller's IP address behind the platform's proxies, from the part of X-Forwarded-For they wrote.

Every proxy on the way appends the address it received the request from, so the header reads
``<whatever the caller sent>, <the caller as the first proxy saw it>, ..., <the last proxy as the ALB saw it>``.
Only the last ``trusted_proxy_hops`` entries were written by our proxies; anything to their left came
from the caller and can be anything. Behind the edge CloudFront appends the viewer's address and the ALB
appends CloudFront's (2 hops); behind the ALB alone the ALB appends the caller's (1 hop). Hence the
caller is the entry ``trusted_proxy_hops`` from the right, never the leftmost. (CloudFront:
https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/RequestAndResponseBehaviorCustomOrigin.html#RequestCustomIPAddresses;
the ALB, in its default ``append`` mode, which constructs/ingress pins:
https://docs.aws.amazon.com/elasticloadbalancing/latest/application/x-forwarded-headers.html.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import HTTPConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str) -> IPAddress | None:
    """An address as proxies write it ("192.0.2.1", "2001:db8::1", "[2001:db8::1]:443", "192.0.2.1:80"),
    IPv4-mapped IPv6 as IPv4; None for anything else."""
    text = value.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port (the ALB's optional client port)
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(forwarded_for: Sequence[str], peer: str | None, trusted_proxy_hops: int) -> IPAddress | None:
    """The caller's address: the X-Forwarded-For entry ``trusted_proxy_hops`` from the right.

    ``forwarded_for`` is every X-Forwarded-For header line in order (a request may carry several), ``peer`` the
    socket's peer address. With 0 hops, or without the header (the request did not come through the proxies:
    a caller inside the mesh), the peer. With fewer entries than hops the leftmost: a caller that reached a
    later proxy directly (one inside the VPC calling the ALB), which that proxy wrote. Such a caller can also
    send a header of its own and pick the entry read; it is inside the network the platform trusts.
    """
    entries = [entry.strip() for line in forwarded_for for entry in line.split(",") if entry.strip()]
    if trusted_proxy_hops == 0 or not entries:
        return parse_ip(peer) if peer else None
    return parse_ip(entries[-min(trusted_proxy_hops, len(entries))])


def request_client_ip(request: HTTPConnection, trusted_proxy_hops: int) -> IPAddress | None:
    """client_ip for a Starlette/FastAPI request."""
    peer = request.client.host if request.client else None
    return client_ip(request.headers.getlist("x-forwarded-for"), peer, trusted_proxy_hops)
