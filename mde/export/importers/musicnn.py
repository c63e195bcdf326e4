"""Load the pretrained models of the ``musicnn`` package (0.1.0) into the torch ports, without TensorFlow.

The package ships one TF checkpoint per model, saved with the prefix ``<package>/<MODEL>/`` (files
``.index`` and ``.data-00000-of-00001``). Its variables are named by ``tf.layers`` in creation order
(``conv2d``, ``conv2d_1``, ..., ``batch_normalization_<i>``, ``dense_<i>``; the VGG convs are named
``1CNN``..``5CNN``), so each torch module is paired with a TF layer by walking both in the order
``models.py`` builds them. Conversion rules:

* conv ``kernel`` (height=time, width=mel, in, out) -> Conv2d weight (out, in, time, mel); for the
  mid-end convs, whose kernel spans all the features, -> Conv1d weight (out, features, time);
* dense ``kernel`` (in, out) -> Linear weight (out, in); every ``bias`` as is;
* batch norm ``gamma``/``beta``/``moving_mean``/``moving_variance`` -> ``weight``/``bias``/
  ``running_mean``/``running_var`` (``num_batches_tracked`` is set to 0: TF keeps no count).

Adam slots (``*/Adam``, ``*/Adam_1``), ``beta1_power``, ``beta2_power`` and ``global_step`` are training
state and are skipped; any other variable left over, any torch entry not filled, or a shape that does not
match is a :class:`mde.errors.CheckpointError` naming them.

The package is located with ``importlib.util.find_spec``, which finds a top-level package without
executing it (its ``models.py`` imports TensorFlow; nothing of it is ever imported here).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from mde.errors import CheckpointError, ModelError
from mde.export.examples import example_signal
from mde.export.importers.tf_checkpoint import read_tf_checkpoint
from mde.export.onnx_export import check_parity, export_onnx
from mde.runtime import store
from mde.runtime.chunker import cut_frames, frame_starts
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.package import ModelInfo
from mde.tags import MSD_50, MTT_MUSICNN_50
from mde.trainer.models import build_model, get_model_spec

INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"


@dataclass(frozen=True)
class MusicnnModel:
    """One pretrained model of the package: its folder name, our architecture, its tag order."""

    name: str
    arch: str
    tag_names: tuple[str, ...]


MUSICNN_MODELS = {
    model.name: model for model in (
        MusicnnModel("MTT_musicnn", "musicnn", MTT_MUSICNN_50),
        MusicnnModel("MSD_musicnn", "musicnn", MSD_50),
        MusicnnModel("MTT_vgg", "musicnn_vgg", MTT_MUSICNN_50),
        MusicnnModel("MSD_vgg", "musicnn_vgg", MSD_50),
    )
}

_TRAINING_STATE = ("beta1_power", "beta2_power", "global_step")
_SLOT_SUFFIXES = ("/Adam", "/Adam_1")
_BN_VARIABLES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

# (TF layer type, torch module) in the order musicnn's models.py creates the layers.
_MUSICNN_LAYERS = (
    ("batch_normalization", "input_bn"),
    *(pair for branch in ("timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2")
      for pair in (("conv2d", f"{branch}.conv"), ("batch_normalization", f"{branch}.bn"))),
    *(pair for index in range(3)
      for pair in (("conv2d", f"midend.{index}.conv"), ("batch_normalization", f"midend.{index}.bn"))),
    ("batch_normalization", "pool_bn"),
    ("dense", "dense"),
    ("batch_normalization", "dense_bn"),
    ("dense", "classifier"),
)
_VGG_LAYERS = (
    ("batch_normalization", "input_bn"),
    *(pair for index in range(5)
      for pair in ((f"{index + 1}CNN", f"blocks.{index}.conv"), ("batch_normalization", f"blocks.{index}.bn"))),
    ("dense", "classifier"),
)
_LAYERS = {"musicnn": _MUSICNN_LAYERS, "musicnn_vgg": _VGG_LAYERS}


def _tf_layer_names(layers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """TF layer name -> torch module, numbering repeated layer types as tf.layers does (x, x_1, x_2...)."""
    seen: dict[str, int] = {}
    names = {}
    for kind, module in layers:
        count = seen.get(kind, 0)
        seen[kind] = count + 1
        names[kind if count == 0 else f"{kind}_{count}"] = module
    return names


def _hyperparameters(arch: str, variables: dict[str, np.ndarray], origin: str) -> dict[str, int]:
    """Constructor arguments read off the checkpoint's shapes (e.g. 512 mid-end filters for MSD_musicnn_big)."""
    if arch == "musicnn":
        sizes = {"n_tags": "dense_1/bias", "midend_filters": "conv2d_5/bias", "backend_units": "dense/bias"}
    else:
        sizes = {"n_tags": "dense/bias", "filters": "1CNN/bias"}
    missing = sorted(name for name in sizes.values() if name not in variables)
    if missing:
        raise CheckpointError(f"{origin}: not a {arch} checkpoint (no variable {', '.join(missing)})")
    return {key: int(variables[name].shape[0]) for key, name in sizes.items()}


