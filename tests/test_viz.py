"""Evaluation pictures: the two-panel confusion matrix of a single-label run and of ``mde eval``, and the
``mde viz`` maps of clip embeddings before and after training, on a real fcn05 run over the synthesized
genre corpus."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone
from test_cli import assert_one_line_error, run_mde

torch = pytest.importorskip("torch")

from mde.errors import MdeError  # noqa: E402
from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.data.sources import load_dataset  # noqa: E402
from mde.trainer.data.synth_genres import GENRES, synthesize_genres  # noqa: E402
from mde.trainer.loop import train  # noqa: E402
from mde.trainer.plots import confusion_figure, row_normalised  # noqa: E402
from mde.trainer.run_dir import RunDir  # noqa: E402
from mde.trainer.viz import MODEL_FILE_NOTE, NO_INITIAL_WEIGHTS, clip_classes, embedding_maps  # noqa: E402

MAP_KEYS = {f"{stage}_{method}" for stage in ("before", "after") for method in ("pca", "tsne5", "tsne30")}


@pytest.fixture(scope="module")
def genre_run(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus, run): 60 genre clips of 1 s (numpy engine; per genre 8 train, 1 valid, 1 test) and fcn05
    trained on them single-label for 3 epochs (2 crops per clip, batches of 8: enough steps for its batch
    norms' running statistics; test accuracy 0.83 to 1.0 over seeds 0-3), with its initial weights saved."""
    root = tmp_path_factory.mktemp("viz")
    corpus = synthesize_genres(root / "corpus", 60, seed=0, seconds=1.0, engine="numpy")
    run = root / "run"
    train(TrainConfig(model="fcn05", dataset="gtzan", data=str(corpus), out=str(run), single_label=True, epochs=3,
                      batch_size=8, crops_per_clip=2, lr=3e-3, device="cpu", eval_crops=2, seed=0))
    return corpus, run


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def read_counts(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=int)


def test_a_single_label_run_draws_its_confusion_matrix_in_two_panels(genre_run):
    _, run = genre_run
    metrics = json.loads((run / "metrics.json").read_text())
    names, counts = read_counts(run / "confusion_matrix.csv")
    assert names == sorted(GENRES)
    assert counts.sum(axis=1).tolist() == [1] * len(GENRES)  # the test split: one clip per genre
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["test"]["accuracy"])
    assert metrics["test"]["accuracy"] > 2 / len(GENRES)  # three epochs beat chance (1/6) clearly
    width, height = png_size(run / "confusion_matrix.png")
    assert height >= 400 and 1.6 < width / height < 2.4  # two square panels side by side
    assert not list(run.glob(".*.part"))


def test_the_panels_carry_the_counts_and_the_shares_per_true_class():
    counts = np.array([[10, 2, 3], [5, 12, 8], [4, 0, 6]])
    names = ["blues", "hip hop", "a genre with a long name"]
    figure = confusion_figure(counts, names)
    left, right = figure.axes[:2]
    assert [t.get_text() for t in left.texts] == [str(v) for v in counts.ravel()]
    shares = row_normalised(counts)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert [t.get_text() for t in right.texts] == [f"{v:.2f}" for v in shares.ravel()]
    for axes in (left, right):
        assert [t.get_text() for t in axes.get_xticklabels()] == names
        assert [t.get_text() for t in axes.get_yticklabels()] == names
    assert row_normalised(np.array([[0, 0], [1, 3]])).tolist() == [[0.0, 0.0], [0.25, 0.75]]


def test_viz_maps_a_run_before_and_after_training(genre_run, tmp_path):
    corpus, run = genre_run
    assert RunDir(run).initial.is_file()
    stages: set[str] = set()
    result = embedding_maps(str(run), "gtzan", corpus, tmp_path / "maps", split="train",
                            on_progress=lambda stage, done, total: stages.add(stage))
    assert stages == {"embedding clips (before training)", "embedding clips (after training)", "t-SNE maps"}
    saved = json.loads(result.json.read_text())
    assert set(saved) == MAP_KEYS | {"info"} and result.json.name == "embedding_maps.json"
    info = saved["info"]
    assert info["clips"] == 48 and info["chance"] == pytest.approx(1 / 6) and info["notes"] == []
    assert info["classes"] == dict.fromkeys(sorted(GENRES), 8) and info["coloured_by"] == "class"
    for name in MAP_KEYS:
        assert 0 <= saved[name]["knn_accuracy"] <= 1 and -1 <= saved[name]["silhouette"] <= 1
    for name in ("after_pca", "after_tsne5", "after_tsne30"):
        assert saved[name]["knn_accuracy"] > 3 * info["chance"], saved
    assert (saved["before_tsne5"]["perplexity"], saved["after_tsne30"]["perplexity"]) == (5, 30)
    width, height = png_size(result.png)
    assert height > width > 1000  # three rows of maps, two columns
    assert not list(result.png.parent.glob(".*.part"))


