"""Retrieval figures (precision at k, mean average precision) and the relevance they are judged by, against
hand-computed cases; and the training targets of a similarity run."""

from __future__ import annotations

import numpy as np
import pytest

from mde.errors import MdeError
from mde.trainer.retrieval import cosine_relevance, jaccard_relevance, retrieval_metrics, retrieval_table


def test_jaccard_relevance_is_overlap_over_union_at_one_half():
    tags = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    relevant = jaccard_relevance(tags)
    assert relevant[0, 1] and relevant[1, 0]  # 2 / 3
    assert not relevant[1, 2]  # 1 / 4
    assert not relevant[0, 2] and not relevant[3, 4]  # nothing shared; two empty sets are not alike
    assert relevant[0, 0] and not relevant[3, 3]


def test_cosine_relevance_is_strictly_above_the_threshold():
    targets = np.array([[1.0, 0.0], [0.95, np.sqrt(1 - 0.95**2)], [0.9, np.sqrt(1 - 0.81)], [0.0, 0.0]])
    relevant = cosine_relevance(targets)
    assert relevant[0, 1] and not relevant[0, 2] and not relevant[3].any()


def test_precision_and_average_precision_by_hand():
    # query 0 ranks 1 (cos 0.99), 2 (0.6), 3 (-0.8): relevant 2 and 3 -> P@1 0, AP (1/2 + 2/3) / 2
    embeddings = np.array([[1.0, 0.0], [0.99, np.sqrt(1 - 0.99**2)], [0.6, 0.8], [-0.8, 0.6]])
    relevant = np.zeros((4, 4), bool)
    relevant[0, [2, 3]] = True
    relevant[1, 0] = True  # query 1 ranks 0 first: AP 1
    figures = retrieval_metrics(embeddings, relevant, cutoffs=(1, 2, 5))
    assert figures["queries"] == 2 and figures["queries_without_relevant"] == 2
    assert figures["p@1"] == pytest.approx((0 + 1) / 2)
    assert figures["p@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert figures["p@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)  # k beyond the 3 others still divides by k
    assert figures["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2)


def test_no_scoring_query_gives_none_and_bad_shapes_one_line():
    figures = retrieval_metrics(np.eye(3), np.zeros((3, 3), bool))
    assert figures["map"] is None and figures["p@5"] is None and figures["queries"] == 0
    with pytest.raises(MdeError, match="at least 2 tracks"):
        retrieval_metrics(np.eye(3), np.zeros((2, 2), bool))


def test_a_perfect_embedding_scores_one_and_the_table_has_every_relevance():
    tags = np.repeat(np.eye(4), 3, axis=0)  # 4 groups of 3 identical tag sets
    embeddings = tags + 0.01 * np.random.default_rng(0).standard_normal(tags.shape)
    table = retrieval_table(embeddings, tags, {"tags": tags * 2.0})
    assert set(table) == {"jaccard", "target_tags"}
    for figures in table.values():
        assert figures["p@1"] == figures["map"] == 1.0 and figures["p@5"] == pytest.approx(2 / 5)
    shuffled = retrieval_metrics(np.random.default_rng(1).standard_normal(tags.shape), jaccard_relevance(tags))
    assert shuffled["map"] < 0.8


def test_training_targets_are_fitted_on_the_train_split_and_stored_without_pickle(tmp_path):
    pytest.importorskip("sklearn")
    torch = pytest.importorskip("torch")
    from mde.trainer.data.dataset import Clip, TaggingDataset
    from mde.trainer.targets import fit_targets

    names = ("piano", "drums", "fast", "slow")
    rows = [((1, 0, 1, 0), "ein schnelles Stück für Klavier"), ((0, 1, 0, 1), "a slow piece with drums"),
            ((1, 1, 1, 0), "fast piano and drums"), ((0, 1, 1, 0), "")]
    clips = [Clip(tmp_path / f"{i}.wav", np.array(labels, np.float32), text) for i, (labels, text) in enumerate(rows)]
    dataset = TaggingDataset("t", names, False, {"train": clips[:3], "valid": clips[3:], "test": []})
    targets = fit_targets(dataset, ("tags", "text"), n_topics=340)
    assert targets.topics == {"tags": 3, "text": 3}  # capped by the 3 training documents
    assert set(targets.vectors) == {str(c.path) for c in clips}
    split = targets.split(torch.from_numpy(np.stack([targets.vectors[str(c.path)] for c in clips])))
    np.testing.assert_allclose(split["tags"][0].numpy(), targets.spaces["tags"].transform([["piano", "fast"]])[0],
                               atol=1e-6)
    assert not split["text"][3].any()  # no text: the zero vector
    targets.save(tmp_path / "targets")
    again = fit_targets(dataset, ("tags", "text"), saved=tmp_path / "targets")
    np.testing.assert_array_equal(again.vectors[str(clips[0].path)], targets.vectors[str(clips[0].path)])
    silent = TaggingDataset("t", names, False, {"train": [Clip(c.path, c.labels) for c in clips[:3]]})
    with pytest.raises(MdeError, match="--targets text needs free text per clip"):
        fit_targets(silent, ("text",))


def test_ties_do_not_follow_the_order_of_the_set():
    tags = np.repeat(np.eye(3), 10, axis=0)  # sorted by label, as GTZAN-like folders are
    collapsed = retrieval_metrics(np.ones((30, 4)), jaccard_relevance(tags))
    chance = 9 / 29
    assert abs(collapsed["p@1"] - chance) < 0.2 and collapsed["p@10"] < 0.5, collapsed
