"""`make run-local` (local/run_local.py) leaves nothing running when its terminal closes or it is killed.

Its children run in sessions of their own, so a terminal's signals reach only the launcher, which must stop
them itself. Closing the terminal window makes the terminal hang up (writes to it fail with EIO from then on)
and the shell send its jobs SIGHUP; the first test does both, to a launcher whose output is a pseudo-terminal.
The second SIGKILLs a launcher (nothing it could handle) with one cheap child: on Linux the child asked the
kernel for SIGTERM when the launcher dies.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

LOCAL_DIR = Path(__file__).resolve().parents[1] / "local"
rl = harness._run_local()
STOP_SECONDS = rl.STOP_TIMEOUT_SECONDS + 10  # the launcher's own bound on stopping its children, and some slack

# run_local.py's main() on free ports: make run-local's fixed ones may be taken (a developer's run, another test).
RUN_LOCAL = """
import sys
sys.path.insert(0, sys.argv[1])
import run_local
ports = run_local.Ports(*map(int, sys.argv[2:]))
run_local.Ports = lambda: ports
sys.exit(run_local.main([]))
"""

# A launcher with one child that listens on a port; prints the child's pid, then waits to be killed.
ONE_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import run_local
listen = "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', %s)); s.listen(); print('listening', flush=True); time.sleep(600)"
child = run_local.Launcher().start(run_local.ProcessSpec("child", [sys.executable, "-c", listen % sys.argv[2]], run_local.base_env()))
print(child.process.pid, flush=True)
time.sleep(600)
"""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:  # gone meanwhile
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its exit status is left for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def survivors(pids: list[int], timeout: float) -> list[str]:
    """Those of ``pids`` still running after up to ``timeout`` seconds, with their command lines."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{pid}: {command_line(pid)}" for pid in pids if alive(pid)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:150]
    except OSError:
        return "(gone)"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def read_until(fd: int, marker: bytes, process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """What the terminal (pty master ``fd``) shows until ``marker``; fails with the tail if the process exits first."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        assert process.poll() is None, f"the launcher exited ({process.returncode}) before {marker!r}:\n{seen[-3000:].decode(errors='replace')}"
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout:g} s:\n{seen[-3000:].decode(errors='replace')}"
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 65536)
    return seen


def test_closing_the_terminal_stops_every_process_and_frees_every_port() -> None:
    ports = rl.Ports(*rl.free_ports(5))
    terminal, tty = pty.openpty()
    # A job of its own (its process group), as the shell starts `make run-local`.
    launcher = subprocess.Popen([sys.executable, "-c", RUN_LOCAL, str(LOCAL_DIR), *map(str, ports.named().values())],
                                stdin=subprocess.DEVNULL, stdout=tty, stderr=tty, start_new_session=True)
    os.close(tty)
    children: list[int] = []
    try:
        read_until(terminal, b"Ctrl-C stops everything.", launcher, rl.STARTUP_TIMEOUT_SECONDS)
        children = children_of(launcher.pid)
        assert len(children) == 6, children  # moto, three services, two workers
        os.close(terminal)  # the window closes: the terminal hangs up ...
        terminal = -1
        os.killpg(launcher.pid, signal.SIGHUP)  # ... and the shell hangs up its jobs
        # 0: it stopped them itself, in order, with nothing left to write to (not killed by the hangup: -1).
        assert launcher.wait(timeout=STOP_SECONDS) == 0
        assert survivors(children, timeout=5) == []
        assert [f"{name} ({port})" for name, port in ports.named().items() if rl.port_in_use(port)] == []
    finally:
        if terminal >= 0:
            os.close(terminal)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        kill_all(children)


def test_the_children_of_a_killed_launcher_stop_and_free_their_port() -> None:
    (port,) = rl.free_ports(1)
    launcher = subprocess.Popen([sys.executable, "-c", ONE_CHILD, str(LOCAL_DIR), str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert launcher.stdout is not None
        child = int(launcher.stdout.readline())
        assert launcher.stdout.readline().strip() == "child | listening"
        launcher.kill()  # SIGKILL: the launcher cannot stop anything itself
        launcher.wait(timeout=5)
        assert survivors([child], timeout=5) == []
        assert not rl.port_in_use(port)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        if child:
            kill_all([child])
