"""The losses of Schindler et al., which shape an audio embedding after what is said about the music.

Both take a batch's target vectors (points of a :class:`~mde.runtime.text_space.TextSpace`, one row per
track) beside the network's outputs:

- :func:`cosine_regression`: one minus the cosine between a head's output and its target, averaged over the
  batch (one such term per target space: the multi-task model has a head for each);
- :func:`batch_hard_triplet`: the batch-hard triplet loss in the audio embedding, where a pair of tracks is
  positive when their targets' cosine exceeds ``threshold`` (0.9) and negative otherwise, distances are
  Euclidean and the margin is 1.0 (the source's ``OnlineTripletLoss``). Each anchor with at least one
  positive contributes ``relu(d_pos - d_neg + margin)``: ``d_neg`` its nearest negative, ``d_pos`` its
  farthest positive (``aggregation='hardest'``, the source's ``max``) or its mean positive distance
  (``'mean'``). The source's default aggregation ``min`` reaches a commented-out branch and fails; a batch
  without any positive pair, where its mean over no anchors is NaN, gives 0 here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mde.errors import MdeError
from mde.trainer.config import TRIPLET_AGGREGATIONS

POSITIVE_COSINE = 0.9
MARGIN = 1.0


def cosine_regression(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos(outputs[i], targets[i]) (dimensionless, 0 to 2); (batch, dim) each."""
    return (1.0 - F.cosine_similarity(outputs, targets, dim=1, eps=1e-8)).mean()


def target_cosines(targets: torch.Tensor) -> torch.Tensor:
    """(batch, batch) cosine similarity of the target rows (a zero row has cosine 0 with everything)."""
    unit = F.normalize(targets, dim=1, eps=1e-8)
    return unit @ unit.T


def batch_hard_triplet(embeddings: torch.Tensor, targets: torch.Tensor, margin: float = MARGIN,
                       threshold: float = POSITIVE_COSINE, aggregation: str = "hardest") -> torch.Tensor:
    """The batch-hard triplet loss of ``embeddings`` (batch, dim) with positives from ``targets`` (batch, k)."""
    if aggregation not in TRIPLET_AGGREGATIONS:
        raise MdeError(f"unknown triplet aggregation {aggregation!r}; choose one of {', '.join(TRIPLET_AGGREGATIONS)}")
    n = embeddings.shape[0]
    others = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    positive = (target_cosines(targets.detach()) > threshold) & others
    negative = ~positive & others
    anchors = positive.any(dim=1) & negative.any(dim=1)
    if not anchors.any():
        return embeddings.sum() * 0.0  # keeps the graph: a step on this batch changes nothing
    distances = torch.cdist(embeddings, embeddings, p=2)
    if aggregation == "hardest":
        d_pos = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    else:
        d_pos = (distances * positive).sum(dim=1) / positive.sum(dim=1).clamp(min=1)
    d_neg = distances.masked_fill(~negative, float("inf")).amin(dim=1)
    return F.relu(d_pos[anchors] - d_neg[anchors] + margin).mean()
