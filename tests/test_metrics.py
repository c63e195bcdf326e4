"""Tagging and classification metrics, and the confusion-matrix files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mde.trainer.metrics import clip_scores, multilabel_metrics, single_label_metrics, write_confusion_matrix

TAGS = ["rock", "piano", "quiet", "vocal"]

# The worked example of the fifth seed (music2vec, README): 50 test clips of 3 classes with supports
# 15 / 25 / 10 and predicted-column totals 19 / 18 / 13, whose support-weighted precision is
# 10/19 * 15/50 + 12/18 * 25/50 + 6/13 * 10/50 = 0.58.
SEED_MATRIX = np.array([[10, 3, 2], [8, 12, 5], [1, 3, 6]])
SEED_CLASSES = ["blues", "jazz", "metal"]


def labels_from_confusion(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, one-hot scores) whose confusion matrix is ``matrix`` (rows: true, columns: predicted)."""
    pairs = [(t, p) for t in range(len(matrix)) for p in range(len(matrix)) for _ in range(matrix[t, p])]
    y_true = np.array([t for t, _ in pairs])
    scores = np.eye(len(matrix))[[p for _, p in pairs]]
    return y_true, scores


def random_labels(n: int, k: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, k)) < 0.3).astype(np.int64)


def test_perfect_scores_give_auc_one():
    y_true = random_labels(200, len(TAGS))
    result = multilabel_metrics(y_true, y_true * 0.8 + 0.1, TAGS)
    assert result["roc_auc"] == 1.0 and result["pr_auc"] == 1.0
    assert result["undefined_tags"] == []
    assert {tag: figures["support"] for tag, figures in result["per_tag"].items()} == dict(
        zip(TAGS, y_true.sum(axis=0).tolist()))


def test_random_scores_give_roc_auc_near_one_half():
    y_true = random_labels(20000, len(TAGS))
    scores = np.random.default_rng(1).random(y_true.shape)
    result = multilabel_metrics(y_true, scores, TAGS)
    assert result["roc_auc"] == pytest.approx(0.5, abs=0.02)
    assert result["pr_auc"] == pytest.approx(y_true.mean(), abs=0.02)  # AP of chance = positive rate


def test_figures_equal_sklearn_per_tag_and_macro():
    y_true = random_labels(300, len(TAGS), seed=2)
    scores = np.random.default_rng(3).random(y_true.shape) + 0.5 * y_true
    result = multilabel_metrics(y_true, scores, TAGS)
    for column, tag in enumerate(TAGS):
        assert result["per_tag"][tag]["roc_auc"] == pytest.approx(roc_auc_score(y_true[:, column], scores[:, column]))
        assert result["per_tag"][tag]["pr_auc"] == pytest.approx(
            average_precision_score(y_true[:, column], scores[:, column]))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y_true, scores, average="macro"))
    assert result["pr_auc"] == pytest.approx(average_precision_score(y_true, scores, average="macro"))


def test_tags_without_positives_or_negatives_are_left_out_of_the_means():
    y_true = random_labels(100, len(TAGS), seed=4)
    y_true[:, 1] = 0  # no positives
    y_true[:, 2] = 1  # no negatives
    scores = np.random.default_rng(5).random(y_true.shape)
    result = multilabel_metrics(y_true, scores, TAGS)
    assert result["undefined_tags"] == ["piano", "quiet"]
    assert result["per_tag"]["piano"] == {"roc_auc": None, "pr_auc": None, "support": 0}
    assert result["per_tag"]["quiet"]["support"] == 100
    defined = [0, 3]
    assert result["roc_auc"] == pytest.approx(np.mean([roc_auc_score(y_true[:, c], scores[:, c]) for c in defined]))
    assert result["pr_auc"] == pytest.approx(
        np.mean([average_precision_score(y_true[:, c], scores[:, c]) for c in defined]))


def test_no_defined_tag_gives_nan_means_not_an_error():
    result = multilabel_metrics(np.zeros((5, 2)), np.random.default_rng(0).random((5, 2)), ["a", "b"])
    assert np.isnan(result["roc_auc"]) and np.isnan(result["pr_auc"]) and result["undefined_tags"] == ["a", "b"]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        multilabel_metrics(np.zeros((5, 2)), np.zeros((5, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        single_label_metrics(np.zeros(4), np.zeros((5, 2)), ["a", "b"])


def test_single_label_figures_on_the_seed_example():
    y_true, scores = labels_from_confusion(SEED_MATRIX)
    result = single_label_metrics(y_true, scores, SEED_CLASSES)
    assert result["confusion"] == SEED_MATRIX.tolist()
    assert result["accuracy"] == pytest.approx(28 / 50)
    assert result["precision"] == pytest.approx(10 / 19 * 15 / 50 + 12 / 18 * 25 / 50 + 6 / 13 * 10 / 50)
    assert round(result["precision"], 2) == 0.58
    assert result["recall"] == pytest.approx(28 / 50)  # support-weighted recall is the accuracy
    per_class_f1 = [2 * p * r / (p + r) for p, r in ((10 / 19, 10 / 15), (12 / 18, 12 / 25), (6 / 13, 6 / 10))]
    assert result["f1"] == pytest.approx(np.dot(per_class_f1, [15 / 50, 25 / 50, 10 / 50]))
    assert result["per_class"]["jazz"] == pytest.approx(
        {"precision": 12 / 18, "recall": 12 / 25, "f1": per_class_f1[1], "support": 25})


def test_a_never_predicted_class_scores_zero_not_a_warning():
    y_true = np.array([0, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1]]
    with np.errstate(all="raise"):
        result = single_label_metrics(y_true, scores, ["a", "b", "c"])
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 2, 0]]


def test_confusion_matrix_files_are_written_and_readable(tmp_path):
    import matplotlib.image

    names = ["hip hop", "classical", "a genre with a long name"]
    csv_path, png_path = write_confusion_matrix(SEED_MATRIX, names, tmp_path / "eval")
    assert (csv_path.name, png_path.name) == ("confusion_matrix.csv", "confusion_matrix.png")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == names
    assert np.array(rows[1:], dtype=int).tolist() == SEED_MATRIX.tolist()
    image = matplotlib.image.imread(png_path)
    assert image.ndim == 3 and min(image.shape[:2]) >= 400


def test_confusion_matrix_must_be_square_in_the_class_count(tmp_path):
    with pytest.raises(ValueError, match="3 x 3"):
        write_confusion_matrix(np.zeros((2, 2)), SEED_CLASSES, tmp_path)


def test_clip_scores_average_the_windows():
    windows = np.array([[0.0, 1.0], [0.5, 0.0], [1.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(clip_scores(windows), [0.5, 0.5])
