"""Schindler et al.'s family in the trainer, the exporter and the runtime: the recipe, targets fitted on the
train split, learning past the mean target on a synthesized corpus, retrieval in metrics.json and in
`mde eval --retrieval` beside a baseline, text targets, and a stereo model served by `mde embed`."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from mde.errors import MdeError  # noqa: E402
from mde.runtime.frontend_config import SCHINDLER  # noqa: E402
from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.models import get_model_spec  # noqa: E402


def test_the_registered_model_and_its_recipe_are_the_sources():
    spec = get_model_spec("schindler")
    assert (spec.architecture, spec.input_length, spec.n_frames, spec.sample_rate, spec.channels) == (
        "SchindlerCNN", 55_040, 216, 22050, 2)
    assert spec.frontend == SCHINDLER and spec.band_norm and spec.objective == "similarity"
    assert (SCHINDLER.n_fft, SCHINDLER.hop_length, SCHINDLER.n_mels, SCHINDLER.db_ref, SCHINDLER.top_db) == (
        1024, 256, 128, "max", 80.0)
    config = TrainConfig.for_model("schindler", dataset="manifest", data="x", out="y")
    assert (config.optimizer, config.lr, config.weight_decay, config.batch_size, config.epochs, config.loss,
            config.targets, config.topics, config.crops_per_clip) == (
        "adam", 1e-4, 1e-5, 1000, 100, "triplet", "tags", 340, 1)
    for bad, message in (({"loss": "l2"}, "loss must be one of cosine, triplet, both"),
                         ({"targets": "tags,tags"}, "targets must be tags, text or tags,text"),
                         ({"targets": "reviews"}, "targets must be tags, text or tags,text")):
        with pytest.raises(MdeError, match=message):
            TrainConfig.for_model("schindler", dataset="manifest", data="x", out="y", **bad)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """120 synthesized 3 s clips at 22,050 Hz (numpy engine) with a description per clip."""
    from mde.trainer.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("schindler") / "corpus", 120, seed=0, seconds=3.0,
                             sample_rate=22050, engine="numpy")


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """30 epochs of cosine regression onto the tag space: (trainer, results, folder). On this corpus the loss
    sits at the mean target's for about 12 epochs, then falls (seed 0 here: valid 0.22 and test 0.17 against
    the mean target's 0.36 at epoch 30)."""
    from mde.trainer.loop import Trainer

    out = tmp_path_factory.mktemp("schindler-run") / "run"
    config = TrainConfig.for_model("schindler", dataset="manifest", data=str(corpus), out=str(out), epochs=30,
                                   batch_size=8, lr=3e-4, loss="cosine", eval_crops=2, device="cpu", seed=0)
    trainer = Trainer(config)
    return trainer, trainer.run(), out


def mean_target_loss(trainer, split: str) -> float:
    """The cosine loss of predicting the train split's mean target for every clip of ``split``: what a
    collapsed embedding reaches."""
    targets = trainer.targets
    rows = lambda s: np.stack([targets.vectors[str(c.path)] for c in trainer.data.dataset.split(s)])  # noqa: E731
    mean = rows("train").mean(axis=0)
    chosen = rows(split)
    cosine = chosen @ mean / np.linalg.norm(chosen, axis=1) / np.linalg.norm(mean)
    return float(np.mean(1 - cosine))


def test_it_learns_more_than_the_mean_target(run):
    trainer, results, out = run
    assert trainer.targets.topics == {"tags": 11}  # 12 tags in the train split: at most terms - 1 topics
    for split in ("valid", "test"):
        assert results[split]["loss"] < mean_target_loss(trainer, split) - 0.05, (split, results[split])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["retrieval"]) == {"jaccard", "target_tags"}
    assert set(metrics["test"]["retrieval"]["jaccard"]) == {"p@1", "p@5", "p@10", "map", "queries",
                                                             "queries_without_relevant"}
    assert metrics["test"]["map"] == metrics["test"]["retrieval"]["jaccard"]["map"]
    from mde.runtime.text_space import TextSpace

    assert TextSpace.load(out / "targets" / "tags.npz").n_topics == 11
    norm = trainer.band_norm
    assert norm is not None and (norm.channels, norm.n_bands) == (2, 128)


