"""Models bundled with mde (mde/models/*.onnx, or $MDE_BUNDLED_MODELS): found by name after the user's store,
listed by `mde models`, and serving `mde stream`'s default scales when MTT_fcn05, MTT_fcn037 and MTT_fcn29 all
resolve. Tiny real ONNX models stand in for the shipped ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model, write_tone
from test_cli import run_mde

from mde.errors import ModelNotFound
from mde.runtime import store
from mde.runtime.defaults import DEFAULT_SCALE_MODELS
from mde.runtime.package import read_model_info
from mde.stream import DEFAULT_SCALES

RATE = 8000  # the tiny model's sample rate
NATIVE_WINDOWS = {"MTT_fcn05": 4000, "MTT_fcn037": 29600, "MTT_fcn29": 232000}
"""Window (samples at RATE) of each tiny stand-in for a default-scale model: 0.5, 3.7 and 29 s."""

Bundle = Callable[..., Path]


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bundle:
    """Points MDE_BUNDLED_MODELS at an empty folder; returns ``bundle(name, window=4000)``, which writes a tiny
    model of that name there and returns its path."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setenv(store.BUNDLED_ENV, str(folder))

    def bundle(name: str, window: int = 4000) -> Path:
        path = folder / f"{name}.onnx"
        path.write_bytes(build_tiny_model(name, window=window))
        return path

    return bundle


def _bundle_default_scale_models(bundle: Bundle, skip: str = "") -> None:
    for name, window in NATIVE_WINDOWS.items():
        if name != skip:
            bundle(name, window=window)


def test_the_default_scale_models_and_their_stand_ins_agree():
    assert dict(DEFAULT_SCALE_MODELS) == {0.5: "MTT_fcn05", 3.7: "MTT_fcn037", 29.0: "MTT_fcn29"}
    assert tuple(DEFAULT_SCALE_MODELS) == DEFAULT_SCALES
    assert {name: w / RATE for name, w in NATIVE_WINDOWS.items()} == {n: s for s, n in DEFAULT_SCALE_MODELS.items()}


def test_the_bundled_folder_is_the_package_folder_unless_the_variable_names_another(tmp_path, monkeypatch):
    monkeypatch.delenv(store.BUNDLED_ENV, raising=False)
    package_folder = Path(store.__file__).resolve().parents[1] / "models"
    assert store.bundled_models_dir() == package_folder
    assert (package_folder / "__init__.py").is_file()
    monkeypatch.setenv(store.BUNDLED_ENV, "")  # empty: unset
    assert store.bundled_models_dir() == package_folder
    monkeypatch.setenv(store.BUNDLED_ENV, str(tmp_path))
    assert store.bundled_models_dir() == tmp_path


def test_a_bundled_model_resolves_by_name_and_loads(mde_home, bundled):
    from mde.runtime.extractor import load_model

    path = bundled("shipped")
    assert store.resolve("shipped") == path and store.find("shipped") == path
    assert store.is_bundled(path) and not (mde_home / "models").exists()  # nothing was imported or copied
    result = load_model("shipped", threads=1).embed(np.zeros(RATE, np.float32), sr=RATE)
    assert result.info.name == "shipped" and result.embedding.shape == (2, 16)


def test_a_user_model_wins_over_a_bundled_one_of_the_same_name(mde_home, bundled):
    shipped = bundled("dup", window=4000)
    mine = store.save(build_tiny_model("dup", window=8000), "dup")
    assert store.resolve("dup") == mine and store.find("dup") == mine
    assert not store.is_bundled(mine) and store.is_bundled(shipped)
    [(path, info)] = store.list_models()
    assert path == mine and info.window_seconds == 1.0  # the user's, listed once


def test_names_and_listing_include_bundled_models_once(mde_home, bundled):
    store.save(build_tiny_model("alpha"), "alpha")
    bundled("alpha")
    beta = bundled("beta")
    (beta.parent / "not a name.onnx").write_bytes(b"")  # not a valid model name: not listed
    assert store.stored_names() == ["alpha", "beta"]
    rows = {path.stem: (path, info) for path, info in store.list_models()}
    assert sorted(rows) == ["alpha", "beta"]
    assert rows["alpha"][0] == mde_home / "models" / "alpha.onnx" and rows["beta"][0] == beta
    assert rows["beta"][1].name == "beta"


def test_an_unknown_name_lists_the_bundled_models_too(mde_home, bundled):
    bundled("shipped")
    with pytest.raises(ModelNotFound, match=r"unknown model 'nope'; available models: shipped$"):
        store.resolve("nope")


def test_mde_models_lists_bundled_and_user_models_apart(mde_home, bundled, tmp_path):
    bundled("shipped")
    store.save(build_tiny_model("mine"), "mine")
    proc = run_mde("models", "--json", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["shipped"]["store"] == "bundled" and rows["mine"]["store"] == "user"
    assert rows["shipped"]["path"] == str(tmp_path / "bundled" / "shipped.onnx")
    table = run_mde("models", cwd=tmp_path, home=mde_home).stdout
    [shipped] = [line for line in table.splitlines() if line.startswith("│ shipped ")]
    [mine] = [line for line in table.splitlines() if line.startswith("│ mine ")]
    assert "bundled" in shipped and "user" not in shipped and "user" in mine and "bundled" not in mine
    assert "shipped with mde" in table


def _forbid_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_):
        raise AssertionError("the default model was asked for")

    monkeypatch.setattr("mde.stream.api.default_model_path", refuse)


