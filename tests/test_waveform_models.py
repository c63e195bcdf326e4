"""The waveform families against their sources' layer tables: SoundNet-8 and music2vec (KMASAHIRO/music2vec,
music2vec/music2vec.py), Sample-CNN with its four block types (tae-jun/resemul, model.py). The tables below
are transcribed from those sources, and the expected steps and parameter counts are worked out from them
here, not read from the models.

The learning test trains a narrow seven-block Sample-CNN registered here only (6,561 samples = 0.41 s at
16 kHz, channels 32 ... 128), since the real one's 59,049-sample windows take too long on two cores; it
runs the whole real path (registry, for_model with Sample-CNN's recipe, the waveform input stage, the loop).
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.models import build_model, get_model_spec, register, registered_names  # noqa: E402

# SoundNet-8 as music2vec builds it: (name, out channels, kernel, stride, zero padding, max pool, BN+ReLU)
SOUNDNET_TABLE = [
    ("conv1", 16, 64, 2, 32, 8, True),
    ("conv2", 32, 32, 2, 16, 8, True),
    ("conv3", 64, 16, 2, 8, 1, True),
    ("conv4", 128, 8, 2, 4, 1, True),
    ("conv5", 256, 4, 2, 2, 4, True),
    ("conv6", 512, 4, 2, 2, 1, True),
    ("conv7", 1024, 4, 2, 2, 1, True),
    ("conv8_2", 401, 8, 2, 0, 1, False),
]
SAMPLECNN_BLOCK_WIDTHS = [128, 128, 256, 256, 256, 256, 256, 256, 512]  # the 9 blocks after conv0 (128)
SE_RATIO = 16


def soundnet_table_steps(samples: int) -> dict[str, int]:
    steps, out = samples, {}
    for name, _, kernel, stride, pad, pool, _ in SOUNDNET_TABLE:
        steps = ((steps + 2 * pad - kernel) // stride + 1) // pool
        out[name] = steps
    return out


def soundnet_table_parameters() -> int:
    total, cin = 0, 1
    for _, cout, kernel, _, _, _, norm in SOUNDNET_TABLE:
        total += kernel * cin * cout + cout + (2 * cout if norm else 0)  # conv weight + bias, BN scale + shift
        cin = cout
    return total


def conv_bn(cin: int, cout: int, kernel: int) -> int:
    return kernel * cin * cout + cout + 2 * cout


def se(channels: int) -> int:
    hidden = SE_RATIO * channels
    return channels * hidden + hidden + hidden * channels + channels


def samplecnn_table_parameters(block: str, n_tags: int = 50) -> int:
    total, cin = conv_bn(1, 128, 3), 128
    for cout in SAMPLECNN_BLOCK_WIDTHS:
        if block in ("basic", "se"):
            total += conv_bn(cin, cout, 3)
        else:
            total += conv_bn(cin, cout, 3) + conv_bn(cout, cout, 3) + (conv_bn(cin, cout, 1) if cin != cout else 0)
        total += se(cout) if block in ("se", "rese") else 0
        cin = cout
    aggregated = sum(SAMPLECNN_BLOCK_WIDTHS[-3:])
    return total + aggregated * aggregated + aggregated + 2 * aggregated + aggregated * n_tags + n_tags


def lstm(inputs: int, units: int) -> int:
    """torch's LSTM: four gates, each with input and recurrent weights and two bias vectors."""
    return 4 * (units * (inputs + units) + 2 * units)


def test_the_tables_give_the_sources_sizes():
    """The transcriptions agree with what the sources state: music2vec's LSTM sees 8 SoundNet steps and
    Sample-CNN's 59,049 samples end at one step; parameter totals for the record."""
    assert soundnet_table_steps(675808)["conv8_2"] == 8
    assert soundnet_table_steps(441000)["conv8_2"] == 4  # SoundNet's 20 s crop: one step per 5 s frame
    assert soundnet_table_steps(209373)["conv8_2"] == 0 and soundnet_table_steps(209374)["conv8_2"] == 1
    assert 59049 // 3 // 3**9 == 1
    assert soundnet_table_parameters() == 6_159_713
    assert {block: samplecnn_table_parameters(block) for block in ("basic", "se", "res", "rese")} == {
        "basic": 2_683_442, "se": 24_742_706, "res": 4_920_882, "rese": 26_980_146}


