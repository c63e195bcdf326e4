"""``mde train`` and ``mde prepare``: the training side (needs torch)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Optional

import typer

from mde.cli.console import err, file_progress, out, stage_progress
from mde.cli.options import number_or
from mde.cli.ray_options import RAY_ADDRESS_HELP, ray_connected
from mde.errors import MdeError, MissingExtraError
from mde.trainer.config import default_settings

DATASET_HELP = "Data source: mtat (annotations_final.csv + mp3 tree), gtzan (genres/<genre>/*), manifest (CSV path,split,tags), msd (folder: msd_amglabels_all.h5, splits.csv, audio/, optional reviews.csv|parquet)."
DATA_HELP = "The dataset folder (mtat, gtzan, msd) or manifest CSV file."


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("prepare")(prepare)


TRAIN_EXTRA_PACKAGES = {"torch": "torch", "sklearn": "scikit-learn"}
"""Modules of the 'train' extra that these commands need, and the package that provides each."""


def needs_train_extra(purpose: str, *modules: str) -> None:
    """MissingExtraError naming the 'train' extra unless every module is installed (found, not imported)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(TRAIN_EXTRA_PACKAGES[module], "train", purpose)


RECIPE = "the model's recipe, else"
"""How each setting's help names its default: the model family's recipe first (see TrainConfig.for_model)."""
_DEFAULTS = default_settings()


def _default(name: str) -> str:
    """"(default: the model's recipe, else X)" for the TrainConfig setting ``name`` (rich would take
    square brackets for markup)."""
    value = _DEFAULTS[name]
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, list):
        shown = ",".join(map(str, value)) or "none"
    else:
        shown = "none" if value is None else str(value)
    return f"(default: {RECIPE} {shown})"


