"""The musicnn package's models through the whole runtime (C front end, mel-patch framing, ONNX Runtime)
reproduce the package's TensorFlow outputs (reference/joram_musicnn.npz)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MTAT_CLIP, REPO
from test_cli import assert_one_line_error, run_mde

pytest.importorskip("torch")
if importlib.util.find_spec("musicnn") is None:
    pytest.skip("the musicnn package is not installed: pip install --no-deps musicnn==0.1.0", allow_module_level=True)

PATCHES = {"0.5s": 0.5, "3s": 3.0, "29s": 29.0}


@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
@pytest.mark.parametrize("patch", list(PATCHES))
def test_runtime_reproduces_the_package(musicnn_home, shared_data, model, patch):
    from mde.runtime.extractor import load_model

    ref = np.load(shared_data / "reference" / "joram_musicnn.npz")
    loaded = load_model(musicnn_home / "models" / f"{model}.onnx", threads=1)
    seconds = PATCHES[patch]
    result = loaded.embed(shared_data / MTAT_CLIP, window=seconds)  # non-overlapping patches of that length
    key = f"{model}_{patch}"
    frames_per_second = loaded.info.sample_rate / loaded.info.frontend.hop_length
    np.testing.assert_array_equal(np.round(result.timestamps * frames_per_second), ref[f"{key}_start_frames"])
    assert np.abs(result.tags - ref[f"{key}_tags"]).max() <= 2e-3
    assert np.abs(result.embedding - ref[f"{key}_penultimate"]).max() <= 5e-3
    for pool in ("mean_pool", "max_pool"):
        pooled = loaded.embed(shared_data / MTAT_CLIP, window=seconds, layer=pool).embedding
        np.testing.assert_allclose(pooled, ref[f"{key}_{pool}"], rtol=1e-3, atol=5e-3)


def test_metadata_declares_mel_patches(musicnn_home):
    from mde.runtime.package import read_model_info

    info = read_model_info(musicnn_home / "models" / "MTT_musicnn.onnx")
    assert info.framing == "mel_patches" and info.patch_frames == 187 and info.variable_length
    assert info.embedding_output == "penultimate" and info.outputs["mean_pool"] == 753
    assert info.frontend.fp16_round and info.frontend.log == "log10p" and info.licence.startswith("ISC")
    vgg = read_model_info(musicnn_home / "models" / "MTT_vgg.onnx")
    assert not vgg.variable_length and vgg.embedding_output == "pool5" and vgg.embedding_dim == 256


def test_vgg_takes_only_3s_patches(musicnn_home, shared_data, tmp_path):
    from mde.errors import MdeError
    from mde.runtime.extractor import load_model

    vgg = load_model(musicnn_home / "models" / "MTT_vgg.onnx")
    result = vgg.embed(shared_data / MTAT_CLIP)
    assert result.embedding.shape == (9, 256) and result.tags.shape == (9, 50)
    with pytest.raises(MdeError, match=r"takes only 2\.992 s windows"):
        vgg.embed(shared_data / MTAT_CLIP, window=0.5)
    proc = run_mde("tag", shared_data / MTAT_CLIP, "-m", "MTT_vgg", "--window", "1", cwd=tmp_path, home=musicnn_home)
    assert_one_line_error(proc, "takes only 2.992 s windows")


def test_short_clip_gets_one_padded_patch(musicnn_home):
    from mde.runtime.extractor import load_model

    model = load_model(musicnn_home / "models" / "MTT_musicnn.onnx")
    result = model.embed(np.zeros(4000, np.float32) + 0.01 * np.sin(np.arange(4000, dtype=np.float32)))
    assert result.padded and result.embedding.shape == (1, 200)


def test_default_model_is_imported_on_first_use(shared_data, tmp_path):
    home = tmp_path / "fresh-home"
    # The installed `mde` script run from the checkout's root, as the README's main command does: the
    # first-use import must not pick up the source tree (no compiled kernel there) instead of the package.
    script = Path(sys.executable).with_name("mde")
    if not script.is_file():
        pytest.skip(f"no installed mde script beside {sys.executable} (pip install the package)")
    env = {**os.environ, "MDE_HOME": str(home)}
    proc = subprocess.run([str(script), "tag", str(shared_data / MTAT_CLIP), "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "first use: importing the default model MTT_musicnn" in proc.stderr
    assert (home / "models" / "MTT_musicnn.onnx").is_file()
    import json

    [doc] = json.loads(proc.stdout)
    ref = np.load(shared_data / "reference" / "joram_musicnn.npz")
    from mde.tags import MTT_MUSICNN_50

    expected = [MTT_MUSICNN_50[i] for i in np.argsort(-ref["MTT_musicnn_3s_tags"].mean(axis=0))[:5]]
    assert doc["model"] == "MTT_musicnn" and [t["tag"] for t in doc["tags"]] == expected
    again = run_mde("tag", shared_data / MTAT_CLIP, cwd=tmp_path, home=home)
    assert again.returncode == 0 and "first use" not in again.stderr


def test_import_command_and_bad_names(tmp_path):
    home = tmp_path / "home"
    proc = run_mde("import", "musicnn", "MSD_vgg", cwd=tmp_path, home=home)
    assert proc.returncode == 0 and "stored MSD_vgg" in proc.stderr
    assert_one_line_error(run_mde("import", "musicnn", "MTT_nope", cwd=tmp_path, home=home), "MTT_nope")
    assert_one_line_error(
        run_mde("import", "musicnn", "MTT_vgg", "--from", tmp_path, cwd=tmp_path, home=home), "no musicnn model folders"
    )
