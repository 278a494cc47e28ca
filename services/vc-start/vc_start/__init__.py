"""vc-start: starts virtual-communication sessions for a persona (the reference saga orchestrator)."""
