"""The feature cache: stored values, workers, failures, resuming, refusing other settings."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mde.audio import load_audio
from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data.cache import FeatureCache, prepare_cache
from mde.trainer.data.dataset import Clip, TaggingDataset

RATE = 16000
LENGTH = 16000  # samples per stored clip: 1 s
FRONTEND = FrontendConfig(sample_rate=RATE, n_fft=512, hop_length=256, n_mels=32, f_max=8000.0)


def _noise(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real files at several rates and channel counts, a corrupt one; 'missing.wav' is not written."""
    folder = tmp_path_factory.mktemp("audio")
    sf.write(folder / "long8k.wav", _noise(2.5, 8000, 1, 0), 8000, subtype="PCM_16")  # cropped
    sf.write(folder / "short22k.flac", _noise(0.4, 22050, 2, 1), 22050)  # padded, stereo
    sf.write(folder / "exact16k.wav", _noise(1.0, RATE, 1, 2), RATE, subtype="FLOAT")
    sf.write(folder / "long44k.wav", _noise(1.3, 44100, 2, 3), 44100, subtype="PCM_24")
    sf.write(folder / "quad16k.wav", _noise(1.7, RATE, 4, 4), RATE, subtype="PCM_16")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    return folder


def _dataset(folder: Path, name: str = "tiny") -> TaggingDataset:
    def clip(file: str, *tags: int) -> Clip:
        labels = np.zeros(3, np.float32)
        labels[list(tags)] = 1.0
        return Clip(folder / file, labels)

    return TaggingDataset(
        name=name,
        tag_names=("rock", "piano", "vocal"),
        single_label=False,
        splits={
            "train": [clip("long8k.wav", 0), clip("corrupt.wav", 1), clip("short22k.flac", 1, 2),
                      clip("long44k.wav", 2)],
            "valid": [clip("exact16k.wav", 0, 1), clip("missing.wav", 0)],
            "test": [clip("quad16k.wav", 2)],
        },
    )


def _fitted(path: Path) -> tuple[np.ndarray, int]:
    """load_audio at RATE, centre-cropped or end-padded to LENGTH, and the decoded length."""
    x, _ = load_audio(path, sr=RATE)
    if len(x) >= LENGTH:
        start = (len(x) - LENGTH) // 2
        return x[start : start + LENGTH], len(x)
    return np.concatenate([x, np.zeros(LENGTH - len(x), np.float32)]), len(x)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {name: np.load(folder / f"{name}.npy") for name in ("features", "n_samples", "done")}


@pytest.fixture(scope="module")
def waveform_cache(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list]:
    out = tmp_path_factory.mktemp("cache") / "wave"
    calls: list[tuple[str, bool]] = []
    report = prepare_cache(
        _dataset(audio_dir), out, sample_rate=RATE, length=LENGTH, workers=1,
        on_progress=lambda path, ok: calls.append((path, ok)),
    )
    return out, report, calls


def test_waveform_rows_are_load_audio_fitted_to_length(waveform_cache, audio_dir: Path) -> None:
    out, report, _ = waveform_cache
    cache = FeatureCache.open(out)
    assert cache.complete and cache.features.dtype == np.float16 and cache.features.shape == (7, LENGTH)
    assert (report.done, report.skipped, report.n_failed) == (5, 0, 2)
    for row in np.flatnonzero(cache.done):
        expected, n = _fitted(Path(cache.paths[row]))
        assert cache.n_samples[row] == n
        np.testing.assert_allclose(cache.features[row].astype(np.float32), expected, rtol=1e-3, atol=3e-4)
    short = cache.paths.index(str(audio_dir / "short22k.flac"))
    n_short = round(0.4 * 22050 * RATE / 22050)
    assert cache.n_samples[short] == n_short and not cache.features[short, n_short:].any()
    assert cache.valid_lengths[short] == n_short and cache.valid_lengths[0] == LENGTH


