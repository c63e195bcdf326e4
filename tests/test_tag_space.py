"""A model file's tag encoder (mde.runtime.tag_space): what the metadata may hold and the one-line refusals.
Real tag encoders, exported from trained and untrained JETATAG runs and compared with torch, are tested in
test_jetatag_training and test_waveform_families_serve."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import build_tiny_model

from mde.errors import MdeError, ModelError
from mde.runtime.package import ModelInfo, info_from_metadata
from mde.runtime.tag_space import TagEncoder, decode_graph, encode_graph, multi_hot

TAGS = ("piano", "guitar", "slow")


def tiny_info(**changes) -> ModelInfo:
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(build_tiny_model(n_tags=3)).metadata_props}
    return dataclasses.replace(info_from_metadata(props, "tiny"), **changes)


def test_tag_sets_become_multi_hot_vectors_and_unknown_tags_are_named():
    assert multi_hot(["slow", "piano"], TAGS, "m").tolist() == [1.0, 0.0, 1.0]
    assert multi_hot("guitar", TAGS, "m").tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(MdeError, match="m has no tag 'gitar'; did you mean 'guitar'"):
        multi_hot(["gitar"], TAGS, "m")
    with pytest.raises(MdeError, match="m has no tag 'zzz' \\(3 tags\\)"):
        multi_hot(["zzz"], TAGS, "m")
    with pytest.raises(MdeError, match="at least one tag"):
        multi_hot([], TAGS, "m")


def test_metadata_holds_a_tag_encoder_only_beside_a_joint_output():
    text = encode_graph(b"not onnx")
    assert decode_graph(text, "m") == b"not onnx"
    data = json.loads(tiny_info().to_json())
    data["tag_encoder"] = text
    with pytest.raises(ModelError, match="a tag_encoder needs tag names and a 'joint' output"):
        ModelInfo.from_json(json.dumps(data), "m.onnx")
    data["outputs"]["joint"] = 8
    assert ModelInfo.from_json(json.dumps(data), "m.onnx").tag_encoder == text


def test_a_missing_or_broken_tag_encoder_is_one_line():
    with pytest.raises(ModelError, match="tiny has no tag encoder"):
        TagEncoder(tiny_info(), "m.onnx")
    with pytest.raises(ModelError, match=r"m\.onnx: the tag encoder in the metadata is not base64"):
        TagEncoder(tiny_info(tag_encoder="%%%"), "m.onnx")
    with pytest.raises(ModelError, match=r"m\.onnx: the tag encoder: not a loadable ONNX model \("):
        TagEncoder(tiny_info(tag_encoder=encode_graph(b"not onnx")), "m.onnx")
    tiny = build_tiny_model(n_tags=3)  # a real graph, but logmel -> embedding and tags
    with pytest.raises(ModelError, match="the tag encoder maps \\['logmel'\\] to \\['embedding', 'tags'\\]"):
        TagEncoder(tiny_info(tag_encoder=encode_graph(tiny)), "m.onnx")
