"""Import the first seed's checkpoints (Music_DeepEmbedding_Extractor: FCN05, FCN29, ShortChunkCNN_Res
trained on MagnaTagATune) into the model store.

The checkpoint is read without running its pickled code, the architecture is recognised from its
state-dict keys and shapes (FCN05 and FCN29 share them: then the training config pickled in the
hyper-parameters decides, else the file name), the checkpoint's own torchaudio front-end buffers are
checked against mde's C front end, and the network is exported to ONNX with its metadata after an
ONNX Runtime vs torch parity check on log-mels of a synthesized music-like signal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.errors import CheckpointError, MissingExtraError
from mde.export.importers.checkpoint import PickledObject, extract_state_dict, read_checkpoint
from mde.runtime import store
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.package import ModelInfo
from mde.tags import MTAT_TOP50

try:
    import torch
except ImportError:
    raise MissingExtraError("torch", "export", "Importing a checkpoint") from None

from mde.export.examples import example_inputs
from mde.export.onnx_export import export_onnx  # needs torch
from mde.trainer.models import ModelSpec, get_model_spec

SEED_ARCHITECTURES = ("fcn05", "fcn", "shortchunk_res")
"""Registry names of the seed's architectures."""
DEFAULT_NAMES = {"fcn05": "fcn05-mtat", "fcn": "fcn29-mtat", "shortchunk_res": "shortchunk-res-mtat"}
SEED_LICENCE = "unknown (first seed's checkpoint)"
STATE_PREFIX = "model."
WINDOW_BUFFER = "spec.spectrogram.window"
FILTERBANK_BUFFER = "spec.mel_scale.fb"
FRONTEND_ATOL = 1e-4
"""Largest |checkpoint buffer - mde front end| accepted: torchaudio builds its filterbank in float32,
which alone moves it by ~1.4e-5 from a float64 construction."""
EXAMPLE_WINDOWS = 3

# model.type of the seed's training configs (lower-cased) -> registry name.
_CONFIG_MODEL_TYPES = {"short_term_fcn": "fcn05", "fcn": "fcn", "shortchunkcnn_res": "shortchunk_res"}
# Markers in the seed's checkpoint file names -> registry name (first match wins).
_FILE_NAME_MARKERS = (("FCN05", "fcn05"), ("FCN29", "fcn"), ("FCN037", "shortchunk_res"),
                      ("ShortChunk", "shortchunk_res"))
_MAX_CONFIG_DEPTH = 32
_METRIC = re.compile(r"(roc_auc|pr_auc)=(\d+(?:\.\d+)?)")


def import_seed(path: str | os.PathLike[str], name: Optional[str] = None, overwrite: bool = False,
                arch: Optional[str] = None) -> tuple[Path, ModelInfo]:
    """Import a seed checkpoint into the store; returns the stored file and its metadata.

    name: store name (default 'fcn05-mtat', 'fcn29-mtat' or 'shortchunk-res-mtat').
    arch: registry name ('fcn05', 'fcn', 'shortchunk_res') when it cannot be recognised.
    Raises CheckpointError (unreadable / unrecognised checkpoint, front end that differs from mde's),
    ParityError (ONNX Runtime differs from torch) or ModelError (name taken without ``overwrite``).
    """
    network, info = load_seed(path, name=name, arch=arch)
    store.model_path(info.name)  # reject a bad name before the export work
    onnx_bytes = export_onnx(network, example_inputs(info, EXAMPLE_WINDOWS), info)
    return store.save(onnx_bytes, info.name, overwrite=overwrite), info


def load_seed(path: str | os.PathLike[str], name: Optional[str] = None,
              arch: Optional[str] = None) -> tuple[torch.nn.Module, ModelInfo]:
    """The network of a seed checkpoint (eval mode, weights loaded) and its metadata, after the
    architecture is recognised and the checkpoint's front-end buffers are checked against mde's.

    name, arch: as for :func:`import_seed`.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    state = extract_state_dict(checkpoint, STATE_PREFIX, origin=str(path))
    arch = arch or identify_architecture(checkpoint, state, path.name)
    if arch not in SEED_ARCHITECTURES:
        raise CheckpointError(f"--arch {arch!r} is not a seed architecture ({', '.join(SEED_ARCHITECTURES)})")
    spec = get_model_spec(arch)
    check_frontend_buffers(state, MelSpectrogram.from_config(spec.logmel_frontend), str(path))
    network = load_network(spec, state, str(path))
    return network, seed_model_info(spec, path.name, name or DEFAULT_NAMES[arch])


def identify_architecture(checkpoint: dict, state: dict[str, np.ndarray], file_name: str) -> str:
    """Registry name of the seed architecture whose parameters match ``state`` (keys and shapes)."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("spec.")}
    matches = [arch for arch in SEED_ARCHITECTURES if _parameter_shapes(arch) == shapes]
    if not matches:
        sample = ", ".join(sorted(shapes)[:4])
        raise CheckpointError(
            f"{file_name}: state dict of {len(shapes)} tensors ({sample}, ...) matches none of the seed's "
            f"architectures ({', '.join(SEED_ARCHITECTURES)})"
        )
    if len(matches) == 1:
        return matches[0]
    for hint in (config_architecture(checkpoint), file_name_architecture(file_name)):
        if hint in matches:
            return hint
    raise CheckpointError(
        f"{file_name}: the weights fit {' and '.join(matches)} and neither the training config nor the "
        f"file name tells which; pass --arch ({' or '.join(matches)})"
    )