def train(
    model: Optional[str] = typer.Option(None, "--model", help="Architecture from the registry: fcn, fcn05, shortchunk_res, shortchunk, crnn, musicnn, musicnn_vgg (log-mel); soundnet, music2vec, samplecnn (with --block), jetatag (with --encoder) (waveform); schindler (stereo log-mel, learns an embedding from tag sets or text: see --targets, --loss). Required unless --init gives it."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out_dir: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, logs and metrics.json."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="With --model jetatag: its waveform encoder, hc (Harmonic CNN), ms (Music-SincNet) or sc (Sample-CNN, with --block)."),
    joint_embedding: Optional[bool] = typer.Option(None, "--je/--no-je", help="With --model jetatag: the joint-embedding stage first, then the classifier on the frozen encoder (withJE), or encoder and classifier trained together on the tags (noJE). (default: --je)"),
    stage1_epochs: Optional[int] = typer.Option(None, "--stage1-epochs", help=f"With --je: epochs of the joint-embedding stage. {_default('stage1_epochs')}"),
    stage2_epochs: Optional[int] = typer.Option(None, "--stage2-epochs", help="With --model jetatag: epochs of the classifier stage (--epochs by another name)."),
    block: Optional[str] = typer.Option(None, "--block", help="With --model samplecnn (or jetatag --encoder sc): its block type, basic (samplecnn), se (samplecnn_se), res (samplecnn_res) or rese (samplecnn_rese). (default: basic)"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache made by 'mde prepare' for this dataset (faster epochs), or 'auto': a temporary one in the run folder when the decoded audio is over --memory-budget (under it, it is kept in memory anyway)."),
    memory_budget: float = typer.Option(2.0, "--memory-budget", help="GiB of float32 kept in memory instead of read again: the decoded train and valid audio, and the validation inputs (computed once when they fit). 0: decode every file at every use."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Passes over the training split. {_default('epochs')}"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Windows (random crops) per optimizer step. {_default('batch_size')}"),
    crops_per_clip: Optional[str] = typer.Option(None, "--crops-per-clip", help=f"Random crops per clip per epoch: a number (1: the sota recipe) or 'auto' (as many as non-overlapping windows fit in the clip, at most 4). {_default('crops_per_clip')}"),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Learning rate. {_default('lr')}"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help=f"adamw, adam, sgd (Nesterov momentum) or rmsprop (Keras' RMSprop). {_default('optimizer')}"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=f"Weight decay. {_default('weight_decay')}"),
    schedule: Optional[str] = typer.Option(None, "--schedule", help=f"none, plateau (ReduceLROnPlateau on validation loss), step (decay at --milestones) or adam_then_sgd (the sota recipe: switch to SGD at --switch-epoch). {_default('schedule')}"),
    milestones: Optional[str] = typer.Option(None, "--milestones", help=f"Comma-separated epochs at which the learning rate is multiplied by --gamma. {_default('milestones')}"),
    gamma: Optional[float] = typer.Option(None, "--gamma", help=f"Learning-rate factor at each milestone. {_default('gamma')}"),
    switch_epoch: Optional[int] = typer.Option(None, "--switch-epoch", help=f"adam_then_sgd: the epoch at which SGD takes over. {_default('switch_epoch')}"),
    switch_lr: Optional[float] = typer.Option(None, "--switch-lr", help=f"adam_then_sgd: SGD's learning rate at the switch. (default: {RECIPE} --lr)"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help=f"Clip the gradient norm to this value. {_default('grad_clip')}"),
    no_amp: bool = typer.Option(False, "--no-amp", help="Turn off mixed precision on CUDA (never used on CPU)."),
    early_stop: Optional[int] = typer.Option(None, "--early-stop", help=f"Stop after this many epochs without a better validation score. {_default('early_stop')}"),
    precise_bn: Optional[int] = typer.Option(None, "--precise-bn", help=f"After each epoch, recompute BatchNorm's running statistics over this many training windows (for short runs, whose running averages still remember their start); 0: keep the running averages. {_default('precise_bn')}"),
    eval_crops: Optional[str] = typer.Option(None, "--eval-crops", help=f"Windows averaged per clip at evaluation: a number (evenly spaced) or 'all' (non-overlapping, as the runtime cuts them). {_default('eval_crops')}"),
    single_label: Optional[bool] = typer.Option(None, "--single-label/--multi-label", help=f"One class per clip (softmax, accuracy), or any number of tags (sigmoid, ROC-AUC); gtzan always is single-label. {_default('single_label')}"),
    merge_synonyms: Optional[bool] = typer.Option(None, "--merge-synonyms/--no-merge-synonyms", help=f"mtat: merge synonymous tags (the multi-scale seed's list) before taking the top 50. {_default('merge_synonyms')}"),
    mtat_split: Optional[str] = typer.Option(None, "--mtat-split", help=f"mtat: sota (the sota-music-tagging-models split: split files, else folders 0-b / c / d-f) or random (the multi-scale CNN's: 2,000 valid, 18,000 train, the rest test, seeded). {_default('mtat_split')}"),
    loss: Optional[str] = typer.Option(None, "--loss", help=f"Similarity networks (schindler): cosine (regress one head per target space onto it), triplet (batch-hard triplet loss on the embedding, positives: target cosine > 0.9, margin 1.0) or both (their sum). {_default('loss')}"),
    targets: Optional[str] = typer.Option(None, "--targets", help=f"Similarity networks: the target spaces, tags (each clip's tag set), text (its free text: a manifest's text column) or tags,text (one head each); TF-IDF + LSI fitted on the train split, kept in the run's targets/ folder. {_default('targets')}"),
    topics: Optional[int] = typer.Option(None, "--topics", help=f"Similarity networks: topics (LSI dimensions) per target space, fewer when the train split's vocabulary is smaller. {_default('topics')}"),
    triplet_aggregation: Optional[str] = typer.Option(None, "--triplet-aggregation", help=f"--loss triplet/both: each anchor's hardest (farthest) positive, or the mean of its positive distances. {_default('triplet_aggregation')}"),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from this pretrained tagger instead of a fresh network: a stored model (a name from 'mde models', e.g. MTT_musicnn or MTT_fcn05, or an .onnx path: its weights are imported into the registry's torch network), a training run folder (its best checkpoint) or a .pt checkpoint. Its front end and backbone are kept, a new head (--head) learns this dataset's tags; --model may be left out. The exported model's metadata records the lineage."),
    head: Optional[str] = typer.Option(None, "--head", help="With --init: the new head on the backbone's embedding, linear (one layer) or mlp (a hidden layer as wide as the embedding, ReLU, dropout 0.5). (default: linear)"),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="With --init: train the head alone, the backbone frozen (bit-identical, its BatchNorm statistics and dropout as at inference): a linear probe with the network's own training loop."),
    unfreeze_after: Optional[int] = typer.Option(None, "--unfreeze-after", help="With --init: freeze the backbone for the first N epochs (the head learns alone), then fine-tune the whole network (backbone at --backbone-lr). Implies --freeze-backbone for those epochs.", metavar="N"),
    backbone_lr: Optional[float] = typer.Option(None, "--backbone-lr", help="With --init: the backbone's learning rate whenever it trains (the head's is --lr). (default: --lr)"),
    workers: int = typer.Option(0, "--workers", help="Data-loading worker processes."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Random seed (crops, shuffling, initialization)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (--epochs may be raised)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", min=1, help="Data-parallel training on Ray Train (the 'ray' extra): N workers (DDP over gloo on CPU, NCCL with --device cuda), each on its part of every batch (--batch-size must split evenly), rank 0 writing the same run folder as a local run. Without --ray-address a local Ray instance is started for the command.", metavar="N"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --ray-workers: the head of an existing Ray cluster (HOST:PORT, or auto)."),
) -> None:
    """Train a model, from scratch or fine-tuned from a pretrained one (--init); the best checkpoint (by validation ROC-AUC, accuracy, or a similarity network's retrieval mAP) is evaluated on the test split.

    Training settings left out come from the model family's recipe (its source's training, see the README's recipes), else the defaults shown; config.json in the run folder keeps the values used.
    """
    needs_train_extra("Training", "torch", "sklearn")
    from mde.trainer.config import TrainConfig
    from mde.trainer.loop import Trainer

    fine_tuning = {"--head": head, "--freeze-backbone": freeze_backbone or None, "--unfreeze-after": unfreeze_after,
                   "--backbone-lr": backbone_lr}
    if init is None and any(value is not None for value in fine_tuning.values()):
        raise MdeError(f"{next(k for k, v in fine_tuning.items() if v is not None)} applies with --init only")
    architecture = _model_name(model, block, encoder) if model is not None else None
    if init is not None:
        from mde.trainer.warm_start import init_architecture

        held = init_architecture(init)
        if architecture not in (None, held):
            raise MdeError(f"--init {init} holds a {held} network, not --model {architecture} (leave --model out)")
        architecture = held
    if architecture is None:
        raise MdeError("give --model (an architecture) or --init (a pretrained model to start from)")

    given = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "weight_decay": weight_decay,
        "schedule": schedule, "gamma": gamma, "switch_epoch": switch_epoch, "switch_lr": switch_lr,
        "grad_clip": grad_clip, "early_stop": early_stop, "single_label": single_label, "precise_bn": precise_bn,
        "joint_embedding": joint_embedding, "stage1_epochs": stage1_epochs, "merge_synonyms": merge_synonyms,
        "mtat_split": mtat_split, "loss": loss, "targets": targets, "topics": topics,
        "triplet_aggregation": triplet_aggregation, "init": init, "head": head, "unfreeze_after": unfreeze_after,
        "backbone_lr": backbone_lr, "freeze_backbone": freeze_backbone or None,
    }
    if dataset != "mtat" and (merge_synonyms or mtat_split is not None):
        raise MdeError(f"--{'merge-synonyms' if merge_synonyms else 'mtat-split'} applies to --dataset mtat only")
    if stage2_epochs is not None:
        if epochs is not None and epochs != stage2_epochs:
            raise MdeError(f"--epochs {epochs} and --stage2-epochs {stage2_epochs} disagree (they are one setting)")
        given["epochs"] = stage2_epochs
    settings: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    if crops_per_clip is not None:
        settings["crops_per_clip"] = _auto(number_or(crops_per_clip, "auto", "--crops-per-clip", int))
    if eval_crops is not None:
        settings["eval_crops"] = number_or(eval_crops, "all", "--eval-crops", int)
    if milestones is not None:
        settings["milestones"] = _int_list(milestones)
    if no_amp:
        settings["amp"] = False
    if dataset == "gtzan":
        settings["single_label"] = True
    config = TrainConfig.for_model(
        architecture, dataset=dataset, data=str(data), out=str(out_dir),
        cache=str(cache) if cache else None, memory_budget=memory_budget,
        workers=workers, device=device, seed=seed, **settings,
    )
    if ray_address is not None and ray_workers is None:
        raise MdeError("--ray-address applies with --ray-workers")
    if ray_workers is not None:
        _train_on_ray(config, ray_workers, resume, ray_address)
        return
    trainer = Trainer(config, resume=resume)
    start = f" from {init} ({config.head} head)" if init else ""
    err.print(f"training {config.model}{start} on {trainer.device} ({trainer.data.dataset.name}: "
              + ", ".join(f"{k} {len(v)}" for k, v in trainer.data.dataset.splits.items()) + " clips)")
    run_with_progress(trainer)


def run_with_progress(trainer) -> dict[str, Any]:
    """Prepare the data and run ``trainer`` (a Trainer or a DistillTrainer) with progress bars and one line
    per epoch on stderr; print metrics.json on stdout. Ctrl-C saves the last checkpoint and exits 130."""
    with stage_progress() as report:
        note = trainer.prepare_data(report)
    err.print(note)
    with file_progress() as progress:
        epoch_task = progress.add_task("epochs", total=trainer.stages[-1].end, completed=trainer.epoch)
        batch_task = progress.add_task("batches", total=None)

        def on_batch(step: int, steps: int, loss: float) -> None:
            progress.update(batch_task, total=steps, completed=step, description=f"epoch {trainer.epoch + 1} loss {loss:.4f}")

        def on_epoch(row: dict) -> None:
            progress.update(epoch_task, completed=row["epoch"])
            stage = "" if row["stage"] == "tagging" else f" ({row['stage']} stage)"
            score = (f"valid score {row['valid_score']:.4f} (best {row['best_score']:.4f}), "
                     if "valid_score" in row else "")
            progress.console.print(
                f"epoch {row['epoch']}{stage}: train loss {row['train_loss']:.4f}, valid loss {row['valid_loss']:.4f}, "
                f"{score}lr {row['lr']:.2g}, "
                f"{row['seconds']:.1f} s, {row['windows_per_s']:.0f} windows/s, ETA {_duration(row['eta_s'])}"
            )

        try:
            results = trainer.run(on_epoch=on_epoch, on_batch=on_batch)
        except KeyboardInterrupt:
            progress.stop()
            err.print(f"interrupted: saved {trainer.run_dir.last}; continue with the same command and --resume")
            raise typer.Exit(130) from None
    out.print_json(json.dumps(results))
    err.print(f"done: best epoch {results['best_epoch']}, results in {trainer.run_dir.metrics_path}")
    return results


def _train_on_ray(config, workers: int, resume: bool, address: Optional[str]) -> None:
    """Run ``config`` on Ray Train, printing each epoch's line as rank 0 logs it and metrics.json at the end."""
    import threading

    from mde.cluster.session import import_ray
    from mde.cluster.train import check_workers, train_on_ray
    from mde.trainer.run_dir import RunDir

    check_workers(config, workers)
    import_ray("Training on Ray")  # a missing extra: one line, before the first
    err.print(f"training {config.model} on Ray: {workers} worker(s) x {config.batch_size // workers} windows "
              f"of each batch of {config.batch_size}")
    log = RunDir(config.out).log_path
    shown = len(log.read_text().splitlines()) if resume and log.is_file() else 1
    done = threading.Event()

    def say_new_rows() -> None:
        nonlocal shown
        lines = log.read_text().splitlines() if log.is_file() else []
        for line in lines[shown:]:
            row = dict(zip(lines[0].split(","), line.split(",")))
            err.print(f"epoch {row['epoch']}: train loss {float(row['train_loss']):.4f}, valid loss "
                      f"{float(row['valid_loss']):.4f}, {float(row['seconds']):.1f} s")
        shown = max(shown, len(lines))

    def follow() -> None:  # rank 0 appends a row per epoch: said here as it comes, as a local run does
        while not done.wait(1.0):
            say_new_rows()
        say_new_rows()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        results = train_on_ray(config, workers, resume=resume, address=address)
    finally:
        done.set()
        follower.join()
    out.print_json(json.dumps(results))
    err.print(f"done: best epoch {results['best_epoch']}, results in {RunDir(config.out).metrics_path}")


def _model_name(model: str, block: Optional[str], encoder: Optional[str]) -> str:
    """The registry name that ``--model``, ``--block`` and ``--encoder`` choose (MdeError for a bad mix)."""
    from mde.trainer.models.jetatag import ENCODERS, jetatag_model
    from mde.trainer.models.samplecnn import samplecnn_model

    if model != "jetatag":
        if encoder is not None:
            raise MdeError(f"--encoder applies to --model jetatag only, not {model!r}")
        return samplecnn_model(model, block)
    if encoder not in ENCODERS:
        raise MdeError(f"--model jetatag needs --encoder {', '.join(ENCODERS)}" + (f", got {encoder!r}" if encoder else ""))
    try:
        return jetatag_model(encoder, block)
    except ValueError as error:
        raise MdeError(str(error)) from None


def _int_list(text: Optional[str]) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise MdeError(f"--milestones must be comma-separated epochs, got {text!r}") from None


def _auto(crops_per_clip: Optional[int]) -> int | str:
    """--crops-per-clip as TrainConfig holds it: the number, or 'auto'."""
    return "auto" if crops_per_clip is None else crops_per_clip


def _duration(seconds: float) -> str:
    """``seconds`` as '42 s', '3 min 05 s' or '2 h 07 min'."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"



def prepare(
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out_dir: Path = typer.Option(..., "--out", help="Cache folder (features.npy, index.json, prepare.log.tsv); rerun to resume."),
    model: Optional[str] = typer.Option(None, "--model", help="Take rate, front end and channels from this architecture (e.g. fcn05)."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="Rate (Hz) the audio is resampled to, without --model."),
    seconds: float = typer.Option(30.0, "--seconds", help="Window each clip is fitted to, in seconds (stored as round(seconds x rate) samples)."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="Cut a clip longer than --seconds to the window (--no-crop: such a clip fails, reason logged)."),
    pad: bool = typer.Option(True, "--pad/--no-pad", help="Zero-pad a clip shorter than --seconds at the end; log-mels hold the front end's floor there (--no-pad: such a clip fails)."),
    offset: Optional[float] = typer.Option(None, "--offset", help="Start of the cut window, in seconds from the clip's start (a clip shorter than offset + --seconds is cut from its start); default: the clip's centre.", metavar="SECONDS"),
    channels: Optional[int] = typer.Option(None, "--channels", help="1 (mono: a file's channels averaged) or 2 (stereo: a mono file on both); default 1, or the --model's."),
    features: str = typer.Option("waveform", "--features", help="waveform, or logmel (the model's front end; needs --model)."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 (2 bytes a value, half the disk) or float32 (4 bytes)."),
    skip: bool = typer.Option(True, "--skip/--no-skip", help="Keep the clips an earlier run with the same settings stored (--no-skip: decode and store every clip again)."),
    workers: int = typer.Option(1, "--workers", help="Decoding worker processes (1: in this process)."),
    ray: bool = typer.Option(False, "--ray", help="Decode on Ray (the 'ray' extra) as CPU tasks, in chunks of up to 16 clips, each writing its rows into the cache (which every node must reach at the same path); the same cache as without it. Without --ray-address a local Ray instance is started for the command."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    single_label: bool = typer.Option(False, "--single-label", help="One class per clip."),
    merge_synonyms: bool = typer.Option(False, "--merge-synonyms", help="mtat: merge synonymous tags before the top 50."),
    mtat_split: str = typer.Option("sota", "--mtat-split", help="mtat: sota or random (as 'mde train --mtat-split'; give the same as the training run)."),
) -> None:
    """Decode, resample and store a dataset once (waveforms or log-mels) in one memory-mapped archive."""
    from mde.trainer.data.cache import prepare_cache
    from mde.trainer.data.sources import load_dataset

    map_chunks = None
    if ray or ray_address is not None:
        if workers > 1:
            raise MdeError("--workers is for local decoding; on Ray every CPU of the cluster decodes")
        from mde.cluster.pipeline import ray_chunk_map

        map_chunks = ray_chunk_map(ray_address)

    frontend = None
    if model:
        needs_train_extra("--model", "torch")
        from mde.trainer.models import get_model_spec

        spec = get_model_spec(model)
        if channels not in (None, spec.channels):
            raise MdeError(f"--channels {channels}: {model} takes {spec.channels}-channel audio (leave --channels out)")
        sample_rate, frontend, channels = spec.sample_rate, spec.frontend, spec.channels
    elif features == "logmel":
        raise MdeError("--features logmel needs --model (to know the front end)")
    ds = load_dataset(dataset, data, single_label=single_label or dataset == "gtzan", merge_synonyms=merge_synonyms,
                      mtat_split=mtat_split)
    total = sum(len(clips) for clips in ds.splits.values())
    with ray_connected(map_chunks is not None, ray_address, "Preparing on Ray", actor_pool=False), file_progress() as progress:
        task = progress.add_task("preparing", total=total)

        def on_progress(path: str, ok: bool) -> None:
            progress.advance(task)

        report = prepare_cache(ds, out_dir, sample_rate=sample_rate, length=round(seconds * sample_rate),
                               features=features, frontend=frontend, dtype=dtype, crop=crop, pad=pad, offset=offset,
                               channels=1 if channels is None else channels, skip=skip, workers=workers, on_progress=on_progress,
                               map_chunks=map_chunks)
    err.print(f"{report.done} prepared, {report.skipped} already there, {report.n_failed} failed "
              f"in {report.elapsed:.1f} s -> {out_dir}")
    for clip in report.failed:
        err.print(f"  failed: {clip.reason}")
    err.print(f"log of every clip: {report.log_path}")
