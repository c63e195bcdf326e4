"""``mde export --int8 --calib``: unreadable files are skipped with a note, the hop is chosen from the audio
(or the error says how much audio is missing), progress is shown, and every calibration window counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from conftest import build_tiny_model, write_tone
from test_cli import assert_one_line_error, run_mde

from mde.export.calibration import READING, audio_windows, plan_windows
from mde.export.export import export_model
from mde.export.quantize import CALIBRATING, to_int8
from mde.runtime.package import ModelInfo, read_model_info

# The tiny model: 8 kHz, 0.5 s audio windows (4000 samples) every 0.5 s, log-mel hop 128 samples (16 ms).


def _tiny_info(mde_home: Path, tiny_model: str) -> ModelInfo:
    return read_model_info(mde_home / "models" / f"{tiny_model}.onnx")


def _tones(folder: Path, *seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, length in enumerate(seconds):
        write_tone(folder / f"tone{i}.wav", length, freq=300.0 + 100 * i)
    return folder


def test_an_unreadable_calibration_file_is_skipped_with_one_note(tiny_model, mde_home, tmp_path):
    calib = _tones(tmp_path / "calib", 3.0, 3.0)
    (calib / "broken.wav").write_text("not audio")
    (calib / "empty.mp3").write_bytes(b"")
    proc = run_mde("export", tiny_model, "-o", tmp_path / "int8.onnx", "--int8", "--calib", calib,
                   cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert [note.split(":")[1] for note in notes] == [f" skipped calibration file {calib / 'broken.wav'}",
                                                       f" skipped calibration file {calib / 'empty.mp3'}"]
    assert all(note.count(str(calib)) == 1 for note in notes)  # the file is named once
    assert read_model_info(tmp_path / "int8.onnx").precision == "int8"


def test_no_usable_calibration_file_is_one_line(tiny_model, mde_home, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.wav").write_text("not audio")
    proc = run_mde("export", tiny_model, "-o", tmp_path / "int8.onnx", "--int8", "--calib", calib,
                   cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "no usable calibration file among 1", "broken.wav: ")
    assert not (tmp_path / "int8.onnx").exists()


def test_the_hop_is_chosen_from_the_audio_when_the_models_hop_gives_too_few_windows(tiny_model, mde_home, tmp_path):
    calib = _tones(tmp_path / "calib", 3.0, 3.0)  # 12 windows at the model's 0.5 s hop
    fixed = run_mde("export", tiny_model, "-o", tmp_path / "x.onnx", "--int8", "--calib", calib, "--calib-hop", "0.5",
                    cwd=tmp_path, home=mde_home)
    assert_one_line_error(fixed, "needs at least 100 windows of 0.5 s; 2 usable file(s) (6.0 s of audio) give 12 "
                                 "at --calib-hop 0.5 s: leave --calib-hop at auto, which gives enough")
    result = export_model(tiny_model, tmp_path / "auto.onnx", int8=True, calib=calib)
    assert result.agreement.windows == 3 + 100  # the synthesized examples and --calib-windows' default


def test_too_little_audio_says_how_much_more_is_needed_and_that_much_is_enough(tiny_model, mde_home, tmp_path):
    calib = _tones(tmp_path / "calib", 0.6)  # 7 windows even at one log-mel frame (16 ms) apart
    proc = run_mde("export", tiny_model, "-o", tmp_path / "x.onnx", "--int8", "--calib", calib,
                   cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "int8 calibration needs at least 100 windows of 0.5 s; 1 usable file(s) (0.6 s of "
                                "audio) give 7 at the finest hop (0.016 s): add at least 2.0 s of audio in one more "
                                "file")
    write_tone(calib / "more.wav", 0.5 + 92 * 0.016)  # exactly the 93 missing windows
    assert plan_windows(calib, _tiny_info(mde_home, tiny_model), limit=200, minimum=100).available == 100


def test_calibration_computes_at_most_calib_windows_spread_over_every_file(tiny_model, mde_home, tmp_path):
    calib = _tones(tmp_path / "calib", 30.0, 30.0)  # 120 windows at the model's hop
    info = _tiny_info(mde_home, tiny_model)
    plan = plan_windows(calib, info, limit=50)
    assert plan.available == 120 and plan.grid.step == info.hop_samples and plan.n_windows == 50
    assert [len(p) for p in plan.picks] == [25, 25] and plan.picks[0][-1] > 50  # reaching the end of each file
    assert audio_windows(calib, info, limit=50).shape == (50, 16, 32)


def test_export_reports_progress_for_reading_calibrating_and_checking(tiny_model, mde_home, tmp_path):
    calib = _tones(tmp_path / "calib", 3.0, 3.0)
    seen: dict[str, tuple[int, int]] = {}
    export_model(tiny_model, tmp_path / "int8.onnx", int8=True, calib=calib, calib_windows=120,
                 on_progress=lambda stage, done, total: seen.__setitem__(stage, (done, total)))
    assert seen == {READING: (2, 2), CALIBRATING: (120, 120), "checking int8 against fp32": (246, 246)}


@pytest.mark.parametrize("n_windows", [104, 128])
def test_every_calibration_window_sets_the_ranges(n_windows):
    # Only the first batch reaches 45 dB: its range must survive later batches. ONNX Runtime's
    # CalibMaxIntermediateOutputs dropped it (and failed outright on a multiple of its count of batches).
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    windows = rng.uniform(5, 10, (n_windows, 16, 32)).astype(np.float32)
    windows[:4] += 40.0
    data, _ = to_int8(build_tiny_model(), windows)
    model = onnx.load_from_string(data)
    scales = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    [node] = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "embedding"]
    assert float(scales[node.input[1]]) * 255 > 40  # the uint8 range spans the first batch's 45-50 dB
