"""``mde train --ray-workers N``: data-parallel training on Ray Train (TorchTrainer: DDP over gloo on CPU,
NCCL on GPU).

Each of the N workers builds the same :class:`~mde.trainer.loop.Trainer` as a local run, as a
:class:`~mde.trainer.loop.Replica`: it reads its part of every batch (``batch_size / N`` windows, so the
optimizer steps are those of one process on the whole batch), DistributedDataParallel averages the
gradients, the replicas share rank 0's BatchNorm statistics after every epoch and so evaluate, schedule and
stop alike, and rank 0 alone writes the run folder: checkpoints, ``--resume``, ``log.csv`` and
``metrics.json`` are those of a local run. The run folder must be where rank 0 runs (this machine, or
shared storage); every worker reads the data at its path.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from mde.cluster.session import first_line, ray_session
from mde.errors import MdeError
from mde.trainer.config import TrainConfig
from mde.trainer.loop import AUTO_CACHE


def train_on_ray(config: TrainConfig, workers: int, *, resume: bool = False, address: Optional[str] = None,
                 threads: int = 1) -> dict[str, Any]:
    """Train ``config`` over ``workers`` Ray Train workers of ``threads`` CPUs each (one GPU each with
    device 'cuda'), on the cluster at ``address`` or a local instance; returns what metrics.json holds.
    MdeError (one line) when the batch does not split over the workers or the training failed."""
    check_workers(config, workers)
    config = _with_absolute_paths(config)  # the workers run in folders of their own
    run = Path(config.out)
    with ray_session(address, "Training on Ray"):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        trainer = TorchTrainer(
            _replica_loop, train_loop_config={"config": config.to_dict(), "resume": resume, "threads": threads},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=config.device == "cuda",
                                         resources_per_worker={"CPU": threads}),
            run_config=RunConfig(name="ray-train", storage_path=str(run / "ray")),
        )
        try:
            trainer.fit()
        except Exception as exc:  # Ray Train wraps a worker's error (ours included) in its own
            raise MdeError(f"training on Ray failed: {_cause(exc)}") from None
    return json.loads((run / "metrics.json").read_text())


def check_workers(config: TrainConfig, workers: int) -> None:
    """MdeError (one line) unless ``workers`` >= 1 and the batch splits evenly over them."""
    if workers < 1:
        raise MdeError(f"--ray-workers must be at least 1, got {workers}")
    if config.batch_size % workers:
        raise MdeError(f"a batch of {config.batch_size} windows does not split over {workers} workers")


def _replica_loop(settings: dict[str, Any]) -> None:
    """One Ray Train worker: the run's trainer as replica (world rank, world size)."""
    import ray.train
    import torch

    from mde.trainer.loop import Replica, Trainer

    torch.set_num_threads(int(settings["threads"]))
    context = ray.train.get_context()
    replica = Replica(context.get_world_rank(), context.get_world_size())
    Trainer(TrainConfig.from_dict(settings["config"]), resume=bool(settings["resume"]), replica=replica).run()


def _with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its data, output, cache and (a path, not a store name) init source made absolute."""
    def absolute(value: Optional[str]) -> Optional[str]:
        return None if value is None or value == AUTO_CACHE else os.fspath(Path(value).expanduser().resolve())

    init = config.init
    if init is not None and (Path(init).expanduser().exists() or os.sep in init):
        init = absolute(init)
    return dataclasses.replace(config, data=absolute(config.data) or config.data, out=absolute(config.out) or
                               config.out, cache=absolute(config.cache) if config.cache else config.cache, init=init)


def _cause(exc: BaseException) -> str:
    """The worker's error, as one line: the last line of Ray Train's report (the worker's traceback), without
    the module path of an mde error's type."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return first_line(exc)
    last = lines[-1]
    kind, _, message = last.partition(": ")
    return message if kind.startswith("mde.errors.") and message else last
