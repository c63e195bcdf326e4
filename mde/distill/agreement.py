"""How closely a student follows its teacher on held-out audio.

Given, per clip, the student's and the teacher's tag probabilities on the same windows:

- ``roc_auc``: macro ROC-AUC over tags of the student's window probabilities against the teacher's tags
  thresholded per tag (a window is positive for a tag when the teacher's probability is at least the
  tag's threshold: its mean over the train split's teacher windows); tags with one class only among
  the windows are left out (``tags_scored`` says how many were scored);
- ``top5_window``: the mean over windows of |student top 5 ∩ teacher top 5| (0 to 5);
- ``top5_clip`` / ``top5_clip_min``: the same for clip vectors (the mean over the clip's windows), mean
  and worst over clips;
- ``pearson_clip`` / ``pearson_clip_min``: Pearson r between the student's and the teacher's clip
  vectors (50 tags), mean and worst over clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

TOP_K = 5
AGREEMENT_KEYS = ("roc_auc", "top5_window", "top5_clip", "top5_clip_min", "pearson_clip", "pearson_clip_min")


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per row, how many of the ``k`` largest entries of ``a`` are among those of ``b`` (float64)."""
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    return np.array([len(set(x) & set(y)) for x, y in zip(top_a, top_b)], dtype=np.float64)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of ``a`` and ``b`` (0 where either row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)


def teacher_agreement(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray],
                      thresholds: np.ndarray) -> dict[str, Any]:
    """The figures of the module docstring for clips given as (windows, n_tags) arrays of probabilities."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need the same number of clips, at least one; got {len(student)} and {len(teacher)}")
    windows_s, windows_t = np.concatenate(student), np.concatenate(teacher)
    positives = windows_t >= thresholds[None, :]
    aucs = [float(roc_auc_score(positives[:, j], windows_s[:, j])) for j in range(windows_t.shape[1])
            if 0 < positives[:, j].sum() < len(positives)]
    clips_s = np.stack([clip.mean(axis=0) for clip in student])
    clips_t = np.stack([clip.mean(axis=0) for clip in teacher])
    top5_clip, pearson = top_k_overlap(clips_s, clips_t), pearson_rows(clips_s, clips_t)
    return {
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "tags_scored": len(aucs),
        "top5_window": float(top_k_overlap(windows_s, windows_t).mean()),
        "top5_clip": float(top5_clip.mean()),
        "top5_clip_min": float(top5_clip.min()),
        "pearson_clip": float(pearson.mean()),
        "pearson_clip_min": float(pearson.min()),
        "clips": len(student),
        "windows": len(windows_s),
    }
