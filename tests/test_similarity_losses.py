"""Schindler et al.'s losses against a direct loop over anchors, positives and negatives."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mde.errors import MdeError  # noqa: E402
from mde.trainer.similarity_losses import batch_hard_triplet, cosine_regression  # noqa: E402


def looped_triplet(embeddings: np.ndarray, targets: np.ndarray, margin: float, threshold: float,
                   aggregation: str) -> float:
    unit = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    losses = []
    for a in range(len(embeddings)):
        positives = [p for p in range(len(embeddings)) if p != a and unit[a] @ unit[p] > threshold]
        negatives = [n for n in range(len(embeddings)) if n != a and n not in positives]
        if not positives or not negatives:
            continue
        d = [float(np.linalg.norm(embeddings[a] - embeddings[j])) for j in range(len(embeddings))]
        d_pos = max(d[p] for p in positives) if aggregation == "hardest" else np.mean([d[p] for p in positives])
        losses.append(max(0.0, d_pos - min(d[n] for n in negatives) + margin))
    return float(np.mean(losses))


@pytest.mark.parametrize("aggregation", ["hardest", "mean"])
def test_batch_hard_triplet_is_the_loop(aggregation):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6))
    targets = centres[rng.integers(0, 3, size=12)] + 0.05 * rng.normal(size=(12, 6))  # 3 groups of neighbours
    embeddings = rng.normal(size=(12, 4))
    got = batch_hard_triplet(torch.tensor(embeddings), torch.tensor(targets), aggregation=aggregation)
    assert float(got) == pytest.approx(looped_triplet(embeddings, targets, 1.0, 0.9, aggregation), rel=1e-9)
    assert float(got) > 0


def test_the_triplet_loss_trains_and_survives_a_batch_without_positives():
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.05, 1.0]])
    embeddings = torch.zeros(4, 3, requires_grad=True)  # every distance 0: the gradient must stay finite
    loss = batch_hard_triplet(embeddings, targets)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(embeddings.grad).all()
    apart = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0], [5.1, 0, 0]])
    assert float(batch_hard_triplet(apart, targets)) == 0  # positives near, negatives beyond the margin
    lonely = torch.eye(4, requires_grad=True)  # orthogonal targets: no positive pair
    none = batch_hard_triplet(lonely, torch.eye(4))
    none.backward()
    assert none.item() == 0 and not lonely.grad.any()
    with pytest.raises(MdeError, match="unknown triplet aggregation 'min'"):
        batch_hard_triplet(apart, targets, aggregation="min")


def test_cosine_regression():
    outputs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    assert float(cosine_regression(outputs, targets)) == pytest.approx((0.0 + 1.0) / 2)
    assert float(cosine_regression(outputs, -outputs)) == pytest.approx(2.0)
