"""Clip-level evaluation of a torch network: window scores averaged per clip, then tagging metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mde.trainer.metrics import clip_scores, multilabel_metrics, single_label_metrics

WINDOW_BATCH = 32
"""Windows per forward pass at evaluation."""


def window_scores(net: nn.Module, frontend: nn.Module, windows: torch.Tensor, single_label: bool) -> torch.Tensor:
    """Per-window scores (windows, n_tags): sigmoid probabilities, or softmax for single-label runs.

    windows: float32 (n, samples) waveforms on the network's device.
    """
    logits = window_outputs(net, frontend, windows)["logits"]
    return torch.softmax(logits, dim=1) if single_label else torch.sigmoid(logits)


def window_outputs(net: nn.Module, frontend: nn.Module, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every output of the network (name -> (windows, ...)) for waveform windows (n, samples) on its device,
    run through the input stage ``frontend`` in batches of WINDOW_BATCH."""
    parts = [net(frontend(chunk)) for chunk in windows.split(WINDOW_BATCH)]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


@torch.no_grad()
def predict_clips(
    net: nn.Module, frontend: nn.Module, clips: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device, single_label: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip scores (clips, n_tags) as the mean of their windows' scores, and the clips' labels."""
    net.eval()
    scores, labels = [], []
    for windows, label in clips:
        per_window = window_scores(net, frontend, windows.to(device), single_label)
        scores.append(clip_scores(per_window.float().cpu().numpy()))
        labels.append(np.asarray(label, dtype=np.float32))
    return np.stack(scores), np.stack(labels)


def clip_loss(scores: np.ndarray, labels: np.ndarray, single_label: bool) -> float:
    """Mean loss of clip scores: binary cross-entropy, or negative log-likelihood for single-label."""
    eps = 1e-7
    clipped = np.clip(scores, eps, 1 - eps)
    if single_label:
        return float(-np.mean(np.log(clipped[np.arange(len(labels)), labels.argmax(axis=1)])))
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))


def score_clips(scores: np.ndarray, labels: np.ndarray, tag_names: Sequence[str], single_label: bool) -> dict[str, Any]:
    """Metrics of clip scores: roc_auc, pr_auc and loss; single-label adds accuracy, precision, recall,
    f1 (support-weighted) and the confusion matrix."""
    metrics: dict[str, Any] = multilabel_metrics(labels, scores, tag_names)
    if single_label:
        metrics.update(single_label_metrics(labels.argmax(axis=1), scores, tag_names))
    metrics["loss"] = clip_loss(scores, labels, single_label)
    return metrics


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The single-number figures of ``metrics`` (what run folders and ``mde eval`` report)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def report_metrics(metrics: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """What ``mde eval`` reports: the single-number figures, plus for single-label metrics the confusion
    matrix (rows: true class, columns: predicted, counts) and the class names in its order."""
    report = scalar_metrics(metrics)
    if "confusion" in metrics:
        report.update(confusion=np.asarray(metrics["confusion"]).tolist(), class_names=list(class_names))
    return report


def checkpoint_network(payload: dict[str, Any], device: torch.device) -> tuple[Any, nn.Module, nn.Module]:
    """(the registry spec, the network in eval mode with the weights loaded, its input stage), both on
    ``device``, from a checkpoint payload (best.pt, initial.pt: 'architecture', 'tag_names', 'model',
    'band_norm' for a network whose input is standardised per band, 'network_args' for the factory, 'head'
    and 'input_length' for a fine-tuned network)."""
    from mde.runtime.band_norm import BandNorm
    from mde.trainer.frontend import network_input
    from mde.trainer.models.heads import build_network
    from mde.trainer.warm_start import spec_of_payload

    spec = spec_of_payload(payload)
    net = build_network(spec, len(payload["tag_names"]), payload.get("network_args"), payload.get("head"))
    net.load_state_dict(payload["model"])
    norm = BandNorm.from_dict(payload["band_norm"]) if payload.get("band_norm") else None
    return spec, net.to(device).eval(), network_input(spec, norm).to(device)


def selection_score(metrics: dict[str, Any], single_label: bool) -> float:
    """The validation figure that picks the best checkpoint: accuracy (single-label) or ROC-AUC."""
    return float(metrics["accuracy"] if single_label else metrics["roc_auc"])
