"""mde prepare's options: crop from an offset or the centre, no-crop and no-pad failures, the log-mel pad
floor, dtypes, skip and no-skip, the per-clip log, track ids, stereo rows, older indexes and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data.cache import FeatureCache, prepare_cache
from mde.trainer.data.dataset import Clip, TaggingDataset

RATE = 8000
LENGTH = RATE  # samples per stored clip: 1 s
FLOORED = FrontendConfig(sample_rate=RATE, n_fft=256, hop_length=128, n_mels=16, log="db", top_db=80.0)
"""A front end with a floor: every value is clipped to its signal's peak - 80 dB."""
_LOG_LINE = re.compile(r"^(\d+)\t([^\t]+)\t(ok|failed|skipped)\t([^\t]*)\t(\d+\.\d{3})?$")
_LOG_HEADER = re.compile(r"^# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 pass over (\d+) clips ")


def _ramp(n: int, scale: float = 1.0) -> np.ndarray:
    """n float32 samples whose values name their position: sample i is (i + 1) * 1e-5 * scale."""
    return (np.arange(1, n + 1, dtype=np.float32) * np.float32(1e-5 * scale)).astype(np.float32)


def _noise(n: int, seed: int, channels: int = 1) -> np.ndarray:
    shape = (n, channels) if channels > 1 else (n,)
    return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _write(folder: Path, name: str, samples: np.ndarray) -> Path:
    """A float WAV at RATE that load_audio reads back sample for sample."""
    path = folder / name
    sf.write(path, samples, RATE, subtype="FLOAT")
    return path


def _dataset(*paths: Path) -> TaggingDataset:
    return TaggingDataset(name="opts", tag_names=("x",), single_label=False,
                          splits={"train": [Clip(path, np.ones(1, np.float32)) for path in paths]})


