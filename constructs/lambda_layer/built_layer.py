"""The app's Lambda layers: dependencies that `make install` builds (Makefile LAYERS) for one runtime and CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

# What every function with a built layer runs on, and what the Makefile writes into each layer's stamp
# (LAYER_PYTHON, LAYER_ARCH): the runtime and CPU the layer's wheels were chosen for.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
LAYER_TARGET = "python3.14 aarch64"


def check_built(layer_dir: Path, purpose: str) -> None:
    """Raise FileNotFoundError, naming `make install`, unless ``layer_dir`` holds a layer built for LAYER_TARGET.
    ``purpose`` completes the message: "to build <purpose>"."""
    stamp = layer_dir / ".installed"
    if not (layer_dir / "python").is_dir() or not stamp.is_file() or stamp.read_text().strip() != LAYER_TARGET:
        raise FileNotFoundError(f"{layer_dir} is missing or not built for {LAYER_TARGET}: run `make install` to build {purpose}")


def built_layer(scope: Construct, construct_id: str, *, layer_dir: Path, purpose: str, description: str,
                exclude: Sequence[str] = ()) -> lambda_.LayerVersion:
    """A layer of ``layer_dir`` for RUNTIME on ARCHITECTURE, without its build stamp and whatever ``exclude``
    leaves out (asset glob patterns, relative to ``layer_dir``). Checked first (check_built, with ``purpose``):
    create it before anything else of its construct, so that a missing build stops the app at once."""
    check_built(layer_dir, purpose)
    return lambda_.LayerVersion(
        scope, construct_id, code=lambda_.Code.from_asset(str(layer_dir), exclude=[".installed", *exclude]),
        compatible_runtimes=[RUNTIME], compatible_architectures=[ARCHITECTURE], description=description,
    )
