"""Every service and worker process, started the way `make run-local` and the images start them, freezes
the objects it built at start-up out of garbage collection (servicekit.startup), so the collector's full
passes do not walk modules, routes and clients for as long as the process runs."""

from __future__ import annotations

import harness


def test_every_service_and_worker_process_freezes_its_start_up_objects(stack: harness.Stack) -> None:
    processes = {"auth", "persona", "vc-start", "persona-worker", "vc-start-worker"}
    assert processes <= set(stack.specs)
    for name in sorted(processes):
        frozen = stack.wait_for(
            f"{name} to log its start-up freeze",
            lambda name=name: [r for r in stack.records(name) if r.get("message") == "start-up objects frozen out of garbage collection"] or None,
            timeout=10, logs=(name,))
        (record,) = frozen  # once, at start-up
        assert record["frozen_objects"] > 10_000, (name, record)  # modules, app or consumer and clients
