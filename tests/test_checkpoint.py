"""The safe checkpoint reader: real Lightning 0.9 files, torch.save round trips in both layouts, hostile
pickles that must stay inert, and damaged files."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from conftest import FCN05_CKPT, FCN29_CKPT

from mde.errors import CheckpointError
from mde.export.importers.checkpoint import (
    PickledObject,
    extract_state_dict,
    read_checkpoint,
    state_dict_from_checkpoint,
)

torch = pytest.importorskip("torch")

FCN_SHAPES = {
    "spec.spectrogram.window": (512,),
    "spec.mel_scale.fb": (257, 128),
    "spec_bn.weight": (1,),
    "spec_bn.num_batches_tracked": (),
    "layer1.conv.weight": (64, 1, 3, 3),
    "layer2.conv.weight": (128, 64, 3, 3),
    "layer5.conv.weight": (64, 128, 3, 3),
    "layer5.bn.running_var": (64,),
    "dense.weight": (50, 64),
    "dense.bias": (50,),
}


@pytest.mark.parametrize("ckpt", [FCN05_CKPT, FCN29_CKPT])
def test_real_checkpoints_load(shared_data, ckpt):
    checkpoint = read_checkpoint(shared_data / ckpt)
    assert checkpoint["pytorch-lightning_version"] == "0.9.0"
    assert isinstance(checkpoint["epoch"], int)
    hparams = checkpoint["hyper_parameters"]
    assert isinstance(hparams, PickledObject)
    assert (hparams.module, hparams.name) == ("pytorch_lightning.utilities.parsing", "AttributeDict")
    assert hparams.mapping["max_epochs"] == 100

    state = state_dict_from_checkpoint(shared_data / ckpt)
    assert len(state) == 44 and all(not k.startswith("model.") for k in state)
    for key, shape in FCN_SHAPES.items():
        assert state[key].shape == shape, key
    assert state["spec_bn.num_batches_tracked"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert np.all(np.isfinite(state["layer3.conv.weight"]))


def test_real_checkpoint_bytes_are_decoded_exactly(shared_data):
    state = state_dict_from_checkpoint(shared_data / FCN05_CKPT)
    reference = np.load(shared_data / "reference" / "joram_fcn05.npz")
    np.testing.assert_array_equal(state["spec.mel_scale.fb"], reference["mel_fb"])
    n = np.arange(512)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 512)
    np.testing.assert_allclose(state["spec.spectrogram.window"], hann, atol=1e-6)


def _save(obj, path: Path, legacy: bool) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_round_trip(tmp_path, legacy):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "float32": torch.randn(3, 5),
        "float64": torch.randn(2, 2, dtype=torch.float64),
        "float16": torch.randn(7).half(),
        "int64": torch.arange(-3, 9),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "complex64": torch.randn(3, dtype=torch.complex64),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "transposed": base.t(),
        "sliced": base[1:, 2:5],
        "strided": base[:, ::2],
        "shares_storage": base,
        "parameter": torch.nn.Parameter(torch.randn(2, 3)),
    }
    path = _save({"state_dict": OrderedDict(tensors), "epoch": 3, "names": ["a", ("b", None)],
                  "flags": {1, 2}, "blob": b"\x00\xff"}, tmp_path / "round.ckpt", legacy)
    checkpoint = read_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["names"] == ["a", ("b", None)]
    assert checkpoint["flags"] == {1, 2} and checkpoint["blob"] == b"\x00\xff"
    state = checkpoint["state_dict"]
    assert isinstance(state, OrderedDict) and list(state) == list(tensors)
    for key, tensor in tensors.items():
        expected = tensor.detach().numpy()
        assert state[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(state[key], expected, err_msg=key)


def test_bfloat16_is_widened_to_float32(tmp_path):
    values = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)
    state = state_dict_from_checkpoint(_save({"w": values}, tmp_path / "bf16.pt", legacy=False), prefix="")
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], values.float().numpy())


class _Hostile:
    """Unpickling this with plain pickle runs ``call(*args)``."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(sentinel: Path):
    return {
        "os.system": _Hostile(os.system, (f"touch '{sentinel}'",)),
        "builtins.exec": _Hostile(builtins.exec, (f"open({str(sentinel)!r}, 'w').close()",)),
        "builtins.eval": _Hostile(builtins.eval, (f"open({str(sentinel)!r}, 'w')",)),
    }


def test_hostile_payload_is_live_under_plain_pickle(tmp_path):
    """Guards the tests below: the exec payload really creates the sentinel when unpickled normally."""
    sentinel = tmp_path / "SENTINEL"
    pickle.loads(pickle.dumps(_payloads(sentinel)["builtins.exec"]))
    assert sentinel.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval"])
