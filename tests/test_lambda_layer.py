"""The app's built Lambda layers (constructs/lambda_layer): without `make install`'s build, synth stops at once."""

from __future__ import annotations

import importlib

import pytest


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
