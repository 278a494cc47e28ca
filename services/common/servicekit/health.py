"""Liveness / readiness state: draining flag plus named async readiness checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from .logging import get_logger

log = get_logger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0

ReadinessCheck = Callable[[], Awaitable[None]]


class Health:
    """Shared by the HTTP routes, the server (draining) and anything that wants to report not-ready."""

    def __init__(self, checks: Mapping[str, ReadinessCheck] | None = None, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})
        self.timeout = timeout
        self._draining = False
        self._drain_listeners: list[Callable[[], None]] = []

    @property
    def draining(self) -> bool:
        return self._draining

    def mark_draining(self) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("draining: readiness now fails")
        for listener in self._drain_listeners:
            try:
                listener()
            except Exception:  # one bad listener must not stop the drain
                log.warning("drain listener failed", exc_info=True)

    def on_drain(self, listener: Callable[[], None]) -> None:
        """Call `listener` when draining starts (e.g. set the gRPC health service to NOT_SERVING)."""
        self._drain_listeners.append(listener)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def _run(self, name: str, check: ReadinessCheck) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(check(), self.timeout)
            return name, None
        except TimeoutError:
            return name, f"timed out after {self.timeout:g} s"
        except Exception as exc:  # a failing check is data, not a crash
            return name, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, {check: "ok" | reason}); a draining service is never ready."""
        results = await asyncio.gather(*(self._run(n, c) for n, c in self.checks.items()))
        report = {name: (error or "ok") for name, error in results}
        ok = not self._draining and all(error is None for _, error in results)
        if self._draining:
            report["draining"] = "shutting down"
        return ok, report
