"""Torch datasets for the training loop: random training crops and evenly spaced evaluation crops.

A source is a :class:`~mde.trainer.data.cache.FeatureCache` (fast: rows are read from its memmap) or a
:class:`~mde.trainer.data.dataset.TaggingDataset` (slow: each file is decoded with ``load_audio`` on
every access, but no cache is needed). Crops are cut along a signal's last axis, so lengths are in
samples for waveforms and in spectrogram frames for a log-mel cache. Only the real audio of a cached
clip is cropped (its length comes from the cache), never the zero padding the cache added; a clip
shorter than one crop is zero-padded at the end.

Randomness: the crop of item i in epoch e is drawn from ``np.random.default_rng((seed, e, i))`` and
depends on nothing else, so it is the same with any number of DataLoader workers in any order; the
shuffling order comes from :func:`epoch_generator`. :func:`train_loader` wires both for one epoch.
"""

from __future__ import annotations

from typing import Optional, Protocol, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mde.audio import load_audio
from mde.errors import MdeError
from mde.runtime.chunker import cut_frames, frame_starts
from mde.trainer.data.cache import FeatureCache
from mde.trainer.data.dataset import TaggingDataset

Source = Union[FeatureCache, TaggingDataset]
Item = tuple[torch.Tensor, torch.Tensor]

EVAL_CROPS = 16
"""Evaluation crops per clip in the sota-music-tagging-models recipe."""


class _Clips(Protocol):
    """The clips of one split: signals along whose last axis crops are cut, and float32 labels."""

    def __len__(self) -> int: ...

    def signal(self, i: int) -> np.ndarray:
        """The real content of clip ``i``: (samples,) or (n_mels, frames); may be a read-only view."""
        ...

    def labels(self, i: int) -> np.ndarray:
        """float32 (n_tags,)."""
        ...


