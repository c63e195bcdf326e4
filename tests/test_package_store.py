import json

import pytest
from conftest import build_tiny_model

from mde.errors import ModelError, ModelNotFound
from mde.runtime import store
from mde.runtime.frontend_config import SEED_FCN
from mde.runtime.package import ModelInfo, read_model_info


def _info(**changes):
    base = dict(
        name="m", architecture="fcn05", source="test", licence="MIT", sample_rate=16000, window_samples=8000,
        hop_samples=8000, input_kind="logmel", framing="audio_windows", frontend=SEED_FCN, embedding_dim=64,
        tag_names=("a", "b"), outputs={"embedding": 64, "tags": 2},
    )
    base.update(changes)
    return ModelInfo(**base)


def test_metadata_round_trips_through_json():
    info = _info(metrics={"roc_auc": 0.85})
    again = ModelInfo.from_json(info.to_json())
    assert again == info
    assert again.frontend == SEED_FCN and again.window_seconds == 0.5 and again.n_tags == 2


def test_metadata_of_another_format_version_is_refused():
    data = json.loads(_info().to_json())
    data["format_version"] = 99
    with pytest.raises(ModelError, match="format 99"):
        ModelInfo.from_json(json.dumps(data))
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelInfo.from_json("{nope")
    del data["window_samples"]
    data["format_version"] = 1
    with pytest.raises(ModelError, match="incomplete"):
        ModelInfo.from_json(json.dumps(data))


def test_store_saves_atomically_resolves_and_lists(mde_home):
    path = store.save(build_tiny_model("tiny"), "tiny")
    assert path == mde_home / "models" / "tiny.onnx"
    assert store.resolve("tiny") == path
    assert store.resolve(str(path)) == path
    assert read_model_info(path).name == "tiny"
    [(listed, info)] = store.list_models()
    assert listed == path and info.architecture == "tiny-test"
    with pytest.raises(ModelError, match="already exists"):
        store.save(build_tiny_model("tiny"), "tiny")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_store_refuses_a_model_whose_metadata_names_another(mde_home):
    with pytest.raises(ModelError, match="names 'other'"):
        store.save(build_tiny_model("other"), "tiny")
    assert list((mde_home / "models").iterdir()) == []


def test_unknown_models_and_bad_names(mde_home, tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        store.resolve("nope")
    with pytest.raises(ModelNotFound, match="no such model file"):
        store.resolve(str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelError, match="invalid model name"):
        store.model_path("../evil")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        read_model_info(garbage)
