"""The model registry and the seed's architectures (torch)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FCN05_CKPT, FCN29_CKPT

from mde.errors import ModelError
from mde.runtime.frontend_config import SEED_FCN

torch = pytest.importorskip("torch")

from mde.export.importers.checkpoint import state_dict_from_checkpoint  # noqa: E402
from mde.trainer.models import build_model, get_model_spec, register, registered_names  # noqa: E402

SEED_SPECS = {
    # name: (architecture, input samples, frames, embedding size)
    "fcn05": ("FCN05", 8000, 32, 64),
    "fcn": ("FCN", 464000, 1813, 64),
    "shortchunk_res": ("ShortChunkCNN_Res", 59049, 231, 512),
}


def test_seed_architectures_are_registered():
    assert set(SEED_SPECS) <= set(registered_names())
    for name, (architecture, samples, frames, dim) in SEED_SPECS.items():
        spec = get_model_spec(name)
        assert (spec.architecture, spec.input_length, spec.n_frames, spec.embedding_dim) == (
            architecture, samples, frames, dim)
        assert spec.frontend == SEED_FCN and spec.sample_rate == 16000 and spec.framing == "audio_windows"
        assert spec.n_tags == 50
    assert get_model_spec("fcn05").input_seconds == 0.5


def test_unknown_architecture_is_a_model_error():
    with pytest.raises(ModelError, match="fcn05"):
        get_model_spec("no-such-net")


def test_names_register_once():
    with pytest.raises(ValueError, match="already registered"):
        register("fcn", architecture="FCN", input_length=1, frontend=SEED_FCN, embedding_dim=1)(lambda: None)


def test_shortchunk_parameter_names_follow_the_seed():
    keys = set(build_model("shortchunk_res").state_dict())
    for key in ("spec_bn.weight", "layer1.conv_1.weight", "layer1.bn_1.running_mean", "layer4.conv_2.bias",
                "layer7.conv_3.weight", "layer7.bn_3.running_var", "dense1.weight", "bn.running_mean",
                "dense2.bias"):
        assert key in keys, key
    assert build_model("shortchunk_res").state_dict()["layer7.conv_1.weight"].shape == (512, 256, 3, 3)
    assert build_model("shortchunk_res").state_dict()["dense2.weight"].shape == (50, 512)


@pytest.mark.parametrize("name, ckpt, reference", [
    ("fcn05", FCN05_CKPT, "joram_fcn05.npz"),
    ("fcn", FCN29_CKPT, "joram_fcn29.npz"),
])
def test_seed_weights_reproduce_the_reference_window(shared_data, name, ckpt, reference):
    state = state_dict_from_checkpoint(shared_data / ckpt)
    weights = {k: torch.from_numpy(np.array(v)) for k, v in state.items() if not k.startswith("spec.")}
    network = build_model(name)
    network.load_state_dict(weights, strict=True)
    ref = np.load(shared_data / "reference" / reference)
    with torch.no_grad():
        out = network.eval()(torch.from_numpy(ref["logmel_first"])[None])
    np.testing.assert_allclose(out["embedding"][0].numpy(), ref["embedding"][0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["tags"][0].numpy(), ref["tags"][0], rtol=0, atol=1e-5)
