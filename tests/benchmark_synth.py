#!/usr/bin/env python3
"""Synth benchmark: the whole app (both regions, cdk-nag on) against an empty one-bucket CDK app.

Each run is a fresh Python process, started the way `cdk synth` starts the app: the interpreter
options from cdk.json's "app" command (``-O``; both apps get them), the cdk.json context and the
output folder passed in CDK_CONTEXT_JSON and CDK_OUTDIR, and the same environment as `make synth`
(CDK_VALIDATION=false, Node 24 from the virtualenv). The full app runs app.py's ``main()``, so
everything it does is counted; the empty app is a stock CDK app. Runs of the two apps alternate so
that both see the same machine load. Prints each run (wall time, of which imports and build+synth),
both medians and their ratio (the target), and for context the ratio of build+synth alone and a
"floor" app: the full app's imports and cdk-nag packs around one resource, the share of the full
app's time that does not depend on what the app builds.

Each run also prints the CPU time of the app's processes (Python and jsii's Node), which other load on a
shared machine moves less than wall time. ``--compare CHECKOUT`` measures a change instead: the full app
of this checkout against that of another (``git worktree add ../base main``, with its own ``make install``
or the same virtualenv and layer builds), run by run in turn.

Usage: make bench   (or: .venv/bin/python tests/benchmark_synth.py --runs 5 [--compare ../base])
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
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
import aws_cdk
import app
import cdk_nag, stacks.region_stage  # app.py imports these after reading the config; count them as imports
imported = time.perf_counter()
app.main()
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "work": done - imported}}))
"""

_EMPTY_APP = """
import json, time
start = time.perf_counter()
import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
imported = time.perf_counter()
app = cdk.App()
s3.Bucket(cdk.Stack(app, "Empty"), "Bucket")
app.synth()
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "work": done - imported}}))
"""
# For context, not the target: the full app's imports and cdk-nag packs with one resource and
# app.py's exit. What this costs over the empty app is the fixed price of the CDK modules and
# cdk-nag rules the app loads (Python and Node side), whatever it builds with them.
_FLOOR_APP = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {repo!r})
import aws_cdk as cdk
import app
import cdk_nag, stacks.region_stage
imported = time.perf_counter()
floor = cdk.App()
app.add_compliance_checks(floor)
cdk.CfnWaitConditionHandle(cdk.Stack(floor, "Floor"), "Resource")  # nag checks it; no rule applies
floor.synth()
import gc; gc.freeze()  # as app.py does
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "work": done - imported}}))
"""


def _interpreter_options(repo: Path = REPO_ROOT) -> list[str]:
    """The options between the interpreter and app.py in cdk.json's "app" command, e.g. ["-O"]."""
    command = shlex.split(json.loads((repo / "cdk.json").read_text())["app"])
    return [arg for arg in command[1:] if arg.startswith("-")]


def _run(snippet: str, repo: Path = REPO_ROOT) -> tuple[float, float, dict[str, float]]:
    """Run one app of ``repo`` (a checkout of this project): wall time, CPU time of the process and its
    children (Python and jsii's Node; steadier than wall time on a shared machine) and the phase timings."""
    context = json.loads((repo / "cdk.json").read_text())["context"]
    with tempfile.TemporaryDirectory() as outdir:
        env = {**os.environ, "CDK_VALIDATION": "false", "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": json.dumps(context),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        command = [sys.executable, *_interpreter_options(repo), "-c", snippet.format(repo=str(repo))]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        if result.returncode != 0 or not any(Path(outdir).glob("manifest.json")):
            sys.exit(f"benchmark app failed (exit code {result.returncode}):\n{result.stderr}")
    return wall, cpu, json.loads(result.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compare(other: Path, runs: int) -> None:
    """The full app of this checkout and of ``other`` (another checkout, e.g. `git worktree add`), alternating
    run by run so that both see the same machine load: the way to tell whether a change made synth faster."""
    if not (other / "app.py").is_file() or not (other / "cdk.json").is_file():
        sys.exit(f"--compare {other} is not a checkout of this project: it has no app.py and cdk.json")
    checkouts = {"this": REPO_ROOT, "other": other.resolve()}
    walls: dict[str, list[float]] = {name: [] for name in checkouts}
    cpus: dict[str, list[float]] = {name: [] for name in checkouts}
    _run(_EMPTY_APP)  # warm the OS file cache; not counted
    for run in range(1, runs + 1):
        order = list(checkouts.items()) if run % 2 else list(reversed(checkouts.items()))
        for name, repo in order:
            wall, cpu, _ = _run(_FULL_APP, repo)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"run {run} {name:5}: {wall:.2f} s wall, {cpu:.2f} s CPU  ({repo})", flush=True)
    for name, repo in checkouts.items():
        print(f"median full app, {name:5} ({repo}): {statistics.median(walls[name]):.2f} s wall, "
              f"{statistics.median(cpus[name]):.2f} s CPU")
    for label, figures in (("wall", walls), ("CPU", cpus)):
        this, that = statistics.median(figures["this"]), statistics.median(figures["other"])
        print(f"this checkout against the other, {label}: {this - that:+.2f} s ({(this - that) / that:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each app (default 5)")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="instead: the full app of this checkout against that of another one, alternating")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.runs)
        return

    _run(_EMPTY_APP)  # warm the OS file cache; not counted
    apps = {"full": _FULL_APP, "empty": _EMPTY_APP, "floor": _FLOOR_APP}
    walls: dict[str, list[float]] = {name: [] for name in apps}
    cpus: dict[str, list[float]] = {name: [] for name in apps}
    work: dict[str, list[float]] = {name: [] for name in apps}
    for run in range(1, args.runs + 1):
        for name, snippet in apps.items():
            wall, cpu, phases = _run(snippet)
            walls[name].append(wall)
            cpus[name].append(cpu)
            work[name].append(phases["work"])
            print(f"run {run} {name:5}: {wall:.2f} s, CPU {cpu:.2f} s  (imports {phases['import']:.2f}, "
                  f"build+synth {phases['work']:.2f}, process start and exit {wall - phases['import'] - phases['work']:.2f})", flush=True)

    full, empty = statistics.median(walls["full"]), statistics.median(walls["empty"])
    print(f"interpreter options from cdk.json: {' '.join(_interpreter_options()) or '(none)'}")
    print(f"median full app  (2 regions, cdk-nag on): {full:.2f} s (CPU {statistics.median(cpus['full']):.2f} s)")
    print(f"median empty app (one bucket):            {empty:.2f} s (CPU {statistics.median(cpus['empty']):.2f} s)")
    print(f"ratio: {full / empty:.2f} (target <= 3.0)")
    # The same runs without process start, imports and exit, which both apps pay in part.
    full_work, empty_work = statistics.median(work["full"]), statistics.median(work["empty"])
    print(f"build+synth only: full {full_work:.2f} s, empty {empty_work:.2f} s, ratio {full_work / empty_work:.2f}")
    floor = statistics.median(walls["floor"])
    print(f"floor (the full app's imports and cdk-nag packs, one resource): {floor:.2f} s, "
          f"ratio {floor / empty:.2f} to the empty app; the app's own constructs add {full - floor:.2f} s")

if __name__ == "__main__":
    main()