def test_the_default_scales_are_served_by_their_models_when_all_three_resolve(mde_home, bundled, monkeypatch):
    from mde.stream import load_scales
    from mde.stream.scales import default_scale_models

    _bundle_default_scale_models(bundled, skip="MTT_fcn05")
    mine = store.save(build_tiny_model("MTT_fcn05", window=4000), "MTT_fcn05")  # stored by the user: counts too
    assert default_scale_models(DEFAULT_SCALES) == dict(DEFAULT_SCALE_MODELS)
    assert default_scale_models([3.7, 10.0]) == {3.7: "MTT_fcn037"}  # other scales: no dedicated model
    _forbid_the_default_model(monkeypatch)
    scales = load_scales(threads=1)
    assert [(s.seconds, s.model.name) for s in scales] == list(DEFAULT_SCALE_MODELS.items())
    assert scales[0].model.path == mine and store.is_bundled(scales[2].model.path)
    for scale in scales:  # each at its own window, hop: the window, at most 1 s
        assert (scale.grid.unit, scale.grid.length) == ("sample", NATIVE_WINDOWS[scale.model.name])
        assert scale.hop_seconds == pytest.approx(min(scale.seconds, 1.0))


def _variable_length(data: bytes) -> bytes:
    """The tiny model's bytes with metadata saying it accepts any window length (its graph does)."""
    import onnx

    from mde.runtime.package import METADATA_KEY

    model = onnx.load_from_string(data)
    fields = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps({**fields, "variable_length": True})})
    return model.SerializeToString()


def test_a_default_scale_model_that_takes_any_length_serves_at_its_own_window(mde_home, bundled, monkeypatch):
    from mde.stream import load_scales

    _bundle_default_scale_models(bundled, skip="MTT_fcn037")
    path = bundled("MTT_fcn037")
    path.write_bytes(_variable_length(build_tiny_model("MTT_fcn037", window=29400)))  # 3.675 s, not 3.7
    assert read_model_info(path).variable_length
    _forbid_the_default_model(monkeypatch)
    [scale] = load_scales([3.7], threads=1)
    assert scale.model.name == "MTT_fcn037" and scale.grid.length == 29400
    [asked] = load_scales([3.7], models="MTT_fcn037", threads=1)  # named: served at the scale's length
    assert asked.grid.length == 29600


def test_models_still_override_the_default_scale_models(mde_home, bundled, monkeypatch):
    from mde.stream import load_scales

    _bundle_default_scale_models(bundled)
    bundled("other", window=4000)
    _forbid_the_default_model(monkeypatch)
    scales = load_scales(models={0.5: "other"}, threads=1)
    assert [s.model.name for s in scales] == ["other", "MTT_fcn037", "MTT_fcn29"]


@pytest.mark.parametrize("missing", sorted(NATIVE_WINDOWS))
def test_without_all_three_every_scale_falls_back_to_the_default_model(missing, mde_home, bundled, monkeypatch):
    from mde.stream import load_scales
    from mde.stream.scales import default_scale_models

    _bundle_default_scale_models(bundled, skip=missing)
    fallback = store.save(build_tiny_model("fallback", window=4000), "fallback")
    asked = []
    monkeypatch.setattr("mde.stream.api.default_model_path", lambda **_: asked.append(1) or fallback)
    assert default_scale_models(DEFAULT_SCALES) == {}
    [scale] = load_scales([0.5], threads=1)  # the tiny fallback has a fixed 0.5 s window: one scale
    assert scale.model.name == "fallback" and asked == [1]


def test_mde_stream_without_models_serves_the_default_scales_by_the_bundled_models(mde_home, bundled, tmp_path):
    _bundle_default_scale_models(bundled)
    tone = write_tone(tmp_path / "tone.wav", seconds=1.0, rate=RATE)
    proc = run_mde("stream", "--file", tone, "--as-fast-as-possible", "--jsonl", "-", "--no-view",
                   cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {row["scale"]: row["model"] for row in rows} == dict(DEFAULT_SCALE_MODELS)
    assert sorted(row["timestamp"] for row in rows if row["scale"] == 0.5) == [0.0, 0.5]
    assert "0.5s by MTT_fcn05" in proc.stderr and "29s by MTT_fcn29" in proc.stderr
    assert not (mde_home / "models").exists()  # no import step


def test_streaming_the_bundled_default_scales_imports_no_torch(mde_home, bundled, tmp_path):
    _bundle_default_scale_models(bundled)
    code = ("import sys; from mde.stream import load_scales; "
            "print([s.model.name for s in load_scales(threads=1)], 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['MTT_fcn05',", "'MTT_fcn037',", "'MTT_fcn29']", "False"]