def _layer_outputs(network, names):
    """Forward hooks recording the output shape of each named submodule."""
    shapes = {}
    for name in names:
        network.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: shapes.__setitem__(name, tuple(output.shape)))
    return shapes


def _soundnet_expected(samples: int, prefix: str) -> dict[str, tuple]:
    steps = soundnet_table_steps(samples)
    return {f"{prefix}{name}": (2, cout, steps[name]) for name, cout, *_ in SOUNDNET_TABLE}


SAMPLECNN_STEPS = [19683 // 3 ** (i + 1) for i in range(9)]  # 6561, 2187, ..., 1


def _expected_layers(name: str) -> dict[str, tuple]:
    if name == "soundnet":
        return _soundnet_expected(441000, "soundnet.")
    if name == "music2vec":
        return {**_soundnet_expected(675808, "soundnet."), "dense400": (2, 400), "dense100": (2, 100)}
    layers = {"conv0": (2, 128, 19683)}
    for index, (cout, steps) in enumerate(zip(SAMPLECNN_BLOCK_WIDTHS, SAMPLECNN_STEPS)):
        layers[f"layer{index + 1}"] = (2, cout, steps)
    return layers


WAVEFORM_FAMILIES = {
    # name: (rate Hz, input samples, embedding width, parameters from the tables, transform kind)
    "soundnet": (22050, 441000, 1024, soundnet_table_parameters() + 401 * 50 + 50, "gain"),
    "music2vec": (22050, 675808, 8 * 401, soundnet_table_parameters() + lstm(401, 200) + lstm(200, 200)
                  + 1600 * 400 + 400 + 400 * 100 + 100 + 100 * 10 + 10, "gain"),
    "samplecnn": (16000, 59049, 1024, samplecnn_table_parameters("basic"), "none"),
    "samplecnn_se": (16000, 59049, 1024, samplecnn_table_parameters("se"), "none"),
    "samplecnn_res": (16000, 59049, 1024, samplecnn_table_parameters("res"), "none"),
    "samplecnn_rese": (16000, 59049, 1024, samplecnn_table_parameters("rese"), "none"),
}


@pytest.mark.parametrize("name", sorted(WAVEFORM_FAMILIES))
def test_layer_steps_parameters_outputs_and_gradients_follow_the_source(name):
    rate, samples, width, parameters, transform = WAVEFORM_FAMILIES[name]
    spec = get_model_spec(name)
    assert (spec.input_kind, spec.sample_rate, spec.input_length, spec.embedding_dim) == (
        "waveform", rate, samples, width)
    assert spec.input_transform.kind == transform and (transform == "none" or spec.input_transform.gain == 256.0)
    torch.manual_seed(0)
    network = build_model(name).train()
    assert sum(p.numel() for p in network.parameters()) == parameters

    expected = _expected_layers(name)
    shapes = _layer_outputs(network, expected)
    out = network(torch.randn(2, samples) * (256 if transform == "gain" else 0.3))
    assert shapes == expected
    assert out["embedding"].shape == (2, width)
    assert out["logits"].shape == out["tags"].shape == (2, spec.n_tags)
    squash = torch.softmax(out["logits"], dim=1) if name == "music2vec" else torch.sigmoid(out["logits"])
    torch.testing.assert_close(out["tags"], squash, rtol=0, atol=1e-6)

    (out["logits"].square().mean() + out["embedding"].mean()).backward()
    missing = [n for n, p in network.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert not missing, f"no finite gradient reaches {missing}"


def test_music2vec_flattens_soundnet_step_major_and_names_dense100():
    network = build_model("music2vec").eval()
    with torch.no_grad():
        x = torch.randn(1, 675808) * 256
        places = network.soundnet(x)["conv8_2"]  # (1, 401, 8)
        out = network(x)
    assert out["dense100"].shape == (1, 100)
    torch.testing.assert_close(out["embedding"][0, :401], places[0, :, 0])  # step 0's 401 scores come first
    assert network.lstm1.hidden_size == network.lstm2.hidden_size == 200
    assert float(out["tags"].sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name, n_tags", [("soundnet", 7), ("music2vec", 4), ("samplecnn_res", 3)])
def test_n_tags_sets_the_head(name, n_tags):
    network = build_model(name, n_tags=n_tags).eval()
    samples = get_model_spec(name).input_length
    with torch.no_grad():
        out = network(torch.zeros(1, samples))
    assert out["logits"].shape == (1, n_tags)
    heads = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert heads[-1].out_features == n_tags


def test_soundnet_tags_from_conv8_2():
    """The tag head reads conv8_2 (so the tagging loss trains the whole table); conv7 is the embedding."""
    network = build_model("soundnet").eval()
    with torch.no_grad():
        x = torch.randn(1, 441000) * 256
        layers = network.soundnet(x)
        out = network(x)
    torch.testing.assert_close(out["embedding"], layers["conv7"].mean(dim=2))
    torch.testing.assert_close(out["logits"], network.dense(layers["conv8_2"].mean(dim=2)))


TINY = "samplecnn_tiny_test"
TINY_WIDTHS = (32, 32, 64, 64, 64, 64, 128)


def register_tiny_samplecnn() -> str:
    """A narrow seven-block Sample-CNN with Sample-CNN's recipe (registered once per session)."""
    from mde.trainer.models.samplecnn import SAMPLECNN_RATE, SampleCNN, input_samples

    if TINY not in registered_names():
        register(TINY, architecture="SampleCNN", input_length=input_samples(len(TINY_WIDTHS)),
                 waveform_rate=SAMPLECNN_RATE, embedding_dim=sum(TINY_WIDTHS[-3:]),
                 recipe=get_model_spec("samplecnn").recipe)(
            lambda **kwargs: SampleCNN("basic", widths=TINY_WIDTHS, **kwargs))
    return TINY


def test_samplecnn_learns_the_synthesized_tags_with_its_recipe_as_defaults(synth_corpus, tmp_path):
    from mde.trainer.loop import train

    name = register_tiny_samplecnn()
    assert get_model_spec(name).input_length == 6561
    out = tmp_path / "run"
    config = TrainConfig.for_model(name, dataset="manifest", data=str(synth_corpus), out=str(out), epochs=2, lr=3e-3,
                                   batch_size=8, crops_per_clip=4, eval_crops=4, device="cpu", seed=0)
    results = train(config)
    assert results["test"]["roc_auc"] > 0.6, results
    saved = json.loads((out / "config.json").read_text())
    # the recipe where the call was silent, the call's values where it spoke
    assert (saved["optimizer"], saved["schedule"], saved["switch_epoch"], saved["switch_lr"]) == (
        "adam", "adam_then_sgd", 80, 1e-3)
    assert (saved["epochs"], saved["lr"], saved["batch_size"], saved["crops_per_clip"]) == (2, 3e-3, 8, 4)


MUSIC2VEC_GENRES = ("classical", "electronic", "rock")
MUSIC2VEC_SPLIT = {"train": range(8), "valid": range(8, 10), "test": range(10, 14)}  # clip numbers per genre


def test_music2vec_learns_the_synthesized_genres(tmp_path):
    """The whole music2vec network (675,808-sample inputs) on three genres of the synthesized corpus, 8 train
    clips each: RMSprop at 1e-4 in batches of 4 (the recipe's 1e-3 diverges from scratch on a corpus this
    small; the source starts from pretrained SoundNet), BatchNorm's statistics recomputed after each epoch
    (the recipe's precise_bn). Test accuracy over 12 clips well above chance (1/3)."""
    from mde.trainer.data.synth_genres import synthesize_genres
    from mde.trainer.loop import train

    root = synthesize_genres(tmp_path / "corpus", 14 * len(MUSIC2VEC_GENRES), seed=3, sample_rate=22050,
                             seconds=3.0, engine="numpy", genres=MUSIC2VEC_GENRES)
    for split, numbers in MUSIC2VEC_SPLIT.items():
        (root / f"{split}_filtered.txt").write_text(
            "".join(f"{g}/{g}.{n:05d}.wav\n" for g in MUSIC2VEC_GENRES for n in numbers))
    out = tmp_path / "run"
    config = TrainConfig.for_model("music2vec", dataset="gtzan", data=str(root), out=str(out), epochs=4,
                                   lr=1e-4, batch_size=4, device="cpu", seed=0)
    results = train(config)
    assert results["test"]["accuracy"] >= 2 / 3, results
    saved = json.loads((out / "config.json").read_text())
    assert (saved["optimizer"], saved["precise_bn"], saved["single_label"]) == ("rmsprop", 256, True)
