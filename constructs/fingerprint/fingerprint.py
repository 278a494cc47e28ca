"""fingerprint: a short, stable hash of plain JSON data, for names and keys that must change with what they hold."""

from __future__ import annotations

import hashlib
import json


def fingerprint(value: object, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as JSON with sorted keys: the same data gives the
    same digits on every run, any change other digits."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]
