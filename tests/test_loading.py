"""Training and evaluation crops over a feature cache or a dataset's audio files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from mde.errors import MdeError
from mde.runtime.chunker import frame_starts
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data.cache import FeatureCache, prepare_cache
from mde.trainer.data.dataset import Clip, TaggingDataset
from mde.trainer.data.loading import (
    EvalClips,
    TrainCrops,
    TrainPatches,
    epoch_generator,
    eval_starts,
    train_loader,
)

RATE = 16000
STORED = 32000  # samples per cached clip
CROP = 8000
STEP = 1e-5  # sample k of every file holds k * STEP, so a crop's first value gives its position
TRAIN_SAMPLES = (40000, 30000, 5000, 20000, 24000, 12000)
VALID_SAMPLES = (33000, 3000)
FRONTEND = FrontendConfig(sample_rate=RATE, n_fft=512, hop_length=256, n_mels=16, f_max=8000.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> TaggingDataset:
    """Ramps written as float WAV at RATE (decoded exactly, no resampling); one tag per clip."""
    folder = tmp_path_factory.mktemp("ramps")

    def clip(name: str, n: int, tag: int) -> Clip:
        sf.write(folder / f"{name}.wav", (np.arange(n) * STEP).astype(np.float32), RATE, subtype="FLOAT")
        return Clip(folder / f"{name}.wav", np.eye(2, dtype=np.float32)[tag])

    return TaggingDataset(
        name="ramps", tag_names=("a", "b"), single_label=True,
        splits={
            "train": [clip(f"train{i}", n, i % 2) for i, n in enumerate(TRAIN_SAMPLES)],
            "valid": [clip(f"valid{i}", n, i % 2) for i, n in enumerate(VALID_SAMPLES)],
        },
    )


@pytest.fixture(scope="module")
def cache(dataset: TaggingDataset, tmp_path_factory: pytest.TempPathFactory) -> FeatureCache:
    out = tmp_path_factory.mktemp("cache")
    prepare_cache(dataset, out, sample_rate=RATE, length=STORED, dtype="float32")
    return FeatureCache.open(out)


@pytest.fixture(scope="module")
def logmel_cache(dataset: TaggingDataset, tmp_path_factory: pytest.TempPathFactory) -> FeatureCache:
    out = tmp_path_factory.mktemp("logmel")
    prepare_cache(dataset, out, sample_rate=RATE, length=STORED, features="logmel", frontend=FRONTEND)
    return FeatureCache.open(out)


def _position(crop: torch.Tensor) -> int:
    """The file sample index a ramp crop starts at."""
    return round(float(crop[0]) / STEP)


def _cached_offset(n: int) -> int:
    """Where the cache's centre crop of a file of n samples begins."""
    return max(0, (n - STORED) // 2)


def test_train_crops_are_random_windows_of_the_stored_audio(cache: FeatureCache) -> None:
    crops = TrainCrops(cache, CROP, RATE, seed=3)
    assert len(crops) == len(TRAIN_SAMPLES)
    for i, n in enumerate(TRAIN_SAMPLES):
        x, y = crops[i]
        assert x.shape == (CROP,) and x.dtype == torch.float32 and y.tolist() == [float(i % 2 == 0), float(i % 2)]
        valid = min(n, STORED)
        if valid < CROP:
            np.testing.assert_allclose(x[:valid].numpy(), np.arange(valid) * STEP, rtol=1e-6)
            assert not x[valid:].any()
            continue
        start = _position(x) - _cached_offset(n)
        assert 0 <= start <= valid - CROP
        np.testing.assert_allclose(x.numpy(), (np.arange(CROP) + start + _cached_offset(n)) * STEP, rtol=1e-6)


def test_train_crops_depend_only_on_seed_and_epoch(cache: FeatureCache) -> None:
    def starts(seed: int, epoch: int) -> list[int]:
        crops = TrainCrops(cache, CROP, RATE, seed=seed)
        crops.set_epoch(epoch)
        return [_position(crops[i][0]) for i in range(len(crops))]

    assert starts(0, 0) == starts(0, 0)
    assert starts(0, 0) != starts(0, 1)
    assert starts(0, 1) == starts(0, 1)
    assert starts(0, 0) != starts(1, 0)
    many = {tuple(starts(0, epoch)) for epoch in range(8)}
    assert len(many) == 8


def test_train_crops_from_audio_files_use_the_whole_file(dataset: TaggingDataset) -> None:
    crops = TrainCrops(dataset, CROP, RATE, seed=0)
    seen = []
    for epoch in range(20):
        crops.set_epoch(epoch)
        x, _ = crops[0]
        start = _position(x)
        assert 0 <= start <= TRAIN_SAMPLES[0] - CROP
        np.testing.assert_allclose(x.numpy(), (np.arange(CROP) + start) * STEP, rtol=1e-6)
        seen.append(start)
    assert max(seen) > STORED - CROP + _cached_offset(TRAIN_SAMPLES[0])  # beyond what the cache keeps
    x, _ = crops[2]
    assert not x[TRAIN_SAMPLES[2] :].any()


def test_eval_starts_follow_the_sota_recipe_or_the_runtime_grid() -> None:
    assert eval_starts(33000, 8000).tolist() == [k * 1562 for k in range(16)]
    assert eval_starts(32000, 8000, 4).tolist() == [0, 6000, 12000, 18000]
    assert eval_starts(3000, 8000, 3).tolist() == [0, 0, 0]
    assert eval_starts(33000, 8000, None).tolist() == [0, 8000, 16000, 24000]
    assert frame_starts(33000, 8000, 8000).tolist() == [0, 8000, 16000, 24000]
    assert eval_starts(3000, 8000, None).tolist() == [0]
    with pytest.raises(MdeError, match="n_crops must be positive"):
        eval_starts(100, 10, 0)


@pytest.mark.parametrize("source_kind", ["cache", "files"])
def test_eval_clips_cut_evenly_spaced_crops(source_kind: str, cache: FeatureCache, dataset: TaggingDataset) -> None:
    source = cache if source_kind == "cache" else dataset
    clips = EvalClips(source, "valid", CROP, sample_rate=RATE)
    x, y = clips[0]
    total = min(VALID_SAMPLES[0], STORED) if source_kind == "cache" else VALID_SAMPLES[0]
    offset = _cached_offset(VALID_SAMPLES[0]) if source_kind == "cache" else 0
    assert x.shape == (16, CROP) and y.tolist() == [1.0, 0.0]
    assert [_position(crop) - offset for crop in x] == eval_starts(total, CROP).tolist()
    short, _ = clips[1]
    assert short.shape == (16, CROP) and (short == short[0]).all() and not short[:, VALID_SAMPLES[1] :].any()

    windows = EvalClips(source, "valid", CROP, n_crops=None, sample_rate=RATE)
    x, _ = windows[0]
    assert [_position(crop) - offset for crop in x] == frame_starts(total, CROP, CROP).tolist()
    np.testing.assert_allclose(x[1].numpy(), (np.arange(CROP) + CROP + offset) * STEP, rtol=1e-6)
    assert windows[1][0].shape == (1, CROP)


def test_log_mel_patches(logmel_cache: FeatureCache) -> None:
    frames = 20
    patches = TrainPatches(logmel_cache, frames, seed=0)
    x, _ = patches[0]
    stored = torch.from_numpy(logmel_cache.features[0].astype(np.float32))
    assert x.shape == (16, frames) and x.dtype == torch.float32
    starts = [s for s in range(stored.shape[1] - frames + 1) if torch.equal(stored[:, s : s + frames], x)]
    assert len(starts) == 1
    short = TRAIN_SAMPLES.index(5000)
    valid = FRONTEND.n_frames(5000)
    x, _ = patches[short]
    assert torch.equal(x[:, :valid], stored.new_tensor(logmel_cache.features[short, :, :valid].astype(np.float32)))
    assert not x[:, valid:].any()

    clips = EvalClips(logmel_cache, "valid", frames, n_crops=4)
    x, _ = clips[0]
    row = logmel_cache.rows("valid")[0]
    assert x.shape == (4, 16, frames)
    for crop, start in zip(x, eval_starts(int(logmel_cache.valid_lengths[row]), frames, 4)):
        np.testing.assert_array_equal(crop.numpy(), logmel_cache.features[row, :, start : start + frames])


def test_sources_must_hold_the_right_features(cache: FeatureCache, logmel_cache: FeatureCache, dataset) -> None:
    with pytest.raises(MdeError, match="holds logmel features, this needs waveform"):
        TrainCrops(logmel_cache, CROP, RATE)
    with pytest.raises(MdeError, match="holds waveform features, this needs logmel"):
        TrainPatches(cache, 20)
    with pytest.raises(MdeError, match="holds clips at 16000 Hz, not 22050 Hz"):
        TrainCrops(cache, CROP, 22050)
    with pytest.raises(MdeError, match="reading audio files needs a sample_rate"):
        EvalClips(dataset, "valid", CROP)
    with pytest.raises(MdeError, match="no clips in split 'test'"):
        EvalClips(dataset, "test", CROP, sample_rate=RATE)


def test_batches_do_not_depend_on_the_number_of_workers(cache: FeatureCache) -> None:
    crops = TrainCrops(cache, CROP, RATE, seed=7)

    def batches(epoch: int, workers: int) -> list[torch.Tensor]:
        return [x for x, _ in train_loader(crops, 2, epoch=epoch, num_workers=workers)]

    serial = batches(1, 0)
    assert len(serial) == 3 and serial[0].shape == (2, CROP)
    parallel = batches(1, 2)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    assert not all(torch.equal(a, b) for a, b in zip(serial, batches(2, 0)))
    same_seed = [torch.randperm(6, generator=epoch_generator(7, 1)) for _ in range(2)]
    assert torch.equal(*same_seed)
