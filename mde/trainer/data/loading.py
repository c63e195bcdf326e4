"""Torch datasets for the training loop: random training crops and evenly spaced evaluation crops.

A source is a :class:`~mde.trainer.data.cache.FeatureCache` (fast: rows are read from its memmap), a
:class:`DecodedAudio` (fast: the files of some splits decoded once and kept in memory, see
:func:`decode_if_it_fits`) or a :class:`~mde.trainer.data.dataset.TaggingDataset` (slow: each file is
decoded with ``load_audio`` on every access, but no cache is needed). Crops are cut along a signal's
last axis, so lengths are in samples for waveforms and in spectrogram frames for a log-mel cache. Only
the real audio of a cached clip is cropped (its length comes from the cache), never the zero padding
the cache added; a clip shorter than one crop is zero-padded at the end.

Randomness: crop k of clip i in epoch e is drawn from ``np.random.default_rng((seed, e, i))`` for k = 0
and ``np.random.default_rng((seed, e, i, k))`` for the further crops of ``crops_per_clip``, and
depends on nothing else, so it is the same with any number of DataLoader workers in any order; the
shuffling order comes from :func:`epoch_generator`. :func:`train_loader` wires both for one epoch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Optional, Protocol, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from mde.audio import load_audio, open_audio
from mde.errors import MdeError
from mde.runtime.chunker import cut_frames, frame_starts
from mde.trainer.data.cache import FeatureCache
from mde.trainer.data.dataset import TaggingDataset

Item = tuple[torch.Tensor, torch.Tensor]
CropsPerClip = Union[int, str]
"""Training crops per clip per epoch: a positive int, or 'auto' (see :func:`crops_for`)."""

EVAL_CROPS = 16
"""Evaluation crops per clip in the sota-music-tagging-models recipe."""

MAX_AUTO_CROPS = 4
"""The most crops per clip per epoch that crops_per_clip='auto' draws. Measured on 2 cores (fcn05, 400
FluidSynth clips of 10 s, 10 epochs): 1 crop per clip, test ROC-AUC 0.911 in 40 s; 4, 0.982 in 105 s;
16, a 5-minute run (see the README's Training section)."""


class DecodedAudio:
    """The files of ``splits`` of a dataset decoded once at ``sample_rate`` Hz, kept as float32 arrays:
    (samples,) mono, or (channels, samples) for ``channels`` > 1 (see :func:`decode_clip`).

    As a source, it serves those splits from memory and decodes the files of any other split on access.
    workers: processes decoding in parallel (1: this one). on_file(done, total) follows the decoding.
    """

    def __init__(self, dataset: TaggingDataset, sample_rate: int, splits: tuple[str, ...], *, workers: int = 1,
                 on_file: Optional[Callable[[int, int], None]] = None, channels: int = 1) -> None:
        self.dataset = dataset
        self.sample_rate = sample_rate
        self.channels = channels
        paths = [clip.path for split in splits for clip in dataset.split(split)]
        decode = partial(decode_clip, sample_rate=sample_rate, channels=channels)
        if workers > 1:
            from mde.runtime.workers import process_map

            signals: Iterable[np.ndarray] = process_map(decode, paths, min(workers, len(paths)), _no_setup, ())
        else:
            signals = (decode(path) for path in paths)
        self.signals: dict[Path, np.ndarray] = {}
        for path, signal in zip(paths, signals):
            self.signals[path] = signal
            if on_file:
                on_file(len(self.signals), len(paths))


def decode_clip(path: Path, sample_rate: int, channels: int = 1) -> np.ndarray:
    """A training clip's float32 samples at ``sample_rate`` Hz: (samples,) for mono, else (channels, samples)
    (samples on the last axis, where crops are cut; a mono file is repeated on every channel)."""
    samples = load_audio(path, sr=sample_rate, channels=channels)[0]
    return samples if channels == 1 else np.ascontiguousarray(samples.T)


def _no_setup() -> None:
    """Decoding workers need no set-up."""


Source = Union[FeatureCache, DecodedAudio, TaggingDataset]


def size_text(nbytes: float) -> str:
    """``nbytes`` as '220 MiB' or '2.5 GiB' (GiB from 1 GiB up)."""
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def decoded_length(path: Path, sample_rate: int) -> int:
    """Samples that ``load_audio(path, sr=sample_rate)`` returns, from the file's header (no decoding)."""
    with open_audio(path) as f:
        return round(max(f.frames, 0) * sample_rate / f.samplerate)


def decode_if_it_fits(
    dataset: TaggingDataset, sample_rate: int, splits: tuple[str, ...], budget: int, spill_to: Optional[Path] = None,
    *, workers: int = 1, on_progress: Optional[Callable[[int, int], None]] = None, channels: int = 1,
) -> tuple[Source, str]:
    """The files of ``splits`` decoded once into memory when their float32 audio fits ``budget`` bytes;
    else, with ``spill_to``, every clip of the dataset decoded once into a float16 feature cache made
    there (at full length: see :func:`~mde.trainer.data.cache.prepare_cache`), else ``dataset`` itself
    (decoded on every access). Returns the source and one line saying which and why. workers: decoding
    processes; on_progress(done, total): files decoded so far; channels: 1 (mono) or the stereo network's 2."""
    files = [clip.path for split in splits for clip in dataset.split(split)]
    lengths = {path: decoded_length(path, sample_rate) for path in files}  # headers only, read once
    needed = 4 * channels * sum(lengths.values())
    what = f"the {len(files)} {' and '.join(splits)} files"
    if needed <= budget:
        return DecodedAudio(dataset, sample_rate, splits, workers=workers, on_file=on_progress, channels=channels), (
            f"decoding {what} once into memory ({size_text(needed)} of float32, within the "
            f"{size_text(budget)} memory budget)")
    over = f"{what} take {size_text(needed)} of float32, over the {size_text(budget)} memory budget"
    if spill_to is None:
        return dataset, f"decoding each file at every use: {over} (--cache auto, or mde prepare and --cache, is faster)"
    from mde.trainer.data.cache import prepare_cache

    longest = max(lengths[clip.path] if clip.path in lengths else decoded_length(clip.path, sample_rate)
                  for clips in dataset.splits.values() for clip in clips)
    clips = sum(len(c) for c in dataset.splits.values())
    counter = itertools.count(1)
    report = (lambda _path, _ok: on_progress(next(counter), clips)) if on_progress else None
    prepare_cache(dataset, spill_to, sample_rate=sample_rate, length=max(longest, 1), workers=workers,
                  channels=channels, on_progress=report)
    return FeatureCache.open(spill_to), f"decoding every file once into the temporary cache {spill_to}: {over}"


class _Clips(Protocol):
    """The clips of one split: signals along whose last axis crops are cut, and float32 labels."""

    def __len__(self) -> int: ...

    def signal(self, i: int) -> np.ndarray:
        """The real content of clip ``i``: (samples,), (n_mels, frames), or either with a leading channel axis;
        may be a read-only view."""
        ...

    def length(self, i: int) -> int:
        """Units along the last axis of ``signal(i)``, without reading the signal where possible."""
        ...

    @property
    def values_per_unit(self) -> int:
        """float values per unit of the last axis: 1 for a mono waveform, n_mels for a log-mel, times the
        channels."""
        ...

    def labels(self, i: int) -> np.ndarray:
        """float32 (n_tags,)."""
        ...

    def path(self, i: int) -> str:
        """The audio file of clip ``i`` (``os.fspath`` of the dataset's path)."""
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

    def length(self, i: int) -> int:
        return int(self.valid[i])

    @property
    def values_per_unit(self) -> int:
        return int(np.prod(self.cache.features.shape[1:-1]))

    def labels(self, i: int) -> np.ndarray:
        return self.cache.labels[self.rows[i]]

    def path(self, i: int) -> str:
        return self.cache.paths[self.rows[i]]


class _AudioClips:
    """The audio files of a dataset split at ``sample_rate`` Hz with ``channels`` channels: from ``decoded``
    (path to samples) when there, else decoded on each access."""

    def __init__(self, dataset: TaggingDataset, split: str, sample_rate: Optional[int],
                 decoded: Optional[Mapping[Path, np.ndarray]] = None, channels: int = 1) -> None:
        if sample_rate is None:
            raise MdeError("reading audio files needs a sample_rate")
        self.clips = dataset.split(split)
        self.sample_rate = sample_rate
        self.decoded = decoded or {}
        self.channels = channels

    def __len__(self) -> int:
        return len(self.clips)

    def signal(self, i: int) -> np.ndarray:
        kept = self.decoded.get(self.clips[i].path)
        return kept if kept is not None else decode_clip(self.clips[i].path, self.sample_rate, self.channels)

    def length(self, i: int) -> int:
        kept = self.decoded.get(self.clips[i].path)
        return kept.shape[-1] if kept is not None else decoded_length(self.clips[i].path, self.sample_rate)

    @property
    def values_per_unit(self) -> int:
        return self.channels

    def labels(self, i: int) -> np.ndarray:
        return np.asarray(self.clips[i].labels, dtype=np.float32)

    def path(self, i: int) -> str:
        return os.fspath(self.clips[i].path)


class _WithTargets:
    """Clips whose labels carry each clip's target vector after its tags (a similarity network's targets,
    looked up by audio path)."""

    def __init__(self, clips: _Clips, targets: Mapping[str, np.ndarray]) -> None:
        missing = [clips.path(i) for i in range(len(clips)) if clips.path(i) not in targets]
        if missing:
            raise MdeError(f"no target vector for {len(missing)} clip(s), e.g. {missing[0]}")
        self.clips = clips
        self.targets = targets

    def __len__(self) -> int:
        return len(self.clips)

    def signal(self, i: int) -> np.ndarray:
        return self.clips.signal(i)

    def length(self, i: int) -> int:
        return self.clips.length(i)

    @property
    def values_per_unit(self) -> int:
        return self.clips.values_per_unit

    def labels(self, i: int) -> np.ndarray:
        return np.concatenate([self.clips.labels(i), self.targets[self.clips.path(i)]]).astype(np.float32)

    def path(self, i: int) -> str:
        return self.clips.path(i)


def split_clips(source: Source, split: str, sample_rate: Optional[int], features: Optional[str],
              channels: int = 1, targets: Optional[Mapping[str, np.ndarray]] = None) -> _Clips:
    """The clips of ``split`` with ``channels`` channels, and with ``targets`` (audio path -> target vector)
    appended to their labels when given; a cache must hold ``features`` ('waveform', 'logmel'; None:
    either) and that many channels."""
    clips = _source_clips(source, split, sample_rate, features, channels)
    return clips if targets is None else _WithTargets(clips, targets)


def _source_clips(source: Source, split: str, sample_rate: Optional[int], features: Optional[str],
                  channels: int) -> _Clips:
    if isinstance(source, (TaggingDataset, DecodedAudio)):
        if features == "logmel":
            raise MdeError("log-mel patches need a log-mel feature cache (mde prepare --features logmel)")
        if isinstance(source, TaggingDataset):
            return _AudioClips(source, split, sample_rate, channels=channels)
        if sample_rate != source.sample_rate or channels != source.channels:
            raise MdeError(f"the audio was decoded at {source.sample_rate} Hz with {source.channels} channel(s), "
                           f"not {sample_rate} Hz with {channels}")
        return _AudioClips(source.dataset, split, sample_rate, source.signals, channels)
    if features is not None and source.config.features != features:
        raise MdeError(f"{source.directory} holds {source.config.features} features, this needs {features}")
    if source.channels != channels:
        raise MdeError(f"{source.directory} holds {source.channels}-channel clips, this network takes {channels} "
                       f"(mde prepare --channels {channels})")
    return _CachedClips(source, split, sample_rate)


def pad_last_axis(x: np.ndarray, length: int) -> np.ndarray:
    """A float32 copy of ``x`` zero-padded at the end of its last axis to at least ``length``."""
    padded = np.zeros((*x.shape[:-1], max(length, x.shape[-1])), dtype=np.float32)
    padded[..., : x.shape[-1]] = x
    return padded


def _item(crops: np.ndarray, labels: np.ndarray) -> Item:
    """Tensors of a float32 crop array (owned) and a copy of the labels."""
    return torch.from_numpy(crops), torch.from_numpy(labels.copy())


def crops_for(units: int, length: int, crops_per_clip: CropsPerClip) -> int:
    """Training crops per epoch of a clip of ``units`` with crops of ``length`` units: ``crops_per_clip``,
    or for 'auto' as many as non-overlapping crops fit in the clip (at least 1, at most MAX_AUTO_CROPS)."""
    if crops_per_clip == "auto":
        return max(1, min(MAX_AUTO_CROPS, units // length))
    if isinstance(crops_per_clip, bool) or not isinstance(crops_per_clip, int) or crops_per_clip < 1:
        raise MdeError(f"crops per clip must be a positive integer or 'auto', got {crops_per_clip!r}")
    return crops_per_clip


class RandomCrops(Dataset):
    """Item j: a crop of ``length`` units at a random start within the clip j belongs to, and its labels.

    Clip i has ``crops_for(its length, length, crops_per_clip)`` consecutive items, each with its own
    random start. The base of :class:`TrainCrops` and :class:`TrainPatches`; ``seed`` and ``epoch`` fix
    every crop.
    """

    def __init__(self, clips: _Clips, length: int, seed: int, crops_per_clip: CropsPerClip = 1) -> None:
        if length < 1:
            raise MdeError(f"the crop length must be positive, got {length}")
        self.clips = clips
        self.length = length
        self.seed = seed
        self.epoch = 0
        if crops_per_clip == "auto":  # only 'auto' needs the clips' lengths
            self.counts = np.array([crops_for(clips.length(i), length, "auto") for i in range(len(clips))], np.int64)
        else:
            self.counts = np.full(len(clips), crops_for(length, length, crops_per_clip), np.int64)
        self.ends = np.cumsum(self.counts)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (set it before iterating; workers copy the dataset when they start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, j: int) -> Item:
        i = int(np.searchsorted(self.ends, j, side="right"))
        k = j - int(self.ends[i] - self.counts[i])
        signal = self.clips.signal(i)
        spare = signal.shape[-1] - self.length
        key = (self.seed, self.epoch, i) if k == 0 else (self.seed, self.epoch, i, k)
        start = int(np.random.default_rng(key).integers(0, spare + 1)) if spare > 0 else 0
        return _item(pad_last_axis(signal[..., start : start + self.length], self.length), self.clips.labels(i))


class TrainCrops(RandomCrops):
    """Random waveform crops of the train split: an item is (float32 (input_length,), float32 (n_tags,)).

    source: a waveform FeatureCache at ``sample_rate`` Hz, a DecodedAudio, or a TaggingDataset (decoded at
    ``sample_rate``). input_length: crop length in samples. crops_per_clip: items per clip (see
    :func:`crops_for`). The crop starts are drawn anew each epoch (see :meth:`set_epoch`). channels: with
    more than 1, items are (channels, input_length). targets: audio path -> target vector, appended to
    the labels (a similarity network's).
    """

    def __init__(self, source: Source, input_length: int, sample_rate: int, *, seed: int = 0,
                 crops_per_clip: CropsPerClip = 1, channels: int = 1,
                 targets: Optional[Mapping[str, np.ndarray]] = None) -> None:
        super().__init__(split_clips(source, "train", sample_rate, "waveform", channels, targets), input_length,
                         seed, crops_per_clip)


class TrainPatches(RandomCrops):
    """Random log-mel patches of the train split: item i is (float32 (n_mels, patch_frames), labels).

    cache: a log-mel FeatureCache. patch_frames: patch length in spectrogram frames.
    """

    def __init__(self, cache: FeatureCache, patch_frames: int, *, seed: int = 0,
                 crops_per_clip: CropsPerClip = 1) -> None:
        super().__init__(split_clips(cache, "train", None, "logmel"), patch_frames, seed, crops_per_clip)


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
    varies per clip (use a DataLoader with batch_size=None or 1). channels: with more than 1, crops are
    (crops, channels, input_length). targets: as for :class:`TrainCrops`.
    """

    def __init__(
        self,
        source: Source,
        split: str,
        input_length: int,
        *,
        n_crops: Optional[int] = EVAL_CROPS,
        sample_rate: Optional[int] = None,
        channels: int = 1,
        targets: Optional[Mapping[str, np.ndarray]] = None,
    ) -> None:
        if input_length < 1:
            raise MdeError(f"input_length must be positive, got {input_length}")
        _check_n_crops(n_crops)
        self.clips = split_clips(source, split, sample_rate, None, channels, targets)
        self.input_length = input_length
        self.n_crops = n_crops

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def nbytes(self) -> int:
        """Bytes of float32 all items hold together (for a waveform or log-mel source alike)."""
        windows = sum(len(eval_starts(self.clips.length(i), self.input_length, self.n_crops))
                      for i in range(len(self.clips)))
        return 4 * self.clips.values_per_unit * windows * self.input_length

    def __getitem__(self, i: int) -> Item:
        signal = pad_last_axis(self.clips.signal(i), self.input_length)
        starts = eval_starts(signal.shape[-1], self.input_length, self.n_crops)
        return _item(cut_frames(signal, starts, self.input_length), self.clips.labels(i))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The torch generator that shuffles epoch ``epoch`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def train_loader(
    dataset: RandomCrops, batch_size: int, *, epoch: int, num_workers: int = 0, pin_memory: bool = False,
    share: tuple[int, int] = (0, 1),
) -> DataLoader:
    """A shuffled DataLoader over one epoch of ``dataset`` (TrainCrops or TrainPatches); build one per epoch.

    Sets the dataset's epoch and shuffles with :func:`epoch_generator`, so the batches depend only on
    the seed and the epoch, not on ``num_workers``. The last incomplete batch is dropped.
    share: (rank, world) of a data-parallel replica, which reads only its part of every batch: windows
    rank, rank + world, ... of it (``batch_size`` a multiple of world); (0, 1) is the whole batch.
    """
    dataset.set_epoch(epoch)
    rank, world = share
    batches = BatchSampler(RandomSampler(dataset, generator=epoch_generator(dataset.seed, epoch)), batch_size,
                           drop_last=True)
    return DataLoader(
        dataset, batch_sampler=_Share(batches, rank, world), num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=False,
    )


class _Share:
    """A batch sampler's batches, each cut to one replica's part (every ``world``-th index from ``rank``)."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.batches)
