"""`make run-local` and the cross-service tests keep every process on loopback.

servicekit's BIND_HOST defaults to every interface (0.0.0.0, what a container needs); run_local's
process specs set 127.0.0.1. The stack here is started from those specs (harness.py), so this is what
`make run-local` runs: each process's listening sockets are on 127.0.0.1 only, and this machine's other
addresses refuse a connection (only this machine's own addresses are tried; nothing leaves it).
"""

from __future__ import annotations

import ipaddress
import socket

import harness
import psutil


def _connects(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address, port)) == 0


def _own_non_loopback_ipv4() -> list[str]:
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback})


def test_services_listen_on_loopback_only(stack: harness.Stack, listening) -> None:
    pids = {name: child.process.pid for name, child in stack.launcher.children.items() if child.process.poll() is None}
    assert stack.moto is not None
    pids["moto"] = stack.moto.pid
    sockets_of = {name: listening(pid) for name, pid in pids.items()}
    exposed = {name: sorted(s for s in sockets if s[0] != "127.0.0.1") for name, sockets in sockets_of.items()}
    assert not any(exposed.values()), f"listening beyond 127.0.0.1: { {n: s for n, s in exposed.items() if s} }"

    ports = {name: {int(stack.specs[name].env["PORT"])} for name in ("auth", "persona", "vc-start")}
    ports["persona"].add(int(stack.specs["persona"].env["GRPC_PORT"]))
    for name, expected in ports.items():
        assert expected <= {port for _, port in sockets_of[name]}, f"{name} is not listening on {expected}: {sockets_of[name]}"

    others = _own_non_loopback_ipv4()
    for name, expected in ports.items():
        for port in sorted(expected):
            assert _connects("127.0.0.1", port), f"{name} does not answer on 127.0.0.1:{port}"
            reachable = [address for address in others if _connects(address, port)]
            assert not reachable, f"{name} answers on {reachable} port {port}"