def _log(cache: Path) -> list[list[str]]:
    """prepare.log.tsv as passes: each the header line, then its clip lines (checked against the format)."""
    passes: list[list[str]] = []
    for line in (cache / "prepare.log.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            assert _LOG_HEADER.match(line), line
            passes.append([line])
        else:
            assert _LOG_LINE.match(line), line
            passes[-1].append(line)
    return passes


def _fields(line: str) -> list[str]:
    return line.split("\t")


@pytest.mark.parametrize(
    ("offset", "start"),
    [(0.5, 4000), (2.0, 16000), (2.5, 0), (None, 8000)],
    ids=["from-offset", "offset-just-fits", "too-short-for-offset-from-start", "centre"],
)
def test_a_long_clip_is_cut_from_the_offset_or_its_centre(tmp_path: Path, offset, start: int) -> None:
    signal = _ramp(3 * RATE)
    path = _write(tmp_path, "long.wav", signal)
    prepare_cache(_dataset(path), tmp_path / "cache", sample_rate=RATE, length=LENGTH, offset=offset,
                  dtype="float32")
    cache = FeatureCache.open(tmp_path / "cache")
    np.testing.assert_array_equal(cache.features[0], signal[start : start + LENGTH])
    assert cache.n_samples[0] == 3 * RATE and cache.valid_lengths[0] == LENGTH and cache.config.offset == offset
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["config"]["offset"] == offset


def test_another_offset_over_a_cache_is_refused(tmp_path: Path) -> None:
    dataset = _dataset(_write(tmp_path, "a.wav", _ramp(2 * RATE)))
    prepare_cache(dataset, tmp_path / "cache", sample_rate=RATE, length=LENGTH, offset=0.5)
    with pytest.raises(MdeError, match=r"other settings \(offset 0.5 in the cache, None asked\)"):
        prepare_cache(dataset, tmp_path / "cache", sample_rate=RATE, length=LENGTH)
    with pytest.raises(MdeError, match=r"other settings \(crop True in the cache, False asked\)"):
        prepare_cache(dataset, tmp_path / "cache", sample_rate=RATE, length=LENGTH, crop=False, offset=None)


def test_without_crop_or_pad_clips_outside_the_window_fail_with_their_reason(tmp_path: Path) -> None:
    long, short, exact = (_write(tmp_path, f"{name}.wav", _ramp(n)) for name, n in
                          (("long", 3 * RATE), ("short", RATE // 2), ("exact", RATE)))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio" * 10)
    reasons = {
        "no-crop": (dict(crop=False), {0: f"{long}: 3.0 s, longer than the 1.0 s window (crop is off)"}),
        "no-pad": (dict(pad=False), {1: f"{short}: 0.5 s, shorter than the 1.0 s window (pad is off)"}),
    }
    for name, (settings, expected) in reasons.items():
        out = tmp_path / name
        report = prepare_cache(_dataset(long, short, exact, corrupt), out, sample_rate=RATE, length=LENGTH,
                               dtype="float32", **settings)
        failed = json.loads((out / "failed.json").read_text())
        assert [clip["row"] for clip in failed] == [*expected, 3] and report.done == 2
        assert {clip["row"]: clip["reason"] for clip in failed if clip["row"] != 3} == expected
        assert failed[-1]["reason"].startswith(f"{corrupt}: ")
        (header, *lines) = _log(out)[0]
        assert "pass over 4 clips (0 kept, 4 to do)" in header
        logged = {int(_fields(line)[0]): _fields(line) for line in lines}
        for row, reason in expected.items():
            assert logged[row][2:4] == ["failed", reason]
        assert logged[3][2:] == ["failed", failed[-1]["reason"], ""]  # not decoded: no duration
        assert [logged[row][4] for row in range(3)] == ["3.000", "0.500", "1.000"]
        cache = FeatureCache.open(out)
        assert cache.rows("train").tolist() == sorted({0, 1, 2} - set(expected))
        np.testing.assert_array_equal(cache.features[2], _ramp(RATE))


def test_a_padded_log_mel_holds_the_front_ends_floor(tmp_path: Path) -> None:
    short = _noise(int(0.4 * RATE), seed=1)
    prepare_cache(_dataset(_write(tmp_path, "short.wav", short)), tmp_path / "cache", sample_rate=RATE,
                  length=LENGTH, features="logmel", frontend=FLOORED, dtype="float32")
    cache = FeatureCache.open(tmp_path / "cache")
    row, valid = cache.features[0], int(cache.valid_lengths[0])
    assert row.shape == (16, FLOORED.n_frames(LENGTH)) and valid == FLOORED.n_frames(len(short)) < row.shape[1]
    padded = np.concatenate([short, np.zeros(LENGTH - len(short), np.float32)])
    np.testing.assert_array_equal(row[:, :valid], MelSpectrogram.from_config(FLOORED)(padded)[:, :valid])
    floor = np.float32(row.max()) - np.float32(80.0)
    assert (row[:, valid:] == row.min()).all() and row.min() == floor and row.max() > 0.0


def test_dtype_is_what_features_npy_stores(tmp_path: Path) -> None:
    dataset = _dataset(_write(tmp_path, "a.wav", _noise(RATE, seed=2)))
    for dtype in ("float16", "float32"):
        prepare_cache(dataset, tmp_path / dtype, sample_rate=RATE, length=LENGTH, dtype=dtype)
        assert np.load(tmp_path / dtype / "features.npy").dtype == np.dtype(dtype)
    logmel = tmp_path / "logmel16"
    prepare_cache(dataset, logmel, sample_rate=RATE, length=LENGTH, features="logmel", frontend=FLOORED)
    assert np.load(logmel / "features.npy").dtype == np.float16


def test_skip_keeps_stored_rows_and_no_skip_recomputes_them(tmp_path: Path) -> None:
    first, second = _noise(RATE, seed=3), _noise(RATE, seed=4)
    a, b = _write(tmp_path, "a.wav", first), _write(tmp_path, "b.wav", second)
    out = tmp_path / "cache"
    prepare_cache(_dataset(a, b), out, sample_rate=RATE, length=LENGTH, dtype="float32")
    _write(tmp_path, "a.wav", second)  # the file changes between passes
    b.write_bytes(b"broken")

    kept = prepare_cache(_dataset(a, b), out, sample_rate=RATE, length=LENGTH, dtype="float32")
    assert (kept.done, kept.skipped, kept.n_failed) == (0, 2, 0)
    np.testing.assert_array_equal(FeatureCache.open(out).features[0], first)

    progress: list[tuple[str, bool]] = []
    redone = prepare_cache(_dataset(a, b), out, sample_rate=RATE, length=LENGTH, dtype="float32", skip=False,
                           on_progress=lambda *call: progress.append(call))
    assert (redone.done, redone.skipped, redone.n_failed) == (1, 0, 1)
    assert progress == [(str(a), True), (str(b), False)]
    cache = FeatureCache.open(out)
    np.testing.assert_array_equal(cache.features[0], second)
    assert cache.done.tolist() == [True, False] and cache.rows("train").tolist() == [0]

    passes = _log(out)
    assert [len(lines) for lines in passes] == [3, 3, 3]
    assert "(2 kept, 0 to do)" in passes[1][0] and "(0 kept, 2 to do)" in passes[2][0]
    assert [_fields(line)[2:4] for line in passes[1][1:]] == [["skipped", "stored by an earlier pass"]] * 2
    assert [_fields(line)[2] for line in passes[2][1:]] == ["ok", "failed"]
    assert _fields(passes[2][2])[3] == redone.failed[0].reason and redone.log_path == out / "prepare.log.tsv"


def test_rows_carry_the_file_stems_as_track_ids(tmp_path: Path) -> None:
    paths = [_write(tmp_path, f"{tid}.wav", _noise(RATE, seed=i)) for i, tid in
             enumerate(("TRAAAAW128F429D538", "TRAAABD128F429CF47"))]
    missing = tmp_path / "TRAAADZ128F9348C2E.mp3"
    out = tmp_path / "cache"
    prepare_cache(_dataset(paths[0], missing, paths[1]), out, sample_rate=RATE, length=LENGTH)
    assert [row["id"] for row in json.loads((out / "index.json").read_text())["rows"]] == [
        "TRAAAAW128F429D538", "TRAAADZ128F9348C2E", "TRAAABD128F429CF47"]
    cache = FeatureCache.open(out)
    assert cache.ids("train") == ["TRAAAAW128F429D538", "TRAAABD128F429CF47"]
    assert cache.rows("train").tolist() == [0, 2]


@pytest.fixture(scope="module")
def stereo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A stereo file whose channels differ, a mono file and a 3-channel file."""
    folder = tmp_path_factory.mktemp("stereo")
    left, right = _noise(RATE // 2, seed=5), 0.5 * _noise(RATE // 2, seed=6)
    return (_write(folder, "stereo.wav", np.stack([left, right], axis=1)),
            _write(folder, "mono.wav", _noise(2 * RATE, seed=7)),
            _write(folder, "three.wav", _noise(RATE, seed=8, channels=3)))


def test_stereo_waveform_rows_keep_both_channels(stereo_files, tmp_path: Path) -> None:
    stereo, mono, three = stereo_files
    report = prepare_cache(_dataset(stereo, mono, three), tmp_path, sample_rate=RATE, length=LENGTH,
                           channels=2, dtype="float32")
    cache = FeatureCache.open(tmp_path)
    assert cache.channels == 2 and cache.features.shape == (3, 2, LENGTH) and cache.config.row_shape == (2, LENGTH)
    two = sf.read(stereo, dtype="float32")[0]
    np.testing.assert_array_equal(cache.features[0, :, : RATE // 2], two.T)
    assert not cache.features[0, :, RATE // 2 :].any() and cache.valid_lengths[0] == RATE // 2
    centre = sf.read(mono, dtype="float32")[0][RATE // 2 : RATE // 2 + LENGTH]
    np.testing.assert_array_equal(cache.features[1], [centre, centre])
    assert [clip.row for clip in report.failed] == [2] and "3 channels" in report.failed[0].reason


def test_stereo_log_mel_rows_are_per_channel_sharing_one_peak(stereo_files, tmp_path: Path) -> None:
    stereo, mono, _ = stereo_files
    prepare_cache(_dataset(stereo, mono), tmp_path, sample_rate=RATE, length=LENGTH, channels=2,
                  features="logmel", frontend=FLOORED, dtype="float32")
    cache = FeatureCache.open(tmp_path)
    frames = FLOORED.n_frames(LENGTH)
    assert cache.features.shape == (2, 2, 16, frames) and cache.config.row_shape == (2, 16, frames)
    mel = MelSpectrogram.from_config(FLOORED)
    two = sf.read(stereo, dtype="float32")[0].T
    padded = np.concatenate([two, np.zeros((2, LENGTH - two.shape[1]), np.float32)], axis=1)
    valid = int(cache.valid_lengths[0])
    np.testing.assert_array_equal(cache.features[0, :, :, :valid], mel(padded[None])[0, :, :, :valid])
    assert not np.array_equal(cache.features[0, 0], cache.features[0, 1])
    assert (cache.features[0, :, :, valid:] == cache.features[0].max() - np.float32(80.0)).all()  # one floor
    np.testing.assert_array_equal(cache.features[1, 0], cache.features[1, 1])


def test_an_index_of_format_1_opens_as_its_defaults_and_resumes(tmp_path: Path) -> None:
    paths = [_write(tmp_path, f"{name}.wav", _noise(RATE, seed=i)) for i, name in enumerate(("a", "b"))]
    out = tmp_path / "cache"
    prepare_cache(_dataset(*paths), out, sample_rate=RATE, length=LENGTH)
    current = (out / "index.json").read_text()
    old = json.loads(current)
    old["format"] = "mde-feature-cache/1"
    for key in ("crop", "pad", "offset", "channels"):
        del old["config"][key]
    for row in old["rows"]:
        del row["id"]
    (out / "index.json").write_text(json.dumps(old))

    cache = FeatureCache.open(out)
    assert (cache.channels, cache.config.crop, cache.config.pad, cache.config.offset) == (1, True, True, None)
    assert cache.ids("train") == ["a", "b"]
    with pytest.raises(MdeError, match=r"other settings \(channels 1 in the cache, 2 asked\)"):
        prepare_cache(_dataset(*paths), out, sample_rate=RATE, length=LENGTH, channels=2)
    assert json.loads((out / "index.json").read_text())["format"] == "mde-feature-cache/1"
    assert prepare_cache(_dataset(*paths), out, sample_rate=RATE, length=LENGTH).skipped == 2
    assert (out / "index.json").read_text() == current


def test_an_index_of_an_unknown_format_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    prepare_cache(_dataset(_write(tmp_path, "a.wav", _noise(RATE, seed=9))), out, sample_rate=RATE, length=LENGTH)
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "format": "mde-feature-cache/9"}))
    with pytest.raises(MdeError, match=r"format 'mde-feature-cache/9', this version reads 'mde-feature-cache/2' "
                                       r"and 'mde-feature-cache/1'$"):
        FeatureCache.open(out)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"channels": 3}, r"channels must be 1 \(mono\) or 2 \(stereo\), got 3"),
        ({"channels": True}, r"channels must be 1 \(mono\) or 2 \(stereo\), got True"),
        ({"offset": -1.0}, "offset must be a number of seconds from 0 on, or None, got -1.0"),
        ({"offset": float("nan")}, "offset must be a number of seconds from 0 on"),
        ({"offset": 1.0, "crop": False}, r"offset \(where a cut window starts\) needs crop"),
        ({"pad": "no"}, "pad must be True or False, got 'no'"),
    ],
)
def test_bad_fitting_settings_are_one_line_errors(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(MdeError, match=message):
        prepare_cache(_dataset(tmp_path / "a.wav"), tmp_path / "cache", sample_rate=RATE, length=LENGTH, **settings)
    assert not (tmp_path / "cache").exists()


def test_cli_prepare_passes_its_options_and_names_the_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app
    from mde.trainer.data.manifest import write_manifest

    stereo = _write(tmp_path, "s.wav", _noise(3 * RATE, seed=10, channels=2))
    short = _write(tmp_path, "short.wav", _noise(RATE // 2, seed=11))
    manifest = write_manifest([(stereo, "train", ["x"]), (short, "valid", ["x"])], tmp_path / "manifest.csv")
    out = tmp_path / "cache"
    arguments = ["prepare", "--dataset", "manifest", "--data", str(manifest), "--out", str(out), "--sample-rate",
                 str(RATE), "--seconds", "1", "--offset", "1.5", "--channels", "2", "--no-pad", "--dtype", "float32"]
    _register_commands()
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "1 prepared, 0 already there, 1 failed" in result.output
    assert "shorter than the 1.0 s window (pad is off)" in result.output
    assert f"log of every clip: {out / 'prepare.log.tsv'}" in result.output.replace("\n", "")
    cache = FeatureCache.open(out)
    assert (cache.channels, cache.config.pad, cache.config.offset) == (2, False, 1.5)
    start = round(1.5 * RATE)
    np.testing.assert_array_equal(cache.features[0], sf.read(stereo, dtype="float32")[0][start : start + RATE].T)

    result = CliRunner().invoke(app, [*arguments, "--no-skip"])
    assert result.exit_code == 0 and "1 prepared, 0 already there" in result.output, result.output
    result = CliRunner().invoke(app, [*arguments[:-2], "--model", "fcn05"])
    assert isinstance(result.exception, MdeError), result.output
    assert "--channels 2: fcn05 takes 1-channel audio" in str(result.exception)