def test_hostile_checkpoint_stays_inert(tmp_path, legacy, payload):
    sentinel = tmp_path / "SENTINEL"
    hostile = _payloads(sentinel)[payload]
    lightning_like = {
        "epoch": 1,
        "state_dict": OrderedDict({"model.w": torch.ones(2)}),
        "hyper_parameters": {"model": hostile},
        "callbacks": [hostile],
    }
    checkpoint = read_checkpoint(_save(lightning_like, tmp_path / "evil.ckpt", legacy))
    assert not sentinel.exists()
    stand_in = checkpoint["hyper_parameters"]["model"]
    assert isinstance(stand_in, PickledObject)
    module, name = payload.split(".")
    assert stand_in.name == name and stand_in.module in (module, "posix", "nt")
    assert stand_in.args == hostile.args
    np.testing.assert_array_equal(state_dict_from_checkpoint(tmp_path / "evil.ckpt")["w"], [1.0, 1.0])


def test_hostile_top_level_object_is_refused_inertly(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    path = _save(_payloads(sentinel)["os.system"], tmp_path / "evil.pt", legacy=False)
    with pytest.raises(CheckpointError, match=r"pickled .*system"):
        read_checkpoint(path)
    assert not sentinel.exists()


def test_getattr_chain_pickle_is_refused(tmp_path):
    """A hand-written pickle computing getattr(__import__('os'), 'system')('touch SENTINEL')."""
    sentinel = tmp_path / "SENTINEL"
    text = (f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch {sentinel}'\ntR.")
    path = tmp_path / "chain.ckpt"
    path.write_bytes(text.encode())
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not sentinel.exists()


def test_build_on_an_allowlisted_rebuild_is_refused(tmp_path):
    """BUILD (setattr) on our own rebuild function must not change it, e.g. its __defaults__."""
    path = tmp_path / "build.ckpt"
    path.write_bytes(b"ctorch._utils\n_rebuild_tensor_v2\n(N(dS'__defaults__'\n(I1\ntstb.")
    with pytest.raises(CheckpointError, match="refusing to set the state"):
        read_checkpoint(path)


def _crafted_zip(path: Path, numel_in_id: int, data_bytes: int, size: tuple, stride: tuple) -> Path:
    """A zip checkpoint whose only tensor has the given layout over a float32 storage."""

    class StorageRef:
        pass

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (ref, 0, size, stride, False, OrderedDict())

    ref = StorageRef()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel_in_id) if obj is ref else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/data/0", b"\x00" * data_bytes)
    return path


def test_crafted_zip_with_valid_layout_loads(tmp_path):
    state = read_checkpoint(_crafted_zip(tmp_path / "ok.pt", 4, 16, (2, 2), (2, 1)))
    np.testing.assert_array_equal(state["w"], np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("numel_in_id, data_bytes, size, stride", [
    (4, 16, (1000,), (1,)),   # tensor reaches past its storage
    (4, 16, (2, 2), (4, 1)),  # stride walks off the end
    (4, 12, (4,), (1,)),      # storage shorter than declared
    (-1, 16, (4,), (1,)),     # negative element count
])
def test_out_of_bounds_layouts_are_refused(tmp_path, numel_in_id, data_bytes, size, stride):
    with pytest.raises(CheckpointError):
        read_checkpoint(_crafted_zip(tmp_path / "bad.pt", numel_in_id, data_bytes, size, stride))


@pytest.mark.parametrize("cut", [1, 40, 5_000, 20_000, 1_000_000, -1])
def test_truncated_checkpoint_is_refused(shared_data, tmp_path, cut):
    data = (shared_data / FCN05_CKPT).read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("content", [
    b"",
    b"hello, I am not a checkpoint\n",
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    pickle.dumps(12345),
    b"PK\x03\x04 not really a zip",
])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_zip_without_torch_layout_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match=r"data\.pkl"):
        read_checkpoint(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.ckpt")


def test_state_dict_prefix_selection(tmp_path):
    checkpoint = {"state_dict": {"model.a": np.ones(2), "other.b": np.zeros(1), "note": "x"}}
    assert list(extract_state_dict(checkpoint)) == ["a"]
    assert sorted(extract_state_dict(checkpoint, prefix="")) == ["model.a", "other.b"]
    assert list(extract_state_dict({"a": np.ones(1)}, prefix=None)) == ["a"]
    with pytest.raises(CheckpointError, match=r"start with 'net\.'"):
        extract_state_dict(checkpoint, prefix="net.")
    with pytest.raises(CheckpointError, match="no tensors"):
        extract_state_dict({"state_dict": {"epoch": 3}})
