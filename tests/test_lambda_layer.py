"""The app's built Lambda layers (constructs/lambda_layer): without `make install`'s build, synth stops at once;
with it, each layer is deployed from one archive of the build that keeps what CDK's own excludes would."""

from __future__ import annotations

import importlib
import os
import time
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from constructs.lambda_layer import LAYER_TARGET
from constructs.lambda_layer.built_layer import is_excluded, layer_archive


@pytest.mark.parametrize("module, function", [
    ("constructs.service_data.signing_key_rotation", "signing-key rotation"),
    ("constructs.operations.region_failover", "region-failover"),
])
def test_synth_without_a_built_layer_stops_with_one_line_naming_it_and_make_install(monkeypatch, tmp_path, capsys, module, function):
    import app as app_module

    monkeypatch.setattr(importlib.import_module(module), "LAYER_DIR", tmp_path / "build")
    with pytest.raises(SystemExit) as exit_info:
        app_module.main()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("build error: ") and "run `make install`" in line
    assert str(tmp_path / "build") in line and f"the {function} function's dependencies" in line


def _fake_build(layer_dir: Path, file_mode: int = 0o664, tool_mode: int = 0o775) -> Path:
    """A small layer build: a package, an executable, a folder to leave out and the stamp, with the modes
    that a machine's umask gave them."""
    for relative, text in {"python/pkg/__init__.py": "x = 1\n", "python/pkg/data/keep.json": "{}",
                           "python/pkg/data/big/model.json": "{}", "python/bin/tool": "#!/bin/sh\n"}.items():
        (layer_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (layer_dir / relative).write_text(text)
        (layer_dir / relative).chmod(file_mode)
    (layer_dir / "python/bin/tool").chmod(tool_mode)
    (layer_dir / ".installed").write_text(f"{LAYER_TARGET}\n")
    return layer_dir


def test_the_archive_leaves_out_what_cdks_own_glob_excludes_leave_out_on_the_real_failover_build(tmp_path):
    """built_layer zips the build itself (one file per synth to hash and copy instead of 2,000); the files it
    keeps must be those CDK's asset exclusion would have kept from the same folder and patterns."""
    import aws_cdk as cdk

    from constructs.operations.region_failover import LAYER_DIR, layer_exclude

    archive = layer_archive(LAYER_DIR, layer_exclude())
    cdk.FileSystem.copy_directory(str(LAYER_DIR), str(tmp_path), cdk.CopyOptions(exclude=[".installed", "layer-*.zip", *layer_exclude()]))
    kept_by_cdk = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file())
    assert sorted(zipfile.ZipFile(archive).namelist()) == kept_by_cdk
    assert 200 < len(kept_by_cdk) < 1000  # botocore's other models are out, the rest is in


@pytest.mark.parametrize("path, excluded", [
    ("python/pkg/data/big/model.json", True),  # data/* covers the folder and what is in it
    ("python/pkg/data/keep.json", False),      # re-included by !data/*.json, which does not reach into folders
    ("python/pkg/__init__.py", False),
    ("python/bin/tool", True),                 # **/tool
])
def test_exclude_patterns_cover_folders_span_them_with_double_stars_and_the_last_match_decides(path, excluded):
    patterns = ["python/pkg/data/*", "!python/pkg/data/*.json", "**/tool"]
    assert is_excluded(PurePosixPath(path), patterns) is excluded


def test_the_archive_is_made_once_per_build_holds_python_at_its_root_and_the_same_files_zip_to_the_same_bytes(tmp_path):
    first = layer_archive(_fake_build(tmp_path / "a" / "build"), ["python/pkg/data/big"])
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["python/bin/tool", "python/pkg/__init__.py", "python/pkg/data/keep.json"]
        modes = {info.filename: info.external_attr >> 16 & 0o777 for info in archive.infolist()}
    assert modes == {"python/bin/tool": 0o755, "python/pkg/__init__.py": 0o644, "python/pkg/data/keep.json": 0o644}
    made_at = first.stat().st_mtime_ns
    assert layer_archive(tmp_path / "a" / "build", ["python/pkg/data/big"]) == first and first.stat().st_mtime_ns == made_at

    # Built again elsewhere, days later, under another umask: new file times, the same archive bytes (the asset
    # hash). Days apart, as zip times have a 2 s resolution: a build moments later would zip alike anyway.
    again_dir = _fake_build(tmp_path / "b" / "build", file_mode=0o644, tool_mode=0o755)
    days_later = time.time() + 3 * 86400
    for path in (again_dir / "python").rglob("*"):
        os.utime(path, (days_later, days_later))
    again = layer_archive(again_dir, ["python/pkg/data/big"])
    assert again.read_bytes() == first.read_bytes()

    # A changed file or a changed exclude list makes a new archive and removes the old one.
    (tmp_path / "a" / "build" / "python/pkg/__init__.py").write_text("x = 2\n")
    changed = layer_archive(tmp_path / "a" / "build", ["python/pkg/data/big"])
    assert changed != first and not first.exists() and [p.name for p in (tmp_path / "a" / "build").glob("*.zip")] == [changed.name]
    assert zipfile.ZipFile(changed).read("python/pkg/__init__.py") == b"x = 2\n"
