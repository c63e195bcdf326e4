"""Model hardening (issue 11): metadata checked against the graph on load, a broken file in the store,
tags, non-finite outputs, bounded requests, re-importing a stored model, a read-only MDE_HOME."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model, tmpfs, write_tone

from mde.errors import MdeError, ModelError
from mde.runtime import store
from mde.runtime.batch import EmbedSettings
from mde.runtime.extractor import EmbeddingResult, load_model
from mde.runtime.package import METADATA_KEY, read_model_info
from mde.tags import top_tags

onnx = pytest.importorskip("onnx")


def _edited(data: bytes, meta=None, graph=None, **changes) -> bytes:
    """The tiny model's bytes with its metadata changed (``meta``: replace the whole JSON text) and
    ``graph(model)`` applied to the graph."""
    model = onnx.load_from_string(data)
    text = next(p.value for p in model.metadata_props if p.key == METADATA_KEY)
    fields = json.loads(text)
    for key, value in changes.items():
        if key.startswith("frontend_"):
            fields["frontend"][key[len("frontend_"):]] = value
        else:
            fields[key] = value
    onnx.helper.set_model_props(model, {METADATA_KEY: meta if meta is not None else json.dumps(fields)})
    if graph:
        graph(model)
    return model.SerializeToString()


def _fixed_frames(frames: int):
    def apply(model) -> None:
        model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = frames
    return apply


def _nan_embedding(model) -> None:
    """embedding = mean / 0: every value is infinite or NaN."""
    graph = model.graph
    graph.node[0].output[0] = "mean"
    graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, np.float32), "zero"))
    graph.node.insert(1, onnx.helper.make_node("Div", ["mean", "zero"], ["embedding"]))


BAD_MODELS = [
    ({"sample_rate": 0}, "sample_rate must be a whole number of Hz from 1000 to 384000, got 0"),
    ({"sample_rate": "16000"}, "sample_rate must be a whole number of Hz from 1000 to 384000, got '16000'"),
    ({"sample_rate": 44100}, "sample_rate 44100 Hz differs from the front end's 8000 Hz"),
    ({"window_samples": 2**40}, "window_samples must be a whole number of samples from 1 to 28800000"),
    ({"hop_samples": -1}, "hop_samples must be a whole number of samples"),
    ({"tag_names": ["a", "b"]}, "2 tag names for output 'tags' of width 3"),
    ({"meta": "[1, 2]"}, "metadata is a JSON list, not an object"),
    ({"frontend_n_mels": 20, "embedding_dim": 20, "outputs": {"embedding": 20, "tags": 3}},
     "the front end gives 20 mel bands, the graph takes 16"),
    ({"outputs": {"embedding": 16, "tags": 4}, "tag_names": ["a", "b", "c", "d"]},
     "output 'tags' is 3 wide in the graph, 4 in the metadata"),
    ({"outputs": {"embedding": 16, "tags": 3, "extra": 5}}, "output 'extra' is not in the graph"),
    ({"graph": _fixed_frames(10)}, "a 0.5 s window at 8000 Hz is 32 frames, the graph takes 10"),
    ({"frontend_n_fft": 300}, "bad front end in metadata (n_fft=300 is not supported"),
]


@pytest.mark.parametrize("changes, fragment", BAD_MODELS, ids=[f for _, f in BAD_MODELS])
def test_inconsistent_metadata_is_one_line_naming_the_file(tmp_path, mde_home, changes, fragment):
    path = tmp_path / "bad.onnx"
    path.write_bytes(_edited(build_tiny_model(), **changes))
    for load in (read_model_info, load_model):
        with pytest.raises(ModelError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message


def _run_mde(*args, home, cwd):
    env = {**os.environ, "MDE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_a_broken_file_in_the_store_is_listed_as_broken_and_the_rest_still_listed(tiny_model, mde_home, capsys):
    (mde_home / "models" / "short-tags.onnx").write_bytes(
        _edited(build_tiny_model("short-tags"), tag_names=["a"]))
    rows = {path.stem: info for path, info in store.list_models()}
    assert isinstance(rows["short-tags"], ModelError) and rows["tiny"].name == "tiny"
    from mde.cli.models import models

    models(as_json=False)
    table = capsys.readouterr().out.splitlines()
    [broken] = [line for line in table if "short-tags" in line]
    assert "broken:" in broken
    assert [line for line in table if line.startswith("│ tiny ")]
    models(as_json=True)
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "1 tag names for output 'tags' of width 3" in listed["short-tags"]["error"] and "error" not in listed["tiny"]


def test_top_tags_refuses_names_that_do_not_fit_and_frames_of_a_model_without_tags(tiny_model):
    with pytest.raises(ValueError, match="2 tag names for"):
        top_tags(np.array([0.1, 0.9, 0.5]), ("a", "b"))
    assert top_tags(np.array([0.1, 0.9, 0.5]), ("a", "b", "c"), k=2) == [("b", pytest.approx(0.9)), ("c", 0.5)]
    result = load_model(tiny_model).embed(np.zeros(8000, np.float32))
    untagged = EmbeddingResult(result.timestamps, result.embedding, None, (), result.info, result.layer)
    for call in (lambda: untagged.top_tags(), lambda: untagged.top_tags(frame=0)):
        with pytest.raises(ModelError, match="has no tags"):
            call()
    order = np.argsort(-result.tags[1], kind="stable")
    assert [name for name, _ in result.top_tags(k=3, frame=1)] == [result.tag_names[i] for i in order]


def test_non_finite_model_outputs_are_an_error_naming_the_file(tmp_path, mde_home):
    fixed = tmp_path / "fixed.onnx"  # a graph of fixed input frames that fit the window loads and runs
    fixed.write_bytes(_edited(build_tiny_model(), graph=_fixed_frames(32)))
    assert np.isfinite(load_model(fixed).embed(np.zeros(8000, np.float32)).embedding).all()
    path = tmp_path / "nan.onnx"
    path.write_bytes(_edited(build_tiny_model(), graph=_nan_embedding))
    clip = write_tone(tmp_path / "clip.wav", 1.0)
    with pytest.raises(ModelError, match=rf"^{clip}: the model tiny gave NaN or infinity in its 'embedding' output$"):
        load_model(path).embed(clip)


@pytest.mark.parametrize(
    "window, hop, fragment",
    [
        (None, float("inf"), "hop must be positive and at most 3600 s, got inf s"),
        (None, float("nan"), "hop must be positive and at most 3600 s, got nan s"),
        (None, -2.0, "hop must be positive and at most 3600 s, got -2 s"),
        (float("inf"), None, "window must be positive and at most 3600 s, got inf s"),
        (4000.0, None, "window must be positive and at most 3600 s, got 4000 s"),
        (None, 1e-5, "hop 1e-05 s is shorter than one sample at 8000 Hz"),
    ],
)
def test_absurd_windows_and_hops_are_refused_with_one_line(tiny_model, window, hop, fragment):
    with pytest.raises(MdeError) as caught:
        load_model(tiny_model).embed(np.zeros(8000, np.float32), window=window, hop=hop)
    assert str(caught.value) == fragment
    if hop is None or hop >= 1e-3:
        with pytest.raises(MdeError, match=fragment.split(",")[0]):
            EmbedSettings(window=window, hop=hop)


def test_embed_with_an_infinite_hop_is_one_line(tiny_model, mde_home, tmp_path):
    clip = write_tone(tmp_path / "clip.wav", 1.0)
    proc = _run_mde("embed", clip, "-o", tmp_path / "out", "--model", tiny_model, "--hop", "inf",
                    home=mde_home, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "hop must be positive and at most 3600 s" in lines[0]


needs_musicnn_import = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("musicnn") is None,
    reason="importing musicnn models needs torch and the musicnn package",
)


@needs_musicnn_import
def test_importing_a_stored_model_again_from_the_same_source_is_a_no_op(mde_home, capsys):
    from mde.cli.models import import_musicnn
    from mde.export.importers.musicnn import musicnn_source

    stored = store.save(_edited(build_tiny_model("MTT_musicnn"), source=musicnn_source("MTT_musicnn")), "MTT_musicnn")
    before = stored.read_bytes()
    import_musicnn(["MTT_musicnn"], from_dir=None, overwrite=False)
    assert capsys.readouterr().err.strip() == "MTT_musicnn is already in the store (same source); nothing to do"
    assert stored.read_bytes() == before
    store.save(build_tiny_model("MTT_musicnn"), "MTT_musicnn", overwrite=True)  # another source
    with pytest.raises(ModelError, match="already exists \\(use --overwrite"):
        import_musicnn(["MTT_musicnn"], from_dir=None, overwrite=False)


def _first_use(home: Path, tmp_path: Path):
    clip = write_tone(tmp_path / "clip.wav", 1.0)
    return _run_mde("embed", clip, "-o", tmp_path / "out", home=home, cwd=tmp_path)


@needs_musicnn_import
def test_first_use_import_into_an_unwritable_mde_home_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    home = tmp_path / "a-file" / "home"
    proc = _first_use(home, tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"mde: error: MDE_HOME ({home}) is not writable (Not a directory), so the default model MTT_musicnn "
        "cannot be imported there: set MDE_HOME to a writable folder (export MDE_HOME=/path/to/folder) or pass --model"
    )


@needs_musicnn_import
def test_first_use_import_into_a_read_only_mount_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as home:
        proc = _first_use(home, tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"MDE_HOME ({home}) is not writable (Read-only file system)" in proc.stderr


def test_window_and_hop_are_named_in_samples_and_old_metadata_keys_still_read(tmp_path, mde_home):
    model = onnx.load_from_string(build_tiny_model())
    written = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    assert written["window_samples"] == written["hop_samples"] == 4000 and "window" not in written
    old = dict(written, window=written.pop("window_samples"), hop=written.pop("hop_samples"))
    path = tmp_path / "old.onnx"
    path.write_bytes(_edited(build_tiny_model(), meta=json.dumps(old)))
    info = load_model(path).info
    assert (info.window_samples, info.hop_samples, info.window_seconds) == (4000, 4000, 0.5)
