"""Shared fixtures: the shared test material, a private model store, and a tiny real ONNX model."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A suite started in the background of a non-interactive shell (`... &`) inherits SIGINT ignored, and so
    # would every `mde` it starts, which the Ctrl-C tests then cannot stop. A handled signal is reset to the
    # default at exec, so the children see a normal Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Under pytest -n N each worker gets its share of the cores for its math libraries (torch's OpenMP pool,
    # OpenBLAS), read when they load, so N workers do not spin 2N threads on N cores. Set before numpy loads.
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, _threads)
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite sees no bundled models (mde/models/*.onnx) unless a test points MDE_BUNDLED_MODELS at its own folder
# (tests/test_bundled_models.py): a command run without --model gives the same results before and after trained
# models ship in the package. Set here, before any test or session fixture copies os.environ for a child.
os.environ["MDE_BUNDLED_MODELS"] = str(REPO / "tests" / "no-bundled-models")  # never created


def _find_fluidsynth():
    from mde.trainer.data import synth_fluidsynth

    return synth_fluidsynth.find_fluidsynth(), synth_fluidsynth.INSTALL_HINT


FLUIDSYNTH, _FLUIDSYNTH_HINT = _find_fluidsynth()
"""(fluidsynth command, GM SoundFont) when both are installed, else None."""
needs_fluidsynth = pytest.mark.skipif(FLUIDSYNTH is None,
                                      reason=f"fluidsynth or a GM SoundFont missing ({_FLUIDSYNTH_HINT})")

SHARED_DATA = Path(os.environ.get("MDE_TEST_DATA") or REPO.parent / "shared" / "data")
MTAT_CLIP = "audio/joram-moments_of_clarity-08-solipsism-59-88.mp3"
MSD_CLIP = "audio/TRWJAZW128F42760DD_test.mp3"
FCN05_CKPT = "checkpoints/FCN05-roc_auc=0.8552-pr_auc=0.3344.ckpt"
FCN29_CKPT = "checkpoints/FCN29-roc_auc=0.9025-pr_auc=0.4342.ckpt"


LONGEST_FILES = ("test_waveform_models.py", "test_train.py", "test_export.py", "test_train_efficiency.py",
                 "test_jetatag_training.py", "test_waveform_families_serve.py")
"""The test files that take longest (learning runs, exports), longest first: collected first, so that under
``pytest -n`` they start at once rather than last (by name) and leave one worker busy while the others wait."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The LONGEST_FILES first, in that order; every other file after them, in its usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort keeps each file's order


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (created) with mount ``options`` (e.g. 'ro,size=64k'), unmounted after;
    the test skips where it cannot mount (not root, no mount). Root ignores permission bits, so a read-only
    or a full file system is what makes a folder unwritable for every user."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and a working 'mount -t tmpfs'")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (or $MDE_TEST_DATA); tests needing it skip without it."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set MDE_TEST_DATA)")
    return SHARED_DATA


@contextmanager
def store_at(home: Path) -> Iterator[Path]:
    """Point the model store at ``home`` for the duration of the block (for session-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MDE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def musicnn_home(tmp_path_factory) -> Path:
    """A store holding MTT_musicnn, MSD_musicnn and MTT_vgg, imported once for the session."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("musicnn") is None:  # found, not imported: tests check it stays unimported
        pytest.skip("the musicnn package is not installed (pip install --no-deps musicnn==0.1.0)")
    from mde.export.importers.musicnn import import_musicnn

    home = tmp_path_factory.mktemp("musicnn-home")
    with store_at(home):
        for name in ("MTT_musicnn", "MSD_musicnn", "MTT_vgg"):
            import_musicnn(name)
    return home


class _SeedStore(dict):
    """arch ('fcn05', 'fcn29') -> the stored model file of the first seed's checkpoint, imported on first use."""

    def __init__(self, data: Path, home: Path) -> None:
        super().__init__()
        self.data, self.home = data, home

    def __missing__(self, arch: str) -> Path:
        from mde.export.importers.seed import import_seed

        with store_at(self.home):
            self[arch] = import_seed(self.data / {"fcn05": FCN05_CKPT, "fcn29": FCN29_CKPT}[arch])[0]
        return self[arch]


