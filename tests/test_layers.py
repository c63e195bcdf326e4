"""House-keeping: imports run one way (import-linter contracts), the version is written once, and the
LICENSE file is the licence pyproject.toml declares."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess

import pytest
from conftest import REPO

import mde

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_import_layers_hold() -> None:
    if shutil.which("lint-imports") is None:
        pytest.skip("import-linter is not installed (it is in the 'test' extra)")
    result = subprocess.run(["lint-imports", "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_the_backends_live_in_the_runtime_and_the_old_homes_are_gone() -> None:
    for gone in ("mde.torch_backends", "mde.export.tensorrt"):
        assert importlib.util.find_spec(gone) is None, gone
    for module in ("torch_runner", "torch_graph", "tensorrt_runner", "tensorrt_engine", "cuda"):
        assert importlib.util.find_spec(f"mde.runtime.backends.{module}") is not None, module


def test_the_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mde.__version__"}
    assert importlib.metadata.version("mde") == mde.__version__


def test_the_licence_file_is_the_declared_licence() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the mde authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
