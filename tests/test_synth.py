"""The synthesized corpus: determinism, manifest, tags that match the audio, both engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_fluidsynth

from mde.audio import load_audio
from mde.errors import MdeError
from mde.trainer.data import synth, synth_fluidsynth
from mde.trainer.data.sources import load_dataset
from mde.trainer.data.synth import resolve_engine, synthesize_corpus
from mde.trainer.data.synth_score import TAGS, compose

RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 numpy-engine clips of 2 s."""
    return synthesize_corpus(tmp_path_factory.mktemp("corpus"), 30, seed=3, seconds=2.0, engine="numpy")


def clip_bytes(manifest: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((manifest.parent / "clips").iterdir())]


def band_share(x: np.ndarray, low: float, high: float) -> float:
    """Fraction of the clip's energy between ``low`` and ``high`` Hz."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def test_manifest_loads_with_the_generated_tags(corpus: Path) -> None:
    ds = load_dataset("manifest", corpus)
    assert set(ds.tag_names) <= set(TAGS) and len(ds.tag_names) >= 10
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [24, 3, 3]
    labels = np.concatenate([ds.label_matrix(s) for s in ("train", "valid", "test")])
    drums, no_drums = ds.tag_names.index("drums"), ds.tag_names.index("no drums")
    assert (labels[:, drums] + labels[:, no_drums] == 1).all()
    assert not (labels[:, ds.tag_names.index("fast")] * labels[:, ds.tag_names.index("slow")]).any()
    audio, rate = load_audio(ds.split("train")[0].path)
    assert rate == RATE and len(audio) == 2 * RATE
    first = (corpus.parent / "clips" / "00000.wav")
    assert first.is_file() and corpus.read_text().splitlines()[1].startswith("clips/00000.wav,")


def test_each_clip_has_a_description_of_its_tags_in_english_or_german(corpus: Path) -> None:
    from mde.trainer.data.manifest import read_manifest
    from mde.trainer.data.synth_text import clip_description

    rows = read_manifest(corpus)
    english = [r for r in rows if " piece for " in r.text]
    german = [r for r in rows if " Stück für " in r.text]
    assert english and german and len(english) + len(german) == len(rows)
    words = {"piano": ("piano", "Klavier"), "flute": ("flute", "Flöte"), "slow": ("slow", "langsames"),
             "no drums": ("without drums", "ohne Schlagzeug"), "loud": ("loud", "lautes")}
    for row in rows:
        for tag, said in words.items():
            assert (tag in row.tags) == any(w in row.text for w in said), (row.tags, row.text)
    assert rows[0].text == clip_description(rows[0].tags, 3, 0)  # seed 3 (the fixture):: the same corpus, the same text


def test_tags_match_the_audio(corpus: Path) -> None:
    ds = load_dataset("manifest", corpus)
    clips = [c for s in ("train", "valid", "test") for c in ds.splits[s]]
    audio = [load_audio(c.path)[0] for c in clips]

    def split_by(tag: str, measure) -> tuple[list[float], list[float]]:
        column = ds.tag_names.index(tag)
        with_tag = [measure(x) for x, c in zip(audio, clips) if c.labels[column]]
        return with_tag, [measure(x) for x, c in zip(audio, clips) if not c.labels[column]]

    rms_db = lambda x: 20 * np.log10(np.sqrt(np.mean(x**2)))  # noqa: E731
    loud, _ = split_by("loud", rms_db)
    quiet, _ = split_by("quiet", rms_db)
    assert loud and quiet and min(loud) > max(quiet) + 15
    assert all(-40 < q < -32 for q in quiet)
    drums, no_drums = split_by("drums", lambda x: band_share(x, 5000, 8000))  # hi-hat and snare noise
    assert np.median(drums) > 3 * np.median(no_drums)
    bass, no_bass = split_by("bass", lambda x: band_share(x, 30, 130))
    assert np.median(bass) > 2 * np.median(no_bass)


def test_score_tags_follow_the_score() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        score = compose(rng, 3.0)
        tags = set(score.tags)
        assert tags & set(score.parts) == set(score.parts) and score.parts
        assert ("drums" in tags) == bool(score.drums) != ("no drums" in tags)
        assert ("fast" in tags) == (score.bpm > 140) and ("slow" in tags) == (score.bpm < 90)
        assert ("loud" in tags) == (score.level_dbfs > -15) and ("quiet" in tags) == (score.level_dbfs < -30)
        assert all(0 <= n.start < 3.0 and n.start + n.duration <= 3.0 for notes in score.parts.values() for n in notes)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    one = synthesize_corpus(tmp_path / "one", 6, seed=11, seconds=1.0, engine="numpy")
    two = synthesize_corpus(tmp_path / "two", 6, seed=11, seconds=1.0, engine="numpy", workers=2)
    assert clip_bytes(one) == clip_bytes(two)
    assert one.read_text() == two.read_text()
    other = synthesize_corpus(tmp_path / "other", 6, seed=12, seconds=1.0, engine="numpy")
    assert clip_bytes(other) != clip_bytes(one)


@needs_fluidsynth
def test_fluidsynth_engine_renders_real_audio(tmp_path: Path) -> None:
    manifest = synthesize_corpus(tmp_path / "fs", 3, seed=5, seconds=1.5, engine="fluidsynth")
    numpy_manifest = synthesize_corpus(tmp_path / "np", 3, seed=5, seconds=1.5, engine="numpy")
    assert manifest.read_text() == numpy_manifest.read_text()  # the same scores, hence the same tags
    ds = load_dataset("manifest", manifest)
    for clip in ds.split("train"):
        audio, rate = load_audio(clip.path)
        assert rate == RATE and len(audio) == round(1.5 * RATE)
        assert np.sqrt(np.mean(audio**2)) > 10 ** (-40 / 20)
    assert clip_bytes(manifest) != clip_bytes(numpy_manifest)
    assert clip_bytes(manifest) == clip_bytes(synthesize_corpus(tmp_path / "again", 3, seed=5, seconds=1.5))


def test_midi_file_structure() -> None:
    score = compose(np.random.default_rng(1), 2.0)
    midi = synth_fluidsynth.score_to_midi(score)
    assert midi[:14] == b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"
    assert midi[14:18] == b"MTrk" and int.from_bytes(midi[18:22], "big") == len(midi) - 22
    assert midi.endswith(b"\xff\x2f\x00")
    assert [synth_fluidsynth._variable_length(v) for v in (0, 127, 128, 0x3FFF)] == [
        b"\x00", b"\x7f", b"\x81\x00", b"\xff\x7f"
    ]


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_engine("numpy") is None
    with pytest.raises(MdeError, match="unknown synthesis engine 'midi'"):
        resolve_engine("midi")
    monkeypatch.setattr(synth_fluidsynth, "find_fluidsynth", lambda: None)
    assert resolve_engine("auto") is None
    with pytest.raises(MdeError, match=r"apt-get install fluidsynth timgm6mb-soundfont$"):
        resolve_engine("fluidsynth")
    monkeypatch.setattr(synth_fluidsynth, "find_fluidsynth", lambda: ("fluidsynth", Path("gm.sf2")))
    assert resolve_engine("auto") == ("fluidsynth", Path("gm.sf2"))


def test_soundfont_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(synth_fluidsynth.SOUNDFONT_ENV, str(tmp_path / "none.sf2"))
    with pytest.raises(MdeError, match=r"MDE_SOUNDFONT=.*none\.sf2: no such SoundFont file"):
        synth_fluidsynth.find_soundfont()
    (tmp_path / "gm.sf2").write_bytes(b"RIFF")
    monkeypatch.setenv(synth_fluidsynth.SOUNDFONT_ENV, str(tmp_path / "gm.sf2"))
    assert synth_fluidsynth.find_soundfont() == tmp_path / "gm.sf2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "at least one clip"),
        ({"sample_rate": 4000}, "sample rate 4000 Hz is outside 8000-96000 Hz"),
        ({"seconds": 0.0}, "clip length must be positive"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"splits": (0.5, 0.5, 0.5)}, "splits must be three non-negative fractions"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"n": 2, **kwargs}
    with pytest.raises(MdeError, match=message):
        synthesize_corpus(tmp_path, arguments.pop("n"), **arguments)
    assert not (tmp_path / synth.MANIFEST_NAME).exists()


def test_a_hung_fluidsynth_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hung = tmp_path / "fluidsynth"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    monkeypatch.setattr(synth_fluidsynth, "_RENDER_TIMEOUT", 0.3)
    score = compose(np.random.default_rng(0), 1.0)
    with pytest.raises(MdeError, match=r"^fluidsynth did not finish a 1 s clip in 0\.3 s with .*; try --engine numpy$"):
        synth_fluidsynth.render(score, 16000, str(hung), tmp_path / "x.sf2")


def test_notes_from_the_clips_end_on_are_left_out_of_the_midi_file() -> None:
    """Clamped to the end, such a note's on would follow its off and hold it forever: FluidSynth's file
    renderer then never finished (seed 0's clip 185 of a 10 s corpus, a sustained bass)."""
    import dataclasses

    from mde.trainer.data.synth_score import DrumHit, Note

    score = compose(np.random.default_rng(1), 2.0)
    name = next(iter(score.parts))
    late = dataclasses.replace(
        score, parts={**score.parts, name: [*score.parts[name], Note(2.0, 0.5, 40, 0.8), Note(2.4, 0.1, 41, 0.8)]},
        drums=[*score.drums, DrumHit(2.0, "kick", 0.9)])
    assert synth_fluidsynth.score_to_midi(late) == synth_fluidsynth.score_to_midi(score)