def test_the_export_serves_a_stereo_model_as_the_trainer_computes_it(run, tmp_path, shared_data):
    from mde.audio import load_audio
    from mde.export.export import export_model
    from mde.runtime.extractor import load_model
    from mde.trainer.evaluate import checkpoint_network
    from mde.trainer.run_dir import RunDir

    trainer, _, out = run
    result = export_model(out, tmp_path / "schindler.onnx")
    info = result.info
    assert (info.channels, info.tags_output, info.band_norm, info.frontend) == (2, None, trainer.band_norm, SCHINDLER)
    assert info.outputs == {"embedding": 128, "target_tags": 11}
    assert set(info.text_spaces) == {"tags"}
    model = load_model(tmp_path / "schindler.onnx")
    song = shared_data / "audio" / "TRWJAZW128F42760DD_test.mp3"  # stereo, 22,050 Hz, 29.9 s
    frames = model.embed(song)
    assert frames.embedding.shape == (int(29.9 // 2.496), 128)
    samples, _ = load_audio(song, sr=22050, channels=2)
    window = np.ascontiguousarray(samples[: 55_040].T)[None]  # (1, 2, samples): the first frame
    _, net, frontend = checkpoint_network(RunDir(out).load_checkpoint(RunDir(out).best), torch.device("cpu"))
    with torch.no_grad():
        expected = net(frontend(torch.from_numpy(window)))
    np.testing.assert_allclose(frames.embedding[0], expected["embedding"][0].numpy(), atol=2e-4)
    assert not np.allclose(samples[:, 0], samples[:, 1])  # its channels differ, and both are kept:
    mono = model.embed(samples.mean(axis=1), sr=22050).embedding[0]
    assert np.abs(mono - frames.embedding[0]).max() > 1e-3
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app

    _register_commands()  # the command users run gives the same frames
    embedded = CliRunner().invoke(app, ["embed", str(song), "-m", str(tmp_path / "schindler.onnx"), "-o",
                                        str(tmp_path / "emb"), "--layer", "target_tags"])
    assert embedded.exit_code == 0, embedded.output
    stored = np.load(tmp_path / "emb" / f"{song.stem}.npz")
    assert stored["embedding"].shape == (len(frames.embedding), 11)


def test_eval_retrieval_ranks_the_run_beside_a_baseline_in_one_table(run, corpus, tmp_path):
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app
    from mde.export.export import export_model

    _, _, out = run
    export_model(out, tmp_path / "ours.onnx")
    _register_commands()
    result = CliRunner().invoke(app, ["eval", str(out), "--dataset", "manifest", "--data", str(corpus),
                                      "--retrieval", "--baseline", str(tmp_path / "ours.onnx"), "--eval-crops",
                                      "all", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "P@5" in result.output and "mAP" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    ours, exported = report["retrieval"]["run"], report["retrieval"][str(tmp_path / "ours.onnx")]
    assert report["tracks"] == 12 and set(ours) == set(exported) == {"jaccard", "target_tags"}
    for relevance in ours:  # the same network over the same windows, in torch and through the runtime
        for key in ("p@1", "p@5", "map"):
            assert ours[relevance][key] == pytest.approx(exported[relevance][key], abs=0.05), (relevance, key)
    refused = CliRunner().invoke(app, ["eval", str(out), "--baseline", "MTT_musicnn"])
    assert str(refused.exception) == "--baseline applies to --retrieval"


def test_text_targets_train_a_head_per_space_and_need_text(corpus, tmp_path):
    from mde.trainer.data.manifest import read_manifest, write_manifest
    from mde.trainer.loop import Trainer

    config = TrainConfig.for_model("schindler", dataset="manifest", data=str(corpus), out=str(tmp_path / "both"),
                                   epochs=1, batch_size=16, loss="both", targets="tags,text", eval_crops=1,
                                   device="cpu", topics=32)
    trainer = Trainer(config)
    results = trainer.run()
    assert set(trainer.targets.topics) == {"tags", "text"} and trainer.targets.topics["text"] == 32
    assert set(results["test"]["retrieval"]) == {"jaccard", "target_tags", "target_text"}
    assert np.isfinite(results["test"]["loss"])
    from mde.export.export import export_model
    from mde.runtime.extractor import load_model

    export_model(tmp_path / "both", tmp_path / "both.onnx")
    model = load_model(tmp_path / "both.onnx")
    assert model.text_kinds == ("tags", "text")
    clip = trainer.data.dataset.split("test")[0]  # a new text maps into the space as the trainer's did
    np.testing.assert_allclose(model.embed_text(clip.text), trainer.targets.spaces["text"].transform([clip.text])[0],
                               atol=1e-5)
    assert model.embed_text(["piano", "fast"], kind="tags").shape == (trainer.targets.topics["tags"],)
    frames = model.embed(clip.path, layer="target_text").embedding
    assert frames.shape[1] == 32
    with pytest.raises(MdeError, match="has no 'lyrics' text space"):
        model.embed_text("x", kind="lyrics")
    silent = write_manifest([row[:3] for row in read_manifest(corpus)], tmp_path / "no-text.csv")
    with pytest.raises(MdeError, match="--targets text needs free text per clip"):
        Trainer(TrainConfig.for_model("schindler", dataset="manifest", data=str(silent), out=str(tmp_path / "t"),
                                      targets="text", device="cpu"))
