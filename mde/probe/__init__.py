"""Linear probes on frozen embeddings: which model's (and layer's) clip vectors suit a labelled dataset.

``probe(models, dataset)`` (:mod:`mde.probe.api`) embeds each clip once per (model, layer), caches the clip
statistics (:mod:`mde.probe.features`), pools them (:mod:`mde.probe.pooling`), fits logistic-regression
probes (:mod:`mde.probe.fit`) and returns a report (:mod:`mde.probe.report` prints and writes it). Runtime
and scikit-learn only: no torch.
"""

from mde.probe.api import ProbeReport, ProbeRow, probe

__all__ = ["ProbeReport", "ProbeRow", "probe"]