def _convert_kernel(kernel: np.ndarray, target_dims: int) -> np.ndarray:
    """TF conv kernel (time, width, in, out) -> torch (out, in, time, width), or (out, width, time) for a
    Conv1d whose TF kernel spans the whole width with one input channel; dense (in, out) -> (out, in)."""
    if kernel.ndim == 2:
        return kernel.T
    oihw = kernel.transpose(3, 2, 0, 1)
    return oihw if target_dims == 4 else oihw[:, 0].transpose(0, 2, 1)


def _torch_name(variable: str, layer_names: dict[str, str]) -> Optional[str]:
    """The torch state-dict key a TF variable fills, or None if it is not one of the model's variables."""
    layer, _, leaf = variable.rpartition("/")
    module = layer_names.get(layer)
    if module is None:
        return None
    if leaf in ("kernel", "bias"):
        return f"{module}.{'weight' if leaf == 'kernel' else 'bias'}"
    return f"{module}.{_BN_VARIABLES[leaf]}" if leaf in _BN_VARIABLES else None


def _is_training_state(variable: str) -> bool:
    return variable in _TRAINING_STATE or variable.endswith(_SLOT_SUFFIXES)


def _map_variables(arch: str, variables: dict[str, np.ndarray],
                   expected: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Fill every entry of ``expected`` (a fresh model's state dict) from the TF variables."""
    layer_names = _tf_layer_names(_LAYERS[arch])
    state: dict[str, torch.Tensor] = {}
    unused, mismatched = [], []
    for variable, value in variables.items():
        if _is_training_state(variable):
            continue
        key = _torch_name(variable, layer_names)
        if key is None or key not in expected:
            unused.append(variable)
            continue
        if variable.endswith("/kernel"):
            value = _convert_kernel(value, expected[key].dim())
        if tuple(value.shape) != tuple(expected[key].shape):
            mismatched.append(f"{variable} {tuple(value.shape)} -> {key} {tuple(expected[key].shape)}")
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    for key in expected:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (("unused TF variables", sorted(unused)), ("unfilled torch entries", missing),
                             ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(f"{origin}: does not match the {arch} architecture ({'; '.join(problems)})")
    return {key: state[key] for key in expected}


def _convert(prefix: str | Path, arch: str) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """(constructor arguments of the checkpoint's model, its filled state dict)."""
    if arch not in _LAYERS:
        raise ValueError(f"unknown musicnn architecture {arch!r}; known: {', '.join(_LAYERS)}")
    variables = read_tf_checkpoint(prefix)
    kwargs = _hyperparameters(arch, variables, str(prefix))
    expected = build_model(arch, **kwargs).state_dict()
    return kwargs, _map_variables(arch, variables, expected, str(prefix))


def musicnn_state_dict(prefix: str | Path, arch: str) -> dict[str, torch.Tensor]:
    """The torch state dict of architecture ``arch`` ('musicnn' or 'musicnn_vgg') from the TF checkpoint
    at ``prefix`` (a musicnn model folder such as ``<package>/MTT_musicnn``)."""
    return _convert(prefix, arch)[1]


def find_musicnn_dir(from_dir: Optional[Path] = None) -> Path:
    """The folder holding the musicnn model folders (MTT_musicnn/, ...): ``from_dir`` if given, otherwise
    the installed ``musicnn`` package, found without importing it."""
    if from_dir is None:
        spec = importlib.util.find_spec("musicnn")
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"the musicnn package is not installed: {INSTALL_HINT}")
        folder = Path(next(iter(spec.submodule_search_locations)))
    else:
        folder = Path(from_dir)
    if not any((folder / name / ".index").is_file() for name in MUSICNN_MODELS):
        raise CheckpointError(f"{folder}: no musicnn model folders ({', '.join(MUSICNN_MODELS)}); {INSTALL_HINT}")
    return folder


def load_musicnn(name: str, from_dir: Optional[Path] = None) -> nn.Module:
    """The pretrained model ``name`` (MTT_musicnn, MSD_musicnn, MTT_vgg, MSD_vgg) as a torch module in
    eval mode; its tag order is ``MUSICNN_MODELS[name].tag_names``."""
    if name not in MUSICNN_MODELS:
        raise CheckpointError(f"unknown musicnn model {name!r}; known: {', '.join(MUSICNN_MODELS)}")
    folder = find_musicnn_dir(from_dir) / name
    if not (folder / ".index").is_file():
        raise CheckpointError(f"{folder}: no checkpoint for {name} in this musicnn installation")
    arch = MUSICNN_MODELS[name].arch
    kwargs, state = _convert(folder, arch)
    model = build_model(arch, **kwargs)
    model.load_state_dict(state)
    return model.eval()


MUSICNN_SOURCE = "musicnn 0.1.0 package ({dataset})"
MUSICNN_LICENCE = "ISC (musicnn package)"
_DATASETS = {"MTT": "MagnaTagATune", "MSD": "Million Song Dataset"}
EXAMPLE_PATCHES = 3
SHORT_PATCH_FRAMES = 31
"""A 0.5 s patch: variable-length models are parity-checked at this length too."""


def musicnn_source(name: str) -> str:
    """The ``source`` metadata of an imported musicnn model (how ``mde import`` knows it is stored already)."""
    return MUSICNN_SOURCE.format(dataset=_DATASETS[name.split("_")[0]])


def musicnn_model_info(name: str, network: nn.Module, example: np.ndarray) -> ModelInfo:
    """Metadata of an imported musicnn model; output sizes are read off the network's outputs (all but
    the pre-sigmoid 'logits', which only training uses)."""
    spec = get_model_spec(MUSICNN_MODELS[name].arch)
    frontend = spec.logmel_frontend
    patch = spec.n_frames
    with torch.no_grad():
        outputs = network(torch.from_numpy(example))
    names = [spec.embedding_output, *(key for key in outputs if key not in (spec.embedding_output, "logits"))]
    sizes = {key: int(outputs[key].shape[1]) for key in names}
    return ModelInfo(
        name=name,
        architecture=spec.architecture,
        source=musicnn_source(name),
        licence=MUSICNN_LICENCE,
        sample_rate=frontend.sample_rate,
        window_samples=patch * frontend.hop_length,
        hop_samples=patch * frontend.hop_length,
        input_kind="logmel",
        framing=spec.framing,
        frontend=frontend,
        embedding_dim=sizes[spec.embedding_output],
        tag_names=MUSICNN_MODELS[name].tag_names,
        embedding_output=spec.embedding_output,
        tags_output="tags",
        outputs=sizes,
        patch_frames=patch,
        variable_length=spec.variable_length,
    )


def example_patches(frames: int, n_patches: int = EXAMPLE_PATCHES) -> np.ndarray:
    """float32 (n_patches, 96, frames): consecutive patches of the C front end's log-mel of a
    synthesized music-like signal, cut as the runtime cuts them."""
    config = get_model_spec("musicnn").logmel_frontend
    n_samples = (frames * n_patches - 1) * config.hop_length
    logmel = MelSpectrogram.from_config(config)(example_signal(n_samples, config.sample_rate))
    return cut_frames(logmel, frame_starts(logmel.shape[-1], frames, frames)[:n_patches], frames)


def import_musicnn(
    name: str, from_dir: Optional[Path] = None, overwrite: bool = False
) -> tuple[Path, ModelInfo]:
    """Convert one of the package's models (MTT_musicnn, MSD_musicnn, MTT_vgg, MSD_vgg) to an mde model
    file, check ONNX Runtime against torch (and, for musicnn, at 0.5 s patches too), and store it."""
    network = load_musicnn(name, from_dir)
    store.model_path(name)  # reject a bad name before the export work
    if store.model_path(name).exists() and not overwrite:
        raise ModelError(f"model {name!r} already exists (use --overwrite to replace it)")
    spec = get_model_spec(MUSICNN_MODELS[name].arch)
    example = example_patches(spec.n_frames)
    info = musicnn_model_info(name, network, example)
    data = export_onnx(network, example, info)
    if info.variable_length:
        check_parity(data, network, example_patches(SHORT_PATCH_FRAMES))
    return store.save(data, name, overwrite=overwrite), info
