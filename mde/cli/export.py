"""``mde export``: a training run, a seed checkpoint or a stored model -> an mde model file (fp32, fp16, int8)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, out, stage_progress
from mde.cli.options import number_or
from mde.errors import MissingExtraError


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    source: str = typer.Argument(..., help="A training run folder (or its checkpoints/best.pt), a first-seed .ckpt, or a stored model name / .onnx file (fp32) to convert."),
    output: Path = typer.Option(..., "-o", "--output", help="The model file to write (.onnx); written atomically."),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 weights and compute (float32 inputs and outputs); checked against fp32: embedding cosine >= 0.999, tags within 0.01."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantization (QDQ, per-channel weights) calibrated on --calib; checked against fp32: embedding cosine >= 0.98."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Real audio: a folder of audio files, a manifest CSV or one file. Used for the parity checks, and as the int8 calibration set (>= 100 windows). Unreadable files are skipped with a note."),
    calib_hop: str = typer.Option("auto", "--calib-hop", help="Seconds between calibration windows, or auto: the model's hop when the audio gives --calib-windows windows at it, else the longest hop that does (not below one spectrogram frame)."),
    calib_windows: Optional[int] = typer.Option(None, "--calib-windows", help="The most int8 calibration windows used (100 or more; default 100), evenly spread over the audio; bounds the time and memory calibration takes."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset of the exported graph (17 or later)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the metadata and the store (default: the run folder's name, the seed's default name, or the source model's name; with --fp16 / --int8 that name + '-fp16' / '-int8', the variant --precision finds)."),
    save_to_store: bool = typer.Option(False, "--store", help="Also save the file into the model store under its name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --store: replace a stored model of the same name."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build a TensorRT engine (fp16) beside the file, keyed by GPU and TensorRT version (needs mde[gpu] and a CUDA GPU)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Largest batch of the TensorRT optimization profile and of the Triton configuration."),
    workspace: float = typer.Option(4.0, "--workspace", help="TensorRT builder workspace in GB."),
    triton: Optional[Path] = typer.Option(None, "--triton", help="Also lay the model out in this Triton Inference Server model repository (the engine too, with --tensorrt)."),
) -> None:
    """Export a model to ONNX (dynamic batch, simplified by ONNX Runtime), check parity, print the figures."""
    try:
        from mde.export.export import export_model
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "export", "Exporting a model") from None
    from mde.runtime import store

    if tensorrt and importlib.util.find_spec("tensorrt") is None:
        raise MissingExtraError("tensorrt", "gpu", "Building a TensorRT engine")  # before the export work
    if save_to_store and name is not None:
        store.model_path(name)  # reject a bad name before the export work
    with stage_progress() as report:
        limit = {} if calib_windows is None else {"calib_windows": calib_windows}
        hop = number_or(calib_hop, "auto", "--calib-hop", float)
        result = export_model(source, output, fp16=fp16, int8=int8, calib=calib, calib_hop=hop,
                              opset=opset, name=name, on_note=lambda text: err.print(f"note: {text}"),
                              on_progress=report, **limit)
    info = result.info
    if result.torch_deltas:
        deltas = ", ".join(f"{key} {value:.2e}" for key, value in result.torch_deltas.items())
        out.print(f"fp32 vs torch max |delta|: {deltas}")
    if result.agreement is not None:
        out.print(f"{info.precision} vs fp32: {result.agreement.describe()}")
    err.print(f"wrote {info.name} ({info.architecture}, {info.precision}, {info.window_seconds:g} s window, "
              f"{info.embedding_dim}-d {info.embedding_output}, {info.n_tags} tags) to {result.path}")
    if save_to_store:
        stored = store.save(result.path.read_bytes(), info.name, overwrite=overwrite)
        err.print(f"stored {info.name} at {stored}")
    plan = None
    if tensorrt:
        from mde.runtime.backends.tensorrt_engine import build_engine

        plan = build_engine(result.path, max_batch=max_batch, workspace_gb=workspace)
        err.print(f"built the TensorRT engine {plan}")
    if triton is not None:
        from mde.export.triton import write_triton_repository

        folder = write_triton_repository(result.path, triton, max_batch=max_batch, plan=plan)
        err.print(f"wrote the Triton model {folder}")

