"""mde distill's parts without training: the window-to-teacher mapping, the agreement figures, the split of
a folder, the teacher cache, and the student windows' targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone

from mde.distill.agreement import pearson_rows, teacher_agreement, top_k_overlap
from mde.distill.data import folder_split, load_unlabelled
from mde.distill.spans import covered_windows, evaluation_anchors, student_spans
from mde.distill.teacher import TeacherCache, TeacherGrid, fill_cache, open_cache
from mde.errors import MdeError

TEACHER_WINDOW, HOP = 3.0, 1.5


def grid(duration: float, n_tags: int = 4) -> TeacherGrid:
    """A teacher grid over a clip of ``duration`` s whose row k holds k in every tag (and embedding) column."""
    starts = np.arange(0, duration - TEACHER_WINDOW + 1e-9, HOP) if duration >= TEACHER_WINDOW else np.zeros(1)
    rows = np.repeat(np.arange(len(starts), dtype=np.float32)[:, None], n_tags, axis=1)
    return TeacherGrid(starts, TEACHER_WINDOW, rows, rows[:, :2].copy(), duration)


def test_covered_windows_for_the_three_scales() -> None:
    assert covered_windows(0.5, 2.992, 1.496) == 1
    assert covered_windows(2.992, 2.992, 1.496) == 1
    assert covered_windows(3.69, 2.992, 1.496) == 1
    assert covered_windows(29.0, 2.992, 1.496) == 18  # 2.992 + 17 x 1.496 = 28.4 s <= 29 s < 29.9 s


def test_a_short_window_is_the_centre_of_its_teacher_window() -> None:
    spans = student_spans(grid(12.0), 0.5, HOP)
    teacher = grid(12.0)
    assert len(spans) == len(teacher)
    np.testing.assert_allclose(spans.starts, teacher.starts + (TEACHER_WINDOW - 0.5) / 2)
    assert spans.target(teacher, 3)[0] == 3.0


def test_a_long_window_is_centred_on_the_teacher_windows_it_covers_and_averages_them() -> None:
    teacher = grid(60.0)
    spans = student_spans(teacher, 10.0, HOP)
    m = covered_windows(10.0, TEACHER_WINDOW, HOP)
    assert m == 5  # 3 + 4 x 1.5 = 9 s
    covered_span = TEACHER_WINDOW + (m - 1) * HOP
    assert spans.rows[0].tolist() == [1, 6]  # the window anchored at row 0 would start before the clip
    np.testing.assert_allclose(spans.starts[0], teacher.starts[1] - (10.0 - covered_span) / 2)
    assert spans.target(teacher, 0)[0] == pytest.approx(np.mean([1, 2, 3, 4, 5]))
    assert spans.targets(teacher, np.array([0]), "embedding").shape == (1, 2)
    assert np.all(spans.starts >= 0) and np.all(spans.starts + 10.0 <= 60.0 + 1e-9)


def test_a_clip_shorter_than_the_student_window_is_one_window_with_every_row() -> None:
    teacher = grid(7.5)
    spans = student_spans(teacher, 29.0, HOP)
    assert len(spans) == 1 and spans.starts[0] == 0.0
    assert spans.target(teacher, 0)[0] == pytest.approx(teacher.tags[:, 0].mean())


def test_evaluation_anchors_do_not_overlap_and_are_capped() -> None:
    spans = student_spans(grid(120.0), 3.7, HOP)
    anchors = evaluation_anchors(spans, 3.7, most=1000)
    assert np.all(np.diff(spans.starts[anchors]) >= 3.7 - 1e-9)
    assert len(evaluation_anchors(spans, 3.7, most=5)) == 5


def test_agreement_of_a_perfect_and_a_reversed_student() -> None:
    rng = np.random.default_rng(0)
    teacher = [rng.random((6, 10)).astype(np.float32) for _ in range(4)]
    thresholds = np.concatenate(teacher).mean(axis=0)
    perfect = teacher_agreement(teacher, teacher, thresholds)
    assert perfect["roc_auc"] == pytest.approx(1.0) and perfect["tags_scored"] == 10
    assert perfect["top5_window"] == 5 and perfect["top5_clip_min"] == 5
    assert perfect["pearson_clip_min"] == pytest.approx(1.0)
    reversed_ = teacher_agreement([1 - t for t in teacher], teacher, thresholds)
    assert reversed_["roc_auc"] == pytest.approx(0.0)
    assert reversed_["pearson_clip"] == pytest.approx(-1.0)
    assert reversed_["top5_window"] < 5


def test_top_k_overlap_and_pearson_by_hand() -> None:
    a = np.array([[5, 4, 3, 2, 1, 0, 0.5]], np.float32)
    b = np.array([[5, 4, 3, 2, 0, 1, 0.5]], np.float32)  # fifth place differs
    assert top_k_overlap(a, b)[0] == 4
    assert pearson_rows(np.array([[1.0, 2, 3]]), np.array([[2.0, 4, 6]]))[0] == pytest.approx(1.0)
    assert pearson_rows(np.array([[1.0, 1, 1]]), np.array([[2.0, 4, 6]]))[0] == 0.0


def test_folder_split_is_stable_and_near_its_shares() -> None:
    splits = [folder_split(f"album{i // 10}/track{i}.ogg") for i in range(2000)]
    assert splits == [folder_split(f"album{i // 10}/track{i}.ogg") for i in range(2000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert 0.76 < share["train"] < 0.84 and 0.07 < share["valid"] < 0.13 and 0.07 < share["test"] < 0.13


def test_unlabelled_folder_and_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(100):
        write_tone(folder / f"t{i}.wav", 0.05, freq=200 + 10 * i)
    dataset = load_unlabelled(folder, ["a", "b"])
    assert sum(len(c) for c in dataset.splits.values()) == 100
    assert {c.path.name for c in dataset.split("valid")} == {
        f"t{i}.wav" for i in range(100) if folder_split(f"t{i}.wav") == "valid"}
    assert dataset.tag_names == ("a", "b") and not dataset.split("train")[0].labels.any()
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,split,tags\nmusic/t0.wav,train,x\nmusic/t1.wav,test,y\n")
    with pytest.raises(MdeError, match="valid split"):
        load_unlabelled(manifest, ["a"])
    with pytest.raises(MdeError, match="no such folder"):
        load_unlabelled(tmp_path / "missing", ["a"])


class _Teacher:
    """A stand-in for a runtime model beside the real one (tested end to end in test_distill.py): it counts
    calls, and reads the file as the runtime would."""

    name = "stand-in"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, path, hop):
        from mde.audio import load_audio

        self.calls += 1
        samples, _ = load_audio(path, sr=8000)
        n = max(1, int((len(samples) / 8000 - 3.0) // hop) + 1)

        class Result:
            timestamps = np.arange(n) * hop
            tags = np.full((n, 2), 0.5, np.float32)
            embedding = np.zeros((n, 3), np.float32)
            duration = len(samples) / 8000

        return Result()

    class info:  # the attribute the real model has
        window_seconds = 3.0


def test_teacher_cache_resumes_refuses_another_teacher_and_records_bad_files(tmp_path: Path) -> None:
    model_file = tmp_path / "teacher.onnx"
    model_file.write_bytes(b"weights")
    good = write_tone(tmp_path / "good.wav", 7.0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    cache = open_cache(tmp_path / "cache", "stand-in", model_file, 3.0, 1.5, ["a", "b"])
    teacher = _Teacher()
    refused = fill_cache(cache, teacher, [good, bad])
    assert list(refused) == [bad] and bad.name in refused[bad]
    loaded = cache.load(good)
    assert len(loaded) == 3 and loaded.duration == pytest.approx(7.0)
    assert fill_cache(cache, teacher, [good, bad]) == refused and teacher.calls == 2  # nothing run again
    assert isinstance(cache, TeacherCache)
    with pytest.raises(MdeError, match=r"holds the outputs of stand-in at hop 1\.5"):
        open_cache(tmp_path / "cache", "stand-in", model_file, 3.0, 0.75, ["a", "b"])
    model_file.write_bytes(b"other weights")
    with pytest.raises(MdeError, match="give another --cache"):
        open_cache(tmp_path / "cache", "stand-in", model_file, 3.0, 1.5, ["a", "b"])
    assert json.loads((tmp_path / "cache" / "teacher.json").read_text())["hop"] == 1.5
