"""``mde train --init``: fine-tuning a stored model, a run or a checkpoint under a new head.

The pretrained model is conftest's ``pretrained_fcn05`` (fcn05 trained 8 epochs on the seed-0 synthesized
corpus, exported to ONNX); the fine-tuning data is a fresh corpus (seed 1) with its own clips. Every run
here is real (torch, one thread, a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import run_mde

torch = pytest.importorskip("torch")

EPOCHS = 6
LR = 3e-3


@pytest.fixture(scope="module")
def finetune_corpus(tmp_path_factory) -> Path:
    """120 fresh synthesized 2 s clips (seed 1; 60 train, 30 valid, 30 test)."""
    from mde.trainer.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("finetune") / "synth", 120, seed=1, seconds=2.0,
                             engine="numpy", splits=(0.5, 0.25, 0.25))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny runs: on busy cores a thread pool's spinning makes them many times slower
    yield
    torch.set_num_threads(threads)


def _config(corpus: Path, out: Path, **settings):
    from mde.trainer.config import TrainConfig

    return TrainConfig(**{"model": "fcn05", "dataset": "manifest", "data": str(corpus), "out": str(out),
                          "epochs": EPOCHS, "batch_size": 8, "crops_per_clip": 1, "lr": LR, "device": "cpu",
                          "eval_crops": 4, "seed": 0, **settings})


def _log(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _state(run: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=False)["model"]


@pytest.fixture(scope="module")
def runs(pretrained_fcn05, finetune_corpus, tmp_path_factory) -> dict[str, Path]:
    """The same fine-tuning data learned from scratch and from the pretrained model (linear head)."""
    from mde.trainer.loop import train

    root = tmp_path_factory.mktemp("finetune-runs")
    train(_config(finetune_corpus, root / "scratch"))
    train(_config(finetune_corpus, root / "init", init=str(pretrained_fcn05["trained"])))
    return {"scratch": root / "scratch", "init": root / "init"}


def test_init_from_a_stored_model_learns_faster_than_from_scratch(runs):
    """Fewer epochs to the same validation ROC-AUC: the best score that training from scratch reaches in six
    epochs is reached earlier when starting from the pretrained model (measured: scratch 0.54 after one epoch
    and its best at the sixth; the pretrained start is ahead from the first epoch)."""
    scores = {name: [float(row["valid_score"]) for row in _log(run)] for name, run in runs.items()}
    target = max(scores["scratch"])
    epochs_to = {name: next((i + 1 for i, s in enumerate(values) if s >= target), EPOCHS + 1)
                 for name, values in scores.items()}
    assert epochs_to["init"] < epochs_to["scratch"], scores
    assert scores["init"][0] > scores["scratch"][0], scores


def test_the_new_head_replaces_the_old_and_the_backbone_starts_from_the_model(runs, pretrained_fcn05):
    from mde.export.onnx_weights import torch_network_from_model

    initial = _state(runs["init"], "initial.pt")
    imported = torch_network_from_model(pretrained_fcn05["trained"]).network.state_dict()
    for key, value in imported.items():
        assert torch.equal(initial[f"backbone.{key}"], value), key
    assert initial["head.weight"].shape == (len(json.loads(_tags(runs["init"]))), 64)


def _tags(run: Path) -> str:
    return json.dumps(torch.load(run / "checkpoints" / "best.pt", weights_only=False)["tag_names"])


def test_freeze_backbone_leaves_it_bit_identical(pretrained_fcn05, finetune_corpus, tmp_path):
    from mde.trainer.loop import train

    run = tmp_path / "frozen"
    train(_config(finetune_corpus, run, epochs=2, init=str(pretrained_fcn05["trained"]), freeze_backbone=True,
                  precise_bn=16))
    before, after = _state(run, "initial.pt"), _state(run, "last.pt")
    backbone = [key for key in before if key.startswith("backbone.")]
    assert any("running_mean" in key for key in backbone)  # BatchNorm statistics are part of what must not move
    for key in backbone:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert [row["stage"] for row in _log(run)] == ["head", "head"]


def test_unfreeze_after_trains_the_head_then_everything_at_the_backbone_rate(pretrained_fcn05, finetune_corpus,
                                                                              tmp_path):
    from mde.trainer.loop import train

    run = tmp_path / "unfreeze"
    train(_config(finetune_corpus, run, epochs=2, init=str(pretrained_fcn05["trained"]), head="mlp",
                  unfreeze_after=1, backbone_lr=1e-4))
    assert [row["stage"] for row in _log(run)] == ["head", "tagging"]
    before, after = _state(run, "initial.pt"), _state(run, "last.pt")
    assert not torch.equal(before["backbone.layer1.conv.weight"], after["backbone.layer1.conv.weight"])
    heads = {key.split(".")[1] for key in after if key.startswith("head.")}
    assert heads == {"0", "3"}  # Linear, ReLU, Dropout, Linear: two with weights
    groups = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert [group["lr"] for group in groups] == [LR, 1e-4]


def test_the_export_keeps_the_lineage_and_its_weights_import_back(runs, pretrained_fcn05, finetune_corpus,
                                                                  tmp_path):
    from mde.export.export import export_model
    from mde.export.onnx_weights import torch_network_from_model
    from mde.runtime.batch import file_sha256
    from mde.runtime.package import read_model_info
    from mde.trainer.loop import train
    from mde.trainer.warm_start import load_pretrained

    exported = tmp_path / "finetuned.onnx"
    export_model(runs["init"], exported)
    lineage = read_model_info(exported).lineage
    assert lineage["init"] == str(pretrained_fcn05["trained"]) and lineage["kind"] == "model"
    assert lineage["sha256"] == file_sha256(pretrained_fcn05["trained"])
    assert lineage["architecture"] == "FCN05" and lineage["head"]["kind"] == "linear"
    assert lineage["freeze_backbone"] is False and "parent" not in lineage
    back = torch_network_from_model(exported)  # the headed network rebuilt from the lineage, checked against ORT
    assert back.registry_name == "fcn05" and "backbone.dense.weight" in back.fresh
    assert max(back.deltas.values()) < 1e-4
    # a second fine-tuning from the fine-tuned model nests the heads and the lineage
    again = tmp_path / "again"
    train(_config(finetune_corpus, again, epochs=1, init=str(exported), head="mlp", freeze_backbone=True))
    nested = torch.load(again / "checkpoints" / "best.pt", weights_only=False)
    assert nested["lineage"]["parent"]["init"] == str(pretrained_fcn05["trained"])
    assert nested["head"]["backbone_head"] == lineage["head"]
    source = load_pretrained(str(again))  # a run folder as the source: its best checkpoint
    assert source.record["kind"] == "run" and source.head == nested["head"]


def test_resume_continues_a_fine_tuning_run(pretrained_fcn05, finetune_corpus, tmp_path):
    from mde.trainer.loop import train

    run, source = tmp_path / "resumed", tmp_path / "copy.onnx"
    source.write_bytes(pretrained_fcn05["trained"].read_bytes())
    train(_config(finetune_corpus, run, epochs=1, init=str(source)))
    lineage = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["lineage"]
    source.unlink()  # the source need not exist any more: the run's initial.pt holds the start
    train(_config(finetune_corpus, run, epochs=2, init=str(source)), resume=True)
    assert [row["epoch"] for row in _log(run)] == ["1", "2"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 2
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["lineage"] == lineage


def test_init_from_mtt_musicnn(musicnn_home, finetune_corpus, tmp_path):
    """The model users start from most: MTT_musicnn (mel patches of 3 s, band-normalised by nothing, 200-d
    penultimate embedding) under a linear head for the corpus's tags, one epoch with the backbone frozen."""
    from conftest import store_at

    from mde.trainer.loop import train

    run = tmp_path / "musicnn"
    with store_at(musicnn_home):
        train(_config(finetune_corpus, run, model="musicnn", epochs=1, init="MTT_musicnn", freeze_backbone=True))
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["lineage"]["init"] == "MTT_musicnn" and best["lineage"]["architecture"] == "musicnn"
    assert best["head"] == {"kind": "linear", "backbone_tags": 50}
    assert best["model"]["head.weight"].shape[1] == 200
    assert json.loads((run / "metrics.json").read_text())["test"]["roc_auc"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["--model", "fcn05", "--freeze-backbone"], "--freeze-backbone applies with --init only"),
    (["--model", "fcn05", "--head", "mlp"], "--head applies with --init only"),
    (["--init", "{nowhere}"], "no such checkpoint file"),
    (["--init", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["--init", "{trained}", "--model", "fcn"], "holds a fcn05 network, not --model fcn"),
    (["--init", "{trained}", "--head", "deep"], "head must be one of linear, mlp"),
    (["--init", "{trained}", "--unfreeze-after", "0"], "unfreeze after must be at least 1 epoch"),
    (["--init", "{trained}", "--je", "--stage1-epochs", "1"], "--init fine-tunes a tagger"),
    ([], "give --model (an architecture) or --init"),
])
def test_bad_fine_tuning_options_are_one_line(pretrained_fcn05, finetune_corpus, tmp_path, args, fragment):
    paths = {"trained": pretrained_fcn05["trained"], "nowhere": tmp_path / "missing.pt"}
    result = run_mde("train", "--dataset", "manifest", "--data", str(finetune_corpus), "--out", str(tmp_path / "run"),
                     *(arg.format(**paths) for arg in args), cwd=tmp_path, home=tmp_path / "home")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_command_fine_tunes_and_says_from_what(pretrained_fcn05, finetune_corpus, tmp_path):
    result = run_mde("train", "--init", str(pretrained_fcn05["trained"]), "--dataset", "manifest", "--data",
                     str(finetune_corpus), "--out", str(tmp_path / "run"), "--epochs", "1", "--freeze-backbone",
                     "--batch-size", "8", "--eval-crops", "4", "--device", "cpu", cwd=tmp_path,
                     home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert f"training fcn05 from {pretrained_fcn05['trained']} (linear head)" in result.stderr
    assert "(head stage)" in result.stderr
    metrics = json.loads(result.stdout)
    assert np.isfinite(metrics["test"]["roc_auc"])
