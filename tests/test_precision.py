"""``--precision auto|fp32|fp16|int8``: a model's stored variants, chosen by name or by the CPU's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone
from test_cli import assert_one_line_error, run_mde

pytest.importorskip("onnx")

from mde.errors import MdeError
from mde.export.export import export_model
from mde.runtime import precision, store
from mde.runtime.package import read_model_info
from mde.runtime.precision import auto_precision, cpu_flags, with_precision


def _calibration(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        write_tone(folder / f"tone{i}.wav", 3.0, freq=300.0 + 100 * i)
    return folder


@pytest.fixture
def variants(tiny_model, mde_home, tmp_path) -> dict[str, Path]:
    """The tiny model and its fp16 and int8 variants, exported and stored under their default names."""
    base = store.resolve(tiny_model)
    made = {"fp32": base}
    for name, options in (("fp16", {"fp16": True}), ("int8", {"int8": True, "calib": _calibration(tmp_path / "c")})):
        result = export_model(base, tmp_path / f"{name}.onnx", **options)
        assert result.info.name == f"{tiny_model}-{name}"  # the default name of a variant
        made[name] = store.save(result.path.read_bytes(), result.info.name)
    return made


def test_auto_is_int8_only_on_cpus_with_8_bit_dot_products():
    assert auto_precision("cpu", frozenset({"avx2", "fma", "avx512_vnni"})) == "int8"
    assert auto_precision("cpu", frozenset({"avx2", "avx_vnni"})) == "int8"
    assert auto_precision("cpu", frozenset({"amx_int8", "amx_tile"})) == "int8"
    assert auto_precision("cpu", frozenset({"avx2", "fma", "avx512f"})) == "fp32"
    assert auto_precision("cuda", frozenset({"avx512_vnni"})) == "fp32"


def test_this_machines_flags_are_read():
    flags = cpu_flags()
    assert "fpu" in flags or not Path("/proc/cpuinfo").exists()


def test_each_precision_finds_its_variant_and_back(variants):
    for name in ("fp32", "fp16", "int8"):
        chosen = with_precision(variants["fp32"], name)
        assert chosen == variants[name] and read_model_info(chosen).precision == name
    assert with_precision(variants["int8"], "fp32") == variants["fp32"]  # from a variant back to its base
    assert with_precision(variants["fp16"], "auto") == variants["fp16"]  # a variant given is taken as it is


def test_auto_on_this_cpu_and_on_a_vnni_cpu(variants, monkeypatch):
    expected = "int8" if cpu_flags() & precision.INT8_FAST_FLAGS else "fp32"
    assert with_precision(variants["fp32"], "auto") == variants[expected]  # the real path on this machine
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert with_precision(variants["fp32"], "auto") == variants["int8"]
    assert with_precision(variants["fp32"], "auto", given_as_file=True) == variants["fp32"]  # a file runs as given
    variants["int8"].unlink()
    assert with_precision(variants["fp32"], "auto") == variants["fp32"]  # no variant: the model as it is


def test_a_missing_or_mislabelled_variant_is_an_error(tiny_model, variants, mde_home):
    variants["int8"].unlink()
    with pytest.raises(MdeError, match=f"{tiny_model} has no int8 variant .*mde export {tiny_model} --int8 --calib"):
        with_precision(variants["fp32"], "int8")
    with pytest.raises(MdeError, match="choose from auto, fp32, fp16, int8"):
        with_precision(variants["fp32"], "bf16")
    beside = variants["fp32"].with_name(f"{tiny_model}-int8.onnx")
    beside.write_bytes(variants["fp16"].read_bytes())  # an fp16 graph under the int8 name
    with pytest.raises(MdeError, match="holds a fp16 model, not int8"):
        with_precision(variants["fp32"], "int8")


def test_the_commands_run_the_chosen_variant(tiny_model, variants, mde_home, tmp_path):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "a.wav", 1.5)
    ran = run_mde("embed", tmp_path / "in", "-m", tiny_model, "--precision", "fp16", "-o", tmp_path / "out",
                  cwd=tmp_path, home=mde_home)
    assert ran.returncode == 0, ran.stderr
    assert str(np.load(tmp_path / "out" / "a.npz")["model"]) == f"{tiny_model}-fp16"
    tagged = run_mde("tag", tmp_path / "in", "-m", tiny_model, "--precision", "int8", "--json", cwd=tmp_path,
                     home=mde_home)
    assert tagged.returncode == 0 and f'"{tiny_model}-int8"' in tagged.stdout, tagged.stderr
    variants["int8"].unlink()
    missing = run_mde("tag", tmp_path / "in", "-m", tiny_model, "--precision", "int8", cwd=tmp_path, home=mde_home)
    assert_one_line_error(missing, f"{tiny_model} has no int8 variant")
    bogus = run_mde("embed", tmp_path / "in", "-m", tiny_model, "--precision", "bf16", "-o", tmp_path / "o2",
                    cwd=tmp_path, home=mde_home)
    assert_one_line_error(bogus, "--precision 'bf16': choose from auto, fp32, fp16, int8")


def test_stream_scales_load_the_chosen_variant(tiny_model, variants):
    from mde.stream.api import load_scales

    scales = load_scales([0.5], models=tiny_model, precision="fp16", announce=lambda text: None)
    assert scales[0].model.info.precision == "fp16" and scales[0].model.path == variants["fp16"]
