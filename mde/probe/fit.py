"""A linear probe on frozen clip vectors: scikit-learn's logistic regression, its C chosen on the valid split.

Protocol (as HEAR / MARBLE probe embeddings, with a linear model only):

* the features are standardised by a StandardScaler fitted on the train split alone;
* multi-label data: one binary logistic regression per tag (one-vs-rest), for the tags that some train
  clips have and others lack (a tag constant in train cannot be learned and is left out, with its count
  in ``ProbeFit.skipped_tags``); single-label data: one multinomial logistic regression over the classes
  present in train (at least two);
* the inverse regularisation strength C is chosen from ``C_GRID`` by the valid split's macro ROC-AUC
  (multi-label) or accuracy (single-label); ties go to the smaller C (the stronger regularisation);
* the probe reported is the one fitted on the **train split** at the chosen C (no refit on train + valid:
  the valid split stays a clean selection set and the test figure is that of the probe that was chosen);
* test figures: macro ROC-AUC and PR-AUC over the fitted tags defined in test
  (:func:`mde.trainer.metrics.multilabel_metrics`), or accuracy and support-weighted F1
  (:func:`mde.trainer.metrics.single_label_metrics`).

lbfgs is deterministic, so a rerun gives the same figures (``random_state`` is fixed all the same).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mde.errors import MdeError
from mde.trainer.metrics import multilabel_metrics, single_label_metrics

C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2)
"""Inverse regularisation strengths tried, log-spaced."""
MAX_ITER = 1000
"""Solver iterations per fit at most."""
SEED = 0


@dataclass
class ProbeFit:
    """One probe's outcome.

    ``c``: the chosen C; ``valid``: the selection score (valid macro ROC-AUC, or accuracy) for each C tried,
    in grid order; ``test``: the test figures (the metrics helpers' dictionaries: 'roc_auc', 'pr_auc',
    'per_tag'... or 'accuracy', 'f1', 'per_class'...); ``fitted``: the tags (or classes) the probe has;
    ``skipped_tags``: tags left out because train has no clip with, or none without, them.
    """

    c: float
    valid: dict[float, float]
    test: dict[str, Any]
    fitted: tuple[str, ...]
    skipped_tags: tuple[str, ...] = field(default=())

    @property
    def valid_score(self) -> float:
        """The selection score at the chosen C."""
        return self.valid[self.c]


def fit_probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray], tag_names: Sequence[str], single_label: bool,
              c_grid: Sequence[float] = C_GRID) -> ProbeFit:
    """Fit and test one probe.

    Parameters
    ----------
    x : {'train', 'valid', 'test'} -> float (clips, width) clip vectors
    y : {'train', 'valid', 'test'} -> float (clips, n_tags) labels: multi-hot, or one-hot when single-label
    tag_names : the names of the label columns
    single_label : one class per clip (multinomial) rather than any number of tags (one-vs-rest)
    c_grid : the Cs tried, in order (ties go to the earlier)

    Raises
    ------
    MdeError
        Nothing to learn: no tag both present and absent in train (multi-label), fewer than two classes in
        train (single-label), or a valid split on which no C can be scored.
    """
    if not c_grid:
        raise MdeError("the probe needs at least one C to try")
    scaler = StandardScaler().fit(x["train"])
    scaled = {split: scaler.transform(values) for split, values in x.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the chosen C is judged on valid, converged or not
        if single_label:
            return _single_label(scaled, y, tag_names, c_grid)
        return _multilabel(scaled, y, tag_names, c_grid)


def _binary() -> LogisticRegression:
    """One tag's regression: liblinear (a trust-region Newton solver, much faster than lbfgs on the many
    small binary problems of a tag set)."""
    return LogisticRegression(solver="liblinear", max_iter=MAX_ITER, random_state=SEED)


def _multinomial() -> LogisticRegression:
    """The single-label regression: lbfgs, multinomial over the classes (scikit-learn's default for lbfgs),
    each C starting from the previous C's solution."""
    return LogisticRegression(max_iter=MAX_ITER, warm_start=True, random_state=SEED)


def _multilabel(x: dict[str, np.ndarray], y: dict[str, np.ndarray], tag_names: Sequence[str],
                c_grid: Sequence[float]) -> ProbeFit:
    train = y["train"] > 0.5
    positives = train.sum(axis=0)
    usable = [int(i) for i in np.flatnonzero((positives > 0) & (positives < len(train)))]
    if not usable:
        raise MdeError(f"no tag is both present and absent among the {len(train)} train clips: nothing to probe")
    valid_truth = y["valid"][:, usable] > 0.5
    valid_positives = valid_truth.sum(axis=0)
    if not np.any((valid_positives > 0) & (valid_positives < len(valid_truth))):
        raise MdeError(f"no probed tag is both present and absent among the {len(valid_truth)} valid clips, so no "
                       "C can be chosen; give the valid split clips that differ in tags")
    names = tuple(tag_names[i] for i in usable)
    valid_scores = np.zeros((len(c_grid), len(x["valid"]), len(usable)))
    test_scores = np.zeros((len(c_grid), len(x["test"]), len(usable)))
    for column, tag in enumerate(usable):
        regression = _binary()
        for row, c in enumerate(c_grid):
            regression.set_params(C=c).fit(x["train"], train[:, tag])
            valid_scores[row, :, column] = regression.decision_function(x["valid"])
            test_scores[row, :, column] = regression.decision_function(x["test"])
    valid = {float(c): float(multilabel_metrics(valid_truth, valid_scores[row], names)["roc_auc"])
             for row, c in enumerate(c_grid)}
    best = _best(valid, c_grid)
    test = multilabel_metrics(y["test"][:, usable] > 0.5, test_scores[best], names)
    skipped = tuple(name for i, name in enumerate(tag_names) if i not in set(usable))
    return ProbeFit(float(c_grid[best]), valid, test, names, skipped)


def _single_label(x: dict[str, np.ndarray], y: dict[str, np.ndarray], tag_names: Sequence[str],
                  c_grid: Sequence[float]) -> ProbeFit:
    classes = {split: labels.argmax(axis=1) for split, labels in y.items()}
    present = np.unique(classes["train"])
    if len(present) < 2:
        raise MdeError(f"single-label probing needs at least 2 classes in the train split, got {len(present)} "
                       f"({', '.join(tag_names[int(i)] for i in present)})")
    regression = _multinomial()
    valid: dict[float, float] = {}
    test_scores = np.zeros((len(c_grid), len(x["test"]), len(tag_names)))
    for row, c in enumerate(c_grid):
        regression.set_params(C=c).fit(x["train"], classes["train"])
        valid[float(c)] = float(np.mean(regression.predict(x["valid"]) == classes["valid"]))
        test_scores[row][:, regression.classes_] = regression.predict_proba(x["test"])
    best = _best(valid, c_grid)
    test = single_label_metrics(classes["test"], test_scores[best], tag_names)
    fitted = tuple(tag_names[int(i)] for i in present)
    return ProbeFit(float(c_grid[best]), valid, test, fitted, tuple(n for n in tag_names if n not in fitted))


def _best(scores: dict[float, float], c_grid: Sequence[float]) -> int:
    """The index in ``c_grid`` of the highest score (the first of equals); NaN scores never win."""
    values = [scores[float(c)] for c in c_grid]
    finite = [i for i, value in enumerate(values) if not math.isnan(value)]
    if not finite:
        raise MdeError("no C could be scored on the valid split")
    return max(finite, key=lambda i: (values[i], -i))
