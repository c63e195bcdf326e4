"""``--precision auto|fp32|fp16|int8``: which variant of a model a command runs, chosen by the CPU.

A model's variants are stored models of their own, named ``<name>-int8`` and ``<name>-fp16`` (what
``mde export --int8`` / ``--fp16`` names them by default), or, for a model given as a file,
``<stem>-int8.onnx`` beside it. ``mde export`` writes a variant only once its agreement checks against
fp32 pass, so a variant that exists passed them; it must also hold the precision it is named for (checked).

``auto`` takes the int8 variant on CPUs with 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI or
AMX), where ONNX Runtime's int8 kernels were measured faster than fp32 (``bench_precision.py``, one thread:
2.2x for FCN29 and 2.4x for MTT_musicnn on an AVX-512 VNNI CPU; 1.1x and 1.9x at batch 1, 1.2x and 2.7x
at batch 8 on an AMX Xeon), and fp32 elsewhere: on AVX2 alone int8 was only 1.1x faster and fp16
slower than fp32 on every CPU measured, so ``auto`` never picks fp16 on a CPU. On CUDA ``auto`` is fp32
(the backends run fp16 themselves: the torch backend's fp16, TensorRT). Under ``auto`` a model given as a
file runs as given, and so does a model without the variant (most have no int8 variant: a note on every
command would be noise); a variant asked for by name that is missing is an error.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from mde.errors import MdeError, ModelNotFound
from mde.runtime import store
from mde.runtime.package import read_model_info

PRECISIONS = ("auto", "fp32", "fp16", "int8")
INT8_FAST_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""/proc/cpuinfo flags of the 8-bit dot-product instructions that make int8 inference pay on a CPU."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def auto_precision(device: str, flags: frozenset[str]) -> str:
    """What ``auto`` means on ``device`` with these CPU ``flags``: 'int8' or 'fp32'."""
    return "int8" if device == "cpu" and flags & INT8_FAST_FLAGS else "fp32"


def variant_name(name: str, precision: str) -> str:
    """The store name of ``name``'s variant in ``precision`` (the name itself for fp32)."""
    return name if precision == "fp32" else f"{name}-{precision}"


def with_precision(model: Path, precision: str, device: str = "cpu", given_as_file: bool = False) -> Path:
    """The file of ``model``'s variant in ``precision`` ('auto': see :func:`auto_precision`); ``model`` itself
    when it already holds that precision, under ``auto`` when it has no such variant, and under ``auto``
    when the user named the file itself (``given_as_file``: a file is run as given unless a precision is
    asked for). MdeError (one line) for an unknown precision, a variant asked for that does not exist, or
    one that holds another precision."""
    if precision not in PRECISIONS:
        raise MdeError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "auto" and given_as_file:
        return model
    wanted = auto_precision(device, cpu_flags()) if precision == "auto" else precision
    info = read_model_info(model)
    if info.precision == wanted or (precision == "auto" and info.precision != "fp32"):
        return model  # (a variant given directly is taken as it is)
    base = info.name.removesuffix(f"-{info.precision}") if info.precision != "fp32" else info.name
    variant = _find_variant(model, base, wanted)
    if variant is None:
        if precision == "auto":
            return model
        raise MdeError(f"{base} has no {wanted} variant ({variant_name(base, wanted)}); make one with "
                       f"'mde export {base} --{wanted} " + ("--calib AUDIO " if wanted == "int8" else "")
                       + f"-o {variant_name(base, wanted)}.onnx --store'")
    held = read_model_info(variant).precision
    if held != wanted:
        raise MdeError(f"{variant} holds a {held} model, not {wanted}")
    return variant


def _find_variant(model: Path, base: str, precision: str) -> Optional[Path]:
    """The variant file beside ``model`` (``<stem>-<precision>.onnx``) or in the store, if any."""
    if precision == "fp32":
        beside = model.with_name(f"{base}{store.MODEL_SUFFIX}")
        candidates = [beside]
    else:
        candidates = [model.with_name(f"{model.stem}-{precision}{store.MODEL_SUFFIX}")]
    for candidate in candidates:
        if candidate.is_file() and candidate != model:
            return candidate
    try:
        return store.resolve(variant_name(base, precision))
    except ModelNotFound:
        return None