@pytest.fixture(scope="session")
def seed_models(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The first seed's FCN05 and FCN29 checkpoints imported into one store for the session, each when a test
    first asks for it (FCN29's import is the longer, and not every test needs both)."""
    pytest.importorskip("torch")
    return _SeedStore(shared_data, tmp_path_factory.mktemp("seed-home"))


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """80 synthesized 2 s clips (numpy engine; 64 train, 8 valid, 8 test) in ``<root>/synth``; returns the
    manifest. The corpus of every training test that checks bookkeeping rather than learning."""
    from mde.trainer.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("tiny-run") / "synth", 80, seed=0, seconds=2.0, engine="numpy")


@pytest.fixture(scope="session")
def fcn05_run(synth_corpus) -> Path:
    """fcn05 trained 1 epoch on ``synth_corpus``, in ``<root>/run-fcn05`` beside ``<root>/synth``, once for the
    session; tests only read it (export, eval, resume refusals)."""
    pytest.importorskip("torch")
    from mde.trainer.config import TrainConfig
    from mde.trainer.loop import train

    run = synth_corpus.parent.parent / "run-fcn05"
    train(TrainConfig(model="fcn05", dataset="manifest", data=str(synth_corpus), out=str(run), epochs=1,
                      batch_size=16, crops_per_clip=1, lr=3e-3, device="cpu", eval_crops=4, seed=0))
    return run


@pytest.fixture(scope="session")
def pretrained_fcn05(synth_corpus, tmp_path_factory) -> dict[str, Path]:
    """fcn05 trained on ``synth_corpus`` long enough to learn something, exported: {'trained': its final
    weights, 'untrained': its initial weights (.onnx files), 'run': the run folder}. For the probe and the
    fine-tuning tests (a pretrained model to compare with, or to start from).

    ``fcn05_run`` (1 epoch, 4 steps) has not learned yet (its own test ROC-AUC is about 0.5, and probed on a
    fresh corpus its embedding scores below its initial weights'), and a random FCN is a strong baseline for
    a linear probe (0.83 test ROC-AUC on the probe's corpus). Eight epochs of one crop per clip at lr 1e-2
    (64 steps, a few seconds) do learn (about 0.89), and the final weights are exported rather than best.pt,
    whose choice by the 8 valid clips is noise at this size.
    """
    pytest.importorskip("torch")
    import torch

    from mde.export.export import export_model
    from mde.trainer.config import TrainConfig
    from mde.trainer.loop import train

    root = tmp_path_factory.mktemp("pretrained-fcn05")
    run = root / "run"
    checkpoints = run / "checkpoints"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny run: on busy cores a thread pool's spinning makes it many times slower
    try:
        train(TrainConfig(model="fcn05", dataset="manifest", data=str(synth_corpus), out=str(run), epochs=8,
                          batch_size=8, crops_per_clip=1, lr=1e-2, device="cpu", eval_crops=4, seed=0))
        final = torch.load(checkpoints / "best.pt", weights_only=False)  # best.pt's format, the last weights
        final["model"] = torch.load(checkpoints / "last.pt", weights_only=False)["model"]
        torch.save(final, checkpoints / "final.pt")
        export_model(checkpoints / "final.pt", root / "trained.onnx")
        export_model(checkpoints / "initial.pt", root / "untrained.onnx")
    finally:
        torch.set_num_threads(threads)
    return {"trained": root / "trained.onnx", "untrained": root / "untrained.onnx", "run": run}


@pytest.fixture
def mde_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty private model store for one test."""
    home = tmp_path / "mde-home"
    monkeypatch.setenv("MDE_HOME", str(home))
    return home


def build_tiny_model(name: str = "tiny", window: int = 4000, n_tags: int = 3) -> bytes:
    """A real ONNX graph with mde metadata: embedding = mean log-mel over time, tags = sigmoid(W e + b).

    It runs in ONNX Runtime like any model file, so the extractor, writers and CLI can be tested on it
    without torch. The weights are fixed so outputs are predictable.
    """
    import onnx
    from onnx import TensorProto, helper

    from mde.runtime.frontend_config import FrontendConfig
    from mde.runtime.package import METADATA_KEY, ModelInfo

    frontend = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, f_max=4000.0)
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((frontend.n_mels, n_tags)) * 0.05).astype(np.float32)
    bias = np.full(n_tags, 2.0, np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["logmel", "axes"], ["embedding"], keepdims=0),
        helper.make_node("MatMul", ["embedding", "weight"], ["logits"]),
        helper.make_node("Add", ["logits", "bias"], ["biased"]),
        helper.make_node("Sigmoid", ["biased"], ["tags"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", frontend.n_mels, "frames"])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", frontend.n_mels]),
            helper.make_tensor_value_info("tags", TensorProto.FLOAT, ["batch", n_tags]),
        ],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [2]),
            onnx.numpy_helper.from_array(weight, "weight"),
            onnx.numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    info = ModelInfo(
        name=name, architecture="tiny-test", source="built by the test suite", licence="MIT",
        sample_rate=frontend.sample_rate, window_samples=window, hop_samples=window, input_kind="logmel",
        framing="audio_windows", frontend=frontend, embedding_dim=frontend.n_mels,
        tag_names=tuple(f"tag{i}" for i in range(n_tags)),
        outputs={"embedding": frontend.n_mels, "tags": n_tags},
    )
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def tiny_model(mde_home: Path) -> str:
    """The tiny model stored as 'tiny' in the private store; returns its name."""
    from mde.runtime import store

    store.save(build_tiny_model(), "tiny")
    return "tiny"


def write_tone(path: Path, seconds: float, rate: int = 8000, freq: float = 440.0) -> Path:
    """A sine tone with a little noise, written as 16-bit WAV."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(1).standard_normal(len(t)) * 0.01
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), rate, subtype="PCM_16")
    return path