class _CachedClips:
    """Rows of a feature cache, trimmed to their valid length."""

    def __init__(self, cache: FeatureCache, split: str, sample_rate: Optional[int]) -> None:
        if sample_rate is not None and sample_rate != cache.config.sample_rate:
            raise MdeError(f"{cache.directory} holds clips at {cache.config.sample_rate} Hz, not {sample_rate} Hz")
        self.cache = cache
        self.rows = cache.rows(split)
        self.valid = cache.valid_lengths[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def signal(self, i: int) -> np.ndarray:
        return self.cache.features[self.rows[i], ..., : self.valid[i]]

    def labels(self, i: int) -> np.ndarray:
        return self.cache.labels[self.rows[i]]


class _AudioClips:
    """The audio files of a dataset split, decoded at ``sample_rate`` Hz on each access."""

    def __init__(self, dataset: TaggingDataset, split: str, sample_rate: Optional[int]) -> None:
        if sample_rate is None:
            raise MdeError("reading audio files needs a sample_rate")
        self.clips = dataset.split(split)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def signal(self, i: int) -> np.ndarray:
        return load_audio(self.clips[i].path, sr=self.sample_rate)[0]

    def labels(self, i: int) -> np.ndarray:
        return np.asarray(self.clips[i].labels, dtype=np.float32)


def _clips_of(source: Source, split: str, sample_rate: Optional[int], features: Optional[str]) -> _Clips:
    """The clips of ``split``; a cache must hold ``features`` ('waveform', 'logmel'; None: either)."""
    if isinstance(source, TaggingDataset):
        if features == "logmel":
            raise MdeError("log-mel patches need a log-mel feature cache (mde prepare --features logmel)")
        return _AudioClips(source, split, sample_rate)
    if features is not None and source.config.features != features:
        raise MdeError(f"{source.directory} holds {source.config.features} features, this needs {features}")
    return _CachedClips(source, split, sample_rate)


def _fit_last_axis(x: np.ndarray, length: int) -> np.ndarray:
    """A float32 copy of ``x`` zero-padded at the end of its last axis to at least ``length``."""
    padded = np.zeros((*x.shape[:-1], max(length, x.shape[-1])), dtype=np.float32)
    padded[..., : x.shape[-1]] = x
    return padded


def _item(crops: np.ndarray, labels: np.ndarray) -> Item:
    """Tensors of a float32 crop array (owned) and a copy of the labels."""
    return torch.from_numpy(crops), torch.from_numpy(labels.copy())


class RandomCrops(Dataset):
    """Item i: a crop of ``length`` units at a random start within clip i, and its labels.

    The base of :class:`TrainCrops` and :class:`TrainPatches`; ``seed`` and ``epoch`` fix every crop.
    """

    def __init__(self, clips: _Clips, length: int, seed: int) -> None:
        if length < 1:
            raise MdeError(f"the crop length must be positive, got {length}")
        self.clips = clips
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (set it before iterating; workers copy the dataset when they start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Item:
        signal = self.clips.signal(i)
        spare = signal.shape[-1] - self.length
        start = int(np.random.default_rng((self.seed, self.epoch, i)).integers(0, spare + 1)) if spare > 0 else 0
        return _item(_fit_last_axis(signal[..., start : start + self.length], self.length), self.clips.labels(i))


class TrainCrops(RandomCrops):
    """Random waveform crops of the train split: item i is (float32 (input_length,), float32 (n_tags,)).

    source: a waveform FeatureCache at ``sample_rate`` Hz, or a TaggingDataset (decoded at ``sample_rate``).
    input_length: crop length in samples. The crop start is drawn anew each epoch (see :meth:`set_epoch`).
    """

    def __init__(self, source: Source, input_length: int, sample_rate: int, *, seed: int = 0) -> None:
        super().__init__(_clips_of(source, "train", sample_rate, "waveform"), input_length, seed)


class TrainPatches(RandomCrops):
    """Random log-mel patches of the train split: item i is (float32 (n_mels, patch_frames), labels).

    cache: a log-mel FeatureCache. patch_frames: patch length in spectrogram frames.
    """

    def __init__(self, cache: FeatureCache, patch_frames: int, *, seed: int = 0) -> None:
        super().__init__(_clips_of(cache, "train", None, "logmel"), patch_frames, seed)


def eval_starts(total: int, length: int, n_crops: Optional[int] = EVAL_CROPS) -> np.ndarray:
    """Starts (int64, in units) of the evaluation crops of ``length`` over a signal of ``total`` units.

    With ``n_crops``: crop k starts at k * ((total - length) // n_crops), the sota-music-tagging-models
    recipe (the last crop may stop short of the end). With None: every non-overlapping window, as the
    runtime cuts them (:func:`frame_starts`). A signal shorter than ``length`` counts as one padded window.
    """
    _check_n_crops(n_crops)
    total = max(total, length)
    if n_crops is None:
        return frame_starts(total, length, length)
    return np.arange(n_crops, dtype=np.int64) * ((total - length) // n_crops)


def _check_n_crops(n_crops: Optional[int]) -> None:
    if n_crops is not None and n_crops < 1:
        raise MdeError(f"n_crops must be positive or None, got {n_crops}")


class EvalClips(Dataset):
    """Evaluation crops of one split: item i is (float32 (crops, input_length) or (crops, n_mels,
    input_length), labels).

    source: a FeatureCache (waveform or log-mel) or a TaggingDataset (needs ``sample_rate`` in Hz).
    input_length: crop length in samples, or frames for a log-mel cache. n_crops: crops per clip at the
    starts of :func:`eval_starts` (16 by default); None for all non-overlapping windows, whose number
    varies per clip (use a DataLoader with batch_size=None or 1).
    """

    def __init__(
        self,
        source: Source,
        split: str,
        input_length: int,
        *,
        n_crops: Optional[int] = EVAL_CROPS,
        sample_rate: Optional[int] = None,
    ) -> None:
        if input_length < 1:
            raise MdeError(f"input_length must be positive, got {input_length}")
        _check_n_crops(n_crops)
        self.clips = _clips_of(source, split, sample_rate, None)
        self.input_length = input_length
        self.n_crops = n_crops

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Item:
        signal = _fit_last_axis(self.clips.signal(i), self.input_length)
        starts = eval_starts(signal.shape[-1], self.input_length, self.n_crops)
        return _item(cut_frames(signal, starts, self.input_length), self.clips.labels(i))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The torch generator that shuffles epoch ``epoch`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def train_loader(
    dataset: RandomCrops, batch_size: int, *, epoch: int, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A shuffled DataLoader over one epoch of ``dataset`` (TrainCrops or TrainPatches); build one per epoch.

    Sets the dataset's epoch and shuffles with :func:`epoch_generator`, so the batches depend only on
    the seed and the epoch, not on ``num_workers``. The last incomplete batch is dropped.
    """
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=epoch_generator(dataset.seed, epoch),
        num_workers=num_workers, pin_memory=pin_memory, drop_last=True, persistent_workers=False,
    )
