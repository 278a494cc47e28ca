"""The saga's backstop that needs no reader: the worker sweeps the sessions nothing else will finish.

Every SESSION_SWEEP_INTERVAL_SECONDS it reads the sweep index (store.py) and, for each session due there:
- PENDING and overdue (vc-start died before SessionStarted went out, persona's answer was lost, nobody reads
  the session): times it out and publishes SessionCancelled, as a read would (timeouts.py);
- CANCELLED with its compensation still owed (the SessionCancelled after a timeout or an ambiguous
  reservation, or the ReleaseSlot after a failed SessionStarted, did not go through): publishes SessionCancelled.
A session leaves the index once settled and compensated, so a failed publish is retried on the next pass.
A region sweeps only the sessions it created or cancelled (the shard names the region, store.py): a
conditional write on a global table checks only the local replica. Within a region several worker tasks
may sweep at once: every change is conditional, and a second SessionCancelled releases nothing more
(persona answers it with another SlotReleased, which vc-start ignores).
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from servicekit.correlation import correlation_scope
from servicekit.events import EventPublishError
from servicekit.logging import get_logger

from vc_start.compensation import send_session_cancelled
from vc_start.events import Publisher
from vc_start.models import SessionStatus
from vc_start.store import SWEEP_SHARDS, SessionStore
from vc_start.timeouts import time_out_if_overdue

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

# Sessions read per shard and pass: a backlog drains over several passes instead of one long one.
BATCH_PER_SHARD = 100


class SessionSweeper:
    def __init__(self, *, store: SessionStore, publisher: Publisher, interval_seconds: float) -> None:
        self._store = store
        self._publisher = publisher
        self._interval = interval_seconds

    async def run_until(self, stop: asyncio.Event) -> None:
        """Sweep every interval until ``stop`` is set. A failed pass is logged and the next one tries again."""
        while not stop.is_set():
            try:
                await self.sweep(stop)
            except Exception:
                log.exception("session sweep failed; next pass in %s s", self._interval)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            except TimeoutError:
                pass

    async def sweep(self, stop: asyncio.Event | None = None) -> int:
        """One pass over every shard; returns how many due sessions it looked at. Stops early when ``stop`` is set."""
        seen = 0
        for shard in range(SWEEP_SHARDS):
            for session_id in await self._store.due_for_sweep(shard, limit=BATCH_PER_SHARD):
                if stop is not None and stop.is_set():
                    return seen
                with correlation_scope(), tracer.start_as_current_span("sweep session", attributes={"session.id": session_id}):
                    try:
                        await self._settle(session_id)
                    except Exception:
                        # One session's failure (a throttled write, say) must not hold up the others.
                        log.exception("sweeping a session failed; next pass retries", extra={"session_id": session_id})
                seen += 1
        return seen

    async def _settle(self, session_id: str) -> None:
        session = await self._store.get(session_id)
        if session is None:
            return
        if session.status is SessionStatus.PENDING:  # due at its deadline (a stale index entry may come earlier)
            await time_out_if_overdue(session, store=self._store, publisher=self._publisher)
        elif session.status is SessionStatus.CANCELLED:
            try:
                await send_session_cancelled(session, store=self._store, publisher=self._publisher)
            except EventPublishError as exc:
                log.error("SessionCancelled of a cancelled session not published; next pass retries",
                          extra={"session_id": session_id, "error": str(exc)})
            else:
                log.info("compensation published by the sweeper", extra={"session_id": session_id, "reason": session.reason})
        else:  # ACTIVE: nothing owed; activate removes the entry, so only a cross-region last-writer merge leaves one
            await self._store.clear_sweep(session_id)
