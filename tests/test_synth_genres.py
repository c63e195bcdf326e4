"""The synthesized genre corpus: GTZAN's layout, the gtzan loader reads it, scores follow the styles, the
genres are told apart by a plain spectral feature, both engines, and ``mde synth --kind``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_fluidsynth
from test_cli import assert_one_line_error, run_mde

from mde.audio import load_audio
from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data import synth_fluidsynth
from mde.trainer.data.sources import load_dataset
from mde.trainer.data.synth_genres import GENRES, LEVEL_DBFS, compose_genre, synthesize_genres

RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 numpy-engine clips of 2 s, 6 per genre (about 1 s to make)."""
    return synthesize_genres(tmp_path_factory.mktemp("genres"), 36, seed=1, seconds=2.0, engine="numpy")


def test_the_corpus_has_gtzan_layout_and_the_gtzan_loader_reads_it(corpus: Path) -> None:
    names = sorted(GENRES)
    assert sorted(p.name for p in (corpus / "genres").iterdir()) == names
    for genre in names:
        assert sorted(p.name for p in (corpus / "genres" / genre).iterdir()) == [
            f"{genre}.{i:05d}.wav" for i in range(6)]
    ds = load_dataset("gtzan", corpus)
    assert ds.tag_names == tuple(names) and ds.single_label
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [24, 6, 6]  # per genre: 4, 1, 1
    for split in ("valid", "test"):
        assert sorted(ds.label_matrix(split).argmax(axis=1).tolist()) == list(range(6))
    for clip in ds.split("test"):
        assert clip.path.parent.name == ds.tag_names[int(clip.labels.argmax())]
        audio, rate = load_audio(clip.path)
        level = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        assert rate == RATE and len(audio) == 2 * RATE and LEVEL_DBFS[0] - 1 < level < LEVEL_DBFS[1] + 1


def test_a_plain_spectral_feature_tells_the_genres_apart(corpus: Path) -> None:
    """Leave-one-out nearest class centroid on each clip's mean and spread of a 40-band log-mel: 6 genres,
    chance 1/6; measured 0.97."""
    ds = load_dataset("gtzan", corpus)
    clips = [clip for split in ds.splits.values() for clip in split]
    mel = MelSpectrogram.from_config(FrontendConfig(sample_rate=RATE, n_fft=512, hop_length=256, n_mels=40,
                                                    f_max=8000.0))
    features = []
    for clip in clips:
        logmel = mel(load_audio(clip.path, sr=RATE)[0])
        features.append(np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]))
    x = np.array(features)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    genre = np.array([int(clip.labels.argmax()) for clip in clips])
    right = 0
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        centroids = np.stack([x[others & (genre == g)].mean(axis=0) for g in range(len(GENRES))])
        right += int(np.argmin(((centroids - x[i]) ** 2).sum(axis=1)) == genre[i])
    assert right / len(x) >= 0.8


@pytest.mark.parametrize("genre", sorted(GENRES))
def test_scores_follow_their_style(genre: str) -> None:
    style = GENRES[genre]
    for seed in range(5):
        score = compose_genre(np.random.default_rng(seed), 3.0, genre)
        assert score.tags == (genre,)
        assert style.bpm[0] <= score.bpm <= style.bpm[1]
        assert set(score.parts) == {part.voice for part in style.parts} and all(score.parts.values())
        assert dict(score.programs) == {part.voice: part.program for part in style.parts}
        assert {hit.kind for hit in score.drums} == set(style.drums)
        assert all(0 <= n.start < 3.0 and n.start + n.duration <= 3.0 for notes in score.parts.values() for n in notes)
        midi = synth_fluidsynth.score_to_midi(score)
        for channel, part in enumerate(score.parts):  # each part's program change, as the style names it
            assert bytes([0xC0 | channel, score.programs[part]]) in midi


def test_same_seed_same_corpus(tmp_path: Path) -> None:
    def clips(root: Path) -> list[bytes]:
        return [p.read_bytes() for p in sorted((root / "genres").rglob("*.wav"))]

    one = synthesize_genres(tmp_path / "one", 6, seed=4, seconds=0.5, engine="numpy")
    assert clips(one) == clips(synthesize_genres(tmp_path / "again", 6, seed=4, seconds=0.5, engine="numpy"))
    assert clips(one) != clips(synthesize_genres(tmp_path / "other", 6, seed=5, seconds=0.5, engine="numpy"))
    assert clips(synthesize_genres(one, 6, seed=4, seconds=0.5, engine="numpy")) == clips(one)  # a rerun overwrites
    # a subset of the genres: the same clips as the whole corpus's, and only those genres' folders
    some = synthesize_genres(tmp_path / "some", 2, seed=4, seconds=0.5, engine="numpy", genres=["rock", "jazz"])
    assert sorted(p.name for p in (some / "genres").iterdir()) == ["jazz", "rock"]
    for genre in ("jazz", "rock"):
        name = f"genres/{genre}/{genre}.00000.wav"
        assert (some / name).read_bytes() == (one / name).read_bytes()


def test_bad_corpora_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MdeError, match=r"at least one clip per genre: n >= 6, got n=5"):
        synthesize_genres(tmp_path / "few", 5, engine="numpy")
    with pytest.raises(MdeError, match=r"unknown genre 'polka'; the genres are classical, country"):
        synthesize_genres(tmp_path / "polka", 6, engine="numpy", genres=["rock", "polka"])
    with pytest.raises(MdeError, match=r"give each genre once, at least one: got rock, rock"):
        synthesize_genres(tmp_path / "twice", 6, engine="numpy", genres=["rock", "rock"])
    synthesize_genres(tmp_path / "used", 7, seconds=0.25, engine="numpy")
    with pytest.raises(MdeError, match=r"holds classical/classical\.00001\.wav, which this corpus does not make"):
        synthesize_genres(tmp_path / "used", 6, seconds=0.25, engine="numpy")


@needs_fluidsynth
def test_fluidsynth_renders_every_genre(tmp_path: Path) -> None:
    root = synthesize_genres(tmp_path / "fs", 6, seed=2, seconds=1.0, engine="fluidsynth")
    numpy_root = synthesize_genres(tmp_path / "np", 6, seed=2, seconds=1.0, engine="numpy")
    for genre in GENRES:
        audio, rate = load_audio(root / "genres" / genre / f"{genre}.00000.wav")
        assert rate == RATE and len(audio) == RATE and np.sqrt(np.mean(audio**2)) > 10 ** (-30 / 20)
        assert not np.array_equal(audio, load_audio(numpy_root / "genres" / genre / f"{genre}.00000.wav")[0])


def test_synth_kind_genres_on_the_command_line(tmp_path: Path) -> None:
    proc = run_mde("synth", "--kind", "genres", "--out", tmp_path / "cli", "--n", "6", "--seconds", "0.25",
                   "--engine", "numpy", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "synthesizing 6 clips with numpy ..."
    assert lines[-1].endswith(f"train with: mde train --dataset gtzan --data {tmp_path / 'cli'} ...")
    assert len(list((tmp_path / "cli" / "genres").rglob("*.wav"))) == 6
    assert_one_line_error(run_mde("synth", "--kind", "moods", "--out", tmp_path / "x", cwd=tmp_path, home=tmp_path),
                          "unknown corpus kind 'moods'; choose one of tags, genres")
