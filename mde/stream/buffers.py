"""Buffers between the audio callback and the stream's dispatcher.

:class:`BlockRing` is a single-producer single-consumer ring of preallocated audio blocks: the producer
(PortAudio's callback, or a file/stdin reader thread) copies into a free slot and never blocks or
allocates; when the ring is full the block is dropped and counted. :class:`UnitBuffer` holds the recent
tail of an endless signal (samples, or log-mel frames) addressed by absolute index, so that chunkers
can cut frames that span many blocks.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class BlockRing:
    """A lock-free single-producer single-consumer queue of audio blocks.

    slots: how many blocks it holds. block_frames: the longest block, in frames (samples per channel).
    channels: interleaved channels per frame. The producer calls :meth:`push`, the consumer :meth:`pop`;
    each side only writes its own counter, which is safe under the GIL without a lock.
    """

    def __init__(self, slots: int, block_frames: int, channels: int) -> None:
        if slots < 2 or block_frames < 1 or channels < 1:
            raise ValueError(f"bad ring shape: {slots} slots of {block_frames} x {channels}")
        self._blocks = np.zeros((slots, block_frames, channels), np.float32)
        self._lengths = np.zeros(slots, np.int64)
        self._arrivals = np.zeros(slots, np.float64)
        self._slots = slots
        self._written = 0  # blocks pushed (producer only)
        self._read = 0  # blocks popped (consumer only)
        self.dropped_blocks = 0  # producer only
        self.dropped_frames = 0  # producer only

    def push(self, block: np.ndarray, arrival: float) -> bool:
        """Copy a (frames, channels) block in; False (and counted) when the ring is full.

        ``arrival`` is the time.monotonic() second at which the block's last frame became available.
        """
        if self._written - self._read >= self._slots:
            self.dropped_blocks += 1
            self.dropped_frames += len(block)
            return False
        slot = self._written % self._slots
        n = len(block)
        self._blocks[slot, :n] = block
        self._lengths[slot] = n
        self._arrivals[slot] = arrival
        self._written += 1
        return True

    def full(self) -> bool:
        return self._written - self._read >= self._slots

    def pop(self) -> Optional[tuple[np.ndarray, float]]:
        """The oldest block as a new (frames, channels) array and its arrival time, or None if empty."""
        if self._read == self._written:
            return None
        slot = self._read % self._slots
        block = self._blocks[slot, : self._lengths[slot]].copy()
        arrival = float(self._arrivals[slot])
        self._read += 1
        return block, arrival


class UnitBuffer:
    """The recent tail of an endless float32 signal along its last axis.

    rows: None for a 1-d signal (samples), else the size of the first axis (mel bands). Units are
    addressed by absolute index since the stream started: ``start`` is the oldest kept unit and ``end``
    one past the newest. Storage grows as needed and is compacted in place, so appends are amortised O(n).
    """

    def __init__(self, rows: Optional[int] = None, capacity: int = 1 << 16) -> None:
        self._rows = rows
        self._data = np.zeros(self._shape(max(capacity, 1)), np.float32)
        self._first = 0  # storage index of unit `start`
        self.start = 0
        self.end = 0

    def _shape(self, capacity: int) -> tuple[int, ...]:
        return (capacity,) if self._rows is None else (self._rows, capacity)

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, units: np.ndarray) -> None:
        """Append units (samples (n,), or (rows, n) frames)."""
        n = units.shape[-1]
        kept = len(self)
        capacity = self._data.shape[-1]
        if self._first + kept + n > capacity:
            if kept + n > capacity:
                grown = np.zeros(self._shape(max(2 * capacity, kept + n)), np.float32)
                grown[..., :kept] = self._data[..., self._first : self._first + kept]
                self._data = grown
            else:
                self._data[..., :kept] = self._data[..., self._first : self._first + kept].copy()
            self._first = 0
        at = self._first + kept
        self._data[..., at : at + n] = units
        self.end += n

    def view(self, begin: int, stop: int) -> np.ndarray:
        """Units [begin, stop) by absolute index, as a view valid until the next append."""
        if begin < self.start or stop > self.end or begin > stop:
            raise IndexError(f"units [{begin}, {stop}) are outside the kept [{self.start}, {self.end})")
        offset = self._first - self.start
        return self._data[..., begin + offset : stop + offset]

    def discard_before(self, index: int) -> None:
        """Forget units before absolute ``index``."""
        index = min(max(index, self.start), self.end)
        self._first += index - self.start
        self.start = index
