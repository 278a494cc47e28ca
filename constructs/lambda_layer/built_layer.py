"""The app's Lambda layers: dependencies that `make install` builds (Makefile LAYERS) for one runtime and CPU."""

from __future__ import annotations

import os
import tempfile
import zipfile
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Sequence

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from constructs.fingerprint import fingerprint

# What every function with a built layer runs on, and what the Makefile writes into each layer's stamp
# (LAYER_PYTHON, LAYER_ARCH): the runtime and CPU the layer's wheels were chosen for.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
LAYER_TARGET = "python3.14 aarch64"
# A fixed time for every archive entry (the earliest a zip can hold), so the same build zips to the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def check_built(layer_dir: Path, purpose: str) -> None:
    """Raise FileNotFoundError, naming `make install`, unless ``layer_dir`` holds a layer built for LAYER_TARGET.
    ``purpose`` completes the message: "to build <purpose>"."""
    stamp = layer_dir / ".installed"
    if not (layer_dir / "python").is_dir() or not stamp.is_file() or stamp.read_text().strip() != LAYER_TARGET:
        raise FileNotFoundError(f"{layer_dir} is missing or not built for {LAYER_TARGET}: run `make install` to build {purpose}")


def is_excluded(path: PurePosixPath, exclude: Sequence[str]) -> bool:
    """Whether ``exclude`` leaves ``path`` (relative to the layer) out, the way CDK's glob excludes do: a
    pattern that matches a folder covers what is in it, ``**`` spans folders, ``!`` re-includes, and the
    last pattern that matches decides."""
    excluded = False
    for pattern in exclude:
        negated = pattern.startswith("!")
        parts = tuple(pattern.removeprefix("!").strip("/").split("/"))
        if any(_glob_matches(parts, path.parts[:depth]) for depth in range(1, len(path.parts) + 1)):
            excluded = not negated
    return excluded


def _glob_matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_matches(pattern[1:], parts[start:]) for start in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _glob_matches(pattern[1:], parts[1:])


def layer_archive(layer_dir: Path, exclude: Sequence[str] = ()) -> Path:
    """``layer_dir/python`` minus ``exclude``, as a zip in ``layer_dir`` (``python/`` at its root, which Lambda
    unpacks into /opt). Made once per build and ``exclude``, then reused: as a single file the asset costs
    each synth one hash and one copy, where the folder cost a walk, a glob match and a copy of every file
    (about 0.3 s a synth for the two layers). Entries are sorted and dated alike, so a build zips to the
    same bytes, and its asset hash changes only when the files do."""
    prefix = len(str(layer_dir)) + 1
    files = sorted((os.path.join(root, name)[prefix:], os.path.join(root, name))
                   for root, _dirs, names in os.walk(layer_dir / "python") for name in names)
    listing = [(relative, stat.st_size, stat.st_mtime_ns) for relative, path in files for stat in [os.stat(path)]]
    key = fingerprint([LAYER_TARGET, list(exclude), listing], 16)
    archive = layer_dir / f"layer-{key}.zip"
    if not archive.exists():
        # Written aside and renamed: two synths at once (test workers) each write whole, identical archives.
        with tempfile.NamedTemporaryFile(dir=layer_dir, prefix=".layer-", suffix=".zip", delete=False) as partial:
            try:
                with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zip_file:
                    for relative, path in files:
                        if is_excluded(PurePosixPath(relative), exclude):
                            continue
                        entry = zipfile.ZipInfo(relative, date_time=_ZIP_TIME)
                        # A regular file, executable or not: the installing machine's umask does not reach the bytes.
                        mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
                        entry.external_attr = (0o100000 | mode) << 16
                        entry.compress_type = zipfile.ZIP_DEFLATED
                        zip_file.writestr(entry, Path(path).read_bytes())
            except BaseException:
                os.unlink(partial.name)  # no half-written archive left beside the build
                raise
        os.replace(partial.name, archive)
        for stale in layer_dir.glob("layer-*.zip"):
            if stale != archive:
                stale.unlink(missing_ok=True)
    return archive


def built_layer(scope: Construct, construct_id: str, *, layer_dir: Path, purpose: str, description: str,
                exclude: Sequence[str] = ()) -> lambda_.LayerVersion:
    """A layer of ``layer_dir`` for RUNTIME on ARCHITECTURE, without whatever ``exclude`` leaves out (glob
    patterns relative to ``layer_dir``, see is_excluded), deployed from its archive (layer_archive). Checked
    first (check_built, with ``purpose``): create it before anything else of its construct, so that a missing
    build stops the app at once."""
    check_built(layer_dir, purpose)
    return lambda_.LayerVersion(
        scope, construct_id, code=lambda_.Code.from_asset(str(layer_archive(layer_dir, exclude))),
        compatible_runtimes=[RUNTIME], compatible_architectures=[ARCHITECTURE], description=description,
    )