def test_index_records_settings_rows_and_labels(waveform_cache, audio_dir: Path) -> None:
    out, _, _ = waveform_cache
    index = json.loads((out / "index.json").read_text())
    assert index["config"] == {
        "dataset": "tiny", "tag_names": ["rock", "piano", "vocal"], "single_label": False, "sample_rate": RATE,
        "length": LENGTH, "features": "waveform", "dtype": "float16", "frontend": None,
        "crop": True, "pad": True, "offset": None, "channels": 1,
    }
    assert [row["split"] for row in index["rows"]] == ["train"] * 4 + ["valid"] * 2 + ["test"]
    assert index["rows"][2] == {"path": str(audio_dir / "short22k.flac"), "id": "short22k", "split": "train",
                                "labels": [0.0, 1.0, 1.0]}
    cache = FeatureCache.open(out)
    np.testing.assert_array_equal(cache.labels, [*_dataset(audio_dir).label_matrix("train").tolist(),
                                                 [1, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert cache.tag_names == ("rock", "piano", "vocal") and cache.single_label is False


def test_failed_files_are_listed_and_left_out(waveform_cache, audio_dir: Path) -> None:
    out, report, calls = waveform_cache
    bad = [str(audio_dir / "corrupt.wav"), str(audio_dir / "missing.wav")]
    assert [clip.path for clip in report.failed] == bad
    assert all(clip.reason.startswith(clip.path + ": ") and "\n" not in clip.reason for clip in report.failed)
    assert json.loads((out / "failed.json").read_text()) == [
        {"row": 1, "path": bad[0], "split": "train", "reason": report.failed[0].reason},
        {"row": 5, "path": bad[1], "split": "valid", "reason": report.failed[1].reason},
    ]
    assert sorted(calls) == sorted((row["path"], row["path"] not in bad) for row in
                                   json.loads((out / "index.json").read_text())["rows"])
    cache = FeatureCache.open(out)
    assert cache.rows("train").tolist() == [0, 2, 3]
    assert cache.rows("valid").tolist() == [4]
    with pytest.raises(MdeError, match="no stored clips in split 'extra'; splits with clips: test, train, valid"):
        cache.rows("extra")


def test_two_workers_store_the_same_cache(waveform_cache, audio_dir: Path, tmp_path: Path) -> None:
    out, _, _ = waveform_cache
    report = prepare_cache(_dataset(audio_dir), tmp_path / "w2", sample_rate=RATE, length=LENGTH, workers=2)
    assert (report.done, report.n_failed) == (5, 2)
    for name, array in _arrays(out).items():
        np.testing.assert_array_equal(_arrays(tmp_path / "w2")[name], array, err_msg=name)
    for name in ("index.json", "failed.json"):
        assert (tmp_path / "w2" / name).read_text() == (out / name).read_text()


def test_logmel_rows_are_the_c_front_end_of_the_fitted_waveform(audio_dir: Path, tmp_path: Path) -> None:
    prepare_cache(
        _dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH, features="logmel", frontend=FRONTEND,
        dtype="float32", workers=2,
    )
    cache = FeatureCache.open(tmp_path)
    assert cache.features.shape == (7, 32, FRONTEND.n_frames(LENGTH)) and cache.features.dtype == np.float32
    mel = MelSpectrogram.from_config(FRONTEND)
    for row in np.flatnonzero(cache.done):
        expected, n = _fitted(Path(cache.paths[row]))
        valid = cache.valid_lengths[row]
        assert valid == FRONTEND.n_frames(min(n, LENGTH))
        np.testing.assert_array_equal(cache.features[row, :, :valid], mel(expected)[:, :valid])
        assert (cache.features[row, :, valid:] == np.float32(-100.0)).all()  # the floor: 10 log10(amin)
    assert cache.config.frontend == FRONTEND
    with pytest.raises(MdeError, match="frontend differs"):
        prepare_cache(
            _dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH, features="logmel",
            frontend=FRONTEND.with_(n_mels=16), dtype="float32",
        )


def test_an_interrupted_prepare_is_incomplete_and_resumes_to_the_clean_cache(
    waveform_cache, audio_dir: Path, tmp_path: Path
) -> None:
    clean, _, _ = waveform_cache
    calls: list[str] = []

    def interrupt(path: str, ok: bool) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_cache(_dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH, workers=2, on_progress=interrupt)
    assert not (tmp_path / "failed.json").exists()
    with pytest.raises(MdeError, match=r"incomplete .* rerun mde prepare"):
        FeatureCache.open(tmp_path)
    assert FeatureCache.open(tmp_path, allow_incomplete=True).complete is False
    stored_before = int(np.load(tmp_path / "done.npy").sum())

    report = prepare_cache(_dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH)
    assert report.skipped == stored_before >= 1 and report.done == 5 - stored_before and report.n_failed == 2
    assert FeatureCache.open(tmp_path).complete
    for name, array in _arrays(clean).items():
        np.testing.assert_array_equal(_arrays(tmp_path)[name], array, err_msg=name)


_KILLED_PREPARE = """
import os, pickle, signal, sys
from pathlib import Path
from mde.trainer.data.cache import prepare_cache

calls = []

def kill_at_the_fourth_clip(path, ok):
    calls.append(path)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)

dataset = pickle.loads(Path(sys.argv[1]).read_bytes())
prepare_cache(dataset, Path(sys.argv[2]), sample_rate=int(sys.argv[3]), length=int(sys.argv[4]),
              on_progress=kill_at_the_fourth_clip)
"""


def test_a_killed_prepare_is_incomplete_and_resumes(waveform_cache, audio_dir: Path, tmp_path: Path) -> None:
    clean, _, _ = waveform_cache
    (tmp_path / "dataset.pkl").write_bytes(pickle.dumps(_dataset(audio_dir)))
    out = tmp_path / "cache"
    arguments = [str(tmp_path / "dataset.pkl"), str(out), str(RATE), str(LENGTH)]
    # Run outside the checkout so that the installed package (with its compiled kernel) is imported.
    killed = subprocess.run([sys.executable, "-c", _KILLED_PREPARE, *arguments], cwd=tmp_path, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "index.json").exists() and not (out / "failed.json").exists()
    with pytest.raises(MdeError, match="incomplete"):
        FeatureCache.open(out)
    killed_log = (out / "prepare.log.tsv").read_text().splitlines()  # the clips handed back before the kill
    assert killed_log[0].startswith("# ") and [line.split("\t")[:3] for line in killed_log[1:]] == [
        ["0", str(audio_dir / "long8k.wav"), "ok"], ["1", str(audio_dir / "corrupt.wav"), "failed"],
        ["2", str(audio_dir / "short22k.flac"), "ok"], ["3", str(audio_dir / "long44k.wav"), "ok"]]
    report = prepare_cache(_dataset(audio_dir), out, sample_rate=RATE, length=LENGTH)
    assert report.skipped == 3 and report.done == 2 and report.n_failed == 2
    resumed = (out / "prepare.log.tsv").read_text().splitlines()[len(killed_log):]
    assert "(3 kept, 4 to do)" in resumed[0]
    assert [line.split("\t")[2] for line in resumed[1:]] == ["skipped"] * 3 + ["failed", "ok", "failed", "ok"]
    for name, array in _arrays(clean).items():
        np.testing.assert_array_equal(_arrays(out)[name], array, err_msg=name)


def test_rows_marked_not_done_are_redone(waveform_cache, audio_dir: Path, tmp_path: Path) -> None:
    clean, _, _ = waveform_cache
    prepare_cache(_dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH)
    done = np.load(tmp_path / "done.npy", mmap_mode="r+")
    features = np.load(tmp_path / "features.npy", mmap_mode="r+")
    done[[0, 3]] = False
    features[[0, 3]] = 0
    done.flush(), features.flush()
    del done, features
    with pytest.raises(MdeError, match=r"incomplete \(3 of 7 clips stored\)"):
        FeatureCache.open(tmp_path)

    progress: list[tuple[str, bool]] = []
    report = prepare_cache(
        _dataset(audio_dir), tmp_path, sample_rate=RATE, length=LENGTH, on_progress=lambda *a: progress.append(a)
    )
    assert (report.done, report.skipped, report.n_failed, len(progress)) == (2, 3, 2, 7)
    for name, array in _arrays(clean).items():
        np.testing.assert_array_equal(_arrays(tmp_path)[name], array, err_msg=name)


def test_other_settings_over_a_cache_are_refused_unless_overwrite(audio_dir: Path, tmp_path: Path) -> None:
    dataset = _dataset(audio_dir)
    prepare_cache(dataset, tmp_path, sample_rate=RATE, length=LENGTH)
    with pytest.raises(MdeError, match="other settings \\(length 16000 in the cache, 8000 asked\\); use overwrite"):
        prepare_cache(dataset, tmp_path, sample_rate=RATE, length=8000)
    with pytest.raises(MdeError, match="dtype 'float16' in the cache, 'float32' asked"):
        prepare_cache(dataset, tmp_path, sample_rate=RATE, length=LENGTH, dtype="float32")
    with pytest.raises(MdeError, match="features 'waveform' in the cache, 'logmel' asked"):
        prepare_cache(dataset, tmp_path, sample_rate=RATE, length=LENGTH, features="logmel", frontend=FRONTEND)
    relabelled = _dataset(audio_dir)
    relabelled.splits["test"][0].labels[:] = 1.0
    with pytest.raises(MdeError, match=r"row 6 .*quad16k\.wav\): labels differs"):
        prepare_cache(relabelled, tmp_path, sample_rate=RATE, length=LENGTH)
    relabelled.splits["test"].pop()
    with pytest.raises(MdeError, match="7 clips in the cache, 6 asked"):
        prepare_cache(relabelled, tmp_path, sample_rate=RATE, length=LENGTH)

    assert prepare_cache(dataset, tmp_path, sample_rate=RATE, length=LENGTH, frontend=FRONTEND).skipped == 5
    report = prepare_cache(dataset, tmp_path, sample_rate=RATE, length=8000, overwrite=True)
    assert report.done == 5 and FeatureCache.open(tmp_path).features.shape == (7, 8000)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"features": "logmel"}, "features='logmel' needs a frontend"),
        ({"features": "mfcc"}, "features must be one of waveform, logmel"),
        ({"dtype": "int8"}, "dtype must be one of float16, float32"),
        ({"length": 0}, "length must be a positive number of samples"),
        ({"sample_rate": 4000}, "sample_rate must be an integer of at least 8000 Hz"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"features": "logmel", "frontend": FRONTEND.with_(sample_rate=22050, f_max=None)}, "runs at 22050 Hz"),
        ({"features": "logmel", "frontend": FRONTEND, "length": 200},
         "length 200 samples does not suit the front end: input has 200 samples"),
        ({"features": "logmel", "frontend": FRONTEND.with_(log=None)}, "float16 cannot hold"),
    ],
)
def test_bad_settings_are_one_line_errors(audio_dir: Path, tmp_path: Path, settings: dict, message: str) -> None:
    arguments = {"sample_rate": RATE, "length": LENGTH, **settings}
    with pytest.raises(MdeError, match=message):
        prepare_cache(_dataset(audio_dir), tmp_path, **arguments)
    assert not (tmp_path / "index.json").exists()


def test_a_folder_without_a_cache_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MdeError, match=r"no feature cache here .*mde prepare"):
        FeatureCache.open(tmp_path)


def test_a_cache_pickles_as_its_folder(waveform_cache) -> None:
    out, _, _ = waveform_cache
    cache = FeatureCache.open(out)
    data = pickle.dumps(cache)
    assert len(data) < 1000
    copy = pickle.loads(data)
    np.testing.assert_array_equal(copy.features, cache.features)
    assert copy.directory == cache.directory and copy.rows("train").tolist() == [0, 2, 3]
