#!/usr/bin/env python3
"""Synth benchmark: the whole app (both regions, cdk-nag on) against an empty one-bucket CDK app.

Each run is a fresh Python process that imports aws-cdk-lib, builds the app and calls
``app.synth()`` in-process (no CLI), into a fresh output folder, with the same environment as
`make synth` (CDK_VALIDATION=false, Node 24 from the virtualenv). Runs of the two apps alternate so
that both see the same machine load. Prints each run, both medians and their ratio (the target),
and for context the same ratio over the build and synth phases alone, without process start and
imports.

Usage: make bench   (or: .venv/bin/python tests/benchmark_synth.py --runs 5)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Each snippet prints its own phase timings as JSON on the last line of stdout.
_FULL_APP = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {repo!r})
import aws_cdk as cdk
import app as app_module
import cdk_nag, stacks.region_stage  # app.py imports these after reading the config; count them as imports
imported = time.perf_counter()
context = json.load(open({repo!r} + "/cdk.json"))["context"]
app = cdk.App(context=context, outdir={outdir!r})
app_module.build_app(app)
built = time.perf_counter()
app.synth()
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "build": built - imported, "synth": done - built}}))
"""

_EMPTY_APP = """
import json, time
start = time.perf_counter()
import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
imported = time.perf_counter()
app = cdk.App(outdir={outdir!r})
s3.Bucket(cdk.Stack(app, "Empty"), "Bucket")
built = time.perf_counter()
app.synth()
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "build": built - imported, "synth": done - built}}))
"""


def _run(snippet: str) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as outdir:
        code = snippet.format(repo=str(REPO_ROOT), outdir=outdir)
        env = {**os.environ, "CDK_VALIDATION": "false",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"benchmark app failed:\n{result.stderr}")
    return wall, json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each app (default 5)")
    args = parser.parse_args()

    _run(_EMPTY_APP)  # warm the OS file cache and Python bytecode cache; not counted
    walls: dict[str, list[float]] = {"full": [], "empty": []}
    build_and_synth: dict[str, list[float]] = {"full": [], "empty": []}
    for run in range(1, args.runs + 1):
        for name, snippet in (("full", _FULL_APP), ("empty", _EMPTY_APP)):
            wall, phases = _run(snippet)
            walls[name].append(wall)
            build_and_synth[name].append(phases["build"] + phases["synth"])
            print(f"run {run} {name:5}: {wall:.2f} s  (import {phases['import']:.2f}, "
                  f"build {phases['build']:.2f}, synth {phases['synth']:.2f})", flush=True)

    full, empty = statistics.median(walls["full"]), statistics.median(walls["empty"])
    print(f"median full app  (2 regions, cdk-nag on): {full:.2f} s")
    print(f"median empty app (one bucket):            {empty:.2f} s")
    print(f"ratio: {full / empty:.2f} (target <= 3.0)")
    # The same runs without process start and imports, which both apps pay alike.
    full_work, empty_work = statistics.median(build_and_synth["full"]), statistics.median(build_and_synth["empty"])
    print(f"build+synth only: full {full_work:.2f} s, empty {empty_work:.2f} s, ratio {full_work / empty_work:.2f}")


if __name__ == "__main__":
    main()
