"""``mde export``'s Python side: a training run, a seed checkpoint or an mde model file -> an mde model
file in fp32, fp16 or int8.

Sources:
* a run folder (or its ``checkpoints/best.pt``): the registry network is rebuilt with the run's tag
  count and best weights, and its metadata is made from the registry entry and the run (a log-mel
  network's front end, or a waveform network's rate, channels and input transform);
  a run that trained a joint audio-tag space (JETATAG withJE) also gets its tag encoder, as a second
  small fp32 graph in the metadata (:mod:`mde.runtime.tag_space`);
* a first-seed ``.ckpt``: read by :mod:`mde.export.importers.seed`;
* a stored model name or an ``.onnx`` file (fp32): only the precision conversion applies.

A torch source is exported to ONNX (opset >= 17, dynamic batch) and checked against torch on
synthesized music-like windows plus, when ``calib`` is given, windows of that real audio; the graph is
then simplified offline by ONNX Runtime at ORT_ENABLE_BASIC (constant folding, redundant-node removal,
Conv+BatchNorm / Conv+Add / Conv+Mul fusions: standard ONNX ops only). EXTENDED and above insert
ONNX Runtime contrib ops (FusedConv, ...) that only ORT's CPU/CUDA providers run, and ORT documents such
offline-optimized files as tied to the machine's provider; BASIC keeps the file portable to TensorRT
and other providers. The simplified graph is checked against torch again, then converted to fp16 or
int8 (:mod:`mde.export.quantize`) and checked against the fp32 graph.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

from mde.atomic import atomic_path
from mde.errors import MdeError, ModelError
from mde.export.calibration import Notes, audio_windows, spread
from mde.export.examples import example_inputs
from mde.export.onnx_export import check_parity, export_onnx, export_tag_encoder, read_metadata, with_metadata
from mde.export.progress import Progress, no_progress
from mde.export.quantize import MIN_CALIBRATION_WINDOWS, Agreement, to_fp16, to_int8
from mde.runtime import store
from mde.runtime.band_norm import BandNorm
from mde.runtime.package import DISTILL_SOURCE_PREFIX, JOINT_OUTPUT, TARGET_PREFIX, ModelInfo
from mde.runtime.precision import variant_name
from mde.runtime.tag_space import encode_graph

MIN_OPSET = 17
EXAMPLE_WINDOWS = 3
"""Synthesized windows in every parity check."""
REAL_PARITY_WINDOWS = 16
"""Windows of the ``calib`` audio added to the torch and fp16 parity checks (evenly spread)."""
CALIBRATION_LIMIT = 100
"""Default of the most int8 calibration windows used (evenly spread over all those the audio gives): the
fewest accepted. More only widen the MinMax ranges, costing time and no accuracy (MTT_musicnn on the two
test clips: embedding cosine 0.984 from 100 windows, 0.980 from 200)."""
MAX_CALIBRATION_WINDOWS = 10_000
"""The most calibration windows accepted (they are held in memory: FCN29 ~0.9 MB each)."""
RUN_LICENCE = "unknown"


class ExportResult(NamedTuple):
    """What :func:`export_model` wrote and how it checked.

    path: the written file. info: its metadata.
    torch_deltas: max |ONNX Runtime - torch| per output of the fp32 graph (empty for an ONNX source).
    agreement: the fp16 / int8 graph against the fp32 one (None for fp32).
    """

    path: Path
    info: ModelInfo
    torch_deltas: dict[str, float]
    agreement: Optional[Agreement]


def export_model(source: str | os.PathLike[str], out: str | os.PathLike[str], *, fp16: bool = False,
                 int8: bool = False, calib: Optional[str | os.PathLike[str]] = None,
                 calib_hop: Optional[float] = None, calib_windows: int = CALIBRATION_LIMIT,
                 opset: int = MIN_OPSET, name: Optional[str] = None, on_note: Optional[Notes] = None,
                 on_progress: Progress = no_progress) -> ExportResult:
    """Export ``source`` (run folder, best.pt, seed .ckpt, stored model name or .onnx file) to ``out``.

    fp16 / int8: the precision (at most one; fp32 otherwise). calib: audio folder, manifest CSV or audio
    file: real audio for the parity checks, and the int8 calibration set (>= 100 windows); unreadable
    files in it are skipped, each told to ``on_note`` in one line. calib_hop: seconds between calibration
    windows (None: chosen from the audio, see :mod:`mde.export.calibration`). calib_windows: the most
    int8 calibration windows used (100 to MAX_CALIBRATION_WINDOWS), evenly spread over the audio. name:
    the model name in the metadata (default: the run folder's name, the seed's default name, or the
    source model's name). ``on_progress`` follows the long steps (:mod:`mde.export.progress`).
    Raises MdeError for bad input, ParityError when a check fails; ``out`` is written atomically.
    """
    if fp16 and int8:
        raise MdeError("choose one of --fp16 and --int8")
    if int8 and calib is None:
        raise MdeError("--int8 needs --calib: a folder or manifest of real audio "
                       f"(>= {MIN_CALIBRATION_WINDOWS} windows)")
    if int8 and not MIN_CALIBRATION_WINDOWS <= calib_windows <= MAX_CALIBRATION_WINDOWS:
        raise MdeError(f"--calib-windows {calib_windows}: int8 calibration uses {MIN_CALIBRATION_WINDOWS} to "
                       f"{MAX_CALIBRATION_WINDOWS} windows")
    if calib_hop is not None and not 0 < calib_hop < math.inf:
        raise MdeError(f"--calib-hop {calib_hop}: give a positive number of seconds, or auto")
    if opset < MIN_OPSET:
        raise MdeError(f"--opset {opset}: mde exports need opset {MIN_OPSET} or later")
    if name is not None:
        store.check_name(name)
    network, info, data = _load_source(Path(source), name)
    examples = example_inputs(info, EXAMPLE_WINDOWS)
    real = None
    if calib is not None:
        real = audio_windows(calib, info, hop=calib_hop, limit=calib_windows if int8 else REAL_PARITY_WINDOWS,
                             minimum=MIN_CALIBRATION_WINDOWS if int8 else 1, on_note=on_note,
                             on_progress=on_progress)
    check = examples if real is None else np.concatenate([examples, spread(real, REAL_PARITY_WINDOWS)])
    deltas: dict[str, float] = {}
    if network is not None:
        data, deltas = _export_fp32(network, info, check, opset)
    agreement = None
    if fp16:
        data, agreement = to_fp16(data, check, on_progress=on_progress)
    elif int8 and real is not None:
        data, agreement = to_int8(data, real, np.concatenate([examples, real]), on_progress=on_progress)
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"  # a variant's default name: '<name>-<precision>'
    info = dataclasses.replace(read_metadata(data), name=name or variant_name(info.name, precision))
    data = with_metadata(data, info)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return ExportResult(out, info, deltas, agreement)


def _load_source(source: Path, name: Optional[str]):
    """(torch network or None, metadata, fp32 ONNX bytes or None) of an export source."""
    if source.is_dir():
        return (*_load_run(source / "checkpoints" / "best.pt", source.name), None)
    if source.is_file() and source.suffix == ".pt":
        return (*_load_run(source, source.parent.parent.name), None)
    if source.is_file() and source.suffix == ".ckpt":
        from mde.export.importers.seed import load_seed

        return (*load_seed(source, name=name), None)
    if source.suffix not in ("", store.MODEL_SUFFIX) and not source.exists():
        raise MdeError(f"{source}: no such run folder, checkpoint or model file")
    path = store.resolve(source)
    from mde.runtime.package import read_model_info

    info = read_model_info(path)
    if info.precision != "fp32":
        raise ModelError(f"{path}: already {info.precision}; export from an fp32 model")
    return None, info, path.read_bytes()


def _load_run(best: Path, run_name: str):
    """(network with the run's best weights, metadata) of a training run's best checkpoint."""
    import torch

    from mde.trainer.models.heads import build_network
    from mde.trainer.run_dir import RunDir
    from mde.trainer.warm_start import spec_of_payload

    if not best.is_file():
        raise MdeError(f"{best.parent.parent}: no checkpoints/best.pt (is this a training run folder?)")
    checkpoint = RunDir(best.parent.parent).load_checkpoint(best)
    spec = spec_of_payload(checkpoint)  # at its own window: a distilled student's (--window), a fine-tuned one's
    tag_names = tuple(checkpoint["tag_names"])
    network = build_network(spec, len(tag_names), checkpoint.get("network_args"), checkpoint.get("head"))
    network.load_state_dict(checkpoint["model"])
    network.eval()
    joint = _trained_joint_space(best.parent.parent)
    layers = tuple(layer for layer in spec.layers if joint or layer != JOINT_OUTPUT)
    tags_output: Optional[str] = "tags"
    if spec.objective == "similarity":  # no tag output: the embedding and one head per target space
        layers, tags_output = tuple(TARGET_PREFIX + kind for kind in checkpoint["network_args"]["topics"]), None
    patch = spec.n_frames if spec.framing == "mel_patches" else None
    window = patch * spec.logmel_frontend.hop_length if patch else spec.input_length
    info = ModelInfo(
        name=run_name, architecture=spec.architecture, source=_run_source(best.parent.parent, checkpoint),
        licence=RUN_LICENCE, sample_rate=spec.sample_rate, window_samples=window, hop_samples=window,
        input_kind="waveform" if spec.frontend is None else "logmel", framing=spec.framing,
        frontend=spec.frontend, embedding_dim=spec.embedding_dim, tag_names=tag_names,
        channels=spec.channels, input_transform=spec.input_transform if spec.frontend is None else None,
        embedding_output=spec.embedding_output, tags_output=tags_output,
        outputs={spec.embedding_output: spec.embedding_dim, **dict.fromkeys(layers, 0),
                 **({"tags": len(tag_names)} if tags_output else {})},
        patch_frames=patch,
        variable_length=spec.variable_length, metrics=_run_metrics(checkpoint),
        band_norm=BandNorm.from_dict(checkpoint["band_norm"]) if checkpoint.get("band_norm") else None,
        lineage=checkpoint.get("lineage", {}),
    )
    with torch.no_grad():
        sizes = {k: int(v.shape[1]) for k, v in network(torch.from_numpy(example_inputs(info, 1))).items()}
    outputs = {key: sizes[key] for key in info.outputs}
    text_spaces = _text_spaces(best.parent.parent) if spec.objective == "similarity" else {}
    tag_encoder = None
    if joint:
        module = network.get_submodule("tag_encoder")  # a joint run's network is JETATAG's (check_joint_network)
        tag_encoder = encode_graph(export_tag_encoder(module, len(tag_names)))
    return network, dataclasses.replace(info, outputs=outputs, embedding_dim=outputs[spec.embedding_output],
                                        tag_encoder=tag_encoder, text_spaces=text_spaces)


def _run_source(run: Path, checkpoint: dict[str, Any]) -> str:
    """The metadata's ``source`` of a run: 'mde train run RUN', or for a distilled student the teacher too."""
    record = checkpoint.get("distillation")
    if record is None:
        return f"mde train run {run}"
    return f"{DISTILL_SOURCE_PREFIX} run {run.name}, teacher {record['teacher']}"


def _run_metrics(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The metadata's ``metrics`` of a run: its best epoch's validation figures, and for a distilled student
    its distillation record under 'distillation' (teacher, corpus, epochs, figures against the teacher)."""
    metrics: dict[str, Any] = dict(checkpoint.get("valid", {}))
    if "distillation" in checkpoint:
        metrics["distillation"] = checkpoint["distillation"]
    return metrics


def _text_spaces(run: Path) -> dict[str, str]:
    """A similarity run's target spaces (its ``targets/<kind>.npz``) as a model file carries them."""
    from mde.runtime.text_space import TextSpace

    return {path.stem: TextSpace.load(path).to_base64() for path in sorted((run / "targets").glob("*.npz"))}


def _trained_joint_space(run: Path) -> bool:
    """Whether the run trained a joint audio-tag space (JETATAG withJE): then its ``joint`` output and tag
    encoder are exported; a noJE run's projection head and tag encoder never trained, and are left out."""
    config = run / "config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("joint_embedding"))


def _export_fp32(network, info: ModelInfo, windows: np.ndarray, opset: int) -> tuple[bytes, dict[str, float]]:
    """ONNX bytes of ``network`` checked against torch on ``windows`` before and after ORT's offline
    BASIC optimization; the max |delta| per output of the optimized graph."""
    data = export_onnx(network, windows, info, opset=opset)
    optimized = with_metadata(optimize_basic(data), info)
    return optimized, check_parity(optimized, network, windows)


def optimize_basic(model_bytes: bytes) -> bytes:
    """``model_bytes`` simplified by ONNX Runtime's offline ORT_ENABLE_BASIC graph optimizations (standard
    ONNX ops only). ORT drops custom metadata when it writes the file: re-attach it with ``with_metadata``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mde-opt-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return target.read_bytes()
