import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mde.runtime.chunker import cut_frames, frame_starts


def test_non_overlapping_windows_drop_the_incomplete_tail():
    # 29.1 s at 16 kHz with 0.5 s windows: the seed's 58 frames.
    starts = frame_starts(465984, 8000, 8000)
    assert len(starts) == 58
    assert starts[0] == 0 and starts[-1] == 57 * 8000


def test_short_signal_has_no_frame_and_exact_fit_has_one():
    assert len(frame_starts(7999, 8000, 8000)) == 0
    assert list(frame_starts(8000, 8000, 4000)) == [0]


def test_invalid_step_is_refused():
    with pytest.raises(ValueError):
        frame_starts(100, 10, 0)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 5000), length=st.integers(1, 600), step=st.integers(1, 600))
def test_frames_are_complete_evenly_spaced_and_maximal(total, length, step):
    starts = frame_starts(total, length, step)
    assert all(s + length <= total for s in starts)
    assert np.all(np.diff(starts) == step)
    if len(starts):
        assert starts[0] == 0
        assert starts[-1] + step + length > total  # no further complete frame fits
    else:
        assert total < length


def test_cut_frames_of_audio_and_of_spectrogram_patches():
    signal = np.arange(20, dtype=np.float32)
    frames = cut_frames(signal, frame_starts(20, 6, 5), 6)
    assert frames.shape == (3, 6) and frames.flags.c_contiguous
    assert frames[2].tolist() == list(range(10, 16))
    mel = np.arange(3 * 10, dtype=np.float32).reshape(3, 10)
    patches = cut_frames(mel, np.array([0, 4]), 4)
    assert patches.shape == (2, 3, 4)
    np.testing.assert_array_equal(patches[1], mel[:, 4:8])
    assert cut_frames(signal, np.array([], dtype=np.int64), 6).shape == (0, 6)


def _info(**changes):
    from mde.runtime.frontend_config import MUSICNN, SEED_FCN
    from mde.runtime.package import ModelInfo

    base = dict(name="m", architecture="a", source="s", licence="l", sample_rate=16000, window_samples=8000,
                hop_samples=8000, input_kind="logmel", framing="audio_windows", frontend=SEED_FCN, embedding_dim=2)
    if changes.get("framing") == "mel_patches":
        base.update(frontend=MUSICNN, window_samples=187 * 256, hop_samples=187 * 256, patch_frames=187)
    base.update(changes)
    return ModelInfo(**base)


def test_frame_grid_of_audio_windows():
    from mde.runtime.chunker import frame_grid

    grid = frame_grid(_info())
    assert (grid.unit, grid.length, grid.step, grid.min_samples) == ("sample", 8000, 8000, 8000)
    assert frame_grid(_info(), hop=0.25).step == 4000
    assert frame_grid(_info(variable_length=True), window=1.0).step == 16000  # non-overlapping at the new length
    with pytest.raises(Exception, match=r"takes only 0\.5 s windows"):
        frame_grid(_info(), window=1.0)


def test_frame_grid_of_mel_patches_follows_musicnn():
    from mde.runtime.chunker import frame_grid

    info = _info(framing="mel_patches", variable_length=True)
    grid = frame_grid(info)
    assert (grid.unit, grid.length, grid.step, grid.min_samples) == ("mel_frame", 187, 187, 186 * 256)
    assert grid.unit_seconds == 256 / 16000
    assert [frame_grid(info, window=w).length for w in (0.5, 3.0, 29.0)] == [31, 187, 1812]
    assert frame_grid(info, window=0.5).step == 31 and frame_grid(info, window=0.5, hop=0.25).step == 16
    with pytest.raises(Exception, match="hop must be positive"):
        frame_grid(info, hop=-1)
