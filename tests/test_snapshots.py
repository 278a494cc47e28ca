"""One JSON snapshot per template, for both profiles, both mesh backends and domain mode, asset hashes scrubbed.

These catch unintended drift anywhere in a template; the fine-grained tests say what matters.
When one changes on purpose, read the diff, then run `make test` with `--snapshot-update`
(`.venv/bin/python -m pytest tests/test_snapshots.py --snapshot-update`).
"""

from __future__ import annotations

import json
import re

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

STACKS = [
    "mf-eu-central-1/baseline", "mf-eu-central-1/network", "mf-eu-central-1/platform", "mf-eu-central-1/data",
    "mf-eu-central-1/services", "mf-eu-central-1/observability", "mf-eu-central-1/chaos", "mf-eu-central-1/global",
    "mf-eu-west-1/baseline", "mf-eu-west-1/network", "mf-eu-west-1/platform", "mf-eu-west-1/services",
    "mf-eu-west-1/observability", "mf-eu-west-1/chaos",
    "mf-edge/baseline", "mf-edge/edge",
]
_ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


def test_the_app_has_exactly_these_stacks(dev, prod, appmesh, domain):
    assert sorted(dev.templates) == sorted(prod.templates) == sorted(appmesh.templates) == sorted(domain.templates) == sorted(STACKS)


@pytest.mark.parametrize("stack", STACKS, ids=[stack.replace("/", "-") for stack in STACKS])
@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh", "domain"])
def test_template_matches_snapshot(dev, prod, appmesh, domain, snapshot_json, variant, stack):
    assembly = {"dev": dev, "prod": prod, "appmesh": appmesh, "domain": domain}[variant]
    scrubbed = _ASSET_HASH.sub("<asset-hash>", json.dumps(assembly.template(stack)))
    assert json.loads(scrubbed) == snapshot_json
