"""Datasets, the feature cache and synthesized corpora for training."""