def test_a_run_without_initial_weights_gets_after_maps_and_a_note(genre_run, tmp_path):
    corpus, run = genre_run
    older = tmp_path / "older-run"
    shutil.copytree(run, older)
    RunDir(older).initial.unlink()
    result = embedding_maps(str(older), "gtzan", corpus, tmp_path / "maps")  # the test split: 6 clips
    saved = json.loads(result.json.read_text())
    assert set(saved) == {"after_pca", "after_tsne5", "after_tsne30", "info"}
    assert result.notes == saved["info"]["notes"] == [
        NO_INITIAL_WEIGHTS, "t-SNE perplexity 30 clamped to 5: it must be below the number of clips (6)"]
    assert saved["after_tsne30"]["perplexity"] == 5


def test_viz_of_a_model_file_and_of_a_multi_label_dataset(tiny_model, tmp_path):
    """The runtime's model (no initial weights) on a manifest whose clips carry several tags."""
    rows = ["path,split,tags"]
    for i, (freq, tags) in enumerate([(220, "low|calm"), (230, "low"), (240, "low|calm"), (880, "high|calm"),
                                      (900, "high"), (920, "")]):
        write_tone(tmp_path / f"{i}.wav", 1.0, freq=freq)
        rows.append(f"{i}.wav,test,{tags}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    colours = clip_classes(load_dataset("manifest", tmp_path / "tags.csv"), "test")
    assert colours.names == ("calm", "high", "low", "(no tag)")  # calm (3 clips) outranks low (3) by name
    assert [colours.names[c] for c in colours.classes] == ["calm", "low", "calm", "calm", "high", "(no tag)"]
    result = embedding_maps(tiny_model, "manifest", tmp_path / "tags.csv", tmp_path / "maps", layer="tags")
    saved = json.loads(result.json.read_text())
    assert set(saved) == {"after_pca", "after_tsne5", "after_tsne30", "info"} and result.png.name == "tags_maps.png"
    assert saved["info"]["coloured_by"] == "most frequent tag" and saved["info"]["notes"][0] == MODEL_FILE_NOTE
    assert any("most frequent of its tags" in note for note in result.notes)


def test_bad_targets_and_layers(genre_run, tmp_path):
    corpus, run = genre_run
    with pytest.raises(MdeError, match="not a training run folder"):
        embedding_maps(str(tmp_path), "gtzan", corpus, tmp_path / "maps")
    with pytest.raises(MdeError, match="unknown model 'nope'"):
        embedding_maps("nope", "gtzan", corpus, tmp_path / "maps")
    proc = run_mde("viz", run, "--dataset", "gtzan", "--data", corpus, "--layer", "bad", "--out", tmp_path / "maps",
                   cwd=tmp_path, home=tmp_path)
    assert_one_line_error(proc, "no layer 'bad'; choose from embedding, logits, tags")
    assert not (tmp_path / "maps").exists()


def test_eval_figures_draw_the_confusion_matrix_of_a_run(genre_run, tmp_path):
    corpus, run = genre_run
    proc = run_mde("eval", run, "--dataset", "gtzan", "--data", corpus, "--eval-crops", "2", "--figures",
                   tmp_path / "figures", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    names, counts = read_counts(tmp_path / "figures" / "confusion_matrix.csv")
    assert counts.tolist() == metrics["confusion"] and names == metrics["class_names"] == sorted(GENRES)
    assert metrics["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["accuracy"])
    assert png_size(tmp_path / "figures" / "confusion_matrix.png")[0] > 800