def _parameter_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in get_model_spec(arch).factory().state_dict().items()}


def config_architecture(checkpoint: dict) -> Optional[str]:
    """Registry name from the ``model.type`` of the training config stored in the hyper-parameters.

    The seed's Lightning 0.9 checkpoints pickle OmegaConf configs; the root config (reached through the
    ``_parent`` links) holds ``model: {type: 'Short_Term_FCN' | 'FCN', ...}``. None when absent or
    ambiguous.
    """
    kinds = _model_types(checkpoint.get("hyper_parameters"))
    found = {_CONFIG_MODEL_TYPES.get(kind.lower()) for kind in kinds}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def file_name_architecture(file_name: str) -> Optional[str]:
    """Registry name from a seed file name such as 'FCN05-roc_auc=0.8552-pr_auc=0.3344.ckpt'."""
    return next((arch for marker, arch in _FILE_NAME_MARKERS if marker.lower() in file_name.lower()), None)


def _model_types(root: Any) -> Iterator[str]:
    """Every string ``type`` of a ``model`` entry in any mapping reachable from ``root``."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, PickledObject):
            pending.extend([value.args, value.state, value.mapping, value.sequence])
            value = _omegaconf_content(value)
        if isinstance(value, dict):
            model = _plain(value.get("model"))
            if isinstance(model, dict) and isinstance(model.get("type"), str):
                yield model["type"]
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)


def _omegaconf_content(value: PickledObject) -> Any:
    """The ``_content`` of a pickled OmegaConf container (DictConfig / ListConfig), else None."""
    if value.module.startswith("omegaconf") and isinstance(value.state, dict):
        return value.state.get("_content")
    return None


def _plain(value: Any, depth: int = 0) -> Any:
    """A pickled OmegaConf value as plain dicts, lists and scalars (other stand-ins are kept).

    Nesting deeper than ``_MAX_CONFIG_DEPTH`` (only a crafted, self-referencing file has it) is left as is.
    """
    if depth > _MAX_CONFIG_DEPTH:
        return value
    if isinstance(value, PickledObject):
        content = _omegaconf_content(value)
        if content is not None:
            return _plain(content, depth + 1)
        if value.module.startswith("omegaconf") and isinstance(value.state, dict) and "_val" in value.state:
            return _plain(value.state["_val"], depth + 1)
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def check_frontend_buffers(state: dict[str, np.ndarray], frontend: MelSpectrogram, origin: str) -> None:
    """CheckpointError unless the checkpoint's torchaudio window and filterbank equal mde's front end."""
    for key, ours in ((WINDOW_BUFFER, frontend.window), (FILTERBANK_BUFFER, frontend.filterbank)):
        if key not in state:
            raise CheckpointError(f"{origin}: no front-end buffer {STATE_PREFIX}{key} to check against mde's")
        theirs = state[key]
        if theirs.shape != ours.shape:
            raise CheckpointError(
                f"{origin}: front-end buffer {key} has shape {theirs.shape}, mde's front end {ours.shape}"
            )
        delta = float(np.abs(theirs.astype(np.float64) - ours).max())
        if not delta <= FRONTEND_ATOL:
            raise CheckpointError(
                f"{origin}: front-end buffer {key} differs from mde's front end by up to {delta:.3g} "
                f"(tolerance {FRONTEND_ATOL:g})"
            )


def load_network(spec: ModelSpec, state: dict[str, np.ndarray], origin: str) -> torch.nn.Module:
    """The registered network with the checkpoint's weights (front-end buffers excluded), strictly."""
    network = spec.factory()
    weights = {k: torch.from_numpy(np.array(v)) for k, v in state.items() if not k.startswith("spec.")}
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{origin}: weights do not fit {spec.architecture}: {detail}") from None
    return network.eval()


def seed_model_info(spec: ModelSpec, file_name: str, name: str) -> ModelInfo:
    """The metadata of an imported seed model (window = hop = the network's input length)."""
    return ModelInfo(
        name=name,
        architecture=spec.architecture,
        source=f"first seed, MagnaTagATune ({file_name})",
        licence=SEED_LICENCE,
        sample_rate=spec.sample_rate,
        window_samples=spec.input_length,
        hop_samples=spec.input_length,
        input_kind="logmel",
        framing=spec.framing,
        frontend=spec.logmel_frontend,
        embedding_dim=spec.embedding_dim,
        tag_names=MTAT_TOP50,
        outputs={"embedding": spec.embedding_dim, "tags": len(MTAT_TOP50)},
        metrics={key: float(value) for key, value in _METRIC.findall(file_name)},
    )
