"""Shared by every test folder: trace every request (the production default samples a small share,
see servicekit.tracing), so tests that assert exported spans see them. Subprocesses inherit it."""

import os

os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")
